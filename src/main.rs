//! `socketio-p2p`: the relay server and command-line tools.

use clap::{Parser, Subcommand};
use socketio_p2p::auth::{mint_hs256, Claims, JwtAuthenticator, Permissions, Rule};
use socketio_p2p::Relay;
use std::path::PathBuf;
use std::time::Duration;

mod config;
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
    /// Run the relay server (state in memory; logs through RUST_LOG). Its settings come from
    /// the flags, then the --config file, then the defaults.
    Serve(Box<config::ServeArgs>),
    /// Send a file to another client through the relay (checked with SHA-256 at both ends).
    Send {
        /// Relay URL, e.g. http://127.0.0.1:9000 (https:// for a relay serving TLS).
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
        #[command(flatten)]
        token: TokenFlags,
        /// A CA certificate (PEM) to trust for an https:// relay, besides the system's roots.
        #[arg(long, value_name = "PATH")]
        ca_cert: Option<PathBuf>,
        /// Seconds without progress (the receiver taking no data, or no digest from it) after
        /// which sending fails.
        #[arg(long, default_value_t = 30)]
        stall_timeout: u64,
    },
    /// Receive one file from another client through the relay (checked with SHA-256 at both
    /// ends). Progress goes to stderr; the digest and verdict to stdout, or to stderr when the
    /// data goes to stdout.
    Recv {
        /// Relay URL, e.g. http://127.0.0.1:9000 (https:// for a relay serving TLS).
        #[arg(long)]
        server: String,
        /// This client's id.
        #[arg(long)]
        id: String,
        /// Where to write the file, or `-` for stdout. Default: the sender's file name in the
        /// current directory (an existing file is not overwritten).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        token: TokenFlags,
        /// A CA certificate (PEM) to trust for an https:// relay, besides the system's roots.
        #[arg(long, value_name = "PATH")]
        ca_cert: Option<PathBuf>,
        /// Seconds without data from the sender after which receiving fails (waiting for the
        /// sender to start is not limited).
        #[arg(long, default_value_t = 30)]
        stall_timeout: u64,
    },
    /// Mint an HS256 token for a relay started with `serve --jwt-secret-file` (small setups and
    /// tests; larger ones mint tokens where their users sign in). Prints the token.
    Token {
        /// The file holding the relay's secret (trailing whitespace and newlines ignored).
        #[arg(long, value_name = "PATH")]
        secret_file: PathBuf,
        /// The client id the token proves (its `sub` claim).
        #[arg(long)]
        sub: String,
        /// How long the token is valid: a number with s, m, h or d (seconds without a unit).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// The token's permissions (its `permissions` claim); without any of these flags the
        /// token has none and the relay's defaults apply.
        #[command(flatten, next_help_heading = "Permissions")]
        permissions: PermissionFlags,
    },
}

/// A token for `send` and `recv`.
#[derive(clap::Args)]
struct TokenFlags {
    /// The token proving --id to a relay that requires one (default: the P2P_TOKEN environment
    /// variable).
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// A file holding the token (trailing whitespace and newlines ignored).
    #[arg(long, value_name = "PATH")]
    token_file: Option<PathBuf>,
}

impl TokenFlags {
    /// The token: `--token`, else the content of `--token-file`, else `P2P_TOKEN`, else none.
    fn resolve(self) -> Result<Option<String>, transfer::Error> {
        if let Some(t) = self.token {
            return Ok(Some(t));
        }
        if let Some(path) = self.token_file {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(format!("{} holds no token", path.display()).into());
            }
            return Ok(Some(token.to_string()));
        }
        Ok(std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()))
    }
}

/// The environment variable `send` and `recv` take their token from.
const TOKEN_ENV: &str = "P2P_TOKEN";

/// Allow and deny lists of glob patterns (`*` any run of characters, `?` one character), per
/// kind of operation; each flag may be given several times. Deny wins over allow; a kind with
/// no allow pattern allows everything it does not deny.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct PermissionFlags {
    /// Client ids it may send to (messages, requests, add-target, streams).
    #[arg(long, value_name = "PATTERN")]
    allow_send: Vec<String>,
    /// Client ids it may not send to.
    #[arg(long, value_name = "PATTERN")]
    deny_send: Vec<String>,
    /// Rooms it may join and emit to.
    #[arg(long, value_name = "PATTERN")]
    allow_rooms: Vec<String>,
    /// Rooms it may not join nor emit to.
    #[arg(long, value_name = "PATTERN")]
    deny_rooms: Vec<String>,
    /// Services it may be (create, publish and destroy their topics).
    #[arg(long, value_name = "PATTERN")]
    allow_serve: Vec<String>,
    /// Services it may not be.
    #[arg(long, value_name = "PATTERN")]
    deny_serve: Vec<String>,
    /// Services it may call.
    #[arg(long, value_name = "PATTERN")]
    allow_call: Vec<String>,
    /// Services it may not call.
    #[arg(long, value_name = "PATTERN")]
    deny_call: Vec<String>,
    /// Services whose topics it may subscribe to.
    #[arg(long, value_name = "PATTERN")]
    allow_subscribe: Vec<String>,
    /// Services whose topics it may not subscribe to.
    #[arg(long, value_name = "PATTERN")]
    deny_subscribe: Vec<String>,
}

