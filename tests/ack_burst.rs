//! No acknowledgement is lost silently: a burst of 40,000 acknowledged room operations from a
//! real socket.io-client 2.x or 4.x (`interop/ack-burst.js`) is answered in full, each with
//! success or an error, or the client is disconnected with a reason it receives.

mod common;
use common::*;
use socketio_p2p::RelayOptions;
use std::time::Duration;

const BURST: usize = 40_000;

async fn burst(relay: &socketio_p2p::Relay, version: &str) -> Vec<String> {
    let url = relay.url();
    let count = BURST.to_string();
    let (status, lines) = run_node(
        "ack-burst.js",
        &[&url, version, &count],
        Duration::from_secs(150),
        |l| println!("ack-burst.js v{version}: {l}"),
    )
    .await;
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "v{version}: {failed:?}");
    assert!(
        status.success(),
        "ack-burst.js v{version} exited with {status}"
    );
    assert_eq!(lines.last().map(String::as_str), Some("all checks passed"));
    lines
}

/// With the event rate unbounded, every one of the burst's operations is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledgement_of_a_burst_arrives() {
    let mut opts = RelayOptions::default();
    opts.server.max_events_per_sec = 1_000_000;
    opts.server.event_burst = 1_000_000;
    let relay = relay_with(opts).await;
    for version in ["2", "4"] {
        let lines = burst(&relay, version).await;
        let want = format!("ok acked {BURST} ");
        assert!(
            lines.iter().any(|l| l.starts_with(&want)),
            "v{version}: all {BURST} acknowledged: {lines:?}"
        );
    }
    assert_relay_works(&relay, "after-a", "after-b").await;
}

/// Under the default limits (a burst past the event rate's bucket), every operation is still
/// answered, with success or "busy", or the client is told why it is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_past_the_rate_limit_is_answered_or_told() {
    let relay = relay().await;
    for version in ["2", "4"] {
        burst(&relay, version).await;
    }
    assert_relay_works(&relay, "after-a", "after-b").await;
}

/// A client disconnected for flooding while it still sends: everything is answered, or it gets
/// the notice saying why before the connection ends (closing on a client that is still sending
/// resets the connection and throws away what it had not read, the notice included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooder_cut_off_mid_burst_hears_why() {
    let mut opts = RelayOptions::default();
    opts.server.max_events_per_sec = 100;
    opts.server.event_burst = 100;
    opts.server.flood_disconnect_after = 100;
    let relay = relay_with(opts).await;
    for version in ["2", "4"] {
        for _ in 0..3 {
            burst(&relay, version).await;
        }
    }
    assert_relay_works(&relay, "after-a", "after-b").await;
}
