//! `socketio-p2p`: the relay server and command-line tools.

use clap::{Parser, Subcommand};
use socketio_p2p::{DuplicateIdPolicy, Relay, RelayOptions};
use std::path::PathBuf;
use std::time::Duration;

mod transfer;

#[derive(Parser)]
#[command(
    name = "socketio-p2p",
    version,
    about = "Peer-to-peer relay over Socket.IO"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay server (state in memory; logs through RUST_LOG).
    Serve {
        /// Port to listen on.
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        /// Let a new connection take over a client id that is already connected, instead of
        /// refusing it.
        #[arg(long)]
        replace_duplicates: bool,
        /// Seconds the relay waits for a client to answer a relayed request.
        #[arg(long, default_value_t = 30)]
        reply_timeout: u64,
        /// Packets queued per client before sends to it fail as busy.
        #[arg(long, default_value_t = 4096)]
        buffer: usize,
        /// Bytes queued per client before sends to it fail as busy.
        #[arg(long, default_value_t = 4 << 20)]
        max_queued_bytes: usize,
        /// Largest event a client may send, in bytes (its Socket.IO packet with binary
        /// attachments). At most the Engine.IO payload cap, 16 MiB.
        #[arg(long, default_value_t = 1 << 20)]
        max_event_bytes: usize,
        /// Seconds a client's queue may stay full before it is disconnected as a slow consumer.
        #[arg(long, default_value_t = 10)]
        slow_consumer_deadline: u64,
        /// Events one client may send per second, sustained.
        #[arg(long, default_value_t = 10_000)]
        max_events_per_sec: u32,
        /// Events one client may send in a burst.
        #[arg(long, default_value_t = 20_000)]
        event_burst: u32,
        /// Connections per second accepted from one address (0: no limit).
        #[arg(long, default_value_t = 50)]
        max_connects_per_sec: u32,
        /// Connections one address may open in a burst.
        #[arg(long, default_value_t = 200)]
        connect_burst: u32,
    },
    /// Send a file to another client through the relay (checked with SHA-256 at both ends).
    Send {
        /// Relay URL, e.g. http://127.0.0.1:9000.
        #[arg(long)]
        server: String,
        /// This client's id.
        #[arg(long)]
        id: String,
        /// The receiving client's id.
        #[arg(long)]
        to: String,
        /// The file to send, or `-` for stdin.
        file: PathBuf,
        /// Seconds without progress (the receiver taking no data, or no digest from it) after
        /// which sending fails.
        #[arg(long, default_value_t = 30)]
        stall_timeout: u64,
    },
    /// Receive one file from another client through the relay (checked with SHA-256 at both
    /// ends). Progress goes to stderr; the digest and verdict to stdout, or to stderr when the
    /// data goes to stdout.
    Recv {
        /// Relay URL, e.g. http://127.0.0.1:9000.
        #[arg(long)]
        server: String,
        /// This client's id.
        #[arg(long)]
        id: String,
        /// Where to write the file, or `-` for stdout. Default: the sender's file name in the
        /// current directory (an existing file is not overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seconds without data from the sender after which receiving fails (waiting for the
        /// sender to start is not limited).
        #[arg(long, default_value_t = 30)]
        stall_timeout: u64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The file commands keep stderr for their own progress unless RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Serve { .. } => "info",
        Command::Send { .. } | Command::Recv { .. } => "warn",
    };
    init_logging(default_filter);
    match cli.command {
        Command::Serve {
            port,
            host,
            replace_duplicates,
            reply_timeout,
            buffer,
            max_queued_bytes,
            max_event_bytes,
            slow_consumer_deadline,
            max_events_per_sec,
            event_burst,
            max_connects_per_sec,
            connect_burst,
        } => {
            let mut opts = RelayOptions::default();
            opts.server.duplicate_ids = if replace_duplicates {
                DuplicateIdPolicy::Replace
            } else {
                DuplicateIdPolicy::Reject
            };
            opts.server.reply_timeout = Duration::from_secs(reply_timeout.max(1));
            opts.max_buffer_size = buffer.max(16);
            opts.server.max_queued_bytes = max_queued_bytes;
            opts.server.max_event_bytes = max_event_bytes;
            opts.server.slow_consumer_deadline = Duration::from_secs(slow_consumer_deadline.max(1));
            opts.server.max_events_per_sec = max_events_per_sec;
            opts.server.event_burst = event_burst;
            opts.server.max_connects_per_sec = max_connects_per_sec;
            opts.server.connect_burst = connect_burst;
            let relay = match Relay::bind_with((host.as_str(), port), opts).await {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "socketio-p2p: cannot listen on {host}:{port}: {}",
                        with_causes(&e)
                    );
                    return std::process::ExitCode::FAILURE;
                }
            };
            println!("socketio-p2p relay listening on {}", relay.url());
            let signal = stop_signal().await;
            tracing::info!("{signal}: shutting down");
            relay.shutdown().await;
            std::process::ExitCode::SUCCESS
        }
        Command::Send {
            server,
            id,
            to,
            file,
            stall_timeout,
        } => exit_with(
            interruptible(transfer::send(transfer::SendArgs {
                server,
                id,
                to,
                file,
                stall_timeout: Duration::from_secs(stall_timeout.max(1)),
            }))
            .await,
        ),
        Command::Recv {
            server,
            id,
            out,
            stall_timeout,
        } => exit_with(
            interruptible(transfer::recv(transfer::RecvArgs {
                server,
                id,
                out,
                stall_timeout: Duration::from_secs(stall_timeout.max(1)),
            }))
            .await,
        ),
    }
}

