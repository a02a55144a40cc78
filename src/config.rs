//! `socketio-p2p serve`'s settings: a TOML file (`--config FILE`), overridden by the flags given
//! on the command line, on top of the library's defaults ([`RelayOptions::default`]).
//!
//! The file's keys are the fields of [`ServerOptions`](socketio_p2p::ServerOptions) and
//! [`RelayOptions`] under the same names: where to listen and how clients are treated at the top,
//! every bound in `[limits]`, how clients prove their ids in `[auth]`, and what they may do
//! unless their tokens say otherwise in `[permissions]`, and the certificate and key to serve TLS
//! with in `[tls]`. A key the relay does not know is an error naming it, so that a typo
//! never leaves a limit at its default unnoticed. Durations are written as text, like `"10s"`,
//! `"500ms"` or `"2m"`. `relay.example.toml` at the repository root shows every key with its
//! default.

use clap::{Args, ValueEnum};
use serde::{Deserialize, Deserializer};
use socketio_p2p::auth::{JwtAuthenticator, Permissions};
use socketio_p2p::{ClusterOptions, DuplicateIdPolicy, RelayOptions, TlsConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the relay listens when neither the file nor a flag says.
const DEFAULT_HOST: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 9000;
/// Fewest packets socketioxide may queue for one client.
const MIN_BUFFER: usize = 16;

/// The `serve` command's flags. Each one given wins over the config file's key of the same name.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// A TOML file with the relay's settings (see relay.example.toml); the flags below override
    /// it.
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Port to listen on [default: 9000].
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    host: Option<String>,
    /// What to do with a connection under a client id that is already connected: refuse it
    /// (reject) or disconnect the older one (replace) [default: reject].
    #[arg(long, value_enum, value_name = "POLICY")]
    duplicate_ids: Option<Duplicates>,
    /// Same as `--duplicate-ids replace`.
    #[arg(long, conflicts_with = "duplicate_ids")]
    replace_duplicates: bool,
    /// How long the relay waits for a client to answer a relayed request: seconds, or a duration
    /// like 500ms [default: 30s].
    #[arg(long, value_parser = flag_duration, value_name = "DURATION")]
    reply_timeout: Option<Duration>,
    /// How long a client whose link dropped may come back and resume its session (its peers are
    /// told it left only after that); 0 turns resuming off: seconds, or a duration like 500ms
    /// [default: 10s].
    #[arg(long, value_parser = flag_duration, value_name = "DURATION")]
    resume_grace: Option<Duration>,
    /// Packets queued per client before sends to it fail as busy [default: 65536].
    #[arg(long, value_name = "PACKETS")]
    buffer: Option<usize>,
    /// Bytes queued per client before sends to it fail as busy [default: 4194304].
    #[arg(long, value_name = "BYTES")]
    max_queued_bytes: Option<usize>,
    /// Largest event a client may send, in bytes of its Socket.IO packet with binary
    /// attachments; at most the Engine.IO payload cap [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_event_bytes: Option<usize>,
    /// How long a client's queue may stay full before it is disconnected as a slow consumer:
    /// seconds, or a duration like 500ms [default: 10s].
    #[arg(long, value_parser = flag_duration, value_name = "DURATION")]
    slow_consumer_deadline: Option<Duration>,
    /// Events one client may send per second, sustained [default: 10000].
    #[arg(long)]
    max_events_per_sec: Option<u32>,
    /// Events one client may send in a burst [default: 20000].
    #[arg(long)]
    event_burst: Option<u32>,
    /// Connections per second accepted from one address, 0 for no limit [default: 50].
    #[arg(long)]
    max_connects_per_sec: Option<u32>,
    /// Connections one address may open in a burst [default: 200].
    #[arg(long)]
    connect_burst: Option<u32>,
    /// Require every client to prove its id with a JSON Web Token signed with HS256 and the
    /// secret in this file (trailing whitespace and newlines are not part of the secret).
    #[arg(long, value_name = "PATH", conflicts_with = "jwt_public_key_file")]
    jwt_secret_file: Option<PathBuf>,
    /// Require every client to prove its id with a JSON Web Token signed with the private key
    /// of this public key (PEM; RSA: RS256, EC P-256: ES256, Ed25519: EdDSA).
    #[arg(long, value_name = "PATH")]
    jwt_public_key_file: Option<PathBuf>,
    /// Serve over TLS with the certificate chain in this PEM file (with --tls-key).
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert's certificate.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Join the cluster of the relays sharing this Redis, e.g. redis://127.0.0.1:6379/: a client
    /// of one relay reaches the clients of the others by id [default: run alone].
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// What clients may do unless their token says otherwise: every client when no token is
    /// required, else those whose token carries no permissions. Any of these flags replaces the
    /// config file's `[permissions]` table.
    #[command(flatten, next_help_heading = "Default permissions")]
    permissions: crate::PermissionFlags,
}

