//! The relay's containment seen from real JavaScript clients, socket.io-client 2.x and 4.x (the
//! scripts in `interop/`, each run once per version): reserved event names never reach a
//! receiver on any delivery path, refused acknowledged requests are acknowledged with the error,
//! and random events from both versions leave the relay working and unharmed.

mod common;
use common::*;
use socketio_p2p::{Error, RelayOptions};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

/// The names the relay refuses to deliver (PROTOCOL.md, section 3), as `reserved-names.js` has
/// them.
const RESERVED: &[&str] = &[
    "connect",
    "connect_error",
    "connect_timeout",
    "connecting",
    "disconnect",
    "disconnecting",
    "error",
    "newListener",
    "removeListener",
    "reconnect",
    "reconnect_attempt",
    "reconnect_error",
    "reconnect_failed",
    "reconnecting",
    "open",
    "close",
    "message",
    "JOIN_ROOM",
    "LEAVE_ROOM",
    "EMIT_ROOM",
    "LIST_CLIENTS",
    "P2P_EMIT",
    "P2P_EMIT_ACKNOWLEDGE",
    "MULTI_API_ADD_TARGET",
    "MULTI_API_TARGET_DISCONNECT",
    "MULTI_API_CREATE_STREAM",
    "SERVER_ERROR",
    "P2P_REQ",
    "P2P_RES",
    "P2P_WELCOME",
    "P2P_BATCH",
    "P2P_FRAME",
    "P2P_ROOM",
];

/// Runs `node <script> <url> <version> <extra...>`, printing its lines; `on_line` sees each.
/// Returns its lines once it exited, after checking that it passed at least `min_ok` checks and
/// failed none.
async fn run_script(
    script: &str,
    url: &str,
    version: &str,
    extra: &[&str],
    min_ok: usize,
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> Vec<String> {
    let label = format!("{script} v{version}");
    let mut args = vec![url, version];
    args.extend_from_slice(extra);
    let (status, lines) = run_node(script, &args, Duration::from_secs(180), |l| {
        println!("{label}: {l}");
        on_line(l);
    })
    .await;
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "{label}: {failed:?}");
    assert!(status.success(), "{label} exited with {status}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("all checks passed")),
        "{label} did not finish: {lines:?}"
    );
    let passed = lines.iter().filter(|l| l.starts_with("ok ")).count();
    assert!(passed >= min_ok, "{label}: only {passed} checks");
    lines
}

/// Whether `e` is the refusal of the reserved event name `name`.
fn says_reserved(e: &Error, name: &str) -> bool {
    matches!(e, Error::BadRequest(t) if t.contains("reserved") && t.contains(name))
}

