//! Authentication at connect and permissions of each connection.
//!
//! A relay with an [`Authenticator`] (see [`ServerOptions::authenticator`]) runs it on every
//! connection before the client is registered. It sees the [`Handshake`] (query, headers, the
//! Socket.IO auth payload) and returns either an [`Identity`] (the client id and, optionally,
//! its [`Permissions`]) or a [`Refusal`], whose text the client receives as its connection
//! error. Without an authenticator the relay is open, as before: every client id is accepted and
//! every client has [`ServerOptions::default_permissions`].
//!
//! The built-in authenticator is [`JwtAuthenticator`]: a JSON Web Token signed with HS256 (a
//! shared secret) or with RS256, ES256 (P-256) or EdDSA (Ed25519) (a public key). Its `sub`
//! claim is the client id, its `exp` claim is required and enforced, and an optional
//! `permissions` claim holds the client's [`Permissions`]. The token travels in the Socket.IO
//! auth payload `{"token": "<jwt>"}` (Socket.IO 3/4 clients, [`ClientOptions::token`]) or in the
//! query parameter `token` (socket.io-client 2, which has no auth payload).
//!
//! ## Permissions
//!
//! Each kind of operation has a [`Rule`]: an allow list and a deny list of glob patterns, as in
//! NATS. A name is allowed when no deny pattern matches it and, if there is an allow list, one of
//! its patterns does: deny wins over allow, and a rule without an allow list allows what it does
//! not deny. Patterns are matched against the whole name; `*` matches any run of characters
//! (also none) and `?` exactly one character; every other character matches itself (there is
//! no escape).
//!
//! | kind | names | checked on |
//! | --- | --- | --- |
//! | [`send`](Permissions::send) | client ids | messages and requests to a client, add-target, streams |
//! | [`rooms`](Permissions::rooms) | room names | joining a room, emitting to a room |
//! | [`serve`](Permissions::serve) | service names | acting as that service: creating, publishing to, destroying its topics, adding or removing its subscribers |
//! | [`call`](Permissions::call) | service names | calling a service the server provides; a call to a service a client provides (a message to the client whose id is the service name) is allowed by `send`, or by a pattern of `call`'s allow list |
//! | [`subscribe`](Permissions::subscribe) | service names | subscribing to (or unsubscribing from) the topics of that service, also by joining a topic room directly; for a service a client provides, `send` or a pattern of `subscribe`'s allow list must allow that client too |
//!
//! Topic rooms (`service:<service>:topic:<topic>`) are governed by the service kinds, not by
//! `rooms`. Leaving a room and answering a request are never checked. A denied operation is
//! answered with [`Error::PermissionDenied`] and nothing reaches its target.
//!
//! ```
//! use socketio_p2p::auth::{Permissions, Rule};
//!
//! let p = Permissions {
//!     send: Rule::allow(["sensor-*"]).and_deny(["sensor-7"]),
//!     rooms: Rule::deny(["admin*"]),
//!     ..Permissions::default()
//! };
//! assert!(p.send.allows("sensor-1"));
//! assert!(!p.send.allows("sensor-7")); // deny wins
//! assert!(!p.send.allows("alice")); // not in the allow list
//! assert!(p.rooms.allows("lobby") && !p.rooms.allows("admins"));
//! assert!(p.call.allows("anything")); // no list: everything
//! ```
//!
//! [`ServerOptions::authenticator`]: crate::ServerOptions::authenticator
//! [`ServerOptions::default_permissions`]: crate::ServerOptions::default_permissions
//! [`ClientOptions::token`]: crate::ClientOptions::token
//! [`Error::PermissionDenied`]: crate::Error::PermissionDenied

use crate::error::{Error, Result};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The query parameter that carries a token for clients without an auth payload
/// (socket.io-client 2).
pub const QUERY_TOKEN: &str = "token";
/// The key of the Socket.IO auth payload that carries a token: `{"token": "<jwt>"}`.
pub const AUTH_TOKEN: &str = "token";
/// The longest token the relay looks at, in bytes; a longer one is refused as invalid before
/// any signature is checked.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// What a client sent when it connected: the input of an [`Authenticator`].
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    query: Vec<(String, String)>,
    headers: HeaderMap,
    auth: Option<Value>,
    remote_addr: Option<IpAddr>,
}

