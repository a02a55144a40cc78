//! The relay's operation table and its registration on a new connection.
//!
//! Each API fills the table with the events it handles when the server is built (see
//! [`Operations::add`]); the hub knows no API's functions. An event is decoded once, here, into
//! the payload type its operation takes; a payload of the wrong shape is answered with a
//! "bad request" error and never reaches the operation. `P2P_REQ` looks its event up in the same
//! table, so an event means the same whether a client asks it directly or as a request. An event
//! the table does not have is refused with an error naming it (acknowledged with that error when
//! the sender asked for an acknowledgement), never left unanswered.

use super::{ack_sender, decode_args, Inline, OpError, OpReply, P2pServer, Peer};
use crate::error::Error;
use crate::protocol::{event, Arg, FromArgs, Request, ResAnswer, Response};
use bytes::Bytes;
use socketioxide::adapter::Adapter;
use socketioxide::extract::Event;
use socketioxide::handler::FromMessageParts;
use socketioxide::handler::Value as SioValue;
use socketioxide::socket::Socket;
use std::collections::HashMap;
use std::sync::Arc;

/// An operation with its decoder: the caller, the raw arguments, and how to answer.
type Op<A> = Box<dyn Fn(&P2pServer<A>, &Arc<Peer<A>>, Vec<Arg>, OpReply) + Send + Sync>;
/// A handler of an event that carries one binary attachment and nothing else.
type BinaryOp<A> = fn(&P2pServer<A>, &Arc<Peer<A>>, Bytes);
/// Runs when a client is gone.
type GoneOp<A> = fn(&P2pServer<A>, &Arc<Peer<A>>);

struct Entry<A: Adapter> {
    op: Op<A>,
    /// Only extension clients may send it, and not inside `P2P_REQ`.
    ext_only: bool,
}

/// What the relay does with each event a client may send.
pub(crate) struct Operations<A: Adapter> {
    ops: HashMap<&'static str, Entry<A>>,
    binary: HashMap<&'static str, BinaryOp<A>>,
    pub(super) peer_gone: Vec<GoneOp<A>>,
}

impl<A: Adapter> Default for Operations<A> {
    fn default() -> Self {
        Operations {
            ops: HashMap::new(),
            binary: HashMap::new(),
            peer_gone: Vec::new(),
        }
    }
}

impl<A: Adapter> Operations<A> {
    fn insert<T: FromArgs + 'static>(
        &mut self,
        name: &'static str,
        op: fn(&P2pServer<A>, &Arc<Peer<A>>, T, OpReply),
        ext_only: bool,
    ) {
        let op: Op<A> = Box::new(move |server, peer, args, r| match T::from_args(args) {
            Ok(payload) => op(server, peer, payload, r),
            Err(e) => r.respond(Err(OpError::from(Error::from(e)))),
        });
        let previous = self.ops.insert(name, Entry { op, ext_only });
        debug_assert!(previous.is_none(), "two operations for '{name}'");
    }

    /// Registers the operation of `name`, a seed event any client may send, directly or (an
    /// extension client) as a `P2P_REQ`. Its arguments are decoded as `T` first.
    pub(crate) fn add<T: FromArgs + 'static>(
        &mut self,
        name: &'static str,
        op: fn(&P2pServer<A>, &Arc<Peer<A>>, T, OpReply),
    ) {
        self.insert(name, op, false);
    }

    /// Registers an event only extension clients send, and never as a request.
    pub(crate) fn add_ext<T: FromArgs + 'static>(
        &mut self,
        name: &'static str,
        op: fn(&P2pServer<A>, &Arc<Peer<A>>, T, OpReply),
    ) {
        self.insert(name, op, true);
    }

    /// Registers an event of extension clients that carries exactly one binary attachment.
    pub(crate) fn add_binary(&mut self, name: &'static str, op: BinaryOp<A>) {
        self.binary.insert(name, op);
    }

    /// Registers what to do when a client has gone (after it left the client table).
    pub(crate) fn on_peer_gone(&mut self, op: GoneOp<A>) {
        self.peer_gone.push(op);
    }

    /// Whether `name` is an event only extension clients may send.
    fn is_ext_only(&self, name: &str) -> bool {
        self.ops.get(name).is_some_and(|e| e.ext_only)
            || self.binary.contains_key(name)
            || name == event::P2P_REQ
            || name == event::P2P_RES
    }

    /// Runs `name` for a request; false when there is no such request.
    fn run_request(
        &self,
        name: &str,
        server: &P2pServer<A>,
        peer: &Arc<Peer<A>>,
        args: Vec<Arg>,
        r: OpReply,
    ) -> Result<(), OpReply> {
        match self.ops.get(name) {
            Some(e) if !e.ext_only => {
                (e.op)(server, peer, args, r);
                Ok(())
            }
            _ => Err(r),
        }
    }
}

