//! Authentication at connect and permissions, against a real relay with real clients: Rust
//! clients, raw Socket.IO 4 clients (rust_socketio, with the auth payload or the query token),
//! and seed-era and current JavaScript clients (socket.io-client 2 and 4).

mod common;
use common::*;
use serde_json::{json, Value};
use socketio_p2p::auth::{
    mint_hs256, Claims, Handshake, Identity, JwtAuthenticator, Permissions, Refusal, RefusalReason,
    Rule,
};
use socketio_p2p::{DuplicateIdPolicy, Error, P2pClient, Relay, RelayOptions, ServerOptions};
use std::time::Duration;

async fn authed(relay: &Relay, id: &str, token: String) -> P2pClient {
    connect_token(relay, id, Some(token))
        .await
        .unwrap_or_else(|e| panic!("'{id}' connects with its token: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_expired_wrongly_signed_and_mismatched_tokens_are_refused_with_distinct_reasons() {
    let relay = jwt_relay().await;

    let (reason, text) = unauthorized(connect_token(&relay, "alice", None).await);
    assert_eq!(reason, RefusalReason::MissingToken);
    assert!(text.starts_with("missing token"), "{text}");

    let mut expired = Claims::new("alice", hour());
    expired.exp -= 2 * 3600;
    let (reason, text) = unauthorized(
        connect_token(
            &relay,
            "alice",
            Some(mint_hs256(JWT_SECRET, &expired).unwrap()),
        )
        .await,
    );
    assert_eq!(reason, RefusalReason::Expired);
    assert!(text.starts_with("token expired"), "{text}");

    let forged = mint_hs256(b"some other secret", &Claims::new("alice", hour())).unwrap();
    let (reason, text) = unauthorized(connect_token(&relay, "alice", Some(forged)).await);
    assert_eq!(reason, RefusalReason::BadSignature);
    assert!(text.starts_with("bad token signature"), "{text}");

    let (reason, text) = unauthorized(connect_token(&relay, "alice", Some(jwt_token("bob"))).await);
    assert_eq!(reason, RefusalReason::SubjectMismatch);
    assert_eq!(
        text,
        "token subject mismatch: the token is for client 'bob', the connection asks for \
         clientId 'alice'"
    );

    let (reason, text) =
        unauthorized(connect_token(&relay, "alice", Some("not.a.jwt".into())).await);
    assert_eq!(reason, RefusalReason::InvalidToken);
    assert!(text.starts_with("invalid token"), "{text}");

    // A token without `exp` is not accepted either.
    #[derive(serde::Serialize)]
    struct NoExp<'a> {
        sub: &'a str,
    }
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &NoExp { sub: "alice" },
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET),
    )
    .unwrap();
    let (reason, text) = unauthorized(connect_token(&relay, "alice", Some(no_exp)).await);
    assert_eq!(reason, RefusalReason::InvalidToken);
    assert_eq!(text, "invalid token: the token has no 'exp' claim");

    // None of them was registered; a valid token connects.
    assert!(relay.server().client_ids().is_empty());
    let alice = authed(&relay, "alice", jwt_token("alice")).await;
    assert_eq!(alice.list_clients().await.unwrap(), ["alice"]);
    assert_relay_works_with_tokens(&relay).await;
}

/// Two fresh clients with tokens exchange a message and a reply.
async fn assert_relay_works_with_tokens(relay: &Relay) {
    let a = authed(relay, "check-a", jwt_token("check-a")).await;
    let b = authed(relay, "check-b", jwt_token("check-b")).await;
    b.on("ask", |m| {
        let n: i64 = m.arg(0).unwrap();
        m.respond(n * 2);
    });
    let r: i64 = a.request("check-b", "ask", 21).await.unwrap();
    assert_eq!(r, 42);
    a.disconnect().await.unwrap();
    b.disconnect().await.unwrap();
}