impl Handshake {
    /// A handshake with these query pairs (already percent-decoded), headers and auth payload.
    pub fn new(
        query: impl IntoIterator<Item = (String, String)>,
        headers: HeaderMap,
        auth: Option<Value>,
    ) -> Handshake {
        Handshake {
            query: query.into_iter().collect(),
            headers,
            auth,
            remote_addr: None,
        }
    }

    /// The same handshake, coming from `addr`.
    pub fn with_remote_addr(mut self, addr: IpAddr) -> Handshake {
        self.remote_addr = Some(addr);
        self
    }

    /// The first value of the query parameter `name`, percent-decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every query pair, percent-decoded, in order.
    pub fn query_pairs(&self) -> &[(String, String)] {
        &self.query
    }

    /// The HTTP headers of the request that opened the connection.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The value of header `name`, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The Socket.IO auth payload (Socket.IO 3/4 clients; `None` for socket.io-client 2 and
    /// for a client that sent none).
    pub fn auth(&self) -> Option<&Value> {
        self.auth.as_ref().filter(|v| !v.is_null())
    }

    /// The client id the connection asks for (the `clientId` query parameter).
    pub fn client_id(&self) -> Option<&str> {
        self.query(crate::protocol::QUERY_CLIENT_ID)
    }

    /// The remote address, where the host passes it on (the bundled [`Relay`](crate::Relay)
    /// does).
    pub fn remote_addr(&self) -> Option<IpAddr> {
        self.remote_addr
    }

    /// The token the client sent: the auth payload's `token` if there is an auth payload with
    /// that key, else the query parameter `token`. A token that is not a string, is empty or is
    /// longer than [`MAX_TOKEN_LEN`] is refused as invalid; no token at all as missing.
    pub fn token(&self) -> Result<&str, Refusal> {
        let token = match self.auth().and_then(|a| a.get(AUTH_TOKEN)) {
            Some(Value::String(t)) => t.as_str(),
            Some(_) => {
                return Err(Refusal::new(
                    RefusalReason::InvalidToken,
                    "the auth payload's token is not a string",
                ))
            }
            None => self.query(QUERY_TOKEN).ok_or_else(|| {
                Refusal::new(
                    RefusalReason::MissingToken,
                    "connect with the auth payload {\"token\": \"<jwt>\"} or the query parameter token",
                )
            })?,
        };
        if token.is_empty() {
            return Err(Refusal::new(
                RefusalReason::MissingToken,
                "the token is empty",
            ));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::new(
                RefusalReason::InvalidToken,
                format!(
                    "the token is longer than {MAX_TOKEN_LEN} bytes ({} bytes)",
                    token.len()
                ),
            ));
        }
        Ok(token)
    }
}

/// Who a connection is, as an [`Authenticator`] established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The client id the connection is registered under. If the handshake names a `clientId`
    /// too, the two must be equal; if it names none, this is the id.
    pub client_id: String,
    /// What the client may do; `None` leaves it to the relay's
    /// [`default_permissions`](crate::ServerOptions::default_permissions).
    pub permissions: Option<Permissions>,
}

impl Identity {
    /// The identity `client_id` with the relay's default permissions.
    pub fn new(client_id: impl Into<String>) -> Identity {
        Identity {
            client_id: client_id.into(),
            permissions: None,
        }
    }

    /// The same identity with its own permissions.
    pub fn with_permissions(mut self, permissions: Permissions) -> Identity {
        self.permissions = Some(permissions);
        self
    }
}

/// Why a connection was refused, one value per distinct cause (a label for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The client sent no token.
    MissingToken,
    /// The token's `exp` has passed (beyond the leeway).
    Expired,
    /// The token's signature does not verify with the relay's key.
    BadSignature,
    /// The token is for another client id than the one the connection asks for.
    SubjectMismatch,
    /// The token is malformed, uses another algorithm, lacks a required claim, or is not valid
    /// yet.
    InvalidToken,
    /// An authenticator of the application refused the connection for a reason of its own.
    Denied,
}

