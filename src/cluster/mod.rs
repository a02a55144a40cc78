//! Several relays as one: a directory of client ids and directed traffic between relays, on
//! Redis.
//!
//! A relay started with [`ClusterOptions`] ([`RelayOptions::cluster`](crate::RelayOptions::cluster),
//! `socketio-p2p serve --redis URL`) joins the cluster of every relay that uses the same Redis
//! (and [`prefix`](ClusterOptions::prefix)); a client of one relay then reaches a client of
//! another by its id, as if both were on one relay. Without it a relay runs alone and never
//! touches Redis.
//!
//! # What lives in Redis
//!
//! Every key starts with the prefix (`socketio-p2p` by default), written `P` here:
//!
//! - `P:relay:<relay>`: a relay's liveness key. Each relay has a random id, made at start, and
//!   keeps this key with a short lifetime ([`lease`](ClusterOptions::lease), 3 s by default),
//!   renewed every [`heartbeat`](ClusterOptions::heartbeat) (1 s). A relay whose key is gone is
//!   dead, whatever it may still think.
//! - `P:relays`: a set of the relay ids that have joined; dead ones are pruned by the others.
//! - `P:client:<id>`: the relay that holds client id `<id>`. Set atomically (a Lua script) when a
//!   client connects, if no live relay holds the id; removed, only if it still names the same
//!   relay, when the client's session ends. Its lease is the liveness key of the relay it
//!   names: an entry naming a dead relay is stale, read as absent, and taken over by the next
//!   client that claims the id. So a relay killed outright loses its clients within the lease.
//! - `P:relay:<relay>:clients`: the set of client ids a relay holds, for `LIST_CLIENTS`; removed
//!   with the relay's entries when it is found dead.
//! - `P:resume:<id>`: the resume secret of client `<id>`'s session (see `PROTOCOL.md`, "Session
//!   resume"), written by the relay that holds the id. A connection to another relay that
//!   presents it takes the id over (the claim script compares it); the old relay ends its
//!   session without telling its peers and hands its watchers over. Removed with the client's
//!   entry.
//! - `P:room:<room>`: the relays holding members of room `<room>`, and `P:relay:<relay>:rooms`,
//!   the rooms a relay has members in (see [Rooms](#rooms)).
//!   A relay's entries are removed with its other entries when it is found dead.
//!
//! Since a Redis started without persistence forgets all of it when it restarts, each relay
//! writes its part again when it finds its liveness key missing, and every few seconds anyway.
//!
//! # Directed traffic
//!
//! Each relay subscribes to one pub/sub channel, `P:relay:<relay>` (channels and keys are apart
//! in Redis). Something for a client of another relay is published by a Lua script that reads
//! the client's entry and publishes to that relay's channel only, in one round trip: directed
//! traffic reaches one relay, not all. Pub/sub was chosen over lists or streams because what it
//! carries is only useful to a live receiver: `PUBLISH` answers how many subscribers got the
//! message, so a message for a relay that is gone is known undelivered at once and its sender
//! told, and nothing piles up in Redis for a relay that will never read it. What a relay sends
//! leaves in order, through one queue drained by pipelines, so the messages of one sender stay in
//! order. Answers to requests go straight to the asking relay's channel.
//!
//! # Rooms
//!
//! A room is one room across the cluster. Each relay records in `P:room:<room>` that it holds
//! members of the room: a join is recorded before it is answered, so that a room event sent from
//! any relay after the answer reaches the new member; a relay whose last member left withdraws at
//! its next heartbeat. A room event is published, by one Lua script, to each live relay of that
//! set but the sender's, which hands it to each of its members through the member's own budget
//! (as for its own room events); members busy there are reported back to the emitting client
//! with a `SERVER_ERROR` naming them, since its answer cannot wait for the other relays. A topic
//! service's subscribing or unsubscribing of a client of another relay is a request to that
//! relay, which joins or removes it (its own room limit applies) and answers. The end of a topic
//! goes to the room's relays like a room event.
//!
//! # Failures
//!
//! A relay's subscriber checks its connection every heartbeat and reconnects with backoff, and
//! subscribes again, by itself; its commands go through a connection manager that reconnects
//! too. While Redis cannot be reached, everything that has to cross relays fails at once with
//! [`Error::Cluster`] (requests waiting for another relay's answer included), and traffic between
//! clients of the same relay goes on. A relay found dead (its liveness key gone, or nobody
//! subscribed to its channel at two heartbeats in a row) is mourned by each relay whose clients
//! talked to its clients: they get `MULTI_API_TARGET_DISCONNECT`, and their requests waiting for
//! its clients fail with `PEER_GONE`.
//!
//! `PUBLISH` counts a message delivered once Redis has queued it for the target relay's
//! subscription: one that breaks before the relay reads it (a relay that falls far behind is cut
//! off by Redis' `client-output-buffer-limit pubsub`) loses what was in it. The subscriber reads
//! without pause and hands each envelope over at once (nothing here waits on a client), so that
//! only a relay that cannot keep up at all is at risk.
//!
//! Carried between relays: messages (`P2P_EMIT`, `P2P_BATCH`), requests and their answers
//! (`P2P_EMIT_ACKNOWLEDGE`, `P2P_REQ`, the server's own
//! [`P2pServer::request`](crate::P2pServer::request)), `MULTI_API_ADD_TARGET`, disconnect
//! notices, `LIST_CLIENTS`, calls to a service a client provides, the duplicate-id policy, a
//! client's return with its resume secret; room events (`EMIT_ROOM`, topic publications of client
//! services and of the server's services, the end of a topic) to the relays with members of the
//! room, and a service's subscribing and unsubscribing of a client of another relay (see
//! [Rooms](#rooms)); and credit-mode streams between Rust clients (`MULTI_API_CREATE_STREAM` and
//! every `P2P_FRAME`; see `src/cluster/stream.rs`, which also says why their frames go through
//! Redis). A stream's frames, once it is open, are published straight to the channel of the relay
//! keeping the route's other half, with no directory look-up.
//!
//! The server's own services are each relay's own (the application provides them on every
//! relay); their topics' rooms are rooms like any other. Streams with a seed-era client at either
//! end and the server's own stream ends stay within one relay: opening such a stream to a client
//! of another relay fails with `BAD_REQUEST`. A stream through a relay that dies, or while this
//! relay's link to Redis breaks, is reset; it goes on through a session resumed on the client's
//! own relay, not through one taken over by another relay. While Redis is out of reach a room
//! event reaches the members on its own relay only, and its sender gets [`Error::Cluster`] saying
//! so.

