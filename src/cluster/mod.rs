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
//! - `P:relay:<relay>:seq`: the counters of the directed envelopes relay `<relay>` received, a
//!   hash with, for each relay that sent it some, field `<sender>` (the count) and field
//!   `<sender>:e` (the counter's epoch); see [Loss](#loss). Removed, and the fields of a dead
//!   relay in the others', when a relay is found dead.
//! - `P:authed:<id>`: present while the connection holding client id `<id>` is authenticated, so
//!   that under the policy `replace` an unauthenticated connection to another relay does not take
//!   the id (as on one relay). Removed with the client's entry.
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
//! subscription; what is lost when that subscription breaks is found and told (see
//! [Loss](#loss)). The subscriber reads without pause and hands each envelope over at once
//! (nothing here waits on a client), so that only a relay that cannot keep up at all is cut off.
//!
//! # Loss
//!
//! A subscription can break with envelopes queued in it and not yet read: Redis cuts a relay that
//! falls behind (`client-output-buffer-limit pubsub`), Redis restarts, the network between relay
//! and Redis is cut. To find what that loses, every directed envelope (to a client's relay, to a
//! relay, a room event to each relay) is numbered per pair of relays by the script that publishes
//! it: it increments the pair's counter (field `<sender>` of `P:relay:<receiver>:seq`) and
//! publishes `#<sender> <epoch> <number>` and a line break before the envelope. A number nobody
//! received (no subscriber) is given back at once, so the counter counts only what reached a
//! subscription. The receiving relay keeps the last number it read from each sending relay, and
//! finds a gap:
//!
//! - when a number skips ahead of the last one plus one;
//! - when the epoch changes: the counter was made again (Redis forgot it). Every number after the
//!   last one read in the old epoch is lost, and so is every number before the one read in the
//!   new. The epoch is the time (Redis' `TIME`, to the microsecond) the counter was first written,
//!   so a counter made again never passes for the old one;
//! - after each new subscription (a reconnection), and every ten heartbeats: the relay runs a
//!   script that reads its counters and publishes them, with a token of its own, on its own
//!   channel, in one step; when they come in, everything before them on the channel was read, so
//!   a counter past the last number read, in another epoch, or gone, shows what was lost even if
//!   its sender sends nothing more.
//!
//! A relay's id is new at each start, so the counters towards it start from nothing: a sending
//! relay first heard of at number `n` sent `n - 1` before that were lost.
//!
//! The receiving relay tells the sending relay the gaps (an envelope of kind `missed`; a report
//! that cannot leave is sent again at each heartbeat, up to 30 times, and one that is lost in turn
//! is made again). The sending relay keeps, for each receiving relay, what each of its last 16,384
//! envelopes of the last 60 s was: whose messages (`P2P_EMIT`, `P2P_BATCH`) or room events, which
//! request, which answer, or a notice. On a report it tells each client whose messages or room
//! events were lost, once per report, with a `SERVER_ERROR` of code `CLUSTER`
//! (`n message(s) to clients of another relay were lost: its link to Redis broke`,
//! `n room event(s) to members on other relays were lost: …`); fails its requests among them at
//! once with [`Error::Cluster`] (`the request to client '…' on another relay was lost on its way`)
//! rather than at their timeout; sends an error in place of each lost answer, so that the asking
//! client gets it at once too; and logs lost notices (a disconnect notice, a report of messages not
//! delivered, a takeover) and the server's own emits. Envelopes older than that window are counted
//! in the sending relay's log only (a warning with their number).
//!
//! What is not covered: a Redis restored from a snapshot older than its last writes (RDB
//! persistence) may bring a counter back within the same epoch; the receiving relay logs that
//! the counter went back, and losses around that restart may go untold.
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

/// The Lua function every directed publication goes through (see [Loss](self#loss)):
/// `publish(prefix, me, to, payload)` numbers the envelope in the counter of the pair (relay
/// `me` to relay `to`), field `me` of hash `<prefix><to>:seq`, whose epoch is field `me:e`
/// (the time it was made, written when missing), and publishes `#<me> <epoch> <n>\n<payload>`
/// on the channel of `to`. Returns receivers, number, epoch; a number nobody received is given
/// back, so that the receiving relay never waits for it.
macro_rules! publish_lua {
    () => {
        r#"
local function publish(prefix, me, to, payload)
  local h = prefix .. to .. ':seq'
  local n = redis.call('HINCRBY', h, me, 1)
  local e = redis.call('HGET', h, me .. ':e')
  if not e then
    local t = redis.call('TIME')
    e = t[1] .. '.' .. t[2]
    redis.call('HSET', h, me .. ':e', e)
  end
  local got = redis.call('PUBLISH', prefix .. to, '#' .. me .. ' ' .. e .. ' ' .. n .. '\n' .. payload)
  if got == 0 then
    redis.call('HINCRBY', h, me, -1)
  end
  return got, n, e
end
"#
    };
}