/// The duplicate-id policy as the file and the flag spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Duplicates {
    /// Refuse the new connection.
    Reject,
    /// Disconnect the older connection and keep the new one.
    Replace,
}

impl From<Duplicates> for DuplicateIdPolicy {
    fn from(d: Duplicates) -> Self {
        match d {
            Duplicates::Reject => DuplicateIdPolicy::Reject,
            Duplicates::Replace => DuplicateIdPolicy::Replace,
        }
    }
}

/// The config file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    host: Option<String>,
    port: Option<u16>,
    duplicate_ids: Option<Duplicates>,
    #[serde(default, deserialize_with = "file_duration")]
    reply_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "file_duration")]
    resume_grace: Option<Duration>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    auth: Auth,
    #[serde(default)]
    tls: Tls,
    #[serde(default)]
    cluster: ClusterTable,
    /// The default permissions (see `socketio_p2p::auth::Permissions`).
    permissions: Option<Permissions>,
}

/// The file's `[auth]` table: how clients prove their ids. At most one key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Auth {
    jwt_secret_file: Option<PathBuf>,
    jwt_public_key_file: Option<PathBuf>,
}

/// The file's `[tls]` table: the certificate chain and key to serve TLS with. Both or neither.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// The file's `[cluster]` table: the Redis of the relays this one joins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterTable {
    redis: Option<String>,
}

/// The file's `[limits]` table: the relay's bounds, named as the fields of `ServerOptions` and
/// `RelayOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limits {
    max_event_name_len: Option<usize>,
    max_room_name_len: Option<usize>,
    max_rooms_per_client: Option<usize>,
    max_event_bytes: Option<usize>,
    max_payload: Option<u64>,
    max_streams_per_client: Option<usize>,
    max_pending_per_client: Option<usize>,
    max_pending_per_caller: Option<usize>,
    max_events_per_sec: Option<u32>,
    event_burst: Option<u32>,
    flood_disconnect_after: Option<u32>,
    max_connects_per_sec: Option<u32>,
    connect_burst: Option<u32>,
    max_queued_bytes: Option<usize>,
    resume_hold_bytes: Option<usize>,
    resume_replay_bytes: Option<usize>,
    #[serde(default, deserialize_with = "file_duration")]
    slow_consumer_deadline: Option<Duration>,
    max_buffer_size: Option<usize>,
}

/// What `serve` runs with.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) relay: RelayOptions,
}

impl File {
    /// Reads and parses a config file; the error says which file and, for a bad key or value,
    /// which key.
    pub(crate) fn read(path: &Path) -> Result<File, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        File::parse(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses the text of a config file.
    pub(crate) fn parse(text: &str) -> Result<File, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }
}