mod envelope;
mod rooms;
pub(crate) mod stream;

pub(crate) use envelope::{Envelope, WireArg};

use crate::error::Error;
use crate::protocol::Arg;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Settings of a relay that is one of several sharing a Redis (see [the module](self)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterOptions {
    /// The Redis URL, `redis://[user:password@]host[:port][/db]`.
    pub url: String,
    /// What every key and channel of the cluster starts with, so that several clusters may share
    /// one Redis. Default `socketio-p2p`.
    pub prefix: String,
    /// How long a relay's liveness key lives unless renewed: a relay that dies is known dead at
    /// most this long after, and its clients' ids are free again. Default 3 s.
    pub lease: Duration,
    /// How often a relay renews its liveness key, checks its link to Redis and looks at the
    /// relays its clients talk to. Default 1 s; keep it well under [`lease`](Self::lease).
    pub heartbeat: Duration,
    /// How long one Redis command or connection attempt may take before the operation fails
    /// with [`Error::Cluster`]. Default 2 s.
    pub redis_timeout: Duration,
    /// Messages, requests and answers that may wait in this relay's queue towards the other
    /// relays; past it a send is refused as busy. Default 65,536.
    pub max_queued: usize,
}

impl ClusterOptions {
    /// The default settings with Redis at `url`.
    pub fn new(url: impl Into<String>) -> ClusterOptions {
        ClusterOptions {
            url: url.into(),
            prefix: "socketio-p2p".into(),
            lease: Duration::from_secs(3),
            heartbeat: Duration::from_secs(1),
            redis_timeout: Duration::from_secs(2),
            max_queued: 65_536,
        }
    }

    /// Checks that [`url`](Self::url) is a Redis URL this relay can use (without connecting).
    pub fn check(&self) -> Result<(), Error> {
        redis::Client::open(self.url.as_str())
            .map(|_| ())
            .map_err(|e| {
                Error::Cluster(format!(
                    "the Redis URL '{}' is not valid: {e}",
                    redact(&self.url)
                ))
            })
    }

    /// The same options with another key [`prefix`](Self::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> ClusterOptions {
        self.prefix = prefix.into();
        self
    }
}

/// What the cluster needs from the relay it belongs to.
pub(crate) trait Host: Send + Sync + 'static {
    /// An envelope from another relay, for this one.
    fn deliver(&self, cluster: &Arc<Cluster>, env: Envelope);
    /// A stream frame from relay `relay` (see [`stream`]), its header naming a route of this
    /// relay.
    fn frame(&self, relay: &str, frame: bytes::Bytes);
    /// Relay `relay` is dead: each of `clients` (clients of that relay) was watched by the given
    /// clients of this relay.
    fn relay_gone(&self, relay: &str, clients: Vec<(String, Vec<Arc<str>>)>);
    /// This relay lost its link to Redis: what crosses relays without being resent (stream
    /// frames) is lost.
    fn link_lost(&self);
    /// The ids of this relay's clients (connected, or away for a moment).
    fn local_ids(&self) -> Vec<String>;
    /// A client of this relay whose id another live relay holds: disconnect it with `reason`.
    fn evict(&self, client: &str, reason: &str);
    /// The rooms this relay's connected clients are in (the relay's own rooms left out).
    fn local_rooms(&self) -> HashSet<String>;
}