mod envelope;
mod rooms;
pub(crate) mod stream;

pub(crate) use envelope::{Envelope, Gap, WireArg};

use crate::error::Error;
use crate::protocol::Arg;
use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// The ids of this relay's clients (connected, or away for a moment), each with whether
    /// its connection is authenticated.
    fn local_ids(&self) -> Vec<(String, bool)>;
    /// A client of this relay whose id another live relay holds: disconnect it with `reason`.
    fn evict(&self, client: &str, reason: &str);
    /// The rooms this relay's connected clients are in (the relay's own rooms left out).
    fn local_rooms(&self) -> HashSet<String>;
}

/// Claims client id `ARGV[3]` for relay `ARGV[1]` unless a live relay other than it holds it
/// (`ARGV[4]` = `take`: whoever holds it, unless the holder's connection is authenticated,
/// `KEYS[4]`, and this one is not), or the connection presents the resume secret of the
/// session there (`ARGV[5]`, compared with `KEYS[3]`; an unauthenticated connection never takes
/// an authenticated session). `ARGV[6]`: `1` for an authenticated connection, `0` for one that is
/// not, `d` for one that is not, written again by its own relay. Returns
/// `{1, previous holder or ''}` when claimed, `{2, holder}` when taken over with the secret,
/// `{0, holder}` when not claimed.
const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
local how = 1
local weaker = ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[4]) == 1
if cur and cur ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. cur) == 1 then
  if ARGV[4] ~= 'take' then
    if ARGV[5] ~= '' and not weaker and redis.call('GET', KEYS[3]) == ARGV[5] then
      how = 2
    else
      return {0, cur}
    end
  elseif weaker then
    return {0, cur}
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[3])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[4], 1)
elseif ARGV[6] == 'd' or cur ~= ARGV[1] then
  redis.call('DEL', KEYS[4])
end
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

/// Releases client id `ARGV[2]` (and its session's resume secret and authentication mark) if
/// relay `ARGV[1]` still holds it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[3])
  redis.call('DEL', KEYS[4])
end
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"#;

/// Publishes `ARGV[2]` from relay `ARGV[3]` to the channel of the live relay holding the client of
/// key `KEYS[1]`. Returns `{receivers, relay, number, epoch}`; receivers -1 when no live relay
/// holds it.
const DIRECTED: &str = concat!(
    publish_lua!(),
    r#"
local r = redis.call('GET', KEYS[1])
if not r then return {-1, ''} end
if redis.call('EXISTS', ARGV[1] .. r) == 0 then return {-1, r} end
local got, n, e = publish(ARGV[1], ARGV[3], r, ARGV[2])
return {got, r, n, e}
"#
);

/// Publishes `ARGV[2]` from relay `ARGV[3]` to the channel of relay `ARGV[4]`. Returns
/// `{receivers, number, epoch}`.
const TO_RELAY: &str = concat!(
    publish_lua!(),
    r#"
local got, n, e = publish(ARGV[1], ARGV[3], ARGV[4], ARGV[2])
return {got, n, e}
"#
);

