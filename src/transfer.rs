//! `socketio-p2p send` and `socketio-p2p recv`: one file from one client to another through the
//! relay, checked with SHA-256 at both ends.
//!
//! The exchange:
//! 1. The sender opens a stream to the receiver on channel [`CHANNEL`], with the arguments
//!    `{"name": <file name>, "size": <bytes>}` (each left out when unknown, e.g. for stdin).
//! 2. It writes the bytes and shuts its direction down; the receiver reads to EOF.
//! 3. The receiver answers on the other direction with `sha256 <hex>\n` and ends it; the sender
//!    compares that with its own digest.
//! 4. The sender sends its digest as a request ([`DIGEST_EVENT`]); the receiver compares and
//!    replies `true` or `false`, so each end reports a verdict of its own.
//!
//! Hashing runs on a blocking thread beside the copy, so it overlaps with the network.
//!
//! The receiver writes into a temporary file beside the target (`.<name>.<pid>.part`) and gives
//! it the final name only once both digests agree: a receiver that fails removes it, and one that
//! is killed leaves at most that temporary file, never a partial file under the final name.
//! Either end fails when the other makes no progress for the stall timeout.
//!
//! A cut link does not end a transfer: the client connects again, and when the relay resumes its
//! session the stream goes on where it was (both ends print `link to the relay lost;
//! reconnecting` and then `reconnected`). If the session is not resumed, the stream fails and so
//! does the transfer.