/// Claims client id `ARGV[3]` for relay `ARGV[1]` unless a live relay other than it holds it
/// (`ARGV[4]` = `take`: whoever holds it), or the connection presents the resume secret of the
/// session there (`ARGV[5]`, compared with `KEYS[3]`). Returns `{1, previous holder or ''}` when
/// claimed, `{2, holder}` when taken over with the secret, `{0, holder}` when not claimed.
const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
local how = 1
if cur and cur ~= ARGV[1] and ARGV[4] ~= 'take'
   and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
  if ARGV[5] ~= '' and redis.call('GET', KEYS[3]) == ARGV[5] then
    how = 2
  else
    return {0, cur}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
if cur and cur ~= ARGV[1] then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', ARGV[2] .. cur .. ':clients', ARGV[3])
  return {how, cur}
end
return {1, ''}
"#;

/// Records resume secret `ARGV[2]` for the client of key `KEYS[1]`, if relay `ARGV[1]` holds it.
const SET_SECRET: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  return 1
end
return 0
"#;

/// Releases client id `ARGV[2]` (and its session's resume secret) if relay `ARGV[1]` still
/// holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[3])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"#;

/// Publishes `ARGV[2]` to the channel of the live relay holding the client of key `KEYS[1]`.
/// Returns `{receivers, relay}`; receivers -1 when no live relay holds it.
const DIRECTED: &str = r#"
local r = redis.call('GET', KEYS[1])
if not r then return {-1, ''} end
if redis.call('EXISTS', ARGV[1] .. r) == 0 then return {-1, r} end
return {redis.call('PUBLISH', ARGV[1] .. r, ARGV[2]), r}
"#;

/// The client ids of every live relay.
const LIST: &str = r#"
local out = {}
for _, r in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. r) == 1 then
    for _, c in ipairs(redis.call('SMEMBERS', ARGV[1] .. r .. ':clients')) do
      table.insert(out, c)
    end
  end
end
return out
"#;

/// Removes the entries of dead relays: their client ids (those still naming them, with their
/// resume secrets), their client sets, their place in the sets of rooms (`ARGV[4]`: the start
/// of a room's key) and their index of those, and their place in the set of relays.
const PRUNE: &str = r#"
for _, r in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. r) == 0 then
    local rooms = ARGV[1] .. r .. ':rooms'
    for _, room in ipairs(redis.call('SMEMBERS', rooms)) do
      redis.call('SREM', ARGV[4] .. room, r)
    end
    redis.call('DEL', rooms)
    local set = ARGV[1] .. r .. ':clients'
    for _, c in ipairs(redis.call('SMEMBERS', set)) do
      local key = ARGV[2] .. c
      if redis.call('GET', key) == r then
        redis.call('DEL', key)
        redis.call('DEL', ARGV[3] .. c)
      end
    end
    redis.call('DEL', set)
    redis.call('SREM', KEYS[1], r)
  end
end
return 1
"#;

/// Where an outgoing envelope goes.
enum Route {
    /// To the relay holding this client.
    Client(String),
    /// To this relay.
    Relay(String),
    /// To every other live relay holding members of this room (see [`rooms`]).
    Room(String),
    /// To this channel (a relay's, named in full), as it is.
    Channel(Arc<str>),
}

/// The outcome of a send: the relay it reached (for a room: how many relays).
type Done = Box<dyn FnOnce(Result<String, Error>) + Send>;

struct Outgoing {
    route: Route,
    payload: Vec<u8>,
    done: Option<Done>,
}

/// The clients of one other relay that clients of this relay talk to, each with those.
type Watchers = HashMap<String, HashSet<Arc<str>>>;

/// A request waiting for another relay's answer.
struct Waiting {
    /// The client asked.
    client: String,
    /// Its relay, once known.
    relay: Option<String>,
    tx: oneshot::Sender<Result<Vec<Arg>, Error>>,
}

/// This relay's membership of a cluster.
pub(crate) struct Cluster {
    id: String,
    opts: ClusterOptions,
    client: redis::Client,
    conn: ConnectionManager,
    /// Subscribed to this relay's channel, and the link answers.
    up: AtomicBool,
    /// Since when the subscriber has been up without a break.
    up_since: Mutex<Option<Instant>>,
    outbox: mpsc::Sender<Outgoing>,
    next_request: AtomicU64,
    waiting: Mutex<HashMap<u64, Waiting>>,
    /// Clients of other relays that clients of this relay talk to, by relay: who to tell when
    /// that relay dies.
    watched: Mutex<HashMap<String, Watchers>>,
    /// Relays seen with nobody subscribed to their channel at the last heartbeat.
    silent: Mutex<HashSet<String>>,
    /// Set when this relay's part of the directory is to be written again at the next heartbeat
    /// (a client let in without its claim, a link to Redis made again).
    resync: AtomicBool,
    /// This relay's rooms in Redis.
    rooms: rooms::Rooms,
    stopped: AtomicBool,
}

