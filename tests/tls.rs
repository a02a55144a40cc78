//! TLS end to end: a relay serving `https://` with a certificate made at run time by a CA made
//! at run time, clients that trust that CA (the library, the command line, socket.io-client 4)
//! and a client that does not.

mod common;

use common::{bounded, open_pair, path_str, sample, sha256_hex, spawn_serve, within, Log, TempDir};
use serde_json::json;
use socketio_p2p::{ClientOptions, P2pClient, Relay, RelayOptions, StreamOptions, TlsConfig};

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_socketio-p2p");

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1` with its key; all PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

fn make_pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "socketio-p2p test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().expect("a relay key");
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "socketio-p2p test relay");
    let cert = params
        .signed_by(&key, &issuer)
        .expect("the relay certificate");
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

async fn tls_relay(pki: &Pki) -> Relay {
    let tls = TlsConfig::from_pem(pki.cert.as_bytes(), pki.key.as_bytes()).expect("TLS config");
    common::relay_with(RelayOptions {
        tls: Some(tls),
        ..RelayOptions::default()
    })
    .await
}

async fn trusting_client(relay: &Relay, pki: &Pki, id: &str) -> P2pClient {
    let opts = ClientOptions {
        timeout: Duration::from_secs(3),
        ..ClientOptions::default()
    }
    .with_ca_cert(pki.ca.as_bytes());
    P2pClient::connect_with(&relay.url(), id, opts)
        .await
        .unwrap_or_else(|e| panic!("client '{id}' connects over TLS: {}", with_causes(&e)))
}

fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Two clients that trust the relay's CA exchange a message, a request with its reply and a
/// stream of a few MiB each way over `https://`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_trust_the_ca_exchange_messages_requests_and_streams() {
    let pki = make_pki();
    let relay = tls_relay(&pki).await;
    assert!(
        relay.url().starts_with("https://127.0.0.1:"),
        "{}",
        relay.url()
    );
    let alice = trusting_client(&relay, &pki, "alice").await;
    let bob = trusting_client(&relay, &pki, "bob").await;

    let got = Log::new();
    let g = got.clone();
    bob.on("hello", move |m| g.push((m.from, m.args)));
    bob.on("double", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.reply.unwrap().send((n * 2,));
    });
    alice.emit_to("bob", "hello", ("over TLS",)).await.unwrap();
    got.wait_len("bob hears alice", 1).await;
    assert_eq!(
        got.get(),
        vec![("alice".to_string(), vec![json!("over TLS")])]
    );
    let r: i64 = within("bob's reply", alice.request("bob", "double", (21,)))
        .await
        .expect("bob replies");
    assert_eq!(r, 42);

    let (mut mine, mut theirs) = open_pair(&alice, &bob, StreamOptions::default()).await;
    let up = sample(3 * 1024 * 1024 + 11);
    let down: Vec<u8> = sample(2 * 1024 * 1024 + 3).into_iter().rev().collect();
    let (up2, down2) = (up.clone(), down.clone());
    let writer = tokio::spawn(async move {
        mine.write_all(&up2).await?;
        mine.shutdown().await?;
        let mut back = Vec::new();
        mine.read_to_end(&mut back).await?;
        std::io::Result::Ok(back)
    });
    let peer = tokio::spawn(async move {
        let mut got = Vec::new();
        theirs.read_to_end(&mut got).await?;
        theirs.write_all(&down2).await?;
        theirs.shutdown().await?;
        std::io::Result::Ok(got)
    });
    let got_up = within("bob reads alice's stream", peer)
        .await
        .unwrap()
        .expect("bob's end");
    let got_down = within("alice reads bob's answer", writer)
        .await
        .unwrap()
        .expect("alice's end");
    assert_eq!(sha256_hex(&got_up), sha256_hex(&up), "alice to bob");
    assert_eq!(sha256_hex(&got_down), sha256_hex(&down), "bob to alice");

    alice.disconnect().await.unwrap();
    bob.disconnect().await.unwrap();
    relay.shutdown().await;
}