use bytes::{Bytes, BytesMut};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use socketio_p2p::{ConnectionState, P2pClient, P2pDuplex, StreamOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// What a sender says of its file in the stream's opening arguments.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct FileHeader {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

/// Stream channel of file transfers.
pub const CHANNEL: &str = "file";
/// Event of the sender's digest, sent as a request after the stream.
pub const DIGEST_EVENT: &str = "FILE_SHA256";
/// Bytes read or written at once.
const CHUNK: usize = 256 * 1024;

/// Any failure, as a message for the user.
pub type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// What `send` was asked to do.
pub struct SendArgs {
    /// Relay URL.
    pub server: String,
    /// This client's id.
    pub id: String,
    /// The receiver's id.
    pub to: String,
    /// The file, or `-` for stdin.
    pub file: PathBuf,
    /// How long the transfer may make no progress before it fails.
    pub stall_timeout: Duration,
    /// The token proving `id` to a relay with authentication on.
    pub token: Option<String>,
    /// A CA certificate (PEM file) to trust for an `https://` relay.
    pub ca_cert: Option<PathBuf>,
}

/// What `recv` was asked to do.
pub struct RecvArgs {
    /// Relay URL.
    pub server: String,
    /// This client's id.
    pub id: String,
    /// Where to write: a path, `-` for stdout, or `None` for the sender's file name in the
    /// current directory (never overwriting a file).
    pub out: Option<PathBuf>,
    /// How long the transfer may make no progress before it fails.
    pub stall_timeout: Duration,
    /// The token proving `id` to a relay with authentication on.
    pub token: Option<String>,
    /// A CA certificate (PEM file) to trust for an `https://` relay.
    pub ca_cert: Option<PathBuf>,
}

/// `what` within the stall timeout, or an error saying what stalled.
async fn unstalled<T, E: std::fmt::Display>(
    stall: Duration,
    what: impl FnOnce() -> String,
    f: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<T> {
    match tokio::time::timeout(stall, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{} failed: {e}", what()).into()),
        Err(_) => Err(format!("{} made no progress for {stall:?}", what()).into()),
    }
}

/// A temporary file that is removed when dropped unless it was given its final name.
struct PartFile {
    path: Option<PathBuf>,
}

impl PartFile {
    /// Creates `.<name>.<pid>.part` beside `target`.
    async fn create(target: &Path) -> Result<(PartFile, tokio::fs::File)> {
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "received".into());
        let part = target.with_file_name(format!(".{name}.{}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&part)
            .await
            .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
        Ok((PartFile { path: Some(part) }, file))
    }

    /// Gives the file its final name; with `overwrite` false, an existing file there is kept and
    /// this fails.
    fn persist(mut self, target: &Path, overwrite: bool) -> Result<()> {
        let part = self.path.clone().expect("not yet persisted");
        if overwrite {
            std::fs::rename(&part, target)
        } else {
            // A hard link never replaces an existing file; where links are not supported, check
            // first and rename.
            match std::fs::hard_link(&part, target) {
                Ok(()) => std::fs::remove_file(&part),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
                Err(_) if target.exists() => Err(std::io::ErrorKind::AlreadyExists.into()),
                Err(_) => std::fs::rename(&part, target),
            }
        }
        .map_err(|e| format!("cannot name the file {}: {e}", target.display()))?;
        self.path = None;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// SHA-256 computed on a blocking thread from chunks handed over by the copy loop.
struct Hasher {
    tx: mpsc::Sender<Bytes>,
    task: tokio::task::JoinHandle<String>,
}

impl Hasher {
    fn new() -> Hasher {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let task = tokio::task::spawn_blocking(move || {
            let mut h = Sha256::new();
            while let Some(b) = rx.blocking_recv() {
                h.update(&b);
            }
            hex::encode(h.finalize())
        });
        Hasher { tx, task }
    }

    async fn update(&self, b: Bytes) -> Result<()> {
        self.tx
            .send(b)
            .await
            .map_err(|_| "the hashing thread stopped".into())
    }

    async fn finish(self) -> Result<String> {
        drop(self.tx);
        Ok(self.task.await?)
    }
}

/// The progress bar on screen, if any: a note about the link is printed above it.
type BarSlot = Arc<Mutex<Option<ProgressBar>>>;

/// Prints `line` on stderr, above the progress bar when one is drawn.
fn note(slot: &BarSlot, line: &str) {
    match &*slot.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(bar) => bar.println(line),
        None => eprintln!("{line}"),
    }
}

/// Tells the user when the client's link to the relay drops and when it is back, until the
/// returned task is aborted.
fn watch_link(client: &P2pClient, slot: BarSlot) -> tokio::task::JoinHandle<()> {
    let mut state = client.state();
    tokio::spawn(async move {
        let mut lost = false;
        while state.changed().await.is_ok() {
            let now = *state.borrow_and_update();
            match now {
                ConnectionState::Reconnecting if !lost => {
                    lost = true;
                    note(&slot, "link to the relay lost; reconnecting");
                }
                ConnectionState::Connected => {
                    // A change to Connected follows a loss, even one too short to be seen.
                    if !lost {
                        note(&slot, "link to the relay lost; reconnecting");
                    }
                    lost = false;
                    note(&slot, "reconnected");
                }
                ConnectionState::Closed => break,
                _ => {}
            }
        }
    })
}

/// Progress on stderr: a bar on a terminal, a plain line a second otherwise.
enum Progress {
    Bar(ProgressBar, &'static str, Instant),
    Plain {
        verb: &'static str,
        total: Option<u64>,
        start: Instant,
        last: Instant,
    },
}

impl Progress {
    fn new(verb: &'static str, total: Option<u64>, slot: &BarSlot) -> Progress {
        let start = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Progress::Plain {
                verb,
                total,
                start,
                last: start,
            };
        }
        let (bar, template) = match total {
            Some(n) => (
                ProgressBar::new(n),
                "{spinner} {bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} eta {eta}",
            ),
            None => (
                ProgressBar::no_length(),
                "{spinner} {bytes} {binary_bytes_per_sec} {elapsed}",
            ),
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
        Progress::Bar(bar, verb, start)
    }

    fn set(&mut self, done: u64) {
        match self {
            Progress::Bar(bar, _, _) => bar.set_position(done),
            Progress::Plain {
                verb,
                total,
                start,
                last,
            } => {
                if last.elapsed() >= Duration::from_secs(1) {
                    *last = Instant::now();
                    let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
                    match total {
                        Some(t) if *t > 0 => eprintln!(
                            "{verb} {} of {} ({}%), {}/s",
                            HumanBytes(done),
                            HumanBytes(*t),
                            done * 100 / *t,
                            HumanBytes(rate as u64)
                        ),
                        _ => {
                            eprintln!("{verb} {}, {}/s", HumanBytes(done), HumanBytes(rate as u64))
                        }
                    }
                }
            }
        }
    }

    fn finish(self, done: u64) {
        let (verb, start) = match self {
            Progress::Bar(bar, verb, start) => {
                bar.finish_and_clear();
                (verb, start)
            }
            Progress::Plain { verb, start, .. } => (verb, start),
        };
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "{verb} {} ({done} bytes) in {secs:.2} s, {:.1} MB/s",
            HumanBytes(done),
            done as f64 / 1e6 / secs.max(1e-9)
        );
    }
}

async fn connect(
    server: &str,
    id: &str,
    token: Option<String>,
    ca_cert: Option<&std::path::Path>,
) -> Result<P2pClient> {
    let mut opts = socketio_p2p::ClientOptions {
        token,
        ..Default::default()
    };
    if let Some(path) = ca_cert {
        opts = opts.with_ca_cert_file(path)?;
    }
    // The error names the relay and keeps its cause, which the command prints.
    Ok(P2pClient::connect_with(server, id, opts).await?)
}

fn is_dash(p: &Path) -> bool {
    p.as_os_str() == "-"
}

/// Sends a file; returns once both ends verified the SHA-256.
pub async fn send(a: SendArgs) -> Result<()> {
    let (mut input, name, size): (
        Box<dyn AsyncRead + Unpin + Send>,
        Option<String>,
        Option<u64>,
    ) = if is_dash(&a.file) {
        (Box::new(tokio::io::stdin()), None, None)
    } else {
        let f = tokio::fs::File::open(&a.file)
            .await
            .map_err(|e| format!("cannot open {}: {e}", a.file.display()))?;
        let meta = f.metadata().await?;
        let name = a.file.file_name().map(|n| n.to_string_lossy().into_owned());
        let size = meta.is_file().then_some(meta.len());
        (Box::new(f), name, size)
    };
    let client = connect(&a.server, &a.id, a.token.clone(), a.ca_cert.as_deref()).await?;
    let slot = BarSlot::default();
    let watcher = watch_link(&client, slot.clone());
    let sent = send_on(&client, &a, &mut input, name, size, &slot).await;
    watcher.abort();
    let _ = client.disconnect().await;
    sent
}

/// The sending side of a transfer, once connected.
async fn send_on(
    client: &P2pClient,
    a: &SendArgs,
    input: &mut (dyn AsyncRead + Unpin + Send),
    name: Option<String>,
    size: Option<u64>,
    slot: &BarSlot,
) -> Result<()> {
    let header = FileHeader {
        name: name.clone(),
        size,
    };
    let opts = StreamOptions {
        channel: Some(CHANNEL.into()),
        args: serde_json::to_value(&header)?,
        ..StreamOptions::default()
    };
    let mut duplex = client
        .add_p2p_stream_with(&a.to, opts)
        .await
        .map_err(|e| format!("cannot open a stream to '{}': {e}", a.to))?;
    eprintln!(
        "sending {} ({}) to '{}'",
        name.as_deref().unwrap_or("stdin"),
        size.map_or("size unknown".to_string(), |s| HumanBytes(s).to_string()),
        a.to
    );

    let mut progress = Progress::new("sent", size, slot);
    let hasher = Hasher::new();
    let mut total = 0u64;
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = input
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("reading the input failed after {total} bytes: {e}"))?;
        if n == 0 {
            break;
        }
        let chunk = buf.freeze();
        hasher.update(chunk.clone()).await?;
        unstalled(
            a.stall_timeout,
            || format!("sending to '{}' after {total} bytes", a.to),
            duplex.write_all(&chunk),
        )
        .await?;
        total += n as u64;
        progress.set(total);
    }
    unstalled(
        a.stall_timeout,
        || format!("ending the stream to '{}'", a.to),
        duplex.shutdown(),
    )
    .await?;
    progress.finish(total);
    let own = hasher.finish().await?;

    // The receiver answers once it has read and stored everything: no progress for the stall
    // timeout means it stopped.
    let theirs = read_digest(&mut duplex, &a.to, a.stall_timeout).await?;
    let confirmed: bool = unstalled(
        a.stall_timeout,
        || format!("'{}' confirming the digest", a.to),
        client.request(&a.to, DIGEST_EVENT, (own.clone(),)),
    )
    .await?;
    println!("sha256 {own}");
    if theirs != own {
        return Err(format!("SHA-256 mismatch: '{}' received sha256 {theirs}", a.to).into());
    }
    if !confirmed {
        return Err(format!("'{}' reports a SHA-256 mismatch", a.to).into());
    }
    println!("verified");
    Ok(())
}

/// Reads the receiver's `sha256 <hex>` line (the rest of the stream).
async fn read_digest(duplex: &mut P2pDuplex, peer: &str, wait: Duration) -> Result<String> {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(wait, duplex.take(256).read_to_end(&mut answer)).await;
    match read {
        Err(_) => return Err(format!("no digest from '{peer}' within {wait:?}").into()),
        Ok(Err(e)) => return Err(format!("reading the digest from '{peer}' failed: {e}").into()),
        Ok(Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&answer);
    match text.trim_end().strip_prefix("sha256 ") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_ascii_lowercase())
        }
        _ => Err(format!("'{peer}' answered {text:?} instead of a digest").into()),
    }
}