impl Cluster {
    /// Joins the cluster: starts the subscriber, the heartbeat and the outgoing queue. Fails only
    /// for a URL that cannot be used; Redis itself may be down, the relay joins when it is back.
    pub(crate) fn start(opts: ClusterOptions, host: Weak<dyn Host>) -> Result<Arc<Cluster>, Error> {
        opts.check()?;
        let client = redis::Client::open(opts.url.as_str())
            .map_err(|e| Error::Cluster(format!("the Redis URL is not valid: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.redis_timeout))
            .set_response_timeout(Some(opts.redis_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| Error::Cluster(format!("cannot set up the Redis connection: {e}")))?;
        let (tx, rx) = mpsc::channel(opts.max_queued.max(1));
        let cluster = Arc::new(Cluster {
            id: relay_id(),
            opts,
            client,
            conn,
            up: AtomicBool::new(false),
            up_since: Mutex::new(None),
            outbox: tx,
            next_request: AtomicU64::new(1),
            waiting: Mutex::new(HashMap::new()),
            watched: Mutex::new(HashMap::new()),
            silent: Mutex::new(HashSet::new()),
            resync: AtomicBool::new(true),
            rooms: rooms::Rooms::default(),
            stopped: AtomicBool::new(false),
        });
        tracing::info!(relay = %cluster.id, url = %redact(&cluster.opts.url), "joining the cluster");
        tokio::spawn(send_loop(Arc::downgrade(&cluster), rx));
        tokio::spawn(subscribe_loop(Arc::downgrade(&cluster), host.clone()));
        tokio::spawn(heartbeat_loop(Arc::downgrade(&cluster), host));
        Ok(cluster)
    }

    /// This relay's id in the cluster.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.opts.prefix)
    }

    fn client_key(&self, client: &str) -> String {
        self.key(&format!("client:{client}"))
    }

    fn resume_key(&self, client: &str) -> String {
        self.key(&format!("resume:{client}"))
    }

    /// `P:relay:` — the start of every relay's liveness key and channel.
    fn relay_prefix(&self) -> String {
        self.key("relay:")
    }

    fn own_clients_key(&self) -> String {
        self.key(&format!("relay:{}:clients", self.id))
    }

    /// The error for something that had to cross relays while Redis is out of reach.
    pub(crate) fn unavailable(&self, what: &str) -> Error {
        Error::Cluster(format!(
            "{what}: the relay cannot reach the cluster's Redis right now; try again later"
        ))
    }

    /// Whether this relay is linked to the cluster now.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.opts.redis_timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Cluster(format!("Redis: {e}"))),
            Err(_) => Err(Error::Cluster(format!(
                "Redis did not answer within {:?}",
                self.opts.redis_timeout
            ))),
        }
    }

    fn claim_cmd(&self, client: &str, take: bool, secret: Option<&str>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(3)
            .arg(self.client_key(client))
            .arg(self.own_clients_key())
            .arg(self.resume_key(client))
            .arg(&self.id)
            .arg(self.relay_prefix())
            .arg(client)
            .arg(if take { "take" } else { "claim" })
            .arg(secret.unwrap_or(""));
        cmd
    }

    /// Claims client id `client` for this relay. `take`: even from a live relay, which is then
    /// told to disconnect its connection under the id (the policy `replace`); `secret`: the
    /// resume secret the connection presents, which takes the id over from the live relay
    /// whose session has that secret (that relay is told so). Fails with the holder's relay id
    /// when another live relay holds it and neither lets this one take it, and with
    /// [`Error::Cluster`] when Redis cannot be reached.
    pub(crate) async fn claim(
        &self,
        client: &str,
        take: bool,
        secret: Option<&str>,
    ) -> Result<Claim, Error> {
        let cmd = self.claim_cmd(client, take, secret);
        let (claimed, other): (i64, String) = self.run(&cmd).await?;
        if claimed == 0 {
            return Ok(Claim::HeldBy(other));
        }
        if claimed == 2 {
            let env = Envelope::Resumed {
                relay: self.id.clone(),
                client: client.to_string(),
            };
            self.send(Route::Relay(other), &env, None);
            return Ok(Claim::Claimed);
        }
        if take && !other.is_empty() {
            let reason =
                format!("Error: disconnected: a newer connection took over client id '{client}'");
            self.send(
                Route::Relay(other),
                &Envelope::Kick {
                    client: client.to_string(),
                    reason,
                },
                None,
            );
        }
        Ok(Claim::Claimed)
    }

    /// Records the resume secret of the session of `client` here, with which a connection to
    /// another relay may take the session's id over.
    pub(crate) fn set_resume_secret(self: &Arc<Self>, client: &str, secret: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(SET_SECRET)
            .arg(2)
            .arg(self.client_key(client))
            .arg(self.resume_key(client))
            .arg(&self.id)
            .arg(secret);
        let this = self.clone();
        let client = client.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.run::<i64>(&cmd).await {
                tracing::debug!(%client, "could not record the session's resume secret: {e}");
            }
        });
    }

    /// Releases client id `client`, if this relay still holds it.
    pub(crate) fn release(self: &Arc<Self>, client: &str) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE)
            .arg(3)
            .arg(self.client_key(client))
            .arg(self.own_clients_key())
            .arg(self.resume_key(client))
            .arg(&self.id)
            .arg(client);
        let this = self.clone();
        let client = client.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.run::<i64>(&cmd).await {
                // Written again, or pruned, at the next resynchronisation.
                tracing::debug!(%client, "could not release the client id: {e}");
            }
        });
    }

    /// The ids of every client of the cluster.
    pub(crate) async fn list_clients(&self) -> Result<Vec<String>, Error> {
        if !self.is_up() {
            return Err(self.unavailable("the list of the cluster's clients"));
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LIST)
            .arg(1)
            .arg(self.key("relays"))
            .arg(self.relay_prefix());
        self.run(&cmd).await
    }

    /// Sends `env` to the relay holding client `to`; `done` hears which relay that was, or why it
    /// was not delivered.
    pub(crate) fn send_to_client(&self, to: &str, env: &Envelope, done: Option<Done>) {
        self.send(Route::Client(to.to_string()), env, done)
    }

    /// Sends `env` to relay `relay`.
    pub(crate) fn send_to_relay(&self, relay: &str, env: &Envelope) {
        self.send(Route::Relay(relay.to_string()), env, None)
    }

    /// Sends `env` to every other relay holding members of `room`; `done` hears how many relays
    /// got it, or why it was not sent (at once while Redis is out of reach).
    pub(crate) fn send_to_room(
        &self,
        room: &str,
        env: &Envelope,
        done: impl FnOnce(Result<usize, Error>) + Send + 'static,
    ) {
        let done: Done =
            Box::new(move |sent: Result<String, Error>| done(sent.map(|n| n.parse().unwrap_or(0))));
        self.send(Route::Room(room.to_string()), env, Some(done))
    }

    fn send(&self, route: Route, env: &Envelope, done: Option<Done>) {
        let fail = |done: Option<Done>, e: Error| {
            match done {
                Some(done) => done(Err(e)),
                None => tracing::debug!("not sent to another relay: {e}"),
            };
        };
        if !self.is_up() {
            return fail(done, self.unavailable("not delivered"));
        }
        let payload = match env.encode() {
            Ok(p) => p.into_bytes(),
            Err(e) => return fail(done, e),
        };
        let out = Outgoing {
            route,
            payload,
            done,
        };
        if let Err(e) = self.outbox.try_send(out) {
            let (mpsc::error::TrySendError::Full(out) | mpsc::error::TrySendError::Closed(out)) = e;
            let e = Error::Overloaded(format!(
                "the relay's queue towards the other relays is full ({} waiting); nothing was \
                 delivered, try again later",
                self.opts.max_queued
            ));
            fail(out.done, e);
        }
    }

    /// Sends `env`, a request whose id came from [`next_request`](Self::next_request), to the
    /// relay holding `to`, and waits for its answer at most `timeout`.
    pub(crate) async fn request(
        self: &Arc<Self>,
        id: u64,
        to: &str,
        event: &str,
        env: Envelope,
        watcher: Option<Arc<str>>,
        timeout: Duration,
    ) -> Result<Vec<Arg>, Error> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(
            id,
            Waiting {
                client: to.to_string(),
                relay: None,
                tx,
            },
        );
        let this = Arc::downgrade(self);
        let client = to.to_string();
        self.send_to_client(
            to,
            &env,
            Some(Box::new(move |sent| {
                let Some(this) = this.upgrade() else { return };
                let mut waiting = this.waiting.lock().unwrap();
                match sent {
                    Ok(relay) => {
                        if let Some(watcher) = &watcher {
                            this.watch(&relay, &client, watcher);
                        }
                        if let Some(w) = waiting.get_mut(&id) {
                            w.relay = Some(relay);
                        }
                    }
                    Err(e) => {
                        if let Some(w) = waiting.remove(&id) {
                            let _ = w.tx.send(Err(e));
                        }
                    }
                }
            })),
        );
        // The asking relay's own margin over the one the answering relay waits.
        let answer = tokio::time::timeout(timeout + Duration::from_millis(500), rx).await;
        self.waiting.lock().unwrap().remove(&id);
        match answer {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::PeerGone(to.to_string())),
            Err(_) => Err(Error::Timeout {
                peer: Some(to.to_string()),
                event: event.to_string(),
                after: timeout,
            }),
        }
    }

    /// A new request id, unique on this relay.
    pub(crate) fn next_request(&self) -> u64 {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// An answer to request `id` arrived.
    pub(crate) fn answered(&self, id: u64, result: Result<Vec<Arg>, Error>) {
        if let Some(w) = self.waiting.lock().unwrap().remove(&id) {
            let _ = w.tx.send(result);
        } else {
            tracing::debug!(id, "an answer from another relay nobody waits for");
        }
    }

    /// Notes that client `local` of this relay talks to client `remote` of relay `relay`: it is
    /// told if that relay dies.
    pub(crate) fn watch(&self, relay: &str, remote: &str, local: &Arc<str>) {
        if relay == self.id {
            return;
        }
        self.watched
            .lock()
            .unwrap()
            .entry(relay.to_string())
            .or_default()
            .entry(remote.to_string())
            .or_default()
            .insert(local.clone());
    }

    /// Client `remote` of relay `relay` left (its watchers here are told by the caller).
    pub(crate) fn unwatch(&self, relay: &str, remote: &str) {
        let mut watched = self.watched.lock().unwrap();
        if let Some(clients) = watched.get_mut(relay) {
            clients.remove(remote);
            if clients.is_empty() {
                watched.remove(relay);
            }
        }
    }

    /// Client `local` of this relay left: it watches nobody any more.
    pub(crate) fn forget_watcher(&self, local: &str) {
        let mut watched = self.watched.lock().unwrap();
        for clients in watched.values_mut() {
            for watchers in clients.values_mut() {
                watchers.remove(local);
            }
            clients.retain(|_, w| !w.is_empty());
        }
        watched.retain(|_, c| !c.is_empty());
    }

    /// Has this relay's part of the directory written again at the next heartbeat: a client was
    /// let in without claiming its id.
    pub(crate) fn claim_later(&self) {
        self.resync.store(true, Ordering::Release);
    }

    /// The link to Redis came up or went down.
    fn set_up(&self, up: bool) {
        if up {
            self.resync.store(true, Ordering::Release);
        }
        self.up.store(up, Ordering::Release);
        *self.up_since.lock().unwrap() = up.then(Instant::now);
        if !up {
            // Their answers cannot come now.
            let waiting: Vec<_> = self.waiting.lock().unwrap().drain().collect();
            for (_, w) in waiting {
                let e = Error::Cluster(format!(
                    "the request to client '{}' on another relay is lost: the relay lost its \
                     link to the cluster's Redis",
                    w.client
                ));
                let _ = w.tx.send(Err(e));
            }
        }
    }

    /// Whether this relay has been linked long enough to judge others by their liveness keys
    /// (they renew theirs within a lease of Redis coming back).
    fn may_judge(&self) -> bool {
        let since = *self.up_since.lock().unwrap();
        since.is_some_and(|t| t.elapsed() >= self.opts.lease + self.opts.heartbeat)
    }

    /// Relay `relay` is dead: fails what waits for its clients, and returns who to tell about
    /// which of its clients.
    fn mourn(&self, relay: &str) -> Vec<(String, Vec<Arc<str>>)> {
        tracing::info!(relay, "a relay of the cluster is gone");
        let waiting: Vec<_> = {
            let mut waiting = self.waiting.lock().unwrap();
            let ids: Vec<u64> = waiting
                .iter()
                .filter(|(_, w)| w.relay.as_deref() == Some(relay))
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| waiting.remove(&id))
                .collect()
        };
        for w in waiting {
            let _ = w.tx.send(Err(Error::PeerGone(w.client)));
        }
        self.silent.lock().unwrap().remove(relay);
        let clients = self
            .watched
            .lock()
            .unwrap()
            .remove(relay)
            .unwrap_or_default();
        clients
            .into_iter()
            .map(|(c, w)| (c, w.into_iter().collect()))
            .collect()
    }

    /// The relays this relay's clients talk to or wait for.
    fn relays_of_interest(&self) -> Vec<String> {
        let mut relays: HashSet<String> = self.watched.lock().unwrap().keys().cloned().collect();
        relays.extend(
            self.waiting
                .lock()
                .unwrap()
                .values()
                .filter_map(|w| w.relay.clone()),
        );
        relays.remove(&self.id);
        relays.into_iter().collect()
    }

    /// Stops the cluster's tasks and releases this relay's liveness key and client ids.
    pub(crate) async fn leave(&self) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut pipe = redis::pipe();
        pipe.del(self.key(&format!("relay:{}", self.id))).ignore();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PRUNE)
            .arg(1)
            .arg(self.key("relays"))
            .arg(self.relay_prefix())
            .arg(self.key("client:"))
            .arg(self.key("resume:"))
            .arg(self.key("room:"));
        pipe.add_command(cmd).ignore();
        if let Err(e) = self.run_pipe(&pipe).await {
            tracing::debug!("could not leave the cluster cleanly: {e}");
        }
    }
}

