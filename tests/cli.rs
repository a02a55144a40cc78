//! The command-line tools end to end: `serve`, `recv` and `send` as separate processes.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

mod common;

use common::{bounded, path_str, sample, sha256_hex, spawn_serve, Proxy, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

/// `socketio-p2p serve` on a port the system picks; returns the process and its URL.
async fn serve() -> (Child, String) {
    serve_with(Stdio::null()).await
}

/// `serve` with its stderr where the caller says.
async fn serve_with(stderr: Stdio) -> (Child, String) {
    let mut serve = Command::new(BIN);
    serve.args(["serve", "--port", "0"]).stderr(stderr);
    let (child, url, _) = spawn_serve(serve).await;
    (child, url)
}

/// What a finished command printed.
struct Finished {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<String>,
}

impl Finished {
    fn stdout_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// A command whose output is collected in the background.
struct Running {
    child: Child,
    /// The pipe to its stdin, when started with empty stdin data: the test feeds it.
    stdin: Option<tokio::process::ChildStdin>,
    output: tokio::task::JoinHandle<(Vec<u8>, Vec<String>)>,
}

impl Running {
    /// Starts `socketio-p2p <args>`; with `ready`, waits until a stderr line starts with it.
    /// Empty `stdin` data leaves the pipe open in [`Running::stdin`].
    async fn start(args: &[&str], stdin: Option<Vec<u8>>, ready: Option<&str>) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the command starts");
        let mut held = None;
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            if data.is_empty() {
                held = Some(pipe);
            } else {
                tokio::spawn(async move {
                    let _ = pipe.write_all(&data).await;
                });
            }
        }
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        if let Some(ready) = ready {
            loop {
                let line = bounded("the command gets ready", stderr.next_line())
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("{args:?} ended early: {seen:?}"));
                let done = line.starts_with(ready);
                seen.push(line);
                if done {
                    break;
                }
            }
        }
        let mut stdout = child.stdout.take().unwrap();
        let output = tokio::spawn(async move {
            let mut out = Vec::new();
            let (_, _) = tokio::join!(stdout.read_to_end(&mut out), async {
                while let Ok(Some(line)) = stderr.next_line().await {
                    seen.push(line);
                }
            });
            (out, seen)
        });
        Running {
            child,
            stdin: held,
            output,
        }
    }

    async fn finish(mut self) -> Finished {
        drop(self.stdin.take());
        let status = bounded("the command ends", self.child.wait())
            .await
            .unwrap();
        let (stdout, stderr) = bounded("its output", self.output).await.unwrap();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

/// A file across two clients: both ends print the digest and `verified`; the copy is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_recv_move_a_file_and_verify_it() {
    let dir = TempDir::new("cli");
    let data = sample(5 * 1024 * 1024 + 77);
    let input = dir.0.join("input.bin");
    let output = dir.0.join("output.bin");
    std::fs::write(&input, &data).unwrap();
    let (_serve, url) = serve().await;

    let receiver = Running::start(
        &[
            "recv",
            "--server",
            &url,
            "--id",
            "bob",
            "--out",
            path_str(&output),
        ],
        None,
        Some("waiting for a file"),
    )
    .await;
    let sender = Running::start(
        &[
            "send",
            "--server",
            &url,
            "--id",
            "alice",
            "--to",
            "bob",
            path_str(&input),
        ],
        None,
        None,
    )
    .await;
    let sent = sender.finish().await;
    let received = receiver.finish().await;

    let expected = vec![
        format!("sha256 {}", sha256_hex(&data)),
        "verified".to_string(),
    ];
    assert!(sent.status.success(), "send failed: {:?}", sent.stderr);
    assert!(
        received.status.success(),
        "recv failed: {:?}",
        received.stderr
    );
    assert_eq!(sent.stdout_lines(), expected, "send's stdout");
    assert_eq!(received.stdout_lines(), expected, "recv's stdout");
    assert!(
        received
            .stderr
            .iter()
            .any(|l| l.contains("input.bin") && l.contains("'alice'")),
        "recv names the file and the sender: {:?}",
        received.stderr
    );
    let copy = std::fs::read(&output).unwrap();
    assert!(copy == data, "the copy differs from the original");
}