impl RefusalReason {
    /// A short stable label: `missing_token`, `token_expired`, `bad_signature`,
    /// `subject_mismatch`, `invalid_token`, `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::MissingToken => "missing_token",
            RefusalReason::Expired => "token_expired",
            RefusalReason::BadSignature => "bad_signature",
            RefusalReason::SubjectMismatch => "subject_mismatch",
            RefusalReason::InvalidToken => "invalid_token",
            RefusalReason::Denied => "denied",
        }
    }

    /// The words the refusal's message starts with (none for [`RefusalReason::Denied`], whose
    /// message is the authenticator's own).
    fn phrase(self) -> Option<&'static str> {
        match self {
            RefusalReason::MissingToken => Some("missing token"),
            RefusalReason::Expired => Some("token expired"),
            RefusalReason::BadSignature => Some("bad token signature"),
            RefusalReason::SubjectMismatch => Some("token subject mismatch"),
            RefusalReason::InvalidToken => Some("invalid token"),
            RefusalReason::Denied => None,
        }
    }

    const ALL: [RefusalReason; 5] = [
        RefusalReason::MissingToken,
        RefusalReason::Expired,
        RefusalReason::BadSignature,
        RefusalReason::SubjectMismatch,
        RefusalReason::InvalidToken,
    ];

    /// The reason of a refusal message as the relay words it (see [`Refusal`]'s display):
    /// the reason whose words the message starts with, else [`RefusalReason::Denied`].
    pub fn of_message(message: &str) -> RefusalReason {
        RefusalReason::ALL
            .into_iter()
            .find(|r| {
                r.phrase().is_some_and(|p| {
                    message
                        .strip_prefix(p)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(": "))
                })
            })
            .unwrap_or(RefusalReason::Denied)
    }
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused connection: why, in words the client receives.
///
/// Its display is the message a client gets as its connection error (a Socket.IO
/// `connect_error` whose `message` is this text): the reason's fixed words, then `": "` and the
/// detail, e.g. `token expired: the token expired 12 s ago`. A [`RefusalReason::Denied`] refusal
/// is the authenticator's text alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: RefusalReason,
    detail: String,
}

impl Refusal {
    /// A refusal for `reason`, with a detail saying more.
    pub fn new(reason: RefusalReason, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
        }
    }

    /// A refusal of the application's own ([`RefusalReason::Denied`]): `message` is what the
    /// client reads.
    pub fn denied(message: impl Into<String>) -> Refusal {
        Refusal::new(RefusalReason::Denied, message)
    }

    /// Why the connection was refused.
    pub fn reason(&self) -> RefusalReason {
        self.reason
    }

    /// The detail, without the reason's words.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.reason.phrase(), self.detail.is_empty()) {
            (Some(p), true) => f.write_str(p),
            (Some(p), false) => write!(f, "{p}: {}", self.detail),
            (None, true) => f.write_str("connection denied"),
            (None, false) => f.write_str(&self.detail),
        }
    }
}

impl std::error::Error for Refusal {}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Error {
        Error::Unauthorized {
            reason: r.reason,
            message: r.to_string(),
        }
    }
}

/// Decides who a connection is, before the relay registers it.
///
/// ```
/// use socketio_p2p::auth::{Authenticator, Handshake, Identity, Refusal};
///
/// /// Lets in the clients that present the right pass phrase, under the id they ask for.
/// struct PassPhrase(String);
///
/// #[async_trait::async_trait]
/// impl Authenticator for PassPhrase {
///     async fn authenticate(&self, handshake: &Handshake) -> Result<Identity, Refusal> {
///         if handshake.header("x-pass") != Some(self.0.as_str()) {
///             return Err(Refusal::denied("wrong pass phrase"));
///         }
///         let id = handshake.client_id().ok_or_else(|| Refusal::denied("no clientId"))?;
///         Ok(Identity::new(id))
///     }
/// }
/// ```
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The identity of the connection described by `handshake`, or why it is refused. The relay
    /// waits for the answer at most its
    /// [`reply_timeout`](crate::ServerOptions::reply_timeout).
    async fn authenticate(&self, handshake: &Handshake) -> Result<Identity, Refusal>;
}

impl std::fmt::Debug for dyn Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("dyn Authenticator")
    }
}

/// What one kind of operation may name: allow and deny lists of glob patterns (see the
/// [module documentation](self) for the syntax). Deny wins; without an allow list, everything
/// not denied is allowed; an empty allow list allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rule {
    /// Patterns of the names allowed; `None` allows every name not denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Patterns of the names denied, whatever `allow` says.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

impl Rule {
    /// Allows only the names matching one of `patterns`.
    pub fn allow<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Rule {
        Rule {
            allow: Some(patterns.into_iter().map(Into::into).collect()),
            deny: Vec::new(),
        }
    }