/// What a raw Socket.IO 4 client (rust_socketio) sees: `Ok` once connected (it can list the
/// clients), or the text of its connection error.
async fn raw_connect_list(url: String, auth: Option<Value>) -> Result<Vec<Value>, String> {
    let (sio, outcome) = raw_connect(&url, auth).await;
    let result = match outcome {
        Ok(()) => Ok(sio_emit_with_ack(&sio, "LIST_CLIENTS", vec![]).await),
        Err(text) => Err(text),
    };
    let _ = sio.disconnect().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_io_4_client_proves_its_id_with_the_auth_payload_or_the_query_token() {
    let relay = jwt_relay().await;
    let url = format!("{}?clientId=carol", relay.url());
    let listed = raw_connect_list(url.clone(), Some(json!({ "token": jwt_token("carol") })))
        .await
        .expect("the auth payload's token is accepted");
    assert_eq!(listed, [json!(["carol"])]);

    // The query parameter works too (what socket.io-client 2 sends).
    let with_query = format!("{url}&token={}", jwt_token("carol"));
    let listed = raw_connect_list(with_query, None)
        .await
        .expect("the query token is accepted");
    assert_eq!(listed, [json!(["carol"])]);

    // Without clientId, the token's subject is the id.
    let bare = format!("{}?token={}", relay.url(), jwt_token("dave"));
    assert_eq!(
        raw_connect_list(bare, None).await.unwrap(),
        [json!(["dave"])]
    );

    // The refusals reach it as connection errors with the reason's words.
    let err = raw_connect_list(url.clone(), None).await.unwrap_err();
    assert!(err.contains(r#"{"message":"missing token: "#), "{err}");
    let err = raw_connect_list(url.clone(), Some(json!({ "token": jwt_token("eve") })))
        .await
        .unwrap_err();
    assert!(err.contains("token subject mismatch"), "{err}");
    let err = raw_connect_list(url, Some(json!({ "token": 42 })))
        .await
        .unwrap_err();
    assert!(
        err.contains("invalid token: the auth payload's token is not a string"),
        "{err}"
    );
    assert!(relay.server().client_ids().is_empty());
}

fn key(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_es256_and_eddsa_tokens_verify_with_their_public_keys() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let cases = [
        (
            "rsa",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&key("rsa.key")).unwrap(),
        ),
        (
            "ec",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&key("ec.key")).unwrap(),
        ),
        (
            "ed25519",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&key("ed25519.key")).unwrap(),
        ),
    ];
    for (name, alg, signing) in cases {
        let auth = JwtAuthenticator::from_public_key_pem(&key(&format!("{name}.pub"))).unwrap();
        let relay = relay_with(RelayOptions {
            server: ServerOptions::default().authenticate_with(auth),
            ..RelayOptions::default()
        })
        .await;
        let good = jsonwebtoken::encode(&Header::new(alg), &Claims::new("alice", hour()), &signing)
            .unwrap();
        let alice = authed(&relay, "alice", good).await;
        assert_eq!(alice.list_clients().await.unwrap(), ["alice"], "{name}");

        // An HS256 token made with the public key as its secret (the classic confusion) is
        // not accepted, nor is one signed by another key of another kind.
        let confused =
            mint_hs256(&key(&format!("{name}.pub")), &Claims::new("bob", hour())).unwrap();
        let (reason, _) = unauthorized(connect_token(&relay, "bob", Some(confused)).await);
        assert_eq!(reason, RefusalReason::InvalidToken, "{name}");
        let (reason, _) = unauthorized(connect_token(&relay, "bob", Some(jwt_token("bob"))).await);
        assert_eq!(reason, RefusalReason::InvalidToken, "{name}");
        let mut expired = Claims::new("bob", hour());
        expired.exp -= 2 * 3600;
        let old = jsonwebtoken::encode(&Header::new(alg), &expired, &signing).unwrap();
        let (reason, _) = unauthorized(connect_token(&relay, "bob", Some(old)).await);
        assert_eq!(reason, RefusalReason::Expired, "{name}");
    }
    assert!(JwtAuthenticator::from_public_key_pem(b"not a key").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_authenticator_the_relay_stays_open_and_ignores_tokens() {
    let relay = relay().await;
    let alice = connect_token(&relay, "alice", None).await.unwrap();
    let bob = connect_token(&relay, "bob", Some(jwt_token("someone-else")))
        .await
        .unwrap();
    assert_eq!(alice.list_clients().await.unwrap(), ["alice", "bob"]);
    bob.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_duplicate_needs_a_valid_token_for_that_id() {
    let relay = jwt_relay_with(ServerOptions {
        duplicate_ids: DuplicateIdPolicy::Replace,
        ..ServerOptions::default()
    })
    .await;
    let first = authed(&relay, "alice", jwt_token("alice")).await;
    let watcher = authed(&relay, "watcher", jwt_token("watcher")).await;
    watcher.add_p2p_target("alice").await.unwrap();

    // Without a token, or with another client's, nobody takes the id over.
    unauthorized(connect_token(&relay, "alice", None).await);
    unauthorized(connect_token(&relay, "alice", Some(jwt_token("watcher"))).await);
    assert!(first.is_connected());
    assert_eq!(first.list_clients().await.unwrap(), ["alice", "watcher"]);

    // With a valid token for it, the new connection replaces the old one.
    let second = authed(&relay, "alice", jwt_token("alice")).await;
    within("the first connection is closed", first.closed()).await;
    assert_eq!(second.list_clients().await.unwrap(), ["alice", "watcher"]);
}

/// An application's own authenticator sees the handshake and its refusal text reaches the
/// client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_authenticator_sees_the_handshake_and_its_refusal_reaches_the_client() {
    struct ByPayload;
    #[async_trait::async_trait]
    impl socketio_p2p::auth::Authenticator for ByPayload {
        async fn authenticate(&self, h: &Handshake) -> Result<Identity, Refusal> {
            match h
                .auth()
                .and_then(|a| a.get("token"))
                .and_then(Value::as_str)
            {
                Some("open sesame") => Ok(Identity::new(h.client_id().unwrap_or("anon"))),
                _ => Err(Refusal::denied("say the word")),
            }
        }
    }
    let relay = relay_with(RelayOptions {
        server: ServerOptions::default().authenticate_with(ByPayload),
        ..RelayOptions::default()
    })
    .await;
    let (reason, text) = unauthorized(connect_token(&relay, "ali", Some("please".into())).await);
    assert_eq!(
        (reason, text.as_str()),
        (RefusalReason::Denied, "say the word")
    );
    let ali = authed(&relay, "ali", "open sesame".into()).await;
    assert_eq!(ali.list_clients().await.unwrap(), ["ali"]);
}

/// Runs `interop/auth-interop.js` with `tokens` against `relay`; fails the test on any failed
/// check.
async fn run_js_checks(relay: &Relay, tokens: Value) -> Vec<String> {
    let config = json!({ "url": relay.url(), "tokens": tokens }).to_string();
    let (status, lines) = run_node(
        "auth-interop.js",
        &[&config],
        Duration::from_secs(60),
        |l| println!("auth-interop: {l}"),
    )
    .await;
    let failed: Vec<_> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks: {failed:?}");
    assert!(status.success(), "auth-interop.js exited with {status}");
    assert!(lines.iter().any(|l| l == "all checks passed"));
    lines
}

// ---- Permissions ----

/// A client recording every message and request it gets (answering requests with "echo").
fn recorder(client: &P2pClient) -> Log<String> {
    let log = Log::new();
    for event in ["note", "echo"] {
        let l = log.clone();
        client.on(event, move |m| {
            l.push(format!("{} from {}", m.event, m.from));
            m.respond("echo");
        });
    }
    let l = log.clone();
    client.on_add_p2p_target(move |from| l.push(format!("add-target from {from}")));
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_permissions_decide_which_clients_a_client_may_reach() {
    let relay = jwt_relay().await;
    let alice = authed(
        &relay,
        "alice",
        jwt_token_with(
            "alice",
            Permissions {
                send: Rule::allow(["bob", "car*"]).and_deny(["carol"]),
                ..Permissions::default()
            },
        ),
    )
    .await;
    let bob = authed(&relay, "bob", jwt_token("bob")).await;
    let carol = authed(&relay, "carol", jwt_token("carol")).await;
    let dave = authed(&relay, "dave", jwt_token("dave")).await;
    let (at_bob, at_carol, at_dave) = (recorder(&bob), recorder(&carol), recorder(&dave));
    let _incoming = carol.incoming_streams(None);
    let errors = Log::new();
    let e = errors.clone();
    alice.on_server_error(move |text| e.push(text));

    // Allowed: bob.
    let answer: String = alice.request("bob", "echo", ()).await.unwrap();
    assert_eq!(answer, "echo");
    alice.add_p2p_target("bob").await.unwrap();
    let mut bob_streams = bob.incoming_streams(None);
    let _to_bob = alice.add_p2p_stream("bob").await.unwrap();
    within("bob accepts the stream", bob_streams.next())
        .await
        .expect("a stream at bob");

    // Denied: carol by the deny list (though `car*` allows it), dave by the allow list.
    for target in ["carol", "dave"] {
        let text = denied(alice.request::<String>(target, "echo", ()).await);
        assert_eq!(
            text,
            format!("client 'alice' may not send to client '{target}'")
        );
        denied(alice.add_p2p_target(target).await);
        denied(alice.add_p2p_stream(target).await);
        // A fire-and-forget message is refused with a SERVER_ERROR.
        alice.emit_to(target, "note", 1).await.unwrap();
    }
    errors
        .wait_len("two refusals of fire-and-forget messages", 2)
        .await;
    assert_eq!(
        errors.get(),
        [
            "Error: permission denied: client 'alice' may not send to client 'carol'",
            "Error: permission denied: client 'alice' may not send to client 'dave'",
        ]
    );
    // A batch of messages: each denied one is refused, the allowed one goes through.
    for target in ["carol", "bob", "dave"] {
        alice.emit_to(target, "note", 2).await.unwrap();
    }
    errors.wait_len("two more refusals", 4).await;
    at_bob.wait_len("bob's note", 3).await;
    // The same as one `P2P_BATCH`, from a raw extension client with the same permissions.
    let url = format!(
        "{}?clientId=alice2&p2pExt=1&token={}",
        relay.url(),
        jwt_token_with(
            "alice2",
            Permissions {
                send: Rule::allow(["bob"]),
                ..Permissions::default()
            }
        )
    );
    let mut raw = raw_client(&url).await;
    let events = raw.events.clone();
    eventually("the raw client's welcome", || {
        events.get().iter().any(|(name, _)| name == "P2P_WELCOME")
    })
    .await;
    let item = |to: &str| json!({"targetClientId": to, "event": "note", "args": ["alice2", 3]});
    raw.emit("P2P_BATCH", vec![item("carol"), item("bob"), item("dave")])
        .await;
    for target in ["carol", "dave"] {
        let text = raw.next_error("a refused batch item").await;
        assert_eq!(
            text,
            format!("Error: permission denied: client 'alice2' may not send to client '{target}'")
        );
    }
    at_bob.wait_len("the batch's note for bob", 4).await;

    // Nothing reached carol or dave: bob, who may send anywhere, reaches them after all that.
    for target in ["carol", "dave"] {
        let answer: String = bob.request(target, "echo", ()).await.unwrap();
        assert_eq!(answer, "echo");
    }
    assert_eq!(at_carol.get(), ["echo from bob"]);
    assert_eq!(at_dave.get(), ["echo from bob"]);
    assert_eq!(carol.stream_count(), 0);
    assert_eq!(
        at_bob.get(),
        [
            "echo from alice",
            "add-target from alice",
            "note from alice",
            "note from alice2"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_permissions_decide_which_rooms_a_client_may_join_and_emit_to() {
    let relay = jwt_relay().await;
    let alice = authed(
        &relay,
        "alice",
        jwt_token_with(
            "alice",
            Permissions {
                rooms: Rule::allow(["lobby", "team-*"]).and_deny(["team-admin"]),
                ..Permissions::default()
            },
        ),
    )
    .await;
    let bob = authed(&relay, "bob", jwt_token("bob")).await;
    let heard = Log::new();
    for room in ["lobby", "team-admin", "other"] {
        bob.join_room(room).await.unwrap();
        let h = heard.clone();
        let r = room.to_string();
        bob.on_raw(&format!("say-{room}"), move |args| {
            h.push((r.clone(), args))
        });
    }

    alice.join_room("lobby").await.unwrap();
    alice.join_room("team-blue").await.unwrap();
    for room in ["team-admin", "other"] {
        let text = denied(alice.join_room(room).await);
        assert_eq!(
            text,
            format!("client 'alice' may not join or emit to room '{room}'")
        );
        denied(alice.emit_room(room, &format!("say-{room}"), "psst").await);
    }
    // Leaving is never refused.
    alice.leave_room("team-admin").await.unwrap();
    alice
        .emit_room("lobby", "say-lobby", "hello")
        .await
        .unwrap();
    heard.wait_len("the lobby emit", 1).await;
    assert_eq!(heard.get(), [("lobby".to_string(), vec![json!("hello")])]);
}

/// A relay with two services of its own: `math` and `vault`, each with `add` and a topic
/// `news`.
async fn relay_with_services() -> Relay {
    let relay = jwt_relay().await;
    for name in ["math", "vault"] {
        let s = relay.server().as_service(name);
        s.provide_service("add", |call| {
            let (a, b): (i64, i64) = call.parse().unwrap_or_default();
            call.respond(a + b);
        })
        .unwrap();
        s.create_topic("news").unwrap();
    }
    relay
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_permissions_decide_which_services_a_client_may_call() {
    let relay = relay_with_services().await;
    let alice = authed(
        &relay,
        "alice",
        jwt_token_with(
            "alice",
            Permissions {
                call: Rule::allow(["math", "weather"]),
                send: Rule::nothing(),
                ..Permissions::default()
            },
        ),
    )
    .await;
    // Services provided by clients: `weather` is allowed by `call`, `forecast` by nothing.
    let mut calls = Vec::new();
    for name in ["weather", "forecast"] {
        let opts = token_opts(Some(jwt_token(name)));
        let service = P2pClient::connect_service(&relay.url(), name, opts)
            .await
            .unwrap();
        let log = Log::new();
        let l = log.clone();
        service
            .provide_service("now", move |call| {
                l.push(call.from.to_string());
                call.respond("sunny");
            })
            .unwrap();
        calls.push((service, log));
    }

    let sum: i64 = alice.request_service("math", "add", (2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let text = denied(alice.request_service::<i64>("vault", "add", (2, 3)).await);
    assert_eq!(text, "client 'alice' may not call service 'vault'");
    let now: String = alice.request_service("weather", "now", ()).await.unwrap();
    assert_eq!(now, "sunny");
    let text = denied(alice.request_service::<String>("forecast", "now", ()).await);
    assert_eq!(text, "client 'alice' may not send to client 'forecast'");

    // The forecast service was never called: another caller's call is its first.
    let other = authed(&relay, "other", jwt_token("other")).await;
    let _: String = other.request_service("forecast", "now", ()).await.unwrap();
    assert_eq!(calls[1].1.get(), ["other"]);
    assert_eq!(calls[0].1.get(), ["alice"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_permissions_decide_whose_topics_a_client_may_follow() {
    let relay = relay_with_services().await;
    let alice = authed(
        &relay,
        "alice",
        jwt_token_with(
            "alice",
            Permissions {
                subscribe: Rule::allow(["math"]),
                ..Permissions::default()
            },
        ),
    )
    .await;
    let got = Log::new();
    let g = got.clone();
    alice
        .subscribe_topic("math", "news", move |e| {
            g.push(("math", e.parse::<i64>().unwrap_or(-1)))
        })
        .await
        .unwrap();
    let text = denied(alice.subscribe_topic("vault", "news", |_| {}).await);
    assert_eq!(
        text,
        "client 'alice' may not subscribe to the topics of service 'vault'"
    );
    // Joining a topic's room directly is a subscription too: denied where subscribing is, and
    // refused by the relay's rules where it is allowed (only SUBSCRIBE_TOPIC joins a topic room).
    let vault_room = socketio_p2p::service::topic_room("vault", "news");
    denied(alice.join_room(&vault_room).await);
    match alice
        .join_room(&socketio_p2p::service::topic_room("math", "news"))
        .await
    {
        Err(Error::BadRequest(text)) => assert!(text.contains("SUBSCRIBE_TOPIC"), "{text}"),
        other => panic!("expected the rules' refusal, got {other:?}"),
    }
    let g = got.clone();
    alice.on_raw(
        &socketio_p2p::service::topic_event(&vault_room),
        move |_| g.push(("vault", 0)),
    );

    // A service a client provides: subscribing to it is also a message to that client.
    let weather = P2pClient::connect_service(
        &relay.url(),
        "weather",
        token_opts(Some(jwt_token("weather"))),
    )
    .await
    .unwrap();
    weather.create_topic("today").await.unwrap();
    let text = denied(alice.subscribe_topic("weather", "today", |_| {}).await);
    assert_eq!(
        text,
        "client 'alice' may not subscribe to the topics of service 'weather'"
    );
    let quiet = |sub: &str, subscribe: Rule| {
        jwt_token_with(
            sub,
            Permissions {
                send: Rule::nothing(),
                subscribe,
                ..Permissions::default()
            },
        )
    };
    let mute = authed(&relay, "mute", quiet("mute", Rule::default())).await;
    let text = denied(mute.subscribe_topic("weather", "today", |_| {}).await);
    assert_eq!(text, "client 'mute' may not send to client 'weather'");
    let listed = authed(&relay, "listed", quiet("listed", Rule::allow(["weather"]))).await;
    listed
        .subscribe_topic("weather", "today", |_| {})
        .await
        .unwrap();

    // The vault publishes first, then math: alice hears math only.
    relay
        .server()
        .as_service("vault")
        .publish_topic("news", 1)
        .unwrap();
    relay
        .server()
        .as_service("math")
        .publish_topic("news", 2)
        .unwrap();
    got.wait_len("math's publication", 1).await;
    assert_eq!(got.get(), [("math", 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_permissions_decide_which_services_a_client_may_be() {
    let relay = relay_with_services().await;
    let serving = |name: &str, serve: Rule| {
        jwt_token_with(
            name,
            Permissions {
                serve,
                ..Permissions::default()
            },
        )
    };
    let weather = P2pClient::connect_service(
        &relay.url(),
        "weather",
        token_opts(Some(serving("weather", Rule::allow(["weather"])))),
    )
    .await
    .unwrap();
    let rogue = P2pClient::connect_service(
        &relay.url(),
        "rogue",
        token_opts(Some(serving("rogue", Rule::deny(["*"])))),
    )
    .await
    .unwrap();
    let fan = authed(&relay, "fan", jwt_token("fan")).await;
    let got = Log::new();
    let g = got.clone();
    fan.subscribe_topic("math", "news", move |e| {
        g.push(("math", e.parse::<i64>().unwrap_or(-1)))
    })
    .await
    .unwrap();

    weather.create_topic("today").await.unwrap();
    let g = got.clone();
    fan.subscribe_topic("weather", "today", move |e| {
        g.push(("weather", e.parse::<i64>().unwrap_or(-1)))
    })
    .await
    .unwrap();
    weather.publish_topic("today", 21).await.unwrap();
    got.wait_len("weather's publication", 1).await;

    let text = denied(rogue.create_topic("today").await);
    assert_eq!(text, "client 'rogue' may not act as service 'rogue'");
    // Publishing to another service's topic is acting as that service.
    let math_room = socketio_p2p::service::topic_room("math", "news");
    let text = denied(
        weather
            .emit_room(
                &math_room,
                &socketio_p2p::service::topic_event(&math_room),
                666,
            )
            .await,
    );
    assert_eq!(text, "client 'weather' may not act as service 'math'");
    relay
        .server()
        .as_service("math")
        .publish_topic("news", 7)
        .unwrap();
    got.wait_len("math's own publication", 2).await;
    assert_eq!(got.get(), [("weather", 21), ("math", 7)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_permissions_apply_without_authentication_and_to_tokens_without_their_own() {
    let defaults = Permissions {
        send: Rule::deny(["admin"]),
        ..Permissions::default()
    };
    // An open relay: every client has the defaults.
    let open = relay_with(RelayOptions {
        server: ServerOptions {
            default_permissions: defaults.clone(),
            ..ServerOptions::default()
        },
        ..RelayOptions::default()
    })
    .await;
    let admin = client(&open, "admin").await;
    let at_admin = recorder(&admin);
    let alice = client(&open, "alice").await;
    denied(alice.request::<String>("admin", "echo", ()).await);
    let bob = client(&open, "bob").await;
    let _at_bob = recorder(&bob);
    let answer: String = alice.request("bob", "echo", ()).await.unwrap();
    assert_eq!(answer, "echo");
    assert!(at_admin.get().is_empty());

    // With tokens: no claim, the defaults; a claim of its own replaces them.
    let relay = jwt_relay_with(ServerOptions {
        default_permissions: defaults,
        ..ServerOptions::default()
    })
    .await;
    let admin = authed(&relay, "admin", jwt_token("admin")).await;
    let _at_admin = recorder(&admin);
    let plain = authed(&relay, "plain", jwt_token("plain")).await;
    denied(plain.request::<String>("admin", "echo", ()).await);
    let trusted = authed(
        &relay,
        "trusted",
        jwt_token_with("trusted", Permissions::allow_all()),
    )
    .await;
    let answer: String = trusted.request("admin", "echo", ()).await.unwrap();
    assert_eq!(answer, "echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_client_2_and_4_connect_with_tokens_see_each_refusal_and_are_allowed_and_denied_as_their_tokens_say(
) {
    let relay = relay_with_services().await;
    let target = authed(&relay, "rust-target", jwt_token("rust-target")).await;
    let secret = authed(&relay, "rust-secret", jwt_token("rust-secret")).await;
    let (at_target, at_secret) = (recorder(&target), recorder(&secret));
    let _streams = secret.incoming_streams(None);
    let limited = |sub: &str| {
        jwt_token_with(
            sub,
            Permissions {
                send: Rule::allow(["rust-target"]),
                rooms: Rule::allow(["lobby"]),
                call: Rule::allow(["math"]),
                subscribe: Rule::allow(["math"]),
                serve: Rule::allow([sub]),
            },
        )
    };
    let mut expired = Claims::new("x", hour());
    expired.exp -= 2 * 3600;
    let tokens = json!({
        "js2": jwt_token("js2"),
        "js4": jwt_token("js4"),
        "expired": mint_hs256(JWT_SECRET, &expired).unwrap(),
        "forged": mint_hs256(b"not the relay's secret", &Claims::new("x", hour())).unwrap(),
        "limited": limited("js-limited"),
        "limited4": limited("js4-limited"),
    });
    let lines = run_js_checks(&relay, tokens).await;
    assert!(lines.iter().filter(|l| l.starts_with("ok ")).count() >= 21);

    // Nothing the JavaScript clients were denied reached rust-secret: a message sent after
    // all of it is the first it gets.
    let answer: String = target.request("rust-secret", "echo", ()).await.unwrap();
    assert_eq!(answer, "echo");
    assert_eq!(at_secret.get(), ["echo from rust-target"]);
    assert_eq!(secret.stream_count(), 0);
    assert_eq!(
        at_target.get(),
        ["echo from js-limited", "echo from js4-limited"]
    );
}