impl Settings {
    /// The flags over the file over the defaults, checked.
    pub(crate) fn resolve(file: File, flags: ServeArgs) -> Result<Settings, String> {
        let mut relay = RelayOptions::default();
        let l = file.limits;
        let s = &mut relay.server;
        let duplicates = if flags.replace_duplicates {
            Some(Duplicates::Replace)
        } else {
            flags.duplicate_ids.or(file.duplicate_ids)
        };
        if let Some(d) = duplicates {
            s.duplicate_ids = d.into();
        }
        set(
            &mut s.reply_timeout,
            flags.reply_timeout.or(file.reply_timeout),
        );
        set(
            &mut s.resume_grace,
            flags.resume_grace.or(file.resume_grace),
        );
        set(&mut s.max_event_name_len, l.max_event_name_len);
        set(&mut s.max_room_name_len, l.max_room_name_len);
        set(&mut s.max_rooms_per_client, l.max_rooms_per_client);
        set(
            &mut s.max_event_bytes,
            flags.max_event_bytes.or(l.max_event_bytes),
        );
        set(&mut s.max_streams_per_client, l.max_streams_per_client);
        set(&mut s.max_pending_per_client, l.max_pending_per_client);
        set(&mut s.max_pending_per_caller, l.max_pending_per_caller);
        set(
            &mut s.max_events_per_sec,
            flags.max_events_per_sec.or(l.max_events_per_sec),
        );
        set(&mut s.event_burst, flags.event_burst.or(l.event_burst));
        set(&mut s.flood_disconnect_after, l.flood_disconnect_after);
        set(
            &mut s.max_connects_per_sec,
            flags.max_connects_per_sec.or(l.max_connects_per_sec),
        );
        set(
            &mut s.connect_burst,
            flags.connect_burst.or(l.connect_burst),
        );
        set(
            &mut s.max_queued_bytes,
            flags.max_queued_bytes.or(l.max_queued_bytes),
        );
        set(&mut s.resume_hold_bytes, l.resume_hold_bytes);
        set(&mut s.resume_replay_bytes, l.resume_replay_bytes);
        set(
            &mut s.slow_consumer_deadline,
            flags.slow_consumer_deadline.or(l.slow_consumer_deadline),
        );
        set(&mut relay.max_payload, l.max_payload);
        set(
            &mut relay.max_buffer_size,
            flags.buffer.or(l.max_buffer_size),
        );

        let secret = flags.jwt_secret_file.or(file.auth.jwt_secret_file);
        let public_key = flags.jwt_public_key_file.or(file.auth.jwt_public_key_file);
        let authenticator = match (secret, public_key) {
            (Some(_), Some(_)) => {
                return Err(
                    "give either jwt_secret_file (--jwt-secret-file) or jwt_public_key_file \
                     (--jwt-public-key-file), not both"
                        .into(),
                )
            }
            (Some(path), None) => Some(
                JwtAuthenticator::hs256(crate::read_secret(&path)?)
                    .map_err(|e| crate::with_causes(&e))?,
            ),
            (None, Some(path)) => Some(crate::read_public_key(&path)?),
            (None, None) => None,
        };
        if let Some(a) = authenticator {
            relay.server.authenticator = Some(Arc::new(a));
        }
        // The flags come as a pair (clap checks); the file's keys must too.
        let (cert, key) = match (flags.tls_cert, flags.tls_key) {
            (Some(c), Some(k)) => (Some(c), Some(k)),
            _ => (file.tls.cert, file.tls.key),
        };
        relay.tls = match (cert, key) {
            (Some(cert), Some(key)) => {
                Some(TlsConfig::from_pem_files(&cert, &key).map_err(|e| crate::with_causes(&e))?)
            }
            (None, None) => None,
            _ => {
                return Err(
                    "give both tls.cert (--tls-cert) and tls.key (--tls-key), or neither".into(),
                )
            }
        };
        if let Some(url) = flags.redis.or(file.cluster.redis) {
            let cluster = ClusterOptions::new(url);
            cluster.check().map_err(|e| crate::with_causes(&e))?;
            relay.cluster = Some(cluster);
        }
        Settings::checked(
            file.host,
            file.port,
            flags.host,
            flags.port,
            relay,
            flags.permissions.to_permissions().or(file.permissions),
        )
    }

    /// The settings, checked, with the default permissions in place.
    fn checked(
        file_host: Option<String>,
        file_port: Option<u16>,
        flag_host: Option<String>,
        flag_port: Option<u16>,
        mut relay: RelayOptions,
        permissions: Option<Permissions>,
    ) -> Result<Settings, String> {
        if let Some(p) = permissions {
            relay.server.default_permissions = p;
        }
        if relay.server.reply_timeout.is_zero() {
            return Err("reply_timeout must be longer than 0".into());
        }
        if relay.server.slow_consumer_deadline.is_zero() {
            return Err("slow_consumer_deadline must be longer than 0".into());
        }
        if relay.max_buffer_size < MIN_BUFFER {
            return Err(format!(
                "max_buffer_size (--buffer) must be at least {MIN_BUFFER} packets, not {}",
                relay.max_buffer_size
            ));
        }
        Ok(Settings {
            host: flag_host
                .or(file_host)
                .unwrap_or_else(|| DEFAULT_HOST.into()),
            port: flag_port.or(file_port).unwrap_or(DEFAULT_PORT),
            relay,
        })
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// A duration in the file: text like "10s" or "500ms".
fn file_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration like \"10s\" or \"500ms\": {e}"
        ))
    })
}

