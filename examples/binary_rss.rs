//! Measures what one 8 MiB binary attachment costs the relay: a relay in this process (its limit
//! on one event raised to 16 MiB), a socket.io-client 2 sender, and a target in Node.
//!
//! `npm ci --prefix interop` once, then `cargo run --release --example binary_rss [ext] [read|ack]`.
//! `ext`: the target speaks the protocol extensions, so it gets the binary data as an array of
//! byte values. `read`: the target reads what it gets (by default its TCP socket stops reading, so
//! the relay holds the event). `ack`: the sender asks the target, which answers with the 8 MiB as
//! its acknowledgement. Prints this process's resident memory before, its peak while the event is
//! relayed, and the relay's account of the bytes queued towards the target.
//! `tests/binary_cost.rs` holds the relay to these figures.

use socketio_p2p::{Relay, RelayOptions, ServerOptions};
use std::time::Duration;

const SCRIPT: &str = r#"
const io = require('socket.io-client');
const [url, query, read] = process.argv.slice(1);
const t = io(url + '?clientId=slow' + query, { transports: ['websocket'], forceNew: true });
let sent = false;
t.on('connect', () => {
  if (read === '') t.io.engine.transport.ws._socket.pause();
  if (sent) return;
  sent = true;
  const s = io(url + '?clientId=snd', { transports: ['websocket'], forceNew: true });
  s.on('connect', () => {
    if (read === 'ack') {
      s.emit('P2P_EMIT_ACKNOWLEDGE', { targetClientId: 'slow', event: 'big', args: ['snd'] },
        (answer) => console.log('sender got an answer of', answer && answer.length, 'bytes'));
    } else {
      s.emit('P2P_EMIT', { targetClientId: 'slow', event: 'big', args: ['snd', Buffer.alloc(8 << 20, 7)] });
    }
    console.log('sent');
  });
  s.on('SERVER_ERROR', (m) => console.log('SERVER_ERROR', m));
});
t.on('big', (from, data) => {
  if (typeof data === 'function') data(Buffer.alloc(8 << 20, 7));
  else console.log('target got', data.length, 'bytes from', from);
});
t.on('P2P_REQ', () => {});
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ext = args.iter().any(|a| a == "ext");
    let read = args.iter().any(|a| a == "read");
    let ack = args.iter().any(|a| a == "ack");
    let target_query = if ext { "&p2pExt=1" } else { "" }.to_string();
    let opts = RelayOptions {
        server: ServerOptions {
            max_event_bytes: 16 << 20,
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    };
    let relay = Relay::bind_with("127.0.0.1:0", opts).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Reset the peak so that it covers the event only.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = status_mib("VmRSS:");
    let interop = concat!(env!("CARGO_MANIFEST_DIR"), "/interop");
    let mut node = tokio::process::Command::new("node")
        .current_dir(interop)
        .args(["-e", SCRIPT, &relay.url(), &target_query])
        .arg(match (ack, read) {
            (true, _) => "ack",
            (false, true) => "read",
            (false, false) => "",
        })
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