/// The JavaScript victims of `version` (and its senders) run `reserved-names.js`; once they are
/// ready, the Rust side tries every reserved name through a server service's `emit_client`, the
/// server's own `emit_to` and `request`, and a Rust client's `emit_to` (all refused before
/// anything is sent), then sends the three control messages the victims wait for.
async fn reserved_names_never_reach(version: &'static str) {
    let relay = relay().await;
    let jobs = relay.server().as_service("jobs");
    let rust = client(&relay, "rust-peer").await;
    let url = relay.url();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let mut ready_tx = Some(ready_tx);
    let node = tokio::spawn(async move {
        run_script("reserved-names.js", &url, version, &[], 12, move |l| {
            if l == "READY" {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            }
        })
        .await
    });
    tokio::time::timeout(Duration::from_secs(60), ready_rx)
        .await
        .expect("the JavaScript clients get ready")
        .expect("the script prints READY");

    // Refusals the Rust side did not get; checked once the script has finished, so that its
    // report shows what the victims saw either way.
    let mut wrong = Vec::new();
    let victims = [
        format!("v{version}-victim-a"),
        format!("v{version}-victim-b"),
    ];
    for victim in &victims {
        for name in RESERVED {
            match jobs.emit_client(victim, name, ("x",)) {
                Err(e) if says_reserved(&e, name) => {}
                other => wrong.push(format!("jobs.emit_client({victim}, {name}): {other:?}")),
            }
            match relay.server().emit_to(victim, name, ("x",)) {
                Err(e) if says_reserved(&e, name) => {}
                other => wrong.push(format!("server.emit_to({victim}, {name}): {other:?}")),
            }
            // Bounded, in case it is sent after all and the victim never answers.
            let asked = relay
                .server()
                .request::<serde_json::Value>(victim, name, ("x",))
                .timeout(Duration::from_secs(1));
            match asked.await {
                Err(e) if says_reserved(&e, name) => {}
                other => wrong.push(format!("server.request({victim}, {name}): {other:?}")),
            }
            match rust.emit_to(victim, name, ("x",)).await {
                Err(e) if says_reserved(&e, name) => {}
                other => wrong.push(format!("rust-peer.emit_to({victim}, {name}): {other:?}")),
            }
        }
    }
    for victim in &victims {
        jobs.emit_client(victim, "control-service", ("after",))
            .expect("an ordinary service event is sent");
        rust.emit_to(victim, "control-rust", ("after",))
            .await
            .expect("an ordinary message is sent");
        relay
            .server()
            .emit_to(victim, "control-server", ("after",))
            .expect("an ordinary server event is sent");
    }
    let script = node.await;
    assert!(wrong.is_empty(), "not refused: {wrong:#?}");
    if let Err(e) = script {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_never_reach_socket_io_2_receivers() {
    reserved_names_never_reach("2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_names_never_reach_socket_io_4_receivers() {
    reserved_names_never_reach("4").await;
}

/// A relay as `refused-acks.js` expects it: small limits and a short reply timeout, and a
/// server-provided service `jobs`.
async fn refused_acks_are_answered(version: &'static str) {
    let mut opts = RelayOptions::default();
    opts.server.max_event_bytes = 65536;
    opts.server.max_pending_per_caller = 2;
    opts.server.max_rooms_per_client = 2;
    opts.server.reply_timeout = Duration::from_secs(2);
    let relay = relay_with(opts).await;
    let _jobs = relay.server().as_service("jobs");
    run_script("refused-acks.js", &relay.url(), version, &[], 20, |_| {}).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_of_socket_io_2_clients_are_acknowledged() {
    refused_acks_are_answered("2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_of_socket_io_4_clients_are_acknowledged() {
    refused_acks_are_answered("4").await;
}

/// `socketio-p2p serve` as a child process on a port the system picks, with its stderr kept: a
/// panic anywhere in the relay shows there even when the process lives on.
struct ServeProcess {
    child: Child,
    url: String,
    stderr: tokio::task::JoinHandle<String>,
}

impl ServeProcess {
    async fn start(extra: &[&str]) -> ServeProcess {
        // Only with the default `cli` feature is there a command to run.
        let Some(bin) = option_env!("CARGO_BIN_EXE_socketio-p2p") else {
            panic!("the socketio-p2p command is not built: build with the default `cli` feature");
        };
        let mut serve = Command::new(bin);
        serve
            .args(["serve", "--port", "0"])
            .args(extra)
            .env("RUST_BACKTRACE", "1")
            .stderr(Stdio::piped());
        let (mut child, url, mut stdout) = spawn_serve(serve).await;
        // Whatever else it prints is read, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text).await;
            text
        });
        ServeProcess { child, url, stderr }
    }

    /// The peak resident memory of the process so far, from /proc (Linux), in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Asks the relay to shut down (SIGTERM) and returns its exit status and everything it wrote
    /// to stderr.
    async fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("the relay is still running");
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM to the relay");
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the relay shuts down on SIGTERM")
            .expect("wait for the relay");
        let stderr = tokio::time::timeout(Duration::from_secs(5), self.stderr)
            .await
            .expect("the relay's stderr ends")
            .expect("stderr reader");
        (status, stderr)
    }
}

/// Clients of socket.io-client 2 and 4 (`wire-fuzz.js`, one run per version, both at once) send a
/// few thousand random events each at a relay running as its own process; their own checks
/// (nobody dropped without a reason, the listener still reached) must pass. Afterwards the relay
/// still runs, two fresh Rust clients exchange a message and a reply through it, and it shuts
/// down cleanly with no panic in its output. `FUZZ_SEED=<n>` repeats a run (each script prints
/// the seed it used).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_events_from_socket_io_2_and_4_clients_leave_the_relay_working() {
    let mut relay = ServeProcess::start(&["--reply-timeout", "2"]).await;
    let seed = std::env::var("FUZZ_SEED").ok();
    let extra: Vec<String> = seed.into_iter().collect();
    let (v2, v4) = {
        let (url, extra2, extra4) = (relay.url.clone(), extra.clone(), extra.clone());
        let url2 = url.clone();
        tokio::join!(
            tokio::spawn(async move {
                let extra: Vec<&str> = extra2.iter().map(String::as_str).collect();
                run_script("wire-fuzz.js", &url2, "2", &extra, 4, |_| {}).await
            }),
            tokio::spawn(async move {
                let extra: Vec<&str> = extra4.iter().map(String::as_str).collect();
                run_script("wire-fuzz.js", &url, "4", &extra, 4, |_| {}).await
            }),
        )
    };
    let alive = relay.child.try_wait().expect("the relay's state").is_none();
    // The checks below run whatever the scripts said, so that a failure shows what the relay
    // itself went through.
    let control = if alive {
        let url = relay.url.clone();
        Some(
            tokio::spawn(
                async move { assert_relay_works_at(&url, "control-a", "control-b").await },
            )
            .await,
        )
    } else {
        None
    };
    let peak = relay.peak_rss_kib();
    eprintln!("relay peak resident memory: {peak:?} KiB");
    let (status, stderr) = relay.stop().await;
    let panics: Vec<_> = stderr.lines().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "the relay panicked: {panics:#?}");
    assert!(
        alive,
        "the relay process exited during the fuzzing: {stderr}"
    );
    for run in [v2, v4] {
        match run {
            Ok(lines) => assert!(
                lines.iter().any(|l| l.starts_with("sent ")),
                "no summary: {lines:?}"
            ),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    if let Some(Err(e)) = control {
        std::panic::resume_unwind(e.into_panic());
    }
    if let Some(kib) = peak {
        assert!(kib < 1 << 20, "the relay grew to {kib} KiB");
    }
    assert!(status.success(), "the relay exited with {status}: {stderr}");
}
