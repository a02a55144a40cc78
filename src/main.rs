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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve {
            port,
            host,
            replace_duplicates,
            reply_timeout,
            buffer,
        } => {
            let mut opts = RelayOptions::default();
            opts.server.duplicate_ids = if replace_duplicates {
                DuplicateIdPolicy::Replace
            } else {
                DuplicateIdPolicy::Reject
            };
            opts.server.reply_timeout = Duration::from_secs(reply_timeout.max(1));
            opts.max_buffer_size = buffer.max(16);
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
            if let Err(e) = tokio::signal::ctrl_c().await {
                eprintln!("socketio-p2p: cannot wait for Ctrl-C: {e}");
            }
            tracing::info!("shutting down");
            relay.shutdown().await;
            std::process::ExitCode::SUCCESS
        }
        Command::Send {
            server,
            id,
            to,
            file,
        } => exit_with(
            transfer::send(transfer::SendArgs {
                server,
                id,
                to,
                file,
            })
            .await,
        ),
        Command::Recv { server, id, out } => {
            exit_with(transfer::recv(transfer::RecvArgs { server, id, out }).await)
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