/// A duration flag: whole seconds (as the flags always took them) or text like "500ms".
fn flag_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is neither seconds nor a duration like \"500ms\": {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../relay.example.toml");

    fn resolve(text: &str, flags: ServeArgs) -> Result<Settings, String> {
        Settings::resolve(File::parse(text)?, flags)
    }

    /// The example file parses, and every value in it is the default: what it documents is what
    /// the relay does without it.
    #[test]
    fn the_example_file_holds_the_defaults() {
        let file = File::parse(EXAMPLE).expect("relay.example.toml parses");
        let l = &file.limits;
        for (key, set) in [
            ("host", file.host.is_some()),
            ("port", file.port.is_some()),
            ("duplicate_ids", file.duplicate_ids.is_some()),
            ("reply_timeout", file.reply_timeout.is_some()),
            ("resume_grace", file.resume_grace.is_some()),
            ("max_event_name_len", l.max_event_name_len.is_some()),
            ("max_room_name_len", l.max_room_name_len.is_some()),
            ("max_rooms_per_client", l.max_rooms_per_client.is_some()),
            ("max_event_bytes", l.max_event_bytes.is_some()),
            ("max_payload", l.max_payload.is_some()),
            ("max_streams_per_client", l.max_streams_per_client.is_some()),
            ("max_pending_per_client", l.max_pending_per_client.is_some()),
            ("max_pending_per_caller", l.max_pending_per_caller.is_some()),
            ("max_events_per_sec", l.max_events_per_sec.is_some()),
            ("event_burst", l.event_burst.is_some()),
            ("flood_disconnect_after", l.flood_disconnect_after.is_some()),
            ("max_connects_per_sec", l.max_connects_per_sec.is_some()),
            ("connect_burst", l.connect_burst.is_some()),
            ("max_queued_bytes", l.max_queued_bytes.is_some()),
            ("resume_hold_bytes", l.resume_hold_bytes.is_some()),
            ("resume_replay_bytes", l.resume_replay_bytes.is_some()),
            ("slow_consumer_deadline", l.slow_consumer_deadline.is_some()),
            ("max_buffer_size", l.max_buffer_size.is_some()),
        ] {
            assert!(set, "relay.example.toml shows `{key}`");
        }
        let got = Settings::resolve(file, ServeArgs::default()).unwrap();
        let want = RelayOptions::default();
        assert_eq!((got.host.as_str(), got.port), (DEFAULT_HOST, DEFAULT_PORT));
        assert_eq!(format!("{:?}", got.relay), format!("{want:?}"));
    }

    /// The README shows the example file as it is.
    #[test]
    fn the_readme_quotes_the_example_file() {
        let readme = include_str!("../README.md");
        let quoted = format!("```toml\n{EXAMPLE}```\n");
        assert!(
            readme.contains(&quoted),
            "README.md quotes relay.example.toml exactly, in a ```toml block"
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let text = "port = 7000\nreply_timeout = \"500ms\"\nduplicate_ids = \"replace\"\n\
                    [limits]\nmax_queued_bytes = 1000\nmax_rooms_per_client = 3\n";
        let s = resolve(text, ServeArgs::default()).unwrap();
        assert_eq!(s.port, 7000);
        assert_eq!(s.relay.server.reply_timeout, Duration::from_millis(500));
        assert_eq!(s.relay.server.duplicate_ids, DuplicateIdPolicy::Replace);
        assert_eq!(s.relay.server.max_queued_bytes, 1000);
        assert_eq!(s.relay.server.max_rooms_per_client, 3);

        let flags = ServeArgs {
            port: Some(7001),
            reply_timeout: Some(Duration::from_secs(2)),
            duplicate_ids: Some(Duplicates::Reject),
            max_queued_bytes: Some(2000),
            ..ServeArgs::default()
        };
        let s = resolve(text, flags).unwrap();
        assert_eq!(s.port, 7001);
        assert_eq!(s.relay.server.reply_timeout, Duration::from_secs(2));
        assert_eq!(s.relay.server.duplicate_ids, DuplicateIdPolicy::Reject);
        assert_eq!(s.relay.server.max_queued_bytes, 2000);
        assert_eq!(
            s.relay.server.max_rooms_per_client, 3,
            "no flag: the file's"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        for (text, named) in [
            ("prot = 1\n", "prot"),
            ("[limits]\nmax_room = 3\n", "max_room"),
            ("[auth]\njwt_secret = \"x\"\n", "jwt_secret"),
            (
                "[permissions]\nsend = { allow = [\"a\"], only = [] }\n",
                "only",
            ),
            ("reply_timeout = 30\n", "reply_timeout"),
            (
                "[limits]\nslow_consumer_deadline = \"soon\"\n",
                "slow_consumer_deadline",
            ),
            ("duplicate_ids = \"both\"\n", "duplicate_ids"),
            ("port = 70000\n", "port"),
        ] {
            let e = File::parse(text).expect_err(text);
            assert!(e.contains(named), "{text:?}: {e}");
        }
        for (text, named) in [
            ("reply_timeout = \"0s\"\n", "reply_timeout"),
            ("[limits]\nmax_buffer_size = 2\n", "max_buffer_size"),
        ] {
            let e = resolve(text, ServeArgs::default()).expect_err(text);
            assert!(e.contains(named), "{text:?}: {e}");
        }
    }

    /// `[tls]` needs both keys; the flags, given as a pair, win over the file; an unreadable
    /// file is named.
    #[test]
    fn the_tls_table_and_flags() {
        let e = resolve("[tls]\ncert = \"relay.crt\"\n", ServeArgs::default()).expect_err("no key");
        assert!(e.contains("both"), "{e}");
        let e = resolve("[tls]\ncertificate = \"relay.crt\"\n", ServeArgs::default())
            .expect_err("a misspelt key");
        assert!(e.contains("certificate"), "{e}");
        let text = "[tls]\ncert = \"/nonexistent/file.crt\"\nkey = \"/nonexistent/file.key\"\n";
        let e = resolve(text, ServeArgs::default()).expect_err("missing files");
        assert!(e.contains("/nonexistent/file.crt"), "{e}");
        let flags = ServeArgs {
            tls_cert: Some("/nonexistent/flag.crt".into()),
            tls_key: Some("/nonexistent/flag.key".into()),
            ..ServeArgs::default()
        };
        let e = resolve(text, flags).expect_err("missing files");
        assert!(e.contains("/nonexistent/flag.crt"), "the flags win: {e}");
        assert!(resolve("", ServeArgs::default())
            .unwrap()
            .relay
            .tls
            .is_none());
    }

    /// `[cluster] redis` joins a cluster, `--redis` wins over it, a URL that is not one is
    /// refused; without either the relay runs alone.
    #[test]
    fn the_cluster_table_and_flag() {
        assert!(resolve("", ServeArgs::default())
            .unwrap()
            .relay
            .cluster
            .is_none());
        let text = "[cluster]\nredis = \"redis://10.0.0.1:6379/\"\n";
        let s = resolve(text, ServeArgs::default()).unwrap();
        assert_eq!(s.relay.cluster.unwrap().url, "redis://10.0.0.1:6379/");
        let flags = ServeArgs {
            redis: Some("redis://127.0.0.1:7000/".into()),
            ..ServeArgs::default()
        };
        let s = resolve(text, flags).unwrap();
        assert_eq!(s.relay.cluster.unwrap().url, "redis://127.0.0.1:7000/");
        let e = resolve("[cluster]\nredis = \"http://nope\"\n", ServeArgs::default())
            .expect_err("not a Redis URL");
        assert!(e.contains("Redis URL"), "{e}");
        let e = resolve("[cluster]\nurl = \"redis://x/\"\n", ServeArgs::default())
            .expect_err("a misspelt key");
        assert!(e.contains("url"), "{e}");
    }

    #[test]
    fn duration_flags_take_seconds_or_units() {
        assert_eq!(flag_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(flag_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(flag_duration("soon").is_err());
    }

    /// The README's `[auth]` and `[permissions]` example: a secret file turns authentication
    /// on, the table becomes the default permissions, and a permission flag replaces the table.
    #[test]
    fn auth_and_permissions_tables() {
        let dir = std::env::temp_dir().join(format!("p2p-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("relay.secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
        let text = format!(
            "[auth]\njwt_secret_file = {:?}\n\n[permissions]\nsend = {{ deny = [\"admin*\"] }}\n\
             rooms = {{ allow = [\"public-*\"] }}\n",
            secret.display().to_string()
        );
        let got = resolve(&text, ServeArgs::default()).unwrap();
        assert!(got.relay.server.authenticator.is_some());
        let p = &got.relay.server.default_permissions;
        assert_eq!(p.send.deny, vec!["admin*".to_string()]);
        assert_eq!(p.rooms.allow, Some(vec!["public-*".to_string()]));

        let flags = ServeArgs {
            permissions: crate::PermissionFlags {
                deny_call: vec!["jobs".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        let got = resolve(&text, flags).unwrap();
        let p = &got.relay.server.default_permissions;
        assert!(p.send.deny.is_empty() && p.rooms.allow.is_none());
        assert_eq!(p.call.deny, vec!["jobs".to_string()]);

        let both = format!("{text}\n").replace(
            "[permissions]",
            "jwt_public_key_file = \"key.pub\"\n\n[permissions]",
        );
        let e = resolve(&both, ServeArgs::default()).expect_err("both keys");
        assert!(e.contains("not both"), "{e}");
        let missing = "[auth]\njwt_secret_file = \"/nonexistent/relay.secret\"\n";
        let e = resolve(missing, ServeArgs::default()).expect_err("a missing secret file");
        assert!(e.contains("/nonexistent/relay.secret"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
