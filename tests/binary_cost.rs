//! What one big binary attachment costs the relay: `socketio-p2p serve` in a child process,
//! socket.io-client 2 clients in Node (the seed-era clients that send binary attachments), and the
//! relay's peak resident memory (VmHWM) from `/proc`.
//!
//! Needs Node and `npm ci` in `interop/`, like the other JavaScript tests.

mod common;

use common::{spawn_serve, within};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

/// The attachment: 8 MiB.
const SIZE: u64 = 8 << 20;

/// How much the relay's peak resident memory may grow for one attachment, as a multiple of its
/// size. About 3 is what it costs: the WebSocket read buffer, socketioxide's copy of the attachment
/// when it parses it, its copy when it encodes the outgoing packet, then the write buffer of the
/// target's connection (the relay's own code copies none). A binary acknowledgement used to cost
/// some 38 (every byte became a JSON value on its way back).
const BOUND: u64 = 8;

/// The two clients: `tgt` and `snd`, both seed-era. Each line on stdin is a step; each line on
/// stdout an outcome.
const SCRIPT: &str = r#"
const io = require('socket.io-client');
const [url, size] = [process.argv[1], Number(process.argv[2])];
const opts = (id) => ({ transports: ['websocket'], forceNew: true, reconnection: false, query: { clientId: id } });
const tgt = io(url, opts('tgt'));
const snd = io(url, opts('snd'));
const same = (b, n) => Buffer.isBuffer(b) && b.length === n && b.every((x) => x === 7);
tgt.on('big', (from, data) => console.log(`event ${from} ${same(data, size)}`));
tgt.on('ask', (from, n, ack) => ack(Buffer.alloc(n, 7)));
snd.on('SERVER_ERROR', (m) => console.log(`error ${m}`));
snd.on('disconnect', () => console.log('sender closed'));
const ready = () => snd.emit('LIST_CLIENTS', (ids) => {
  if (ids.includes('tgt') && ids.includes('snd')) console.log('ready');
  else setTimeout(ready, 20);
});
let up = 0;
for (const s of [tgt, snd]) s.on('connect', () => { if (++up === 2) ready(); });
require('readline').createInterface({ input: process.stdin }).on('line', (step) => {
  if (step === 'event') {
    snd.emit('P2P_EMIT', { targetClientId: 'tgt', event: 'big', args: ['snd', Buffer.alloc(size, 7)] });
  } else if (step === 'ack') {
    snd.emit('P2P_EMIT_ACKNOWLEDGE', { targetClientId: 'tgt', event: 'ask', args: ['snd', size] },
      (answer) => console.log(`answer ${same(answer, size)}`));
  } else if (step === 'over') {
    snd.emit('P2P_EMIT', { targetClientId: 'tgt', event: 'big', args: ['snd', Buffer.alloc(3 * size, 7)] });
  } else {
    process.exit(0);
  }
});
"#;

/// `socketio-p2p serve` with an event limit above the attachment, and the two clients.
struct Setup {
    relay: Child,
    url: String,
    node: Child,
    steps: ChildStdin,
    outcomes: Lines<BufReader<ChildStdout>>,
}