/// A client that does not trust the relay's certificate fails to connect, promptly, with an
/// error that says so; the relay goes on serving the clients that do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_certificate_is_told_so() {
    let pki = make_pki();
    let relay = tls_relay(&pki).await;
    let opts = ClientOptions {
        connect_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let e = within(
        "an untrusting client's connect ends",
        P2pClient::connect_with(&relay.url(), "mallory", opts),
    )
    .await
    .expect_err("the certificate is not trusted");
    let text = with_causes(&e);
    assert!(
        matches!(e, socketio_p2p::Error::Connect { .. }),
        "a connect error: {text}"
    );
    assert!(
        text.contains(&relay.url()) && text.contains("certificate is not trusted"),
        "{text}"
    );
    assert!(
        text.contains("with_ca_cert"),
        "says how to trust it: {text}"
    );

    // Another CA is not this relay's either.
    let other = make_pki();
    let opts = ClientOptions::default().with_ca_cert(other.ca.as_bytes());
    let e = within(
        "a client trusting another CA fails",
        P2pClient::connect_with(&relay.url(), "mallory", opts),
    )
    .await
    .expect_err("another CA's trust is not enough");
    assert!(
        with_causes(&e).contains("certificate is not trusted"),
        "{}",
        with_causes(&e)
    );

    // A CA that is not PEM is refused before anything is sent.
    let opts = ClientOptions::default().with_ca_cert(b"not a certificate".to_vec());
    let e = P2pClient::connect_with(&relay.url(), "mallory", opts)
        .await
        .expect_err("garbage CA");
    assert!(
        with_causes(&e).contains("CA certificate"),
        "{}",
        with_causes(&e)
    );

    let alice = trusting_client(&relay, &pki, "alice").await;
    let bob = trusting_client(&relay, &pki, "bob").await;
    let r: i64 = {
        bob.on("double", |m| {
            let n: i64 = m.arg(0).unwrap();
            m.reply.unwrap().send((n * 2,));
        });
        within("bob's reply", alice.request("bob", "double", (4,)))
            .await
            .expect("the relay still serves")
    };
    assert_eq!(r, 8);
}

/// A certificate and key that do not belong together, or files that are not PEM, are refused
/// with a message that names the problem.
#[test]
fn a_bad_certificate_or_key_is_refused() {
    let a = make_pki();
    let b = make_pki();
    let e = TlsConfig::from_pem(a.cert.as_bytes(), b.key.as_bytes()).expect_err("mismatch");
    assert!(
        with_causes(&e).contains("do not go together"),
        "{}",
        with_causes(&e)
    );
    let e = TlsConfig::from_pem(b"nothing here", a.key.as_bytes()).expect_err("no certificate");
    assert!(
        with_causes(&e).contains("no PEM certificate"),
        "{}",
        with_causes(&e)
    );
    let e = TlsConfig::from_pem(a.cert.as_bytes(), b"no key").expect_err("no key");
    assert!(
        with_causes(&e).contains("private key"),
        "{}",
        with_causes(&e)
    );
    let e = TlsConfig::from_pem_files("/nonexistent/relay.crt", "/nonexistent/relay.key")
        .expect_err("missing files");
    assert!(
        with_causes(&e).contains("/nonexistent/relay.crt"),
        "{}",
        with_causes(&e)
    );
}

// ---- The command line over TLS ----

/// `socketio-p2p serve --tls-cert --tls-key` on a port the system picks; its URL.
async fn serve_tls(cert: &str, key: &str) -> (Child, String) {
    let mut serve = Command::new(BIN);
    serve
        .args(["serve", "--port", "0", "--tls-cert", cert, "--tls-key", key])
        .stderr(Stdio::null());
    let (child, url, _) = spawn_serve(serve).await;
    assert!(
        url.starts_with("https://"),
        "serve announces an https URL, not {url}"
    );
    (child, url)
}