/// Publishes, on this relay's own channel `ARGV[1]`, `!<ARGV[2]> ` and the counters of hash
/// `KEYS[1]` (field, value, ...): in one step, so that what came before it on the channel is
/// what they count.
const CHECK: &str = r#"
local all = redis.call('HGETALL', KEYS[1])
return redis.call('PUBLISH', ARGV[1], '!' .. ARGV[2] .. ' ' .. table.concat(all, ' '))
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
/// resume secrets and authentication marks, `ARGV[5]`), their client sets, their place in the
/// sets of rooms (`ARGV[4]`: the start of a room's key) and their index of those, their
/// counters of directed envelopes, and their place in the set of relays.
const PRUNE: &str = r#"
local all = redis.call('SMEMBERS', KEYS[1])
for _, r in ipairs(all) do
  if redis.call('EXISTS', ARGV[1] .. r) == 0 then
    redis.call('DEL', ARGV[1] .. r .. ':seq')
    for _, o in ipairs(all) do
      redis.call('HDEL', ARGV[1] .. o .. ':seq', r, r .. ':e')
    end
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
        redis.call('DEL', ARGV[5] .. c)
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
    /// What it is, kept in the window of the relay it reaches.
    what: Sent,
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
    /// Set when the counters towards this relay are to be checked at the next heartbeat.
    check_due: AtomicBool,
    /// What this relay sent lately, by receiving relay (see [Loss](self#loss)).
    sent: Mutex<HashMap<String, Window>>,
    /// The numbers of what this relay received, by sending relay.
    heard: Mutex<Heard>,
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
            check_due: AtomicBool::new(false),
            sent: Mutex::new(HashMap::new()),
            heard: Mutex::new(Heard::default()),
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

    fn authed_key(&self, client: &str) -> String {
        self.key(&format!("authed:{client}"))
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

    /// The [`PRUNE`] script over the keys of this relay's cluster.
    fn prune_cmd(&self) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(PRUNE)
            .arg(1)
            .arg(self.key("relays"))
            .arg(self.relay_prefix())
            .arg(self.key("client:"))
            .arg(self.key("resume:"))
            .arg(self.key("room:"))
            .arg(self.key("authed:"));
        cmd
    }

    /// `script` ([`CLAIM`] or [`RELEASE`]) over the four keys of client id `client` (its owner,
    /// this relay's client set, its resume secret, its authentication mark) and this relay's id,
    /// for the caller to add the rest of its arguments.
    fn client_script(&self, script: &str, client: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(script)
            .arg(4)
            .arg(self.client_key(client))
            .arg(self.own_clients_key())
            .arg(self.resume_key(client))
            .arg(self.authed_key(client))
            .arg(&self.id);
        cmd
    }

    /// `authed`: `1`, `0` or `d`, as [`CLAIM`] reads them.
    fn claim_cmd(
        &self,
        client: &str,
        take: bool,
        secret: Option<&str>,
        authed: &str,
    ) -> redis::Cmd {
        let mut cmd = self.client_script(CLAIM, client);
        cmd.arg(self.relay_prefix())
            .arg(client)
            .arg(if take { "take" } else { "claim" })
            .arg(secret.unwrap_or(""))
            .arg(authed);
        cmd
    }

    /// Claims client id `client` for this relay. `take`: even from a live relay, which is then
    /// told to disconnect its connection under the id (the policy `replace`), unless the
    /// connection there is authenticated and this one (`authenticated`) is not; `secret`: the
    /// resume secret the connection presents, which takes the id over from the live relay
    /// whose session has that secret (that relay is told so), under the same rule. Fails with
    /// the holder's relay id when another live relay holds it and neither lets this one take it,
    /// and with [`Error::Cluster`] when Redis cannot be reached.
    pub(crate) async fn claim(
        &self,
        client: &str,
        take: bool,
        secret: Option<&str>,
        authenticated: bool,
    ) -> Result<Claim, Error> {
        let cmd = self.claim_cmd(client, take, secret, if authenticated { "1" } else { "0" });
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
        self.run_in_background(cmd, client, "record the session's resume secret");
    }

    /// Releases client id `client`, if this relay still holds it.
    pub(crate) fn release(self: &Arc<Self>, client: &str) {
        let mut cmd = self.client_script(RELEASE, client);
        cmd.arg(client);
        // When it fails, the id is written again, or pruned, at the next resynchronisation.
        self.run_in_background(cmd, client, "release the client id");
    }

    /// Runs `cmd`, a script about `client`, without waiting for it; a failure is only logged, as
    /// "could not `what`".
    fn run_in_background(self: &Arc<Self>, cmd: redis::Cmd, client: &str, what: &'static str) {
        let this = self.clone();
        let client = client.to_string();
        tokio::spawn(async move {
            if let Err(e) = this.run::<i64>(&cmd).await {
                tracing::debug!(%client, "could not {what}: {e}");
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
            what: Sent::of(env),
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
        pipe.add_command(self.prune_cmd()).ignore();
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
                        .arg(&out.payload)
                        .arg(&this.id);
                    pipe.add_command(cmd);
                }
                Route::Relay(relay) => {
                    let mut cmd = redis::cmd("EVAL");
                    cmd.arg(TO_RELAY)
                        .arg(0)
                        .arg(&prefix)
                        .arg(&out.payload)
                        .arg(&this.id)
                        .arg(relay);
                    pipe.add_command(cmd);
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
                    let (outcome, numbered) = sent_to(&out.route, value);
                    this.keep(numbered, &out.what);
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

/// Where one queued envelope went, from Redis' answer, and under which number (relay, epoch,
/// number) each relay that received it got it.
fn sent_to(route: &Route, value: redis::Value) -> (Result<String, Error>, Vec<Numbered>) {
    let odd = |e: redis::ParsingError| Error::Cluster(format!("unexpected answer from Redis: {e}"));
    match route {
        Route::Client(client) => {
            let values = match redis::from_redis_value::<Vec<redis::Value>>(value) {
                Ok(v) => v,
                Err(e) => return (Err(odd(e)), Vec::new()),
            };
            let mut values = values.into_iter();
            let n = values.next().map(redis::from_redis_value::<i64>);
            let relay = values.next().map(redis::from_redis_value::<String>);
            let seq = values.next().map(redis::from_redis_value::<u64>);
            let epoch = values.next().map(redis::from_redis_value::<String>);
            match (n, relay) {
                (Some(Ok(n)), Some(Ok(relay))) if n > 0 => match (seq, epoch) {
                    (Some(Ok(seq)), Some(Ok(epoch))) => {
                        (Ok(relay.clone()), vec![(relay, epoch, seq)])
                    }
                    _ => (Ok(relay), Vec::new()),
                },
                (Some(Ok(0)), _) => (Err(Error::PeerGone(client.clone())), Vec::new()),
                (Some(Ok(_)), _) => (Err(Error::UnknownTarget(client.clone())), Vec::new()),
                _ => (
                    Err(Error::Cluster("unexpected answer from Redis".into())),
                    Vec::new(),
                ),
            }
        }
        Route::Relay(relay) => match redis::from_redis_value::<(i64, u64, String)>(value) {
            Ok((n, seq, epoch)) if n > 0 => (Ok(relay.clone()), vec![(relay.clone(), epoch, seq)]),
            Ok(_) => (
                Err(Error::Cluster(format!("relay '{relay}' is gone"))),
                Vec::new(),
            ),
            Err(e) => (Err(odd(e)), Vec::new()),
        },
        Route::Room(_) => match redis::from_redis_value::<Vec<redis::Value>>(value) {
            Ok(values) => {
                let mut values = values.into_iter();
                let n = values
                    .next()
                    .and_then(|v| redis::from_redis_value::<i64>(v).ok())
                    .unwrap_or(0);
                let mut numbered = Vec::new();
                while let (Some(r), Some(seq), Some(epoch)) =
                    (values.next(), values.next(), values.next())
                {
                    if let (Ok(r), Ok(seq), Ok(epoch)) = (
                        redis::from_redis_value::<String>(r),
                        redis::from_redis_value::<u64>(seq),
                        redis::from_redis_value::<String>(epoch),
                    ) {
                        numbered.push((r, epoch, seq));
                    }
                }
                (Ok(n.to_string()), numbered)
            }
            Err(e) => (Err(odd(e)), Vec::new()),
        },
        Route::Channel(channel) => match redis::from_redis_value::<i64>(value) {
            Ok(n) if n > 0 => (Ok(channel.to_string()), Vec::new()),
            Ok(_) => (
                Err(Error::Cluster(
                    "the other relay is gone (nobody reads its channel)".into(),
                )),
                Vec::new(),
            ),
            Err(e) => (Err(odd(e)), Vec::new()),
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
                // What was lost while the subscription was down shows in the counters.
                tokio::spawn(async move {
                    if let Err(e) = this.check().await {
                        tracing::debug!("could not check the counters of envelopes: {e}");
                        this.check_due.store(true, Ordering::Release);
                    }
                });
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
                            } else if let Some(env) = this.heard(payload) {
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
    async fn beat(self: &Arc<Self>, host: &dyn Host, beats: u64) -> Result<(), Error> {
        let lease = u64::try_from(self.opts.lease.as_millis()).unwrap_or(u64::MAX);
        let mut renew = redis::cmd("SET");
        renew
            .arg(self.key(&format!("relay:{}", self.id)))
            .arg(1)
            .arg("PX")
            .arg(lease)
            .arg("GET");
        let before: Option<String> = self.run(&renew).await?;
        self.trim_windows();
        if self.is_up() {
            self.report_owed();
        }
        // Also now and then, should anything be missed on a subscription that did not break.
        if self.check_due.swap(false, Ordering::AcqRel) || beats % RESYNC_EVERY == 0 {
            if let Err(e) = self.check().await {
                self.check_due.store(true, Ordering::Release);
                return Err(e);
            }
        }
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
            self.run::<i64>(&self.prune_cmd()).await?;
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
            for (id, authed) in chunk {
                pipe.add_command(self.claim_cmd(id, false, None, if *authed { "1" } else { "d" }));
            }
            let values = self.run_pipe(&pipe).await?;
            for ((id, _), v) in chunk.iter().zip(values) {
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

/// An envelope as numbered for one relay that received it: that relay, the epoch of the
/// counter, the number.
type Numbered = (String, String, u64);

/// What a sent envelope was, as far as telling about its loss goes.
#[derive(Debug, Clone)]
enum Sent {
    /// `n` messages (`room`: room events) that client `from` sent.
    Messages { from: String, n: usize, room: bool },
    /// A request this relay waits the answer of ([`Cluster::request`]).
    Request(u64),
    /// The answer to another relay's request.
    Reply(u64),
    /// A report of loss: made again if it is lost too.
    Report(Vec<Gap>),
    /// Anything else: a notice, the server's own emits.
    Notice(&'static str),
}

impl Sent {
    fn of(env: &Envelope) -> Sent {
        match env {
            Envelope::Emit { from: Some(f), .. } => Sent::Messages {
                from: f.clone(),
                n: 1,
                room: false,
            },
            Envelope::Batch { from, items, .. } => Sent::Messages {
                from: from.clone(),
                n: items.len(),
                room: false,
            },
            Envelope::RoomEmit { from: Some(f), .. } => Sent::Messages {
                from: f.clone(),
                n: 1,
                room: true,
            },
            Envelope::Request { id, .. }
            | Envelope::RoomMember { id, .. }
            | Envelope::StreamOpen { id, .. } => Sent::Request(*id),
            Envelope::Reply { id, .. } | Envelope::StreamAnswer { id, .. } => Sent::Reply(*id),
            Envelope::Missed { gaps, .. } => Sent::Report(gaps.clone()),
            other => Sent::Notice(other.kind()),
        }
    }
}

/// Most envelopes kept, per receiving relay, in case it reports them lost.
const WINDOW_LEN: usize = 16_384;
/// How long an envelope is kept, in case its receiving relay reports it lost.
const WINDOW_AGE: Duration = Duration::from_secs(60);
/// Most sending relays whose numbers a relay follows.
const MAX_SENDERS: usize = 4_096;
/// Most gaps one report of loss is read for.
const MAX_GAPS: usize = 1_024;

/// What this relay sent one other relay lately.
#[derive(Default)]
struct Window {
    kept: VecDeque<Kept>,
    /// Epoch and number of the newest envelope that left the window.
    forgotten: Option<(String, u64)>,
}

struct Kept {
    at: Instant,
    epoch: String,
    seq: u64,
    what: Sent,
}

impl Window {
    fn trim(&mut self, now: Instant) {
        while self
            .kept
            .front()
            .is_some_and(|k| self.kept.len() > WINDOW_LEN || now.duration_since(k.at) > WINDOW_AGE)
        {
            if let Some(k) = self.kept.pop_front() {
                self.forgotten = Some((k.epoch, k.seq));
            }
        }
    }
}

/// The last number heard from one sending relay.
struct Last {
    epoch: String,
    seq: u64,
}

/// The numbers of what this relay received (see [Loss](self#loss)).
#[derive(Default)]
struct Heard {
    /// By sending relay. One not in it has sent this relay nothing yet: a relay's id is new at
    /// each start, so the counters towards it start from nothing.
    from: HashMap<String, Last>,
    /// The token of the check under way.
    token: Option<String>,
    /// Gaps found but not yet reported to their senders (the report did not leave): sent again
    /// at the next heartbeat, each at most [`REPORT_TRIES`] times.
    owed: HashMap<String, (Vec<Gap>, u32)>,
}

/// How many times the report of a gap is sent before it is given up (its sender gone).
const REPORT_TRIES: u32 = 30;

impl Heard {
    /// Envelope `seq` of epoch `epoch` arrived from `relay`: the gaps it shows.
    fn envelope(&mut self, relay: &str, epoch: &str, seq: u64) -> Vec<Gap> {
        let mut gaps = Vec::new();
        match self.from.get_mut(relay) {
            None => {
                if self.from.len() >= MAX_SENDERS {
                    tracing::warn!(relay, "too many sending relays to follow; not followed");
                    return gaps;
                }
                if seq > 1 {
                    gaps.push(Gap::new(epoch, 0, Some(seq - 1)));
                }
                self.from.insert(
                    relay.to_string(),
                    Last {
                        epoch: epoch.to_string(),
                        seq,
                    },
                );
            }
            Some(last) if last.epoch != epoch => {
                gaps.push(Gap::new(&last.epoch, last.seq, None));
                if seq > 1 {
                    gaps.push(Gap::new(epoch, 0, Some(seq - 1)));
                }
                *last = Last {
                    epoch: epoch.to_string(),
                    seq,
                };
            }
            Some(last) => {
                if seq > last.seq + 1 {
                    gaps.push(Gap::new(epoch, last.seq, Some(seq - 1)));
                } else if seq <= last.seq {
                    tracing::warn!(
                        relay,
                        seq,
                        last = last.seq,
                        "the counter of envelopes from a relay went back (a Redis restored from an \
                         older snapshot?): losses before it cannot be told"
                    );
                }
                last.seq = seq;
            }
        }
        gaps
    }

    /// The counters towards this relay as a check read them (`relay → (epoch, count)`): the
    /// gaps they show, by sending relay.
    fn counters(&mut self, counters: HashMap<String, (String, u64)>) -> Vec<(String, Vec<Gap>)> {
        let mut out = Vec::new();
        self.from.retain(|relay, last| {
            if counters.contains_key(relay) {
                return true;
            }
            // Its counter is gone: Redis forgot it, or the relay is dead.
            out.push((relay.clone(), vec![Gap::new(&last.epoch, last.seq, None)]));
            false
        });
        for (relay, (epoch, count)) in counters {
            let mut gaps = Vec::new();
            match self.from.get_mut(&relay) {
                None => {
                    if self.from.len() >= MAX_SENDERS {
                        continue;
                    }
                    if count > 0 {
                        gaps.push(Gap::new(&epoch, 0, Some(count)));
                    }
                    self.from.insert(relay.clone(), Last { epoch, seq: count });
                }
                Some(last) if last.epoch != epoch => {
                    gaps.push(Gap::new(&last.epoch, last.seq, None));
                    if count > 0 {
                        gaps.push(Gap::new(&epoch, 0, Some(count)));
                    }
                    *last = Last { epoch, seq: count };
                }
                Some(last) => {
                    if count > last.seq {
                        gaps.push(Gap::new(&epoch, last.seq, Some(count)));
                    } else if count < last.seq {
                        tracing::warn!(
                            relay,
                            count,
                            last = last.seq,
                            "the counter of envelopes from a relay went back (a Redis restored \
                             from an older snapshot?): losses before it cannot be told"
                        );
                    }
                    last.seq = count;
                }
            }
            if !gaps.is_empty() {
                out.push((relay, gaps));
            }
        }
        out
    }
}

/// What a report of loss found in this relay's window, for the relay to tell.
#[derive(Debug, Default)]
pub(crate) struct Lost {
    /// By client of this relay: messages, room events lost.
    pub(crate) clients: HashMap<String, (usize, usize)>,
    /// Gaps past the newest envelope kept yet (its number may not be back from Redis): to read
    /// again in a moment.
    pub(crate) ahead: Vec<Gap>,
    /// Gaps this relay reported that were lost in turn: to report again.
    pub(crate) reports: Vec<Gap>,
}

impl Cluster {
    /// Keeps what an envelope was, under the number each relay got it with.
    fn keep(&self, numbered: Vec<Numbered>, what: &Sent) {
        if numbered.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap();
        for (relay, epoch, seq) in numbered {
            let window = sent.entry(relay).or_default();
            window.kept.push_back(Kept {
                at: now,
                epoch,
                seq,
                what: what.clone(),
            });
            window.trim(now);
        }
    }

    /// Drops the windows of relays sent nothing for [`WINDOW_AGE`].
    fn trim_windows(&self) {
        let now = Instant::now();
        let mut sent = self.sent.lock().unwrap();
        for window in sent.values_mut() {
            window.trim(now);
        }
        sent.retain(|_, w| !w.kept.is_empty());
    }

    /// One message on this relay's channel: an envelope (numbered or not), or a check's result.
    fn heard(self: &Arc<Self>, payload: &[u8]) -> Option<Envelope> {
        match payload.first() {
            Some(b'#') => {
                let split = payload.iter().position(|b| *b == b'\n')?;
                let (head, body) = (&payload[1..split], &payload[split + 1..]);
                let head = std::str::from_utf8(head).ok();
                let mut parts = head.map(|h| h.split(' ')).into_iter().flatten();
                let (Some(relay), Some(epoch), Some(Ok(seq))) = (
                    parts.next(),
                    parts.next(),
                    parts.next().map(str::parse::<u64>),
                ) else {
                    tracing::warn!("dropping a message from another relay with a bad header");
                    return None;
                };
                let gaps = self.heard.lock().unwrap().envelope(relay, epoch, seq);
                if !gaps.is_empty() {
                    self.report_gaps(relay, gaps, 0);
                }
                Envelope::decode(body)
            }
            Some(b'!') => {
                self.checked(payload);
                None
            }
            _ => Envelope::decode(payload),
        }
    }

    /// Publishes the counters towards this relay on its own channel (see [`CHECK`]); what they
    /// show is read when the result comes in on the channel.
    async fn check(&self) -> Result<(), Error> {
        let token = relay_id();
        self.heard.lock().unwrap().token = Some(token.clone());
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CHECK)
            .arg(1)
            .arg(format!("{}{}:seq", self.relay_prefix(), self.id))
            .arg(format!("{}{}", self.relay_prefix(), self.id))
            .arg(token);
        self.run::<i64>(&cmd).await.map(|_| ())
    }

    /// A check's result arrived on this relay's channel: `!<token> field value ...`.
    fn checked(self: &Arc<Self>, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(&payload[1..]) else {
            return;
        };
        let mut words = text.split(' ').filter(|w| !w.is_empty());
        let token = words.next().unwrap_or_default();
        let mut heard = self.heard.lock().unwrap();
        if heard.token.as_deref() != Some(token) {
            tracing::debug!("a check of the counters that is not the one under way");
            return;
        }
        heard.token = None;
        let mut counts: HashMap<String, u64> = HashMap::new();
        let mut epochs: HashMap<String, String> = HashMap::new();
        while let (Some(field), Some(value)) = (words.next(), words.next()) {
            match field.strip_suffix(":e") {
                Some(relay) => {
                    epochs.insert(relay.to_string(), value.to_string());
                }
                None => {
                    counts.insert(field.to_string(), value.parse().unwrap_or(0));
                }
            }
        }
        let counters = epochs
            .into_iter()
            .map(|(relay, epoch)| {
                let count = counts.get(&relay).copied().unwrap_or(0);
                (relay, (epoch, count))
            })
            .collect();
        let found = heard.counters(counters);
        drop(heard);
        for (relay, gaps) in found {
            self.report_gaps(&relay, gaps, 0);
        }
    }

    /// Tells relay `relay` which of its envelopes this relay missed (`tries`: how many times
    /// before); a report that does not leave is owed, and sent again at the next heartbeat.
    fn report_gaps(self: &Arc<Self>, relay: &str, gaps: Vec<Gap>, tries: u32) {
        if tries == 0 {
            tracing::warn!(
                %relay,
                gaps = ?gaps,
                "envelopes from another relay were lost on the way (this relay's link to Redis \
                 broke); telling it"
            );
        }
        let env = Envelope::Missed {
            relay: self.id.clone(),
            gaps: gaps.clone(),
        };
        let this = Arc::downgrade(self);
        let to = relay.to_string();
        let done: Done = Box::new(move |sent: Result<String, Error>| {
            let (Err(e), Some(this)) = (sent, this.upgrade()) else {
                return;
            };
            if tries + 1 >= REPORT_TRIES {
                tracing::warn!(relay = %to, "could not report lost envelopes to their relay: {e}");
                return;
            }
            let mut heard = this.heard.lock().unwrap();
            let owed = heard
                .owed
                .entry(to)
                .or_insert_with(|| (Vec::new(), tries + 1));
            owed.0.extend(gaps);
            owed.0.truncate(MAX_GAPS);
        });
        self.send(Route::Relay(relay.to_string()), &env, Some(done));
    }

    /// Reports again `gaps` of what relay `relay` sent, whose first report was lost.
    pub(crate) fn report_again(self: &Arc<Self>, relay: &str, mut gaps: Vec<Gap>) {
        if !gaps.is_empty() {
            gaps.truncate(MAX_GAPS);
            self.report_gaps(relay, gaps, 1);
        }
    }

    /// Sends again the reports of loss that did not leave.
    fn report_owed(self: &Arc<Self>) {
        let owed = std::mem::take(&mut self.heard.lock().unwrap().owed);
        for (relay, (gaps, tries)) in owed {
            self.report_gaps(&relay, gaps, tries);
        }
    }

    /// Relay `relay` reports it missed `gaps` of what this relay sent it: requests among them
    /// fail at once, answers among them are replaced by an error, notices are logged; the
    /// messages and room events of this relay's clients are returned to tell them. `last`: the
    /// last reading, after which a gap past the window is logged as beyond it.
    pub(crate) fn missed(&self, relay: &str, gaps: Vec<Gap>, last: bool) -> Lost {
        let mut lost = Lost::default();
        let mut found = Vec::new();
        {
            let mut sent = self.sent.lock().unwrap();
            let window = sent.entry(relay.to_string()).or_default();
            for gap in gaps.into_iter().take(MAX_GAPS) {
                let newest = window
                    .kept
                    .iter()
                    .rev()
                    .find(|k| k.epoch == gap.epoch)
                    .map(|k| k.seq);
                if !last && gap.upto.is_some_and(|u| newest.is_none_or(|n| n < u)) {
                    lost.ahead.push(gap);
                    continue;
                }
                let before = found.len();
                window.kept.retain(|k| {
                    let hit = k.epoch == gap.epoch
                        && k.seq > gap.after
                        && gap.upto.is_none_or(|u| k.seq <= u);
                    if hit {
                        found.push(k.what.clone());
                    }
                    !hit
                });
                let here = (found.len() - before) as u64;
                let beyond = match (gap.upto, &window.forgotten) {
                    (Some(u), _) => (u.saturating_sub(gap.after)).saturating_sub(here),
                    (None, Some((e, n))) if *e == gap.epoch => n.saturating_sub(gap.after),
                    _ => 0,
                };
                if beyond > 0 {
                    tracing::warn!(
                        %relay,
                        envelopes = beyond,
                        "envelopes this relay sent were lost on their way to another relay, too \
                         long ago to say whose (the last {WINDOW_LEN} envelopes, or {WINDOW_AGE:?}, \
                         are kept)"
                    );
                }
            }
            if window.kept.is_empty() && window.forgotten.is_none() {
                sent.remove(relay);
            }
        }
        for what in found {
            match what {
                Sent::Messages { from, n, room } => {
                    let counts = lost.clients.entry(from).or_default();
                    if room {
                        counts.1 += n;
                    } else {
                        counts.0 += n;
                    }
                }
                Sent::Request(id) => {
                    if let Some(w) = self.waiting.lock().unwrap().remove(&id) {
                        let e = Error::Cluster(format!(
                            "the request to client '{}' on another relay was lost on its way: \
                             that relay's link to Redis broke",
                            w.client
                        ));
                        let _ = w.tx.send(Err(e));
                    }
                }
                Sent::Reply(id) => {
                    let e = Error::Cluster(
                        "the answer was lost on its way from another relay: a relay's link to \
                         Redis broke"
                            .into(),
                    );
                    self.send_to_relay(relay, &Envelope::reply(id, Err(e)));
                }
                Sent::Report(gaps) => lost.reports.extend(gaps),
                Sent::Notice(kind) => {
                    tracing::warn!(%relay, kind, "a notice to another relay was lost on its way");
                }
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(list: &[(&str, &str, u64)]) -> HashMap<String, (String, u64)> {
        list.iter()
            .map(|(r, e, n)| (r.to_string(), (e.to_string(), *n)))
            .collect()
    }

    #[test]
    fn numbers_show_the_gaps_and_a_counter_that_restarts() {
        let mut heard = Heard::default();
        assert!(heard.envelope("a", "e1", 1).is_empty());
        assert!(heard.envelope("a", "e1", 2).is_empty());
        assert_eq!(heard.envelope("a", "e1", 5), [Gap::new("e1", 2, Some(4))]);
        // Redis forgot the counter: what came after 5 in the old epoch is lost, and so is what
        // came before this one in the new.
        assert_eq!(
            heard.envelope("a", "e2", 3),
            [Gap::new("e1", 5, None), Gap::new("e2", 0, Some(2))]
        );
        // A relay first heard of at its third envelope: the first two were lost.
        assert_eq!(heard.envelope("b", "f", 3), [Gap::new("f", 0, Some(2))]);

        // A check after a reconnection: b sent 4 more, c sent 2 never seen, a's counter is gone.
        let found = heard.counters(counters(&[("b", "f", 7), ("c", "g", 2)]));
        let found: HashMap<String, Vec<Gap>> = found.into_iter().collect();
        assert_eq!(found["a"], [Gap::new("e2", 3, None)]);
        assert_eq!(found["b"], [Gap::new("f", 3, Some(7))]);
        assert_eq!(found["c"], [Gap::new("g", 0, Some(2))]);
        // Nothing new: nothing found.
        assert!(heard
            .counters(counters(&[("b", "f", 7), ("c", "g", 2)]))
            .is_empty());
        assert!(heard.envelope("b", "f", 8).is_empty());
    }

    #[test]
    fn a_window_keeps_its_bound() {
        let mut w = Window::default();
        let now = Instant::now();
        for seq in 1..=(WINDOW_LEN as u64 + 10) {
            w.kept.push_back(Kept {
                at: now,
                epoch: "e".into(),
                seq,
                what: Sent::Notice("gone"),
            });
            w.trim(now);
        }
        assert_eq!(w.kept.len(), WINDOW_LEN);
        assert_eq!(w.forgotten, Some(("e".to_string(), 10)));
        w.trim(now + WINDOW_AGE + Duration::from_secs(1));
        assert!(w.kept.is_empty());
    }
}