    /// Allows every name except those matching one of `patterns`.
    pub fn deny<S: Into<String>>(patterns: impl IntoIterator<Item = S>) -> Rule {
        Rule {
            allow: None,
            deny: patterns.into_iter().map(Into::into).collect(),
        }
    }

    /// Allows nothing.
    pub fn nothing() -> Rule {
        Rule {
            allow: Some(Vec::new()),
            deny: Vec::new(),
        }
    }

    /// The same rule, also denying the names matching `patterns`.
    pub fn and_deny<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Rule {
        self.deny.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Whether this rule allows everything (no allow list, nothing denied).
    pub fn allows_all(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty()
    }

    /// Whether `name` is allowed by a pattern of an allow list (and not denied): a rule without
    /// an allow list allows names but lists none.
    fn lists(&self, name: &str) -> bool {
        self.allow.is_some() && self.allows(name)
    }

    /// Whether `name` is allowed: no deny pattern matches it and, if there is an allow list,
    /// one of its patterns does.
    pub fn allows(&self, name: &str) -> bool {
        if self.allows_all() {
            return true;
        }
        if self.deny.iter().any(|p| glob_match(p, name)) {
            return false;
        }
        match &self.allow {
            None => true,
            Some(allow) => allow.iter().any(|p| glob_match(p, name)),
        }
    }
}

/// What a client may do, one [`Rule`] per kind of operation (see the
/// [module documentation](self)). The default allows everything.
///
/// In a token, the `permissions` claim holds it as JSON; kinds left out allow everything, and an
/// unknown kind makes the token invalid:
///
/// ```json
/// {"send": {"allow": ["bob", "sensor-*"]}, "rooms": {"deny": ["admin*"]}, "call": {"allow": []}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Permissions {
    /// Client ids it may send to: messages, requests, add-target, streams.
    #[serde(skip_serializing_if = "Rule::allows_all")]
    pub send: Rule,
    /// Rooms it may join and emit to (topic rooms excepted: see the service kinds).
    #[serde(skip_serializing_if = "Rule::allows_all")]
    pub rooms: Rule,
    /// Services it may be: create, publish to and destroy their topics, add and remove their
    /// subscribers.
    #[serde(skip_serializing_if = "Rule::allows_all")]
    pub serve: Rule,
    /// Services it may call. A service a client provides is that client: a call to it is
    /// allowed by [`send`](Self::send), or by a pattern of this rule's allow list.
    #[serde(skip_serializing_if = "Rule::allows_all")]
    pub call: Rule,
    /// Services whose topics it may subscribe to.
    #[serde(skip_serializing_if = "Rule::allows_all")]
    pub subscribe: Rule,
}

impl Permissions {
    /// Allows everything (the default).
    pub fn allow_all() -> Permissions {
        Permissions::default()
    }

    /// Allows nothing: a client that may only be reached, answer, and leave rooms.
    pub fn deny_all() -> Permissions {
        Permissions {
            send: Rule::nothing(),
            rooms: Rule::nothing(),
            serve: Rule::nothing(),
            call: Rule::nothing(),
            subscribe: Rule::nothing(),
        }
    }

    /// Whether every kind allows everything.
    pub fn allows_all(&self) -> bool {
        [
            &self.send,
            &self.rooms,
            &self.serve,
            &self.call,
            &self.subscribe,
        ]
        .iter()
        .all(|r| r.allows_all())
    }

    /// Checks one operation of `client`: the error says who may not do what.
    pub(crate) fn check(&self, client: &str, action: Action<'_>) -> Result<()> {
        let (allowed, what) = match action {
            Action::Send(id) => (self.send.allows(id), format!("send to client '{id}'")),
            Action::Message(id) => (
                self.send.allows(id) || self.call.lists(id),
                format!("send to client '{id}'"),
            ),
            Action::Call(s) => (self.call.allows(s), format!("call service '{s}'")),
            Action::Subscribe(s) => (
                self.subscribe.allows(s),
                format!("subscribe to the topics of service '{s}'"),
            ),
            Action::SubscribeClient(s) if !self.subscribe.allows(s) => {
                (false, format!("subscribe to the topics of service '{s}'"))
            }
            Action::SubscribeClient(s) => (
                self.send.allows(s) || self.subscribe.lists(s),
                format!("send to client '{s}'"),
            ),
            Action::Serve(s) => (self.serve.allows(s), format!("act as service '{s}'")),
            Action::Room(r) => (self.rooms.allows(r), format!("join or emit to room '{r}'")),
        };
        if allowed {
            Ok(())
        } else {
            Err(Error::PermissionDenied(format!(
                "client '{client}' may not {what}"
            )))
        }
    }
}

