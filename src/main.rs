//! `socketio-p2p`: the relay server and command-line tools.

use clap::{Parser, Subcommand};
use socketio_p2p::{DuplicateIdPolicy, Relay, RelayOptions};
use std::time::Duration;

#[derive(Parser)]
#[command(name = "socketio-p2p", version, about = "Peer-to-peer relay over Socket.IO")]
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
                    eprintln!("socketio-p2p: cannot listen on {host}:{port}: {e}");
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
    }
}