/// The outcome of [`Cluster::claim`].
pub(crate) enum Claim {
    Claimed,
    /// Another live relay holds the id.
    HeldBy(String),
}

/// A new relay id: 16 random hex digits.
fn relay_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A Redis URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// Most envelopes sent in one pipeline.
const PIPELINE: usize = 256;

/// Sends what is queued, in order, in pipelines of up to [`PIPELINE`] commands.
async fn send_loop(cluster: Weak<Cluster>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PIPELINE);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < PIPELINE {
            match rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        let Some(this) = cluster.upgrade() else {
            return;
        };
        let prefix = this.relay_prefix();
        let mut pipe = redis::pipe();
        for out in &batch {
            match &out.route {
                Route::Client(client) => {
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(DIRECTED)
                        .arg(1)
                        .arg(this.client_key(client))
                        .arg(&prefix)
                        .arg(&out.payload);
                    pipe.add_command(cmd);
                }
                Route::Relay(relay) => {
                    pipe.publish(format!("{prefix}{relay}"), &out.payload);
                }
                Route::Room(room) => {
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(rooms::ROOM_PUBLISH)
                        .arg(1)
                        .arg(this.room_key(room))
                        .arg(&prefix)
                        .arg(&this.id)
                        .arg(&out.payload);
                    pipe.add_command(cmd);
                }
                Route::Channel(channel) => {
                    pipe.publish(&**channel, &out.payload);
                }
            }
        }
        let results = if this.is_up() {
            this.run_pipe(&pipe).await
        } else {
            Err(this.unavailable("not delivered"))
        };
        match results {
            Ok(values) if values.len() == batch.len() => {
                for (out, value) in batch.drain(..).zip(values) {
                    let outcome = sent_to(&out.route, value);
                    if let Some(done) = out.done {
                        done(outcome);
                    }
                }
            }
            Ok(_) => {
                let e = Error::Cluster("Redis answered a pipeline with the wrong count".into());
                fail_all(&mut batch, &e);
            }
            Err(e) => {
                tracing::debug!("could not send to the other relays: {e}");
                let e = this.unavailable("not delivered");
                fail_all(&mut batch, &e);
            }
        }
    }
}