/// Registers the handlers of every operation on a new connection.
pub(super) fn register<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>) {
    let ops = &server.inner.ops;
    for (&name, entry) in &ops.ops {
        if entry.ext_only && !peer.ext {
            continue;
        }
        on(server, peer, name);
    }
    if peer.ext {
        on_special(server, peer, event::P2P_REQ);
        on_special(server, peer, event::P2P_RES);
        on_received(server, peer);
        for (&name, &op) in &ops.binary {
            on_binary(server, peer, name, op);
        }
    }
    on_unknown(server, peer);
}

/// Every event no operation handles: refused with an error naming it, so that a sender that
/// asked for an acknowledgement gets one (the error text, after the `SERVER_ERROR`).
fn on_unknown<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on_fallback(Inline(
        move |s: &Arc<Socket<A>>, mut v: SioValue, ack_id: Option<i64>| {
            let Some(peer) = weak.upgrade() else { return };
            if !peer.count_received(&v) {
                return;
            }
            let name = Event::from_message_parts(s, &mut v, &ack_id)
                .map(|e| e.0)
                .unwrap_or_default();
            let r = OpReply::seed(&peer, &name, ack_sender(s, &mut v, &ack_id));
            if let Err(e) = server.admit_event(&peer, &v) {
                return r.respond(Err(e.into()));
            }
            let ext_only = server.inner.ops.is_ext_only(&name);
            r.respond(Err(Error::BadRequest(unknown_event(&name, ext_only)).into()));
        },
    ));
}

/// The refusal of an event the relay does not handle; a very long name is cut.
fn unknown_event(name: &str, ext_only: bool) -> String {
    const SHOWN: usize = 256;
    let shown = if name.len() <= SHOWN {
        format!("'{name}'")
    } else {
        let mut cut = SHOWN;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("'{}...' ({} bytes)", &name[..cut], name.len())
    };
    if ext_only {
        format!(
            "unknown event {shown}: only clients that announce the extensions (p2pExt=1) send it"
        )
    } else {
        format!("unknown event {shown}: the relay has no such event")
    }
}

fn on<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>, name: &'static str) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on(
        name,
        Inline(
            move |s: &Arc<Socket<A>>, mut v: SioValue, ack_id: Option<i64>| {
                let Some(peer) = weak.upgrade() else { return };
                if !peer.count_received(&v) {
                    return;
                }
                let Some(entry) = server.inner.ops.ops.get(name) else {
                    return;
                };
                let r = OpReply::seed(&peer, name, ack_sender(s, &mut v, &ack_id));
                if let Err(e) = server.admit_event(&peer, &v) {
                    return r.respond(Err(e.into()));
                }
                match decode_args(s, &mut v, &ack_id) {
                    Ok(args) => (entry.op)(&server, &peer, args, r),
                    Err(e) => r.respond(Err(e.into())),
                }
            },
        ),
    );
}

/// `P2P_REQ` and `P2P_RES`, the extension's request plumbing.
fn on_special<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>, name: &'static str) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on(
        name,
        Inline(
            move |s: &Arc<Socket<A>>, mut v: SioValue, ack_id: Option<i64>| {
                let Some(peer) = weak.upgrade() else { return };
                if !peer.count_received(&v) {
                    return;
                }
                // Answers are not counted: they were asked for.
                let admitted = if name == event::P2P_REQ {
                    server.admit_event(&peer, &v)
                } else {
                    Ok(())
                };
                let args = decode_args(s, &mut v, &ack_id);
                if name == event::P2P_RES {
                    return p2p_res(&peer, args, &v);
                }
                match args {
                    Ok(args) => p2p_req(&server, &peer, args, admitted),
                    Err(e) => peer.report(&e),
                }
            },
        ),
    );
}