/// Data from stdin to stdout: stdout carries the bytes and nothing else; the verdict goes to
/// stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_to_stdout_keeps_stdout_clean() {
    let data = sample(3 * 1024 * 1024 + 5);
    let (_serve, url) = serve().await;
    let receiver = Running::start(
        &["recv", "--server", &url, "--id", "bob", "--out", "-"],
        None,
        Some("waiting for a file"),
    )
    .await;
    let sender = Running::start(
        &[
            "send", "--server", &url, "--id", "alice", "--to", "bob", "-",
        ],
        Some(data.clone()),
        None,
    )
    .await;
    let sent = sender.finish().await;
    let received = receiver.finish().await;
    assert!(sent.status.success(), "send failed: {:?}", sent.stderr);
    assert!(
        received.status.success(),
        "recv failed: {:?}",
        received.stderr
    );
    assert!(
        received.stdout == data,
        "stdout holds exactly the bytes sent"
    );
    let digest = format!("sha256 {}", sha256_hex(&data));
    assert!(received.stderr.contains(&digest), "{:?}", received.stderr);
    assert!(received.stderr.contains(&"verified".to_string()));
    assert_eq!(sent.stdout_lines(), vec![digest, "verified".to_string()]);
}

/// Sending to a client that is not connected fails with a clear message and a failure status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_an_absent_client_fails() {
    let dir = TempDir::new("cli-absent");
    let input = dir.0.join("input.bin");
    std::fs::write(&input, b"hello").unwrap();
    let (_serve, url) = serve().await;
    let sent = Running::start(
        &[
            "send",
            "--server",
            &url,
            "--id",
            "alice",
            "--to",
            "nobody",
            path_str(&input),
        ],
        None,
        None,
    )
    .await
    .finish()
    .await;
    assert!(!sent.status.success());
    assert!(sent.stdout.is_empty(), "nothing on stdout");
    let text = sent.stderr.join("\n");
    assert!(
        text.contains("'nobody'") && text.contains("error"),
        "{text}"
    );
}