/// Runs a transfer until it ends or Ctrl-C/SIGTERM stops it; stopping drops it, which removes a
/// partly received file.
async fn interruptible(
    f: impl std::future::Future<Output = Result<(), transfer::Error>>,
) -> Result<(), transfer::Error> {
    tokio::select! {
        r = f => r,
        s = stop_signal() => Err(format!("stopped by {s}").into()),
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM; returns which came.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    r = tokio::signal::ctrl_c() => {
                        if let Err(e) = r {
                            eprintln!("socketio-p2p: cannot wait for Ctrl-C: {e}");
                            term.recv().await;
                            return "SIGTERM";
                        }
                        "SIGINT"
                    }
                    _ = term.recv() => "SIGTERM",
                }
            }
            Err(e) => {
                eprintln!("socketio-p2p: cannot wait for SIGTERM: {e}");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("socketio-p2p: cannot wait for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (else `default_filter`), coloured only on a terminal,
/// with repeats of one log line limited (see [`Repeats`]).
fn init_logging(default_filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(Repeats::default());
    tracing_subscriber::registry().with(filter).with(fmt).init();
}

/// Limits each log statement at INFO and above to [`Repeats::BURST`] lines per
/// [`Repeats::WINDOW`], so that one cause repeated across thousands of clients cannot flood the
/// log. The first line from that statement after a window with suppressed lines is preceded by
/// a count of them. DEBUG and TRACE lines (asked for explicitly) are not limited.
#[derive(Default)]
struct Repeats {
    seen: std::sync::Mutex<std::collections::HashMap<tracing::callsite::Identifier, Window>>,
}

struct Window {
    start: std::time::Instant,
    shown: u32,
    suppressed: u64,
}

impl Repeats {
    const BURST: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(10);
}

impl<S> tracing_subscriber::layer::Filter<S> for Repeats {
    fn enabled(
        &self,
        _: &tracing::Metadata<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        let meta = event.metadata();
        if *meta.level() > tracing::Level::INFO {
            return true;
        }
        let now = std::time::Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let w = seen.entry(meta.callsite()).or_insert(Window {
            start: now,
            shown: 0,
            suppressed: 0,
        });
        if now.duration_since(w.start) >= Self::WINDOW {
            if w.suppressed > 0 {
                eprintln!(
                    "socketio-p2p: {} more lines like the next were not logged ({} at {}:{})",
                    w.suppressed,
                    meta.target(),
                    meta.file().unwrap_or("?"),
                    meta.line().unwrap_or(0)
                );
            }
            *w = Window {
                start: now,
                shown: 0,
                suppressed: 0,
            };
        }
        if w.shown < Self::BURST {
            w.shown += 1;
            true
        } else {
            w.suppressed += 1;
            false
        }
    }
}

fn exit_with(result: Result<(), transfer::Error>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socketio-p2p: error: {}", with_causes(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error's text followed by each of its causes, each once: `a: b: c`.
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        // Some errors repeat their cause in their own text; say each thing once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::Repeats;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    struct Count(Arc<AtomicUsize>);
    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One statement repeated is cut to a burst; another statement and DEBUG lines are not.
    #[test]
    fn repeats_of_one_line_are_limited() {
        let n = Arc::new(AtomicUsize::new(0));
        let sub =
            tracing_subscriber::registry().with(Count(n.clone()).with_filter(Repeats::default()));
        tracing::subscriber::with_default(sub, || {
            for i in 0..1000 {
                tracing::warn!("the same cause {i}");
            }
            assert_eq!(n.load(Ordering::Relaxed), Repeats::BURST as usize);
            tracing::warn!("another cause");
            assert_eq!(n.load(Ordering::Relaxed), Repeats::BURST as usize + 1);
            for _ in 0..100 {
                tracing::debug!("asked for");
            }
            assert_eq!(n.load(Ordering::Relaxed), Repeats::BURST as usize + 101);
        });
    }
}