/// One operation a permission check is about (see [`Permissions`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Action<'a> {
    /// Add-target or a stream to a client: `send`.
    Send(&'a str),
    /// A message or request to a client, which may be a service a client provides: `send`, or
    /// the allow list of `call`.
    Message(&'a str),
    /// A call of a service the server provides: `call`.
    Call(&'a str),
    /// Subscribing to the topics of a service the server provides: `subscribe`.
    Subscribe(&'a str),
    /// Subscribing to the topics of a service a client provides, a message to that client:
    /// `subscribe`, and `send` or the allow list of `subscribe`.
    SubscribeClient(&'a str),
    /// Acting as a service: `serve`.
    Serve(&'a str),
    /// Joining or emitting to a room that is not a topic room: `rooms`.
    Room(&'a str),
}

impl<'a> Action<'a> {
    /// The check for joining `room` (or emitting to it) on one's own behalf: a topic room is a
    /// subscription (`subscribe` joining, `serve` emitting), any other room `rooms`.
    pub(crate) fn own_room(room: &'a str, emit: bool) -> Action<'a> {
        match topic_service(room) {
            Some(s) if emit => Action::Serve(s),
            Some(s) => Action::Subscribe(s),
            None => Action::Room(room),
        }
    }

    /// The check for a service's own room operation (creating or destroying a topic, adding or
    /// removing a subscriber): `serve` for a topic room, `rooms` for any other.
    pub(crate) fn service_room(room: &'a str) -> Action<'a> {
        match topic_service(room) {
            Some(s) => Action::Serve(s),
            None => Action::Room(room),
        }
    }
}

/// The service a topic room (`service:<service>:topic:<topic>`) belongs to.
fn topic_service(room: &str) -> Option<&str> {
    room.strip_prefix("service:")?
        .split_once(":topic:")
        .map(|(s, _)| s)
}

/// Whether `name` matches the glob `pattern` as a whole: `*` any run of characters, `?` one
/// character. Linear in the common case; at worst the product of the two lengths, with no
/// recursion.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // The last `*` seen and the position in `name` it is tried up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// The claims of a token [`JwtAuthenticator`] accepts (other claims are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The client id.
    pub sub: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// When the token was issued, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// What the client may do; absent: the relay's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

impl Claims {
    /// Claims for `sub`, issued now and valid for `ttl`.
    pub fn new(sub: impl Into<String>, ttl: Duration) -> Claims {
        let now = unix_now();
        Claims {
            sub: sub.into(),
            exp: now.saturating_add(ttl.as_secs()),
            iat: Some(now),
            permissions: None,
        }
    }

    /// The same claims with permissions.
    pub fn with_permissions(mut self, permissions: Permissions) -> Claims {
        self.permissions = Some(permissions);
        self
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs `claims` as an HS256 token with `secret`: what [`JwtAuthenticator::hs256`] with the
/// same secret accepts until `exp`.
///
/// ```
/// use socketio_p2p::auth::{mint_hs256, Claims, JwtAuthenticator};
/// use std::time::Duration;
///
/// let token = mint_hs256(b"a long shared secret", &Claims::new("alice", Duration::from_secs(3600)))?;
/// let auth = JwtAuthenticator::hs256(b"a long shared secret")?;
/// assert_eq!(auth.verify(&token).unwrap().sub, "alice");
/// # Ok::<(), socketio_p2p::Error>(())
/// ```
pub fn mint_hs256(secret: &[u8], claims: &Claims) -> Result<String> {
    if secret.is_empty() {
        return Err(Error::Token {
            message: "the secret is empty".into(),
            source: None,
        });
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &key,
    )
    .map_err(|e| Error::Token {
        message: "could not sign the token".into(),
        source: Some(Arc::new(e)),
    })
}

/// Verifies JSON Web Tokens: the built-in [`Authenticator`].
///
/// The token's signature must verify with the relay's key under the one algorithm the key is
/// for (HS256 for a secret; RS256, ES256 or EdDSA for a public key); its `exp` claim is required
/// and must not have passed by more than the leeway (30 s by default, for clocks that differ a
/// little); an `nbf` claim, if present, must have passed; `sub` is required and is the client
/// id. A `permissions` claim, if present, is the client's [`Permissions`].
pub struct JwtAuthenticator {
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuthenticator")
            .field("algorithms", &self.validation.algorithms)
            .field("leeway", &self.validation.leeway)
            .finish()
    }
}

/// The default leeway on `exp` and `nbf`, in seconds.
const DEFAULT_LEEWAY: u64 = 30;

impl JwtAuthenticator {
    fn with_key(key: jsonwebtoken::DecodingKey, alg: jsonwebtoken::Algorithm) -> JwtAuthenticator {
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = DEFAULT_LEEWAY;
        // Checked only when an audience is set (see `with_audience`).
        validation.validate_aud = false;
        JwtAuthenticator { key, validation }
    }

    /// Accepts HS256 tokens signed with `secret`. Fails for an empty secret.
    pub fn hs256(secret: impl AsRef<[u8]>) -> Result<JwtAuthenticator> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(Error::Token {
                message: "the secret is empty".into(),
                source: None,
            });
        }
        Ok(JwtAuthenticator::with_key(
            jsonwebtoken::DecodingKey::from_secret(secret),
            jsonwebtoken::Algorithm::HS256,
        ))
    }

    /// Accepts tokens signed with the private key of `pem`, a public key in PEM form: RSA
    /// (RS256), EC on P-256 (ES256) or Ed25519 (EdDSA), told apart by the key itself.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<JwtAuthenticator> {
        use jsonwebtoken::{Algorithm, DecodingKey};
        let tried = [
            (DecodingKey::from_rsa_pem(pem), Algorithm::RS256),
            (DecodingKey::from_ec_pem(pem), Algorithm::ES256),
            (DecodingKey::from_ed_pem(pem), Algorithm::EdDSA),
        ];
        let mut last = None;
        for (key, alg) in tried {
            match key {
                Ok(key) => return Ok(JwtAuthenticator::with_key(key, alg)),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Token {
            message: "the public key is not an RSA, EC (P-256) or Ed25519 public key in PEM form"
                .into(),
            source: last.map(|e| Arc::new(e) as crate::error::BoxError),
        })
    }

    /// The same authenticator with another leeway on `exp` and `nbf` (whole seconds).
    pub fn with_leeway(mut self, leeway: Duration) -> JwtAuthenticator {
        self.validation.leeway = leeway.as_secs();
        self
    }

    /// The same authenticator, also requiring the `aud` claim to name one of `audience`.
    pub fn with_audience<S: ToString>(mut self, audience: &[S]) -> JwtAuthenticator {
        self.validation.set_audience(audience);
        self.validation.validate_aud = true;
        self.validation.required_spec_claims.insert("aud".into());
        self
    }

    /// The same authenticator, also requiring the `iss` claim to be one of `issuers`.
    pub fn with_issuer<S: ToString>(mut self, issuers: &[S]) -> JwtAuthenticator {
        self.validation.set_issuer(issuers);
        self.validation.required_spec_claims.insert("iss".into());
        self
    }

    /// Verifies `token` and returns its claims, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        use jsonwebtoken::errors::ErrorKind as K;
        if token.len() > MAX_TOKEN_LEN {
            return Err(Refusal::new(
                RefusalReason::InvalidToken,
                format!("the token is longer than {MAX_TOKEN_LEN} bytes"),
            ));
        }
        let data = jsonwebtoken::decode::<TokenClaims>(token, &self.key, &self.validation);
        let claims = match data {
            Ok(d) => d.claims,
            Err(e) => {
                let (reason, detail) = match e.kind() {
                    K::ExpiredSignature => (
                        RefusalReason::Expired,
                        "the token's exp has passed".to_string(),
                    ),
                    K::InvalidSignature => (
                        RefusalReason::BadSignature,
                        "the token's signature does not verify with the relay's key".to_string(),
                    ),
                    K::InvalidAlgorithm => (
                        RefusalReason::InvalidToken,
                        format!(
                            "the token is not signed with {:?}, the relay's algorithm",
                            self.validation.algorithms
                        ),
                    ),
                    K::MissingRequiredClaim(c) => (
                        RefusalReason::InvalidToken,
                        format!("the token has no '{c}' claim"),
                    ),
                    K::ImmatureSignature => (
                        RefusalReason::InvalidToken,
                        "the token is not valid yet (nbf)".to_string(),
                    ),
                    K::InvalidAudience => (
                        RefusalReason::InvalidToken,
                        "the token is not for this relay (aud)".to_string(),
                    ),
                    K::InvalidIssuer => (
                        RefusalReason::InvalidToken,
                        "the token's issuer is not accepted (iss)".to_string(),
                    ),
                    K::Json(e) => (
                        RefusalReason::InvalidToken,
                        format!("the token's claims are not valid: {e}"),
                    ),
                    _ => (RefusalReason::InvalidToken, format!("{e}")),
                };
                return Err(Refusal::new(reason, detail));
            }
        };
        // Both are required claims, so the validation has already refused a token without them.
        let (Some(sub), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(Refusal::new(
                RefusalReason::InvalidToken,
                "the token has no 'sub' or no 'exp' claim",
            ));
        };
        if let Err(why) = crate::protocol::check_client_id(&sub) {
            return Err(Refusal::new(
                RefusalReason::InvalidToken,
                format!("the token's sub is not a valid client id: {why}"),
            ));
        }
        Ok(Claims {
            sub,
            exp,
            iat: claims.iat,
            permissions: claims.permissions,
        })
    }
}

/// The claims as a token carries them: the required ones optional here, so that a token
/// without them is refused by the validation, which says which one is missing.
#[derive(Deserialize)]
struct TokenClaims {
    sub: Option<String>,
    exp: Option<u64>,
    iat: Option<u64>,
    permissions: Option<Permissions>,
}

#[async_trait::async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, handshake: &Handshake) -> Result<Identity, Refusal> {
        let claims = self.verify(handshake.token()?)?;
        Ok(Identity {
            client_id: claims.sub,
            permissions: claims.permissions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("bob", "bob", true),
            ("bob", "bobby", false),
            ("bob*", "bobby", true),
            ("*by", "bobby", true),
            ("b?b", "bob", true),
            ("b?b", "bb", false),
            ("?", "é", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("room-*-x", "room--x", true),
            ("", "", true),
            ("", "a", false),
        ];
        for (p, n, want) in cases {
            assert_eq!(glob_match(p, n), want, "{p:?} against {n:?}");
        }
    }

    #[test]
    fn deny_wins_and_an_empty_allow_list_allows_nothing() {
        let r = Rule::allow(["a*"]).and_deny(["ab"]);
        assert!(r.allows("ac") && !r.allows("ab") && !r.allows("b"));
        assert!(!Rule::nothing().allows("x"));
        assert!(Rule::default().allows("x"));
        assert!(!Rule::deny(["*"]).allows("x"));
    }

    #[test]
    fn permissions_read_from_json_strictly() {
        let p: Permissions = serde_json::from_value(serde_json::json!({
            "send": {"allow": ["bob"]},
            "rooms": {"deny": ["x*"]},
        }))
        .unwrap();
        assert!(p.send.allows("bob") && !p.send.allows("carol"));
        assert!(p.call.allows("any"));
        let typo = serde_json::from_value::<Permissions>(serde_json::json!({"sned": {}}));
        assert!(typo.is_err());
        let back: Permissions = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn topic_rooms_name_their_service() {
        assert_eq!(topic_service("service:math:topic:results"), Some("math"));
        assert_eq!(topic_service("lobby"), None);
        assert!(matches!(
            Action::own_room("service:math:topic:r", false),
            Action::Subscribe("math")
        ));
        assert!(matches!(
            Action::own_room("service:math:topic:r", true),
            Action::Serve("math")
        ));
        assert!(matches!(
            Action::service_room("lobby"),
            Action::Room("lobby")
        ));
    }

    #[test]
    fn refusal_messages_name_their_reason() {
        for reason in RefusalReason::ALL {
            let r = Refusal::new(reason, "more words");
            assert_eq!(RefusalReason::of_message(&r.to_string()), reason);
            assert_eq!(RefusalReason::of_message(reason.phrase().unwrap()), reason);
        }
        assert_eq!(
            RefusalReason::of_message("token expiredness"),
            RefusalReason::Denied
        );
        assert_eq!(Refusal::denied("go away").to_string(), "go away");
    }
}
