//! Measures what one 8 MiB binary attachment costs the relay: a relay in this process, and a
//! socket.io-client 2 sender and a paused target (its TCP socket stops reading) in Node.
//!
//! `npm ci --prefix interop` once, then `cargo run --release --example binary_rss [ext]`. Prints this
//! process's resident memory before, its peak while the event is relayed, and the relay's account
//! of the bytes queued towards the target.

use socketio_p2p::Relay;
use std::time::Duration;

const SCRIPT: &str = r#"
const io = require('socket.io-client');
const url = process.argv[1];
const t = io(url + '?clientId=slow' + (process.argv[2] || ''), { transports: ['websocket'] });
t.on('connect', () => {
  t.io.engine.transport.ws._socket.pause();
  const s = io(url + '?clientId=snd', { transports: ['websocket'] });
  s.on('connect', () => {
    s.emit('P2P_EMIT', { targetClientId: 'slow', event: 'big', args: ['snd', Buffer.alloc(8 << 20, 7)] });
    console.log('sent');
  });
  s.on('SERVER_ERROR', (m) => console.log('SERVER_ERROR', m));
});
setTimeout(() => process.exit(0), 5000);
"#;

/// A field of `/proc/self/status`, in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `ext` as the first argument: the target speaks the protocol extensions, so it gets the
    // binary data as an array of byte values.
    let ext = std::env::args().nth(1).is_some_and(|a| a == "ext");
    let target_query = if ext { "&p2pExt=1" } else { "" }.to_string();
    let relay = Relay::bind("127.0.0.1:0").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Reset the peak so that it covers the event only.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_mib("VmRSS:");
    let interop = concat!(env!("CARGO_MANIFEST_DIR"), "/interop");
    let mut node = tokio::process::Command::new("node")
        .current_dir(interop)
        .args(["-e", SCRIPT, &relay.url(), &target_query])
        .spawn()?;
    let mut peak_queued = 0;
    let mut peak_rss: f64 = 0.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        peak_queued = peak_queued.max(relay.server().queued_bytes("slow").unwrap_or(0));
        peak_rss = peak_rss.max(status_mib("VmRSS:"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "relay RSS before {before:.1} MiB, peak {:.1} MiB (sampled {peak_rss:.1}), +{:.1} MiB; \
         queued towards the target at most {:.1} MiB",
        status_mib("VmHWM:"),
        status_mib("VmHWM:") - before,
        peak_queued as f64 / (1 << 20) as f64
    );
    node.wait().await?;
    relay.shutdown().await;
    Ok(())
}
