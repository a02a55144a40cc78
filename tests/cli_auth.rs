//! The command-line tools with authentication on, as separate processes: `token` mints,
//! `serve --jwt-secret-file` requires tokens, `send`/`recv` present them with `--token`,
//! `--token-file` or `P2P_TOKEN`.

use socketio_p2p::auth::JwtAuthenticator;
use std::path::Path;
use std::process::{Output, Stdio};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

mod common;

use common::{bounded, spawn_serve, TempDir};

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

/// Runs `socketio-p2p <args>` to its end, without `P2P_TOKEN` unless `env_token` sets it.
async fn run(args: &[&str], env_token: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("P2P_TOKEN").kill_on_drop(true);
    if let Some(t) = env_token {
        cmd.env("P2P_TOKEN", t);
    }
    bounded(&format!("socketio-p2p {args:?}"), cmd.output())
        .await
        .expect("the command runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `socketio-p2p token` for `sub` with extra flags; the token it printed.
async fn mint(secret: &Path, sub: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "token",
        "--secret-file",
        secret.to_str().unwrap(),
        "--sub",
        sub,
    ];
    args.extend_from_slice(extra);
    let out = run(&args, None).await;
    assert!(out.status.success(), "token failed: {}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    text.trim().to_string()
}

/// `serve` on a port the system picks with `args`; the process and its URL.
async fn serve(args: &[&str]) -> (Child, String) {
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--port", "0"])
        .args(args)
        .stderr(Stdio::null());
    let (child, url, _) = spawn_serve(serve).await;
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minted_tokens_let_send_and_recv_through_a_relay_that_requires_them() {
    let dir = TempDir::new("cli-auth");
    let secret = dir.0.join("relay.secret");
    // As `openssl rand -base64 32 > relay.secret` writes it: with a newline.
    std::fs::write(&secret, "c2VjcmV0IG9mIHRoZSBjbGkgdGVzdCwgMzIgYnl0ZXM=\n").unwrap();

    let alice = mint(&secret, "alice", &["--ttl", "1h"]).await;
    let bob = mint(&secret, "bob", &[]).await;
    let mallory = mint(&secret, "mallory", &["--deny-send", "bob"]).await;
    let bob_file = dir.0.join("bob.token");
    std::fs::write(&bob_file, format!("{bob}\n")).unwrap();

    // What `token` minted is what a relay with the same secret accepts.
    let check = JwtAuthenticator::hs256("c2VjcmV0IG9mIHRoZSBjbGkgdGVzdCwgMzIgYnl0ZXM=").unwrap();
    let claims = check.verify(&alice).unwrap();
    assert_eq!(claims.sub, "alice");
    assert!(claims.permissions.is_none());
    let lifetime = claims.exp - claims.iat.unwrap();
    assert_eq!(lifetime, 3600);
    let claims = check.verify(&mallory).unwrap();
    let denied = claims
        .permissions
        .expect("mallory's token carries permissions");
    assert!(!denied.send.allows("bob") && denied.send.allows("carol"));

    let secret_arg = secret.to_str().unwrap();
    let (_relay, url) = serve(&["--jwt-secret-file", secret_arg]).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = dir.0.join("file.bin");
    std::fs::write(&file, &data).unwrap();
    let copy = dir.0.join("copy.bin");

    // bob waits with the token from its file.
    let mut recv = Command::new(BIN)
        .args(["recv", "--server", &url, "--id", "bob", "--out"])
        .arg(&copy)
        .arg("--token-file")
        .arg(&bob_file)
        .env_remove("P2P_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut recv_err = BufReader::new(recv.stderr.take().unwrap()).lines();
    loop {
        let line = bounded("recv is ready", recv_err.next_line())
            .await
            .unwrap()
            .expect("recv says it waits");
        if line.starts_with("waiting for a file") {
            break;
        }
    }

    let file_arg = file.to_str().unwrap();
    let send = |id: &'static str| {
        [
            "send", "--server", &url, "--id", id, "--to", "bob", file_arg,
        ]
    };
    // No token: refused at connect.
    let out = run(&send("alice"), None).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the relay refused the connection: missing token"),
        "{}",
        stderr(&out)
    );
    // Another client's token: refused at connect.
    let out = run(&send("mallory"), Some(&alice)).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("token subject mismatch"),
        "{}",
        stderr(&out)
    );
    // Its own token, whose permissions do not allow sending to bob: refused by the relay.
    let mut args = send("mallory").to_vec();
    args.extend(["--token", &mallory]);
    let out = run(&args, None).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("permission denied: client 'mallory' may not send to client 'bob'"),
        "{}",
        stderr(&out)
    );

    // alice's token from the environment: the file goes through.
    let out = run(&send("alice"), Some(&alice)).await;
    assert!(out.status.success(), "send failed: {}", stderr(&out));
    let status = bounded("recv ends", recv.wait()).await.unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&copy).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_serve_refuse_bad_inputs_with_clear_errors() {
    let dir = TempDir::new("cli-auth");
    let empty = dir.0.join("empty.secret");
    std::fs::write(&empty, "\n").unwrap();
    let out = run(
        &[
            "token",
            "--secret-file",
            empty.to_str().unwrap(),
            "--sub",
            "a",
        ],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("holds no secret"), "{}", stderr(&out));

    let out = run(
        &[
            "token",
            "--secret-file",
            empty.to_str().unwrap(),
            "--sub",
            "a",
            "--ttl",
            "3w",
        ],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown unit in '3w'"),
        "{}",
        stderr(&out)
    );

    let not_a_key = dir.0.join("key.pem");
    std::fs::write(
        &not_a_key,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let out = run(
        &[
            "serve",
            "--port",
            "0",
            "--jwt-public-key-file",
            not_a_key.to_str().unwrap(),
        ],
        None,
    )
    .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not an RSA, EC (P-256) or Ed25519 public key"),
        "{}",
        stderr(&out)
    );
}