/// The file name the sender announced, reduced to a plain name in the current directory.
fn safe_name(announced: Option<&str>) -> PathBuf {
    let name = announced
        .and_then(|n| Path::new(n).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| !n.is_empty() && n != "." && n != "..");
    PathBuf::from(name.unwrap_or_else(|| "received.bin".into()))
}

/// Receives one file; returns once both ends verified the SHA-256.
pub async fn recv(a: RecvArgs) -> Result<()> {
    let client = connect(&a.server, &a.id, a.token.clone(), a.ca_cert.as_deref()).await?;
    let slot = BarSlot::default();
    let watcher = watch_link(&client, slot.clone());
    let received = recv_on(&client, &a, &slot).await;
    watcher.abort();
    let _ = client.disconnect().await;
    received
}

/// The receiving side of a transfer, once connected.
async fn recv_on(client: &P2pClient, a: &RecvArgs, slot: &BarSlot) -> Result<()> {
    let (digest_tx, mut digest_rx) = mpsc::unbounded_channel();
    client.on_any(DIGEST_EVENT, move |m| {
        let _ = digest_tx.send(m);
    });
    let (gone_tx, mut gone_rx) = mpsc::unbounded_channel();
    client.on_p2p_target_disconnect(move |id| {
        let _ = gone_tx.send(id);
    });
    let mut incoming = client.incoming_streams(Some(CHANNEL));
    eprintln!("waiting for a file as '{}' on {}", a.id, a.server);
    let mut duplex = tokio::select! {
        d = incoming.next() => d.ok_or("the client stopped accepting streams")?,
        _ = client.closed() => return Err("the connection to the relay closed".into()),
    };
    // One file per run: later senders are refused.
    client.off_add_p2p_stream(Some(CHANNEL));
    let from = duplex.peer_id().to_string();
    // The sender's header is a hint only: a missing or malformed one leaves name and size unknown.
    let FileHeader { name, size } =
        serde_json::from_value(duplex.args().clone()).unwrap_or_default();

    let to_stdout = a.out.as_deref().is_some_and(is_dash);
    // A file is written under a temporary name and named at the end (`target`), overwriting
    // only a path given with `--out`.
    let mut target: Option<(PathBuf, PartFile, bool)> = None;
    let out: Box<dyn AsyncWrite + Unpin + Send> = if to_stdout {
        Box::new(tokio::io::stdout())
    } else {
        let (path, overwrite) = match &a.out {
            Some(p) => (p.clone(), true),
            None => (safe_name(name.as_deref()), false),
        };
        if !overwrite && tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Err(format!("cannot create {}: the file exists", path.display()).into());
        }
        let (part, file) = PartFile::create(&path).await?;
        target = Some((path, part, overwrite));
        Box::new(file)
    };
    let created = target.as_ref().map(|(p, _, _)| p.clone());
    eprintln!(
        "receiving {} ({}) from '{from}' into {}",
        name.as_deref().unwrap_or("a file"),
        size.map_or("size unknown".to_string(), |s| HumanBytes(s).to_string()),
        created
            .as_ref()
            .map_or("stdout".to_string(), |p| p.display().to_string())
    );
    // On any failure the temporary file goes with `target`.
    let (own, verdict) = receive_into(
        &mut duplex,
        out,
        size,
        &from,
        &mut digest_rx,
        a.stall_timeout,
        slot,
    )
    .await?;
    let say = |line: &str| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&format!("sha256 {own}"));
    // Leave once the sender has its answer (it disconnects then), or after a grace period.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(id) = gone_rx.recv().await {
            if id == from {
                break;
            }
        }
    })
    .await;
    verdict?;
    if let Some((path, part, overwrite)) = target {
        part.persist(&path, overwrite)?;
    }
    say("verified");
    Ok(())
}