/// `P2P_RECEIVED(count)`: how many events of its session the client has received (not counted
/// itself). Counts against the event rate like any event.
fn on_received<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on(
        event::P2P_RECEIVED,
        Inline(
            move |s: &Arc<Socket<A>>, mut v: SioValue, ack_id: Option<i64>| {
                let Some(peer) = weak.upgrade() else { return };
                if let Err(e) = server.admit_event(&peer, &v) {
                    return peer.report(&e);
                }
                let count = decode_args(s, &mut v, &ack_id).and_then(|args| {
                    match args.as_slice() {
                        [Arg::Json(n)] => n.as_u64(),
                        _ => None,
                    }
                    .ok_or_else(|| {
                        Error::BadRequest(format!(
                            "{}(count) takes one count of events",
                            event::P2P_RECEIVED
                        ))
                    })
                });
                match count {
                    Ok(n) => peer.confirmed(n),
                    Err(e) => peer.report(&e),
                }
            },
        ),
    );
}

/// Events with one binary attachment: taken as they are, with no JSON decoding.
fn on_binary<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    name: &'static str,
    op: BinaryOp<A>,
) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on(
        name,
        Inline(move |_: &Arc<Socket<A>>, v: SioValue, _: Option<i64>| {
            let Some(peer) = weak.upgrade() else { return };
            if !peer.count_received(&v) {
                return;
            }
            let bin = match v {
                SioValue::Str(_, Some(mut bins)) if bins.len() == 1 => bins.pop_front(),
                _ => None,
            };
            match bin {
                Some(b) => op(&server, &peer, b),
                None => peer.report(&Error::BadRequest(format!(
                    "{name} carries exactly one binary attachment"
                ))),
            }
        }),
    );
}

/// `P2P_REQ(id, event, ...args)`: an event that wants an answer, from an extension client.
fn p2p_req<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    args: Vec<Arg>,
    admitted: Result<(), Error>,
) {
    let req = match Request::decode(args) {
        Ok(req) => req,
        Err(bad) => {
            let e = OpError::from(Error::from(bad.error));
            return match bad.id {
                Some(id) => OpReply::event(peer, event::P2P_REQ, id).respond(Err(e)),
                None => peer.report(&e.error),
            };
        }
    };
    let r = OpReply::event(peer, &req.event, req.id);
    if let Err(e) = admitted {
        return r.respond(Err(e.into()));
    }
    if let Err(r) = server
        .inner
        .ops
        .run_request(&req.event, server, peer, req.args, r)
    {
        let e = Error::BadRequest(format!("unknown request '{}'", req.event));
        r.respond(Err(e.into()));
    }
}

/// `P2P_RES(id, {"ok": [...]} | {"err": ..., "code": ...})`: an extension client's answer. One
/// that cannot be decoded (or is refused, holding a placeholder look-alike) is reported to its
/// sender, and the request it answers, if its id can be read, fails at once with why.
fn p2p_res<A: Adapter>(peer: &Arc<Peer<A>>, args: Result<Vec<Arg>, Error>, raw: &SioValue) {
    let res = args.and_then(|args| Response::from_args(args).map_err(Error::from));
    match res {
        Ok(res) => {
            let id = res.id;
            if !peer.resolve(res) {
                tracing::debug!(client = %peer.id, id, "answer to a request nobody waits for");
            }
        }
        Err(e) => {
            peer.report(&e);
            let id = match raw {
                SioValue::Str(text, _) => crate::protocol::response_id(text),
                SioValue::Bytes(_) => None,
            };
            if let Some(id) = id {
                let why = match &e {
                    Error::BadRequest(why) => why.clone(),
                    other => other.to_string(),
                };
                let bad = Error::Protocol(format!("bad answer from '{}': {why}", peer.id));
                peer.resolve(Response {
                    id,
                    body: ResAnswer::Err(bad.to_wire()),
                });
            }
        }
    }
}