impl PermissionFlags {
    /// The permissions these flags describe; `None` when no flag was given.
    pub(crate) fn to_permissions(&self) -> Option<Permissions> {
        fn rule(allow: &[String], deny: &[String]) -> Rule {
            Rule {
                allow: (!allow.is_empty()).then(|| allow.to_vec()),
                deny: deny.to_vec(),
            }
        }
        let p = Permissions {
            send: rule(&self.allow_send, &self.deny_send),
            rooms: rule(&self.allow_rooms, &self.deny_rooms),
            serve: rule(&self.allow_serve, &self.deny_serve),
            call: rule(&self.allow_call, &self.deny_call),
            subscribe: rule(&self.allow_subscribe, &self.deny_subscribe),
        };
        (!p.allows_all()).then_some(p)
    }
}

/// A duration such as `90`, `90s`, `15m`, `1h` or `7d`.
fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 90s, 15m, 1h or 7d"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in '{s}': use s, m, h or d")),
    };
    match n.checked_mul(unit) {
        Some(0) => Err("the duration must be more than 0".into()),
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => Err(format!("'{s}' is too long")),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The file commands keep stderr for their own progress unless RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Serve { .. } => "info",
        Command::Send { .. } | Command::Recv { .. } | Command::Token { .. } => "warn",
    };
    init_logging(default_filter);
    match cli.command {
        Command::Serve(args) => {
            let file = match &args.config {
                Some(path) => config::File::read(path),
                None => Ok(config::File::default()),
            };
            let settings = match file.and_then(|f| config::Settings::resolve(f, *args)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("socketio-p2p: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let (host, port, opts) = (settings.host, settings.port, settings.relay);
            if opts.server.authenticator.is_some() {
                tracing::info!("clients must prove their ids with tokens");
            }
            if !opts.server.default_permissions.allows_all() {
                tracing::info!(permissions = ?opts.server.default_permissions, "default permissions");
            }
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
            token,
            ca_cert,
        } => {
            with_token(token, |token| {
                transfer::send(transfer::SendArgs {
                    server,
                    id,
                    to,
                    file,
                    stall_timeout: Duration::from_secs(stall_timeout.max(1)),
                    token,
                    ca_cert,
                })
            })
            .await
        }
        Command::Recv {
            server,
            id,
            out,
            stall_timeout,
            token,
            ca_cert,
        } => {
            with_token(token, |token| {
                transfer::recv(transfer::RecvArgs {
                    server,
                    id,
                    out,
                    stall_timeout: Duration::from_secs(stall_timeout.max(1)),
                    token,
                    ca_cert,
                })
            })
            .await
        }
        Command::Token {
            secret_file,
            sub,
            ttl,
            permissions,
        } => {
            let secret = match read_secret(&secret_file) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("socketio-p2p: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            let mut claims = Claims::new(sub, ttl);
            claims.permissions = permissions.to_permissions();
            match mint_hs256(&secret, &claims) {
                Ok(token) => {
                    println!("{token}");
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("socketio-p2p: {}", with_causes(&e));
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a transfer (`send` or `recv`) with the token its flags name, until it ends or a signal
/// stops it; the exit code says how it ended (a token flag that cannot be read ends it at once).
async fn with_token<F, Fut>(flags: TokenFlags, transfer: F) -> std::process::ExitCode
where
    F: FnOnce(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(), transfer::Error>>,
{
    match flags.resolve() {
        Ok(token) => exit_with(interruptible(transfer(token)).await),
        Err(e) => exit_with(Err(e)),
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

/// The HS256 secret in `path`, without trailing whitespace (what `echo` or an editor adds).
fn read_secret(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut secret =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while secret.last().is_some_and(u8::is_ascii_whitespace) {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(format!("{} holds no secret", path.display()));
    }
    if secret.len() < 32 {
        eprintln!(
            "socketio-p2p: warning: the secret in {} is {} bytes; HS256 wants at least 32",
            path.display(),
            secret.len()
        );
    }
    Ok(secret)
}

/// An authenticator for tokens signed with the private key of the public key in `path`.
fn read_public_key(path: &std::path::Path) -> Result<JwtAuthenticator, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    JwtAuthenticator::from_public_key_pem(&pem)
        .map_err(|e| format!("{}: {}", path.display(), with_causes(&e)))
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