/// Runs `socketio-p2p <args>` to its end: exit status, stdout, stderr.
async fn run(args: Vec<String>) -> (std::process::ExitStatus, String, String) {
    let out = bounded(
        "the command ends",
        Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the command runs");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `serve --tls-cert --tls-key` with `send`/`recv --ca-cert` move a file intact; `send` without
/// the CA fails with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_moves_a_file_over_tls() {
    let pki = make_pki();
    let dir = TempDir::new("tls-cli");
    let cert = dir.write("relay.crt", &pki.cert);
    let key = dir.write("relay.key", &pki.key);
    let ca = dir.write("ca.crt", &pki.ca);
    let data = sample(2 * 1024 * 1024 + 5);
    let input = dir.write("input.bin", &data);
    let output = path_str(&dir.0.join("output.bin")).to_string();
    let (_serve, url) = serve_tls(&cert, &key).await;

    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut recv = Command::new(BIN)
        .args([
            "recv",
            "--server",
            &url,
            "--id",
            "bob",
            "--out",
            &output,
            "--ca-cert",
            &ca,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("recv starts");
    let mut recv_err = BufReader::new(recv.stderr.take().unwrap()).lines();
    let mut rstderr = String::new();
    loop {
        let line = bounded("recv connects", recv_err.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("recv ended before it was ready: {rstderr}"));
        rstderr.push_str(&line);
        rstderr.push('\n');
        if line.starts_with("waiting for a file") {
            break;
        }
    }
    let recv_rest = tokio::spawn(async move {
        let mut rest = String::new();
        while let Ok(Some(line)) = recv_err.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    let (status, stdout, stderr) = run(args(&[
        "send",
        "--server",
        &url,
        "--id",
        "alice",
        "--to",
        "bob",
        "--ca-cert",
        &ca,
        &input,
    ]))
    .await;
    assert!(status.success(), "send: {stderr}");
    let mut rstdout = String::new();
    recv.stdout
        .take()
        .unwrap()
        .read_to_string(&mut rstdout)
        .await
        .unwrap();
    let rstatus = bounded("recv ends", recv.wait()).await.unwrap();
    rstderr.push_str(&recv_rest.await.unwrap());
    assert!(rstatus.success(), "recv: {rstderr}");
    let expected = format!("sha256 {}\nverified\n", sha256_hex(&data));
    assert_eq!(stdout, expected, "send's stdout");
    assert_eq!(rstdout, expected, "recv's stdout");
    assert!(std::fs::read(&output).unwrap() == data, "the copy differs");

    let (status, _, stderr) = run(args(&[
        "send", "--server", &url, "--id", "carol", "--to", "bob", &input,
    ]))
    .await;
    assert!(!status.success());
    assert!(stderr.contains("certificate is not trusted"), "{stderr}");
    assert!(stderr.contains("--ca-cert"), "{stderr}");
}

/// socket.io-client 4 over `wss://`: with the CA (Node's `ca` option) it reaches a Rust client
/// and gets its answer; without it, it cannot connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_4_connects_with_the_ca() {
    let pki = make_pki();
    let relay = tls_relay(&pki).await;
    let bob = trusting_client(&relay, &pki, "rust-bob").await;
    let heard = Log::new();
    let h = heard.clone();
    bob.on("echo", move |m| {
        h.push((m.from.clone(), m.args.clone()));
        m.respond("echo");
    });
    let config = json!({ "url": relay.url(), "ca": pki.ca, "peer": "rust-bob" }).to_string();
    let (status, lines) =
        common::run_node("tls-interop.js", &[&config], Duration::from_secs(60), |l| {
            println!("tls-interop: {l}")
        })
        .await;
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    assert!(status.success(), "tls-interop.js exited with {status}");
    assert!(lines.iter().any(|l| l == "all checks passed"));
    assert_eq!(
        heard.get(),
        vec![("js-tls".to_string(), vec![json!("over wss")])]
    );
}