fn fail_all(batch: &mut Vec<Outgoing>, e: &Error) {
    for out in batch.drain(..) {
        if let Some(done) = out.done {
            done(Err(e.clone()));
        }
    }
}

/// Where one queued envelope went, from Redis' answer.
fn sent_to(route: &Route, value: redis::Value) -> Result<String, Error> {
    match route {
        Route::Client(client) => match redis::from_redis_value::<(i64, String)>(value) {
            Ok((n, relay)) if n > 0 => Ok(relay),
            Ok((0, _)) => Err(Error::PeerGone(client.clone())),
            Ok(_) => Err(Error::UnknownTarget(client.clone())),
            Err(e) => Err(Error::Cluster(format!("unexpected answer from Redis: {e}"))),
        },
        Route::Relay(relay) => match redis::from_redis_value::<i64>(value) {
            Ok(n) if n > 0 => Ok(relay.clone()),
            Ok(_) => Err(Error::Cluster(format!("relay '{relay}' is gone"))),
            Err(e) => Err(Error::Cluster(format!("unexpected answer from Redis: {e}"))),
        },
        Route::Room(_) => match redis::from_redis_value::<i64>(value) {
            Ok(n) => Ok(n.to_string()),
            Err(e) => Err(Error::Cluster(format!("unexpected answer from Redis: {e}"))),
        },
        Route::Channel(channel) => match redis::from_redis_value::<i64>(value) {
            Ok(n) if n > 0 => Ok(channel.to_string()),
            Ok(_) => Err(Error::Cluster(
                "the other relay is gone (nobody reads its channel)".into(),
            )),
            Err(e) => Err(Error::Cluster(format!("unexpected answer from Redis: {e}"))),
        },
    }
}