/// Sends a signal to a process with the `kill` command.
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// `serve`'s log on a pipe: no colour codes, no WARN lines when clients that talked to each other
/// disconnect normally; SIGTERM shuts it down gracefully (its shutdown line, exit status 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_plainly_and_stops_on_sigterm() {
    let (mut serve, url) = serve_with(Stdio::piped()).await;
    let mut stderr = serve.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut out = Vec::new();
        let _ = stderr.read_to_end(&mut out).await;
        out
    });
    const N: usize = 40;
    let mut clients = Vec::new();
    for i in 0..N {
        let c = bounded(
            "a client connects",
            socketio_p2p::P2pClient::connect(&url, &format!("c{i}")),
        )
        .await
        .expect("connects");
        clients.push(c);
    }
    for (i, c) in clients.iter().enumerate() {
        for k in 1..=5 {
            let _ = c.emit_to(&format!("c{}", (i + k) % N), "hi", (i,)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in &clients {
        let _ = c.disconnect().await;
    }
    drop(clients);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = std::time::Instant::now();
    signal(serve.id().expect("a pid"), "-TERM");
    let status = tokio::time::timeout(Duration::from_secs(10), serve.wait())
        .await
        .expect("serve ends within 10 s of SIGTERM")
        .unwrap();
    let log = bounded("serve's log", log).await.unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(
        status.success(),
        "serve exits 0 on SIGTERM: {status:?}\n{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!log.contains(&0x1b), "no ANSI escapes on a pipe:\n{text}");
    assert!(text.contains("shutting down"), "the shutdown line:\n{text}");
    let warns: Vec<_> = text.lines().filter(|l| l.contains(" WARN ")).collect();
    assert!(
        warns.is_empty(),
        "normal disconnects log no WARN: {warns:#?}"
    );
}

/// The names in a directory.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits until a `.part` file in `dir` holds at least `len` bytes.
async fn part_file_reaches(dir: &Path, len: u64) {
    bounded("a partly received file", async {
        loop {
            let grown = std::fs::read_dir(dir).unwrap().any(|e| {
                let e = e.unwrap();
                e.file_name().to_string_lossy().ends_with(".part")
                    && e.metadata().is_ok_and(|m| m.len() >= len)
            });
            if grown {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// `recv --out <dir>/output.bin` waiting for a file.
async fn receiver_into(url: &str, output: &Path, extra: &[&str]) -> Running {
    let mut args = vec![
        "recv",
        "--server",
        url,
        "--id",
        "bob",
        "--out",
        path_str(output),
    ];
    args.extend_from_slice(extra);
    Running::start(&args, None, Some("waiting for a file")).await
}

/// `send` from 'alice' to 'bob' reading its standard input, which the caller writes and closes.
async fn send_stdin_to_bob(url: &str) -> (Running, tokio::process::ChildStdin) {
    let mut sender = Running::start(
        &["send", "--server", url, "--id", "alice", "--to", "bob", "-"],
        Some(Vec::new()),
        None,
    )
    .await;
    let pipe = sender.stdin.take().unwrap();
    (sender, pipe)
}

/// A receiver killed with SIGKILL mid-transfer leaves no file under the final name; the sender
/// fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_receiver_leaves_no_final_file() {
    let dir = TempDir::new("cli-kill");
    let output = dir.0.join("output.bin");
    let (_serve, url) = serve().await;
    let receiver = receiver_into(&url, &output, &[]).await;
    let (sender, mut pipe) = send_stdin_to_bob(&url).await;
    pipe.write_all(&sample(1024 * 1024)).await.unwrap();
    part_file_reaches(&dir.0, 1).await;
    signal(receiver.child.id().unwrap(), "-KILL");
    let killed = receiver.finish().await;
    assert!(!killed.status.success());
    // The sender learns of it on its next writes.
    let _ = pipe.write_all(&sample(4 * 1024 * 1024)).await;
    drop(pipe);
    let sent = sender.finish().await;
    assert!(!sent.status.success(), "send fails: {:?}", sent.stderr);
    assert!(!output.exists(), "no final file: {:?}", names_in(&dir.0));
}

/// A sender killed mid-transfer makes the receiver fail, and it removes its temporary file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_receive_leaves_no_file() {
    let dir = TempDir::new("cli-fail");
    let output = dir.0.join("output.bin");
    let (_serve, url) = serve().await;
    let receiver = receiver_into(&url, &output, &[]).await;
    let (sender, mut pipe) = send_stdin_to_bob(&url).await;
    pipe.write_all(&sample(1024 * 1024)).await.unwrap();
    part_file_reaches(&dir.0, 1).await;
    signal(sender.child.id().unwrap(), "-KILL");
    let _ = sender.finish().await;
    let received = receiver.finish().await;
    assert!(!received.status.success(), "recv fails");
    assert!(
        names_in(&dir.0).is_empty(),
        "neither the file nor a temporary one: {:?}",
        names_in(&dir.0)
    );
}

/// A sender whose digest does not match what arrived: the receiver reports the mismatch and
/// leaves no file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_leaves_no_file() {
    let dir = TempDir::new("cli-mismatch");
    let output = dir.0.join("output.bin");
    let (_serve, url) = serve().await;
    let receiver = receiver_into(&url, &output, &[]).await;
    let data = sample(100_000);
    let alice = socketio_p2p::P2pClient::connect(&url, "alice")
        .await
        .unwrap();
    let opts = socketio_p2p::StreamOptions {
        channel: Some("file".into()),
        args: serde_json::json!({"name": "x.bin", "size": data.len()}),
        ..socketio_p2p::StreamOptions::default()
    };
    let mut duplex = alice.add_p2p_stream_with("bob", opts).await.unwrap();
    duplex.write_all(&data).await.unwrap();
    duplex.shutdown().await.unwrap();
    let mut answer = Vec::new();
    bounded("the receiver's digest", duplex.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&answer).trim_end(),
        format!("sha256 {}", sha256_hex(&data))
    );
    let wrong = sha256_hex(b"something else");
    let same: bool = bounded(
        "the receiver's verdict",
        alice.request("bob", "FILE_SHA256", (wrong,)),
    )
    .await
    .unwrap();
    assert!(!same);
    let _ = alice.disconnect().await;
    let received = receiver.finish().await;
    assert!(!received.status.success(), "recv fails");
    assert!(
        received.stderr.iter().any(|l| l.contains("mismatch")),
        "{:?}",
        received.stderr
    );
    assert!(
        names_in(&dir.0).is_empty(),
        "neither the file nor a temporary one: {:?}",
        names_in(&dir.0)
    );
}

/// A stopped receiver (SIGSTOP) makes the sender fail within its stall timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_receiver_fails_the_sender_within_the_stall_timeout() {
    let dir = TempDir::new("cli-stall");
    let input = dir.0.join("input.bin");
    std::fs::write(&input, sample(32 * 1024 * 1024)).unwrap();
    let output = dir.0.join("output.bin");
    let (_serve, url) = serve().await;
    let receiver = receiver_into(&url, &output, &[]).await;
    let sender = Running::start(
        &[
            "send",
            "--server",
            &url,
            "--id",
            "alice",
            "--to",
            "bob",
            "--stall-timeout",
            "2",
            path_str(&input),
        ],
        None,
        None,
    )
    .await;
    part_file_reaches(&dir.0, 0).await;
    let pid = receiver.child.id().unwrap();
    signal(pid, "-STOP");
    let stopped = std::time::Instant::now();
    let sent = sender.finish().await;
    let took = stopped.elapsed();
    signal(pid, "-CONT");
    drop(receiver);
    assert!(!sent.status.success(), "send fails: {:?}", sent.stderr);
    let text = sent.stderr.join("\n");
    assert!(text.contains("no progress"), "{text}");
    assert!(took < Duration::from_secs(30), "failed after {took:?}");
    assert!(!output.exists());
}

/// A proxy in front of the relay at `url`.
async fn proxy_to(url: &str) -> Proxy {
    let addr = url
        .trim_start_matches("http://")
        .parse()
        .expect("serve announces a host:port URL");
    Proxy::start(addr).await
}

/// Cuts the links a proxy carries and keeps them down for a moment (within the relay's grace
/// period of 10 s).
async fn cut_for_a_moment(proxy: &Proxy) {
    proxy.refuse(true);
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(500)).await;
    proxy.refuse(false);
}

/// The sender's and then the receiver's link is cut mid-transfer (the TCP connections killed,
/// both processes alive): each reconnects, says so, and the transfer completes with matching
/// digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_recv_ride_through_cut_links() {
    let dir = TempDir::new("cli-cut");
    let output = dir.0.join("output.bin");
    let (_serve, url) = serve().await;
    let (to_receiver, to_sender) = (proxy_to(&url).await, proxy_to(&url).await);
    let receiver = receiver_into(&to_receiver.url(), &output, &[]).await;
    let (sender, mut pipe) = send_stdin_to_bob(&to_sender.url()).await;
    let data = sample(12 * 1024 * 1024 + 3);
    let (first, rest) = data.split_at(3 * 1024 * 1024);
    let (second, third) = rest.split_at(4 * 1024 * 1024);

    let mut fed = pipe.write_all(first).await.is_ok();
    part_file_reaches(&dir.0, 1024 * 1024).await;
    cut_for_a_moment(&to_sender).await;
    fed = fed && pipe.write_all(second).await.is_ok();
    if fed {
        part_file_reaches(&dir.0, 5 * 1024 * 1024).await;
        cut_for_a_moment(&to_receiver).await;
        fed = pipe.write_all(third).await.is_ok();
    }
    drop(pipe);

    let sent = sender.finish().await;
    assert!(fed, "send stopped reading its input: {:?}", sent.stderr);
    let received = receiver.finish().await;
    assert!(sent.status.success(), "send failed: {:?}", sent.stderr);
    assert!(
        received.status.success(),
        "recv failed: {:?}",
        received.stderr
    );
    let expected = vec![
        format!("sha256 {}", sha256_hex(&data)),
        "verified".to_string(),
    ];
    assert_eq!(sent.stdout_lines(), expected, "send's stdout");
    assert_eq!(received.stdout_lines(), expected, "recv's stdout");
    for (who, stderr) in [("send", &sent.stderr), ("recv", &received.stderr)] {
        assert!(
            stderr.iter().any(|l| l.contains("reconnecting")),
            "{who} says it is reconnecting: {stderr:?}"
        );
        assert!(
            stderr.iter().any(|l| l == "reconnected"),
            "{who} says it is back: {stderr:?}"
        );
    }
    assert!(std::fs::read(&output).unwrap() == data, "the copy differs");
}
