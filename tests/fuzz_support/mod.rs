//! Random inputs for every decoder of network input, shared by `tests/fuzz.rs` (a few seconds in
//! CI) and `benches/fuzz.rs` (millions of inputs): random bytes, random JSON trees, random
//! argument lists with binary parts, and mutations of valid payloads and stream frames.
//!
//! Every input is derived from one `u64` seed, so a failure is reproduced by its seed alone.
#![allow(dead_code)]

use bytes::Bytes;
use serde_json::{json, Map, Value};
use socketio_p2p::protocol::{self, stream as pstream, Arg, FromArgs, FromValues, RawArgs};
use socketio_p2p::stream::frame;

/// SplitMix64: small, fast and good enough to drive a fuzzer.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    pub fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

/// Names that mean something to the relay or its clients: events, fields, actions, rooms.
pub const WORDS: &[&str] = &[
    "JOIN_ROOM",
    "LEAVE_ROOM",
    "EMIT_ROOM",
    "LIST_CLIENTS",
    "P2P_EMIT",
    "P2P_EMIT_ACKNOWLEDGE",
    "MULTI_API_ADD_TARGET",
    "MULTI_API_TARGET_DISCONNECT",
    "MULTI_API_CREATE_STREAM",
    "SERVER_ERROR",
    "P2P_REQ",
    "P2P_RES",
    "P2P_WELCOME",
    "P2P_BATCH",
    "P2P_FRAME",
    "PEER_STREAM_DESTROYED",
    "SUBSCRIBE_TOPIC",
    "UNSUBSCRIBE_TOPIC",
    "CLIENT_SUBSCRIBE_TOPIC",
    "CLIENT_UNSUBSCRIBE_TOPIC",
    "SERVICE_CREATE_TOPIC",
    "SERVICE_DESTROY_TOPIC",
    "P2P_EMIT_STREAM-from-stream-",
    "__p2p_",
    "__p2p_ext__",
    "__p2p_seed__",
    "targetClientId",
    "sourceStreamId",
    "targetStreamId",
    "clientId",
    "event",
    "args",
    "data",
    "type",
    "Buffer",
    "ok",
    "err",
    "id",
    "room",
    "window",
    "name",
    "topicName",
    "alice",
    "bob",
    "",
    " ",
    "\u{1e}",
    "é\u{0}☃",
];

pub fn string(rng: &mut Rng) -> String {
    match rng.below(4) {
        0 | 1 => rng.pick(WORDS).to_string(),
        2 => (0..rng.below(12))
            .map(|_| char::from_u32(rng.below(0x80) as u32).unwrap_or('?'))
            .collect(),
        _ => {
            let mut s = rng.pick(WORDS).to_string();
            s.push_str(&rng.next().to_string());
            s
        }
    }
}

pub fn number(rng: &mut Rng) -> Value {
    match rng.below(8) {
        0 => json!(0),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(i64::MIN),
        4 => json!(rng.below(300)),
        5 => json!((rng.next() as f64) / 7.0),
        6 => json!(-(rng.next() as f64) * 1e300),
        _ => json!(rng.next() as u32),
    }
}