impl Cluster {
    async fn run_pipe(&self, pipe: &redis::Pipeline) -> Result<Vec<redis::Value>, Error> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(
            self.opts.redis_timeout,
            pipe.query_async::<Vec<redis::Value>>(&mut conn),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::Cluster(format!("Redis: {e}"))),
            Err(_) => Err(Error::Cluster("Redis did not answer in time".into())),
        }
    }
}

/// Keeps this relay subscribed to its channel: connects, subscribes, hands each envelope to the
/// host, pings every heartbeat; when the link breaks, marks the cluster down and starts over
/// after a backoff (100 ms doubling to 2 s).
async fn subscribe_loop(cluster: Weak<Cluster>, host: Weak<dyn Host>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(this) = cluster.upgrade() else {
            return;
        };
        if this.stopped.load(Ordering::Acquire) {
            return;
        }
        let channel = format!("{}{}", this.relay_prefix(), this.id);
        let (heartbeat, timeout) = (this.opts.heartbeat, this.opts.redis_timeout);
        let client = this.client.clone();
        drop(this);
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub.split())
        })
        .await;
        match connected {
            Ok(Ok((mut sink, mut stream))) => {
                backoff = Duration::from_millis(100);
                let Some(this) = cluster.upgrade() else {
                    return;
                };
                tracing::info!(relay = %this.id, "linked to the cluster");
                this.set_up(true);
                drop(this);
                let mut tick = tokio::time::interval(heartbeat);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let (Some(this), Some(host)) = (cluster.upgrade(), host.upgrade())
                            else {
                                return;
                            };
                            let payload = msg.get_payload_bytes();
                            if let Some((relay, frame)) = stream::parse(payload) {
                                host.frame(relay, frame);
                            } else if let Some(env) = Envelope::decode(payload) {
                                host.deliver(&this, env);
                            }
                        }
                        _ = tick.tick() => {
                            let alive = cluster
                                .upgrade()
                                .is_some_and(|c| !c.stopped.load(Ordering::Acquire));
                            if !alive {
                                return;
                            }
                            let ping = tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await;
                            if !matches!(ping, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                let Some(this) = cluster.upgrade() else {
                    return;
                };
                tracing::warn!(relay = %this.id, "lost the link to the cluster's Redis; reconnecting");
                this.set_up(false);
                if let Some(host) = host.upgrade() {
                    host.link_lost();
                }
            }
            Ok(Err(e)) => tracing::debug!("cannot subscribe at the cluster's Redis: {e}"),
            Err(_) => tracing::debug!("the cluster's Redis did not answer within {timeout:?}"),
        }
        let jitter = Duration::from_millis(rand::random::<u64>() % 100);
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Every heartbeat: renews this relay's liveness key (writing its part of the directory again
/// when the key was missing, and every [`RESYNC_EVERY`] heartbeats anyway), and looks at the
/// relays its clients talk to; every [`RESYNC_EVERY`] heartbeats, prunes dead relays.
async fn heartbeat_loop(cluster: Weak<Cluster>, host: Weak<dyn Host>) {
    let heartbeat = match cluster.upgrade() {
        Some(c) => c.opts.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats: u64 = 0;
    loop {
        tick.tick().await;
        let (Some(this), Some(host)) = (cluster.upgrade(), host.upgrade()) else {
            return;
        };
        if this.stopped.load(Ordering::Acquire) {
            return;
        }
        beats += 1;
        if let Err(e) = this.beat(&*host, beats).await {
            tracing::debug!("cluster heartbeat: {e}");
        }
    }
}

/// Heartbeats between two rewrites of this relay's part of the directory.
const RESYNC_EVERY: u64 = 10;

impl Cluster {
    async fn beat(&self, host: &dyn Host, beats: u64) -> Result<(), Error> {
        let lease = u64::try_from(self.opts.lease.as_millis()).unwrap_or(u64::MAX);
        let mut renew = redis::cmd("SET");
        renew
            .arg(self.key(&format!("relay:{}", self.id)))
            .arg(1)
            .arg("PX")
            .arg(lease)
            .arg("GET");
        let before: Option<String> = self.run(&renew).await?;
        let asked = self.resync.swap(false, Ordering::AcqRel);
        if before.is_none() || asked || beats % RESYNC_EVERY == 0 {
            if let Err(e) = self.resync(host).await {
                self.resync.store(true, Ordering::Release);
                return Err(e);
            }
        } else if let Err(e) = self.sync_rooms(host, false).await {
            self.resync.store(true, Ordering::Release);
            return Err(e);
        }
        if !self.may_judge() {
            return Ok(());
        }
        if beats % RESYNC_EVERY == 0 {
            let mut cmd = redis::cmd("EVAL");
            cmd.arg(PRUNE)
                .arg(1)
                .arg(self.key("relays"))
                .arg(self.relay_prefix())
                .arg(self.key("client:"))
                .arg(self.key("resume:"))
                .arg(self.key("room:"));
            self.run::<i64>(&cmd).await?;
        }
        let relays = self.relays_of_interest();
        if relays.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for r in &relays {
            pipe.exists(format!("{}{r}", self.relay_prefix()));
        }
        let mut numsub = redis::cmd("PUBSUB");
        numsub.arg("NUMSUB");
        for r in &relays {
            numsub.arg(format!("{}{r}", self.relay_prefix()));
        }
        pipe.add_command(numsub);
        let values = self.run_pipe(&pipe).await?;
        let mut values = values.into_iter();
        let mut live = Vec::with_capacity(relays.len());
        for _ in &relays {
            let v = values.next().unwrap_or(redis::Value::Nil);
            live.push(redis::from_redis_value::<bool>(v).unwrap_or(true));
        }
        let subscribers: Vec<(String, i64)> = values
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_default();
        let subscribers: HashMap<String, i64> = subscribers.into_iter().collect();
        let mut dead = Vec::new();
        {
            let mut silent = self.silent.lock().unwrap();
            for (r, live) in relays.iter().zip(live) {
                let channel = format!("{}{r}", self.relay_prefix());
                let heard = subscribers.get(&channel).is_none_or(|n| *n > 0);
                if !live {
                    dead.push(r.clone());
                } else if heard {
                    silent.remove(r);
                } else if !silent.insert(r.clone()) {
                    // Nobody subscribed at two heartbeats in a row.
                    dead.push(r.clone());
                }
            }
        }
        for r in dead {
            let clients = self.mourn(&r);
            host.relay_gone(&r, clients);
        }
        Ok(())
    }

    /// Writes this relay's part of the directory again: joins the set of relays, claims every
    /// client id it holds, and writes every room it has members in. An id another live relay holds now is that relay's: the
    /// connection here is disconnected.
    async fn resync(&self, host: &dyn Host) -> Result<(), Error> {
        let mut join = redis::cmd("SADD");
        join.arg(self.key("relays")).arg(&self.id);
        self.run::<i64>(&join).await?;
        let ids = host.local_ids();
        for chunk in ids.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for id in chunk {
                pipe.add_command(self.claim_cmd(id, false, None));
            }
            let values = self.run_pipe(&pipe).await?;
            for (id, v) in chunk.iter().zip(values) {
                if let Ok((0, other)) = redis::from_redis_value::<(i64, String)>(v) {
                    tracing::info!(client = %id, relay = %other, "the client id is held by another relay");
                    host.evict(
                        id,
                        &format!(
                            "Error: disconnected: client id '{id}' is connected to another relay \
                             of the cluster"
                        ),
                    );
                }
            }
        }
        self.sync_rooms(host, true).await
    }
}