impl Setup {
    async fn start() -> Setup {
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--port", "0", "--max-event-bytes"])
            .arg((2 * SIZE).to_string())
            .stderr(Stdio::null());
        let (relay, url, _) = spawn_serve(serve).await;
        let interop = concat!(env!("CARGO_MANIFEST_DIR"), "/interop");
        assert!(
            std::path::Path::new(interop)
                .join("node_modules/socket.io-client")
                .exists(),
            "interop/node_modules is missing: run `npm ci` in interop/"
        );
        let mut node = Command::new("node")
            .current_dir(interop)
            .args(["-e", SCRIPT, &url, &SIZE.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (install Node.js to run the JavaScript tests)");
        let steps = node.stdin.take().unwrap();
        let outcomes = BufReader::new(node.stdout.take().unwrap()).lines();
        let mut setup = Setup {
            relay,
            url,
            node,
            steps,
            outcomes,
        };
        assert_eq!(setup.next("the clients connect").await, "ready");
        setup
    }

    async fn next(&mut self, what: &str) -> String {
        tokio::time::timeout(Duration::from_secs(60), self.outcomes.next_line())
            .await
            .unwrap_or_else(|_| panic!("timed out: {what}"))
            .unwrap()
            .unwrap_or_else(|| panic!("node ended before: {what}"))
    }

    async fn step(&mut self, step: &str) {
        self.steps
            .write_all(format!("{step}\n").as_bytes())
            .await
            .unwrap();
    }

    /// The relay's peak resident memory so far, in bytes.
    fn peak(&self) -> u64 {
        let pid = self.relay.id().expect("the relay runs");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .expect("VmHWM in /proc/<pid>/status")
            * 1024
    }

    /// Runs `step` and returns its outcome and how much the relay's peak grew meanwhile.
    async fn measure(&mut self, step: &str) -> (String, u64) {
        let before = self.peak();
        self.step(step).await;
        let outcome = self.next(step).await;
        (outcome, self.peak().saturating_sub(before))
    }

    async fn stop(mut self) {
        self.step("end").await;
        let _ = within("node exits", self.node.wait()).await;
        let _ = self.relay.kill().await;
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_binary_event_costs_the_relay_about_its_size() {
    let mut s = Setup::start().await;
    let (outcome, grew) = s.measure("event").await;
    assert_eq!(
        outcome, "event snd true",
        "the target gets the 8 MiB as binary"
    );
    println!(
        "one 8 MiB binary event: the relay's peak grew {:.1} MiB",
        mib(grew)
    );
    assert!(
        grew <= BOUND * SIZE,
        "the relay's peak grew {:.1} MiB for one {} MiB attachment",
        mib(grew),
        mib(SIZE)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_binary_acknowledgement_costs_the_relay_about_its_size() {
    let mut s = Setup::start().await;
    let (outcome, grew) = s.measure("ack").await;
    assert_eq!(
        outcome, "answer true",
        "the sender gets the 8 MiB answer as binary"
    );
    println!(
        "one 8 MiB binary acknowledgement: the relay's peak grew {:.1} MiB",
        mib(grew)
    );
    assert!(
        grew <= BOUND * SIZE,
        "the relay's peak grew {:.1} MiB for one {} MiB attachment",
        mib(grew),
        mib(SIZE)
    );
    // A Rust caller gets a binary acknowledgement as bytes.
    let rust = socketio_p2p::P2pClient::connect(&s.url, "rust")
        .await
        .expect("a Rust client connects");
    let answer: Vec<u8> = within("the Rust caller's answer", rust.request("tgt", "ask", (5,)))
        .await
        .expect("the target answers");
    assert_eq!(answer, vec![7; 5]);
    s.stop().await;
}

/// Towards a Rust caller a binary acknowledgement becomes an array of byte values, written
/// straight from the bytes: about twice the size as text, encoded twice (socketioxide's packet,
/// the write buffer), never a JSON value per byte (some 64 bytes of the relay's memory each, as
/// it used to be).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_acknowledgement_to_a_rust_caller_is_not_made_of_json_values() {
    let s = Setup::start().await;
    let rust = socketio_p2p::ClientOptions {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let rust = socketio_p2p::P2pClient::connect_with(&s.url, "rust", rust)
        .await
        .expect("a Rust client connects");
    const N: u64 = 2 << 20;
    let before = s.peak();
    let answer: Vec<u8> = rust
        .request("tgt", "ask", (N,))
        .await
        .expect("the target answers");
    let grew = s.peak().saturating_sub(before);
    assert!(answer.len() as u64 == N && answer.iter().all(|b| *b == 7));
    println!(
        "one 2 MiB binary acknowledgement to a Rust caller: the relay's peak grew {:.1} MiB",
        mib(grew)
    );
    assert!(
        grew <= 2 * BOUND * N,
        "the relay's peak grew {:.1} MiB for a {} MiB answer",
        mib(grew),
        mib(N)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attachment_over_the_payload_cap_is_refused_unread() {
    let mut s = Setup::start().await;
    // 24 MiB, over the 16 MiB Engine.IO payload cap: the sender's connection is closed, and the
    // relay never holds the attachment.
    let (outcome, grew) = s.measure("over").await;
    assert_eq!(outcome, "sender closed");
    println!(
        "one 24 MiB attachment refused: the relay's peak grew {:.1} MiB",
        mib(grew)
    );
    assert!(grew < SIZE, "the relay's peak grew {:.1} MiB", mib(grew));
    s.stop().await;
}