/// A random JSON tree of at most `depth` levels, its strings mostly from [`WORDS`].
pub fn json(rng: &mut Rng, depth: usize) -> Value {
    let leaf = depth == 0 || rng.chance(3);
    match rng.below(if leaf { 4 } else { 6 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.chance(2)),
        2 => number(rng),
        3 => Value::String(string(rng)),
        4 => Value::Array((0..rng.below(6)).map(|_| json(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(6) {
                m.insert(string(rng), json(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

pub fn bytes(rng: &mut Rng, max: usize) -> Vec<u8> {
    let len = if rng.chance(8) {
        rng.below(max + 1)
    } else {
        rng.below(max.min(48) + 1)
    };
    (0..len).map(|_| rng.next() as u8).collect()
}

/// A random argument, binary data possibly inside.
pub fn arg(rng: &mut Rng, depth: usize) -> Arg {
    if depth == 0 || rng.chance(2) {
        return if rng.chance(4) {
            Arg::Binary(Bytes::from(bytes(rng, 64)))
        } else {
            Arg::Json(json(rng, depth.min(2)))
        };
    }
    if rng.chance(2) {
        Arg::Array((0..rng.below(5)).map(|_| arg(rng, depth - 1)).collect())
    } else {
        Arg::Object(
            (0..rng.below(5))
                .map(|_| (string(rng), arg(rng, depth - 1)))
                .collect(),
        )
    }
}

/// Payloads the decoders accept (or nearly): the starting points of mutation.
pub fn valid_payloads() -> Vec<Vec<Value>> {
    vec![
        vec![json!({"targetClientId": "bob", "event": "hi", "args": ["alice", 1, {"a": [1, 2]}]})],
        vec![
            json!([{"targetClientId": "bob", "event": "hi", "args": ["alice"]}, {"targetClientId": "carol", "event": "x", "args": ["alice", null]}]),
        ],
        vec![json!("room-1")],
        vec![
            json!("CLIENT_SUBSCRIBE_TOPIC"),
            json!("bob"),
            json!("topic"),
        ],
        vec![json!("SERVICE_DESTROY_TOPIC"), json!("topic")],
        vec![json!("room-1"), json!("event"), json!(["alice", 3])],
        vec![json!(7), json!("ask"), json!("alice"), json!(21)],
        vec![json!(7), json!({"ok": [42]})],
        vec![json!(7), json!({"err": "no"})],
        vec![json!("bob")],
        vec![json!({"clientId": "alice"})],
        vec![json!({"message": "bad", "code": "BAD_REQUEST"})],
        vec![json!([{"event": "hi", "args": ["alice", 1]}, {"event": "yo", "args": ["bob"]}])],
        vec![
            json!({"sourceStreamId": "s1", "targetStreamId": "t1", "targetClientId": "bob", "window": 524288, "args": {"name": "f"}}),
        ],
        vec![json!({"sourceStreamId": 1, "targetStreamId": 2, "targetClientId": "bob"})],
        vec![json!({"ok": true, "window": 1024})],
        vec![
            json!("alice"),
            json!({"type": "Buffer", "data": [1, 2, 255]}),
        ],
        vec![json!("alice"), json!([1, 2, 3])],
        vec![json!("alice"), json!(null)],
        vec![json!("alice"), json!("text chunk")],
        vec![json!("alice"), json!("s1")],
        vec![json!("alice"), json!({"topicName": "news"})],
        vec![json!({"clientId": "bob", "topic": "news"})],
        vec![json!(["alice", "bob"])],
    ]
}

/// A random edit of a JSON tree: a subtree replaced, removed, retyped or duplicated.
pub fn mutate(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Array(a) if !a.is_empty() && rng.chance(2) => {
            let i = rng.below(a.len());
            match rng.below(4) {
                0 => {
                    a.remove(i);
                }
                1 => {
                    let c = a[i].clone();
                    a.push(c);
                }
                _ => mutate(rng, &mut a[i]),
            }
        }
        Value::Object(m) if !m.is_empty() && rng.chance(2) => {
            let k = m.keys().nth(rng.below(m.len())).cloned().unwrap();
            match rng.below(4) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(string(rng), json(rng, 2));
                }
                _ => mutate(rng, m.get_mut(&k).unwrap()),
            }
        }
        _ => *v = json(rng, 2),
    }
}

/// One list of event arguments: random, or a valid payload mutated a few times.
pub fn values(rng: &mut Rng) -> Vec<Value> {
    if rng.chance(3) {
        return (0..rng.below(5)).map(|_| json(rng, 4)).collect();
    }
    let payloads = valid_payloads();
    let mut args = rng.pick(&payloads).clone();
    for _ in 0..rng.below(4) {
        if args.is_empty() || rng.chance(6) {
            args.push(json(rng, 3));
        } else {
            let i = rng.below(args.len());
            mutate(rng, &mut args[i]);
        }
    }
    args
}

/// The same list with binary parts put in here and there.
pub fn args(rng: &mut Rng) -> Vec<Arg> {
    let mut out: Vec<Arg> = values(rng).into_iter().map(Arg::Json).collect();
    if rng.chance(2) {
        let at = rng.below(out.len() + 1);
        out.insert(at, arg(rng, 3));
    }
    out
}

/// Byte edits: flips, insertions, deletions, truncation.
pub fn mutate_bytes(rng: &mut Rng, b: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
            1 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = *rng.pick(b"0123456789abcdefABCDEF\x1e\x00\xff:|");
            }
            2 => {
                let i = rng.below(b.len() + 1);
                b.insert(i, rng.next() as u8);
            }
            3 if !b.is_empty() => {
                let i = rng.below(b.len());
                b.remove(i);
            }
            _ => {
                let n = rng.below(b.len() + 1);
                b.truncate(n);
            }
        }
    }
}

/// A stream frame: random bytes, or a valid one of any type mutated.
pub fn frame_bytes(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(4) {
        return bytes(rng, 128);
    }
    let route = match rng.below(3) {
        0 => 0,
        1 => rng.below(1000) as u64,
        _ => rng.next(),
    };
    let payload = bytes(rng, 64);
    let f = match rng.below(6) {
        0 => frame::Frame::Data {
            route,
            data: Bytes::from(payload),
        },
        1 => frame::Frame::Window {
            route,
            increment: rng.next() as u32,
        },
        2 => frame::Frame::Fin { route },
        3 => frame::Frame::Reset {
            route,
            code: rng.below(5) as u32,
            reason: string(rng),
        },
        4 => return frame::Frame::data_from_slice(route, &payload).to_vec(),
        _ => frame::Frame::Fin { route },
    };
    let mut b = f.encode().to_vec();
    if !rng.chance(5) {
        mutate_bytes(rng, &mut b);
    }
    b
}

/// A handshake query string: `&`, `=`, `+` and `%` escapes, valid or not, and random bytes.
pub fn query(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"%%%&&==+0123456789abcdefABCDEFgz-_.~ clientIdp2pExtEIO\xc3\xa9";
    let mut b: Vec<u8> = (0..rng.below(40)).map(|_| *rng.pick(ALPHABET)).collect();
    if rng.chance(4) {
        b.extend(bytes(rng, 16));
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Decoders of argument lists as the relay's handlers receive them.
fn decode_args(a: Vec<Arg>) {
    let _ = protocol::JoinRoom::from_args(a.clone());
    let _ = protocol::LeaveRoom::from_args(a.clone());
    let _ = protocol::EmitRoom::from_args(a.clone());
    let _ = protocol::Emit::from_args(a.clone());
    let _ = protocol::Emit::decode(a.first().cloned()).map(|e| {
        let _ = e.claimed_sender();
        e.into_payload()
    });
    let _ = protocol::Batch::from_args(a.clone());
    let _ = protocol::AddTarget::from_args(a.clone());
    let _ = protocol::Response::from_args(a.clone());
    let _ = <Vec<Value>>::from_args(a.clone());
    for x in &a {
        let _ = x.describe();
        let _ = x.has_binary();
        let _ = x.as_str();
    }
    let _ = serde_json::to_vec(&protocol::SeedArgs(&a));
    let _ = serde_json::to_vec(&protocol::ExtArgs(&a));
    let _ = protocol::Request::<Vec<Arg>>::decode(a);
}

/// Decoders of JSON argument lists as clients and the stream and service layers receive them.
fn decode_values(v: Vec<Value>) {
    let _ = protocol::AddTarget::from_values(v.clone());
    let _ = protocol::Request::<Vec<Value>>::from_values(v.clone());
    let _ = protocol::Response::from_values(v.clone()).map(|r| r.body.into_result("x"));
    let _ = protocol::Welcome::from_values(v.clone());
    let _ = protocol::ServerError::from_values(v.clone());
    let _ = protocol::TargetDisconnect::from_values(v.clone());
    let _ = protocol::RelayedBatch::from_values(v.clone());
    let _ = protocol::RoomEmit::from_values(v.clone());
    let _ = protocol::ClientList::from_values(v.clone());
    let _ = protocol::sender_of(&v);
    let _ = protocol::bare_event_name(&v);
    let _ = pstream::CreateStream::from_args(&v).map(|c| c.to_value());
    let _ = pstream::CreateAnswer::from_args(&v);
    let _ = pstream::SeedData::from_args(&v).map(|d| d.chunk.into_bytes());
    let _ = pstream::SeedDestroyed::from_args(&v);
    let _ = pstream::sender_of(&v);
    let _ = protocol::service::TopicMembership::from_args(&v);
    let _ = protocol::service::SubscribeAnswer::from_args(&v);
    for x in v {
        let _ = protocol::BatchItem::decode(x.clone());
        let _ = serde_json::from_value::<pstream::SeedChunk>(x.clone());
        let _ = serde_json::from_value::<pstream::NodeBuffer>(x.clone());
        let _ = serde_json::from_value::<pstream::Window>(x.clone());
        let _ = serde_json::from_value::<pstream::StreamId>(x.clone());
        let _ = serde_json::from_value::<pstream::StreamAccept>(x.clone());
        let _ = serde_json::from_value::<protocol::EmitPayload>(x.clone());
        let _ = serde_json::from_value::<Arg>(x);
    }
}

/// Stream-frame decoders: the header alone, the whole-frame check, the decode.
fn decode_frame(b: Vec<u8>) {
    if let Ok(h) = frame::peek(&b) {
        let _ = frame::check(&b, &h);
    }
    let _ = frame::Frame::decode(Bytes::from(b));
}

/// The kinds of input, in turn.
pub const KINDS: usize = 7;

/// Runs the decoders on the input of `seed` (kind `seed % KINDS`).
pub fn one(seed: u64) {
    let mut rng = Rng::new(seed);
    match seed % KINDS as u64 {
        0 => decode_args(args(&mut rng)),
        1 => decode_values(values(&mut rng)),
        2 => decode_frame(frame_bytes(&mut rng)),
        3 => {
            let q = query(&mut rng);
            for (k, v) in protocol::query_pairs(&q) {
                let _ = (k.len(), v.len());
            }
            let _ = protocol::percent_decode(&q);
            let _ = protocol::percent_decode(&protocol::percent_encode(&q));
        }
        4 => {
            // JSON text as it comes off the wire, valid or mutated.
            let mut text = serde_json::to_vec(&values(&mut rng)).unwrap();
            if rng.chance(2) {
                mutate_bytes(&mut rng, &mut text);
            }
            let _ = serde_json::from_slice::<RawArgs>(&text).map(|a| decode_args(a.0));
            let _ = serde_json::from_slice::<Vec<Value>>(&text).map(decode_values);
        }
        5 => {
            // Random bytes everywhere.
            let b = bytes(&mut rng, 256);
            decode_frame(b.clone());
            let _ = serde_json::from_slice::<RawArgs>(&b);
            let s = String::from_utf8_lossy(&b).into_owned();
            let _ = protocol::query_pairs(&s).count();
            let _ = protocol::percent_decode(&s);
        }
        _ => {
            let v: Vec<Value> = (0..rng.below(4)).map(|_| json(&mut rng, 5)).collect();
            decode_values(v.clone());
            decode_args(v.into_iter().map(Arg::Json).collect());
        }
    }
}

/// Runs seeds `from..from + count`, each under `catch_unwind`; returns the seeds that panicked.
pub fn run(from: u64, count: u64) -> Vec<u64> {
    let mut failed = Vec::new();
    for seed in from..from + count {
        if std::panic::catch_unwind(|| one(seed)).is_err() {
            failed.push(seed);
        }
    }
    failed
}
