//! `socketio-p2p serve --config FILE`: the file's settings take effect, a flag wins over the file,
//! an unknown key is refused with its name, and the repository's example file runs as it is.

use socketio_p2p::P2pClient;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

mod common;

use common::{bounded, spawn_serve};

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

/// A config file of its own under the system's temporary directory, removed when dropped.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(tag: &str, text: &str) -> ConfigFile {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "socketio-p2p-{tag}-{}-{nanos}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).expect("config file written");
        ConfigFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `socketio-p2p serve <args>`, once it announced its URL.
async fn serve(args: &[&str]) -> (Child, String) {
    let mut serve = Command::new(BIN);
    serve.arg("serve").args(args).stderr(Stdio::null());
    let (child, url, _) = spawn_serve(serve).await;
    (child, url)
}

/// `serve <args>` that is expected to fail at once: its exit status and stderr.
async fn serve_fails(args: &[&str]) -> String {
    let out = bounded(
        "serve exits",
        Command::new(BIN)
            .arg("serve")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("serve runs");
    assert!(!out.status.success(), "serve {args:?} fails");
    assert!(out.stdout.is_empty(), "no URL announced");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

async fn connect(url: &str, id: &str) -> socketio_p2p::Result<P2pClient> {
    bounded("a client connects", P2pClient::connect(url, id)).await
}

/// A second connection under a connected id: with "replace" it takes over (the first is dropped),
/// with "reject" it is refused. Returns whether it was taken over.
async fn second_connection_takes_over(url: &str) -> bool {
    let first = connect(url, "x").await.expect("first connection");
    let second = connect(url, "x").await;
    let replaced = match &second {
        Ok(_) => {
            bounded("the older connection is dropped", first.closed()).await;
            true
        }
        Err(_) => {
            assert!(first.is_connected(), "the first connection stays");
            false
        }
    };
    if let Ok(c) = second {
        let _ = c.disconnect().await;
    }
    let _ = first.disconnect().await;
    replaced
}

/// The second room is refused when the file allows one.
async fn rooms_allowed(url: &str) -> usize {
    let c = connect(url, "roomer").await.expect("connects");
    let mut joined = 0;
    for room in ["r1", "r2", "r3"] {
        match c.join_room(room).await {
            Ok(()) => joined += 1,
            Err(e) => {
                assert!(e.to_string().contains("rooms"), "{e}");
                break;
            }
        }
    }
    let _ = c.disconnect().await;
    joined
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_file_takes_effect_and_flags_win_over_it() {
    let port = free_port();
    let file = ConfigFile::new(
        "serve-config",
        &format!(
            "# a relay for the test\nport = {port}\nduplicate_ids = \"replace\"\n\n\
             [limits]\nmax_rooms_per_client = 1\nslow_consumer_deadline = \"2s\"\n"
        ),
    );

    // From the file: its port, its duplicate policy, its room limit.
    let (_from_file, url) = serve(&["--config", file.path()]).await;
    assert_eq!(port_of(&url), port, "the file's port");
    assert!(
        second_connection_takes_over(&url).await,
        "the file says replace"
    );
    assert_eq!(rooms_allowed(&url).await, 1);

    // Flags over the file (which still holds the port in use above): another port, and reject.
    let (_flags, url) = serve(&[
        "--config",
        file.path(),
        "--port",
        "0",
        "--duplicate-ids",
        "reject",
    ])
    .await;
    assert_ne!(port_of(&url), port, "the flag's port");
    assert!(
        !second_connection_takes_over(&url).await,
        "the flag says reject"
    );
    assert_eq!(
        rooms_allowed(&url).await,
        1,
        "no flag for it: still the file's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_and_bad_values_are_refused_with_their_name() {
    let file = ConfigFile::new("serve-typo", "port = 0\n[limits]\nmax_rooms = 2\n");
    let text = serve_fails(&["--config", file.path()]).await;
    assert!(text.contains("max_rooms"), "names the key: {text}");
    assert!(text.contains(file.path()), "names the file: {text}");

    let file = ConfigFile::new("serve-duration", "port = 0\nreply_timeout = \"soon\"\n");
    let text = serve_fails(&["--config", file.path()]).await;
    assert!(text.contains("reply_timeout"), "names the key: {text}");

    let missing = Path::new(file.path()).with_extension("missing");
    let text = serve_fails(&["--config", missing.to_str().unwrap()]).await;
    assert!(text.contains("cannot read config file"), "{text}");
}

/// `relay.example.toml` as shipped runs a relay that answers `/healthz`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_file_runs() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("relay.example.toml");
    let (_serve, url) = serve(&["--config", example.to_str().unwrap(), "--port", "0"]).await;
    let addr = url.trim_start_matches("http://");
    let mut tcp = bounded("connect", tokio::net::TcpStream::connect(addr))
        .await
        .unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    bounded("the answer", tcp.read_to_string(&mut answer))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok\n"), "{answer}");
}
