//! Registration of the relay's event handlers on a new connection, and the table that maps an
//! event name to the operation that handles it (shared by seed events and `P2P_REQ`).

use super::{decode_args, seed_responder, Inline, OpError, P2pServer, Peer, Responder};
use crate::error::Error;
use crate::protocol::{event, ResBody};
use serde_json::Value;
use socketioxide::handler::Value as SioValue;
use std::sync::Arc;

/// An operation of the relay: the caller, its arguments, and how to answer it.
pub(crate) type Op = fn(&P2pServer, &Arc<Peer>, Vec<Value>, Responder);

/// The operation for an event name a client may send, directly or inside `P2P_REQ`.
fn op_for(name: &str) -> Option<Op> {
    use crate::room::server as core;
    use crate::message::server as message;
    Some(match name {
        event::JOIN_ROOM => core::join_room,
        event::LEAVE_ROOM => core::leave_room,
        event::EMIT_ROOM => core::emit_room,
        event::LIST_CLIENTS => core::list_clients,
        event::P2P_EMIT => message::p2p_emit,
        event::P2P_EMIT_ACKNOWLEDGE => message::p2p_emit_acknowledge,
        event::MULTI_API_ADD_TARGET => message::add_target,
        event::MULTI_API_CREATE_STREAM => crate::stream::server::create_stream,
        _ => return None,
    })
}

const SEED_EVENTS: &[&str] = &[
    event::JOIN_ROOM,
    event::LEAVE_ROOM,
    event::EMIT_ROOM,
    event::LIST_CLIENTS,
    event::P2P_EMIT,
    event::P2P_EMIT_ACKNOWLEDGE,
    event::MULTI_API_ADD_TARGET,
    event::MULTI_API_CREATE_STREAM,
];

pub(super) fn register(server: &P2pServer, peer: &Arc<Peer>) {
    for &name in SEED_EVENTS {
        let op = op_for(name).expect("every seed event has an operation");
        on(server, peer, name, op);
    }
    if peer.ext {
        on(server, peer, event::P2P_REQ, p2p_req);
        on(server, peer, event::P2P_RES, p2p_res);
        on(
            server,
            peer,
            event::P2P_BATCH,
            crate::message::server::p2p_batch,
        );
        on_frame(server, peer);
    }
}

fn on(server: &P2pServer, peer: &Arc<Peer>, name: &'static str, op: Op) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on(
        name,
        Inline(move |s: &_, mut v, ack_id: Option<i64>| {
            let Some(peer) = weak.upgrade() else { return };
            let responder = seed_responder(s, &mut v, &ack_id);
            match decode_args(s, &mut v, &ack_id) {
                Ok(args) => op(&server, &peer, args, responder),
                Err(e) => responder.respond(&peer, Err(e.into())),
            }
        }),
    );
}

/// Binary stream frames: the attachment is taken as it is, with no JSON decoding.
fn on_frame(server: &P2pServer, peer: &Arc<Peer>) {
    let server = server.clone();
    let weak = Arc::downgrade(peer);
    peer.socket.on(
        crate::stream::frame::FRAME_EVENT,
        Inline(move |_: &_, v, _: Option<i64>| {
            let Some(peer) = weak.upgrade() else { return };
            let bin = match v {
                SioValue::Str(_, Some(mut bins)) if bins.len() == 1 => bins.pop_front(),
                _ => None,
            };
            match bin {
                Some(b) => crate::stream::server::on_frame(&server, &peer, b),
                None => peer.server_error(
                    "Error: bad request: P2P_FRAME carries exactly one binary attachment",
                ),
            }
        }),
    );
}

/// `P2P_REQ(id, event, ...args)`: an event that wants an answer, from an extension client.
fn p2p_req(server: &P2pServer, peer: &Arc<Peer>, mut args: Vec<Value>, _: Responder) {
    let id = match args.first().and_then(Value::as_u64) {
        Some(id) => id,
        None => {
            return peer.server_error(
                "Error: bad request: P2P_REQ needs a request id (a non-negative integer) first",
            )
        }
    };
    let name = match args.get(1).and_then(Value::as_str) {
        Some(n) => n.to_string(),
        None => {
            return Responder::Event(id).respond(
                peer,
                Err(Error::BadRequest("P2P_REQ needs an event name second".into()).into()),
            )
        }
    };
    args.drain(..2);
    match op_for(&name) {
        Some(op) => op(server, peer, args, Responder::Event(id)),
        None => Responder::Event(id).respond(
            peer,
            Err(OpError::from(Error::BadRequest(format!(
                "unknown request '{name}'"
            )))),
        ),
    }
}

/// `P2P_RES(id, {"ok": [...]} | {"err": "..."})`: an extension client's answer to a request.
fn p2p_res(_: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, _: Responder) {
    let mut it = args.into_iter();
    let (Some(id), Some(body)) = (it.next().and_then(|v| v.as_u64()), it.next()) else {
        return peer.server_error("Error: bad request: P2P_RES needs (id, {ok|err})");
    };
    match serde_json::from_value::<ResBody>(body) {
        Ok(body) => {
            if !peer.resolve(id, body) {
                tracing::debug!(client = %peer.id, id, "answer to a request nobody waits for");
            }
        }
        Err(e) => peer.server_error(&format!("Error: bad request: P2P_RES body: {e}")),
    }
}