/// Copies the stream into `out` while hashing, answers with the digest and takes the sender's.
/// Returns this end's digest and the verdict.
async fn receive_into(
    duplex: &mut P2pDuplex,
    mut out: Box<dyn AsyncWrite + Unpin + Send>,
    size: Option<u64>,
    from: &str,
    digest_rx: &mut mpsc::UnboundedReceiver<socketio_p2p::PeerMessage>,
    stall: Duration,
    slot: &BarSlot,
) -> Result<(String, Result<()>)> {
    let mut progress = Progress::new("received", size, slot);
    let hasher = Hasher::new();
    let mut total = 0u64;
    loop {
        let mut buf = BytesMut::with_capacity(CHUNK);
        let n = unstalled(
            stall,
            || format!("receiving from '{from}' after {total} bytes"),
            duplex.read_buf(&mut buf),
        )
        .await?;
        if n == 0 {
            break;
        }
        let chunk = buf.freeze();
        hasher.update(chunk.clone()).await?;
        out.write_all(&chunk)
            .await
            .map_err(|e| format!("writing the output failed after {total} bytes: {e}"))?;
        total += n as u64;
        progress.set(total);
    }
    out.flush()
        .await
        .map_err(|e| format!("writing the output failed: {e}"))?;
    out.shutdown()
        .await
        .map_err(|e| format!("writing the output failed: {e}"))?;
    drop(out);
    progress.finish(total);
    if let Some(s) = size {
        if s != total {
            return Err(format!("received {total} bytes, but '{from}' announced {s}").into());
        }
    }
    let own = hasher.finish().await?;
    duplex
        .write_all(format!("sha256 {own}\n").as_bytes())
        .await
        .map_err(|e| format!("sending the digest failed: {e}"))?;
    duplex
        .shutdown()
        .await
        .map_err(|e| format!("sending the digest failed: {e}"))?;

    let msg = tokio::time::timeout(stall, async {
        while let Some(m) = digest_rx.recv().await {
            if m.from == from {
                return Some(m);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .ok_or_else(|| format!("'{from}' did not send its digest within {stall:?}"))?;
    let theirs: String = msg.arg(0).unwrap_or_default();
    let same = theirs.eq_ignore_ascii_case(&own);
    if let Some(r) = &msg.reply {
        r.send((same,));
    }
    let verdict = if same {
        Ok(())
    } else {
        Err(format!("SHA-256 mismatch: '{from}' sent sha256 {theirs}").into())
    };
    Ok((own, verdict))
}
