//! Server side of the Message API: relaying events, replies and add-target between clients.

use crate::error::Error;
use crate::protocol::{self, event, EmitPayload};
use crate::server::{OpError, P2pServer, Peer, Responder};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Event names a client may not relay to another: the receiving library treats them as protocol
/// frames, so letting them through would let one client forge the server's word.
pub(crate) fn is_reserved(name: &str) -> bool {
    matches!(
        name,
        event::P2P_REQ
            | event::P2P_RES
            | event::P2P_WELCOME
            | event::P2P_BATCH
            | event::SERVER_ERROR
            | event::MULTI_API_ADD_TARGET
            | event::MULTI_API_TARGET_DISCONNECT
            | event::MULTI_API_CREATE_STREAM
            | crate::stream::frame::FRAME_EVENT
    )
}

/// Parses and checks a `{targetClientId, event, args}` payload from `caller`.
pub(crate) fn parse_emit(caller: &Peer, raw: Option<Value>) -> Result<EmitPayload, Error> {
    let raw = raw.ok_or_else(|| {
        Error::BadRequest("the payload {targetClientId, event, args} is missing".into())
    })?;
    let p: EmitPayload = serde_json::from_value(raw).map_err(|e| {
        Error::BadRequest(format!(
            "the payload must be {{targetClientId: string, event: string, args: array}}: {e}"
        ))
    })?;
    if p.target_client_id.is_empty() {
        return Err(Error::BadRequest("targetClientId is empty".into()));
    }
    if p.event.is_empty() {
        return Err(Error::BadRequest("the event name is empty".into()));
    }
    if is_reserved(&p.event) {
        return Err(Error::BadRequest(format!(
            "event name '{}' is reserved",
            p.event
        )));
    }
    // The sender id is the server's word, not the client's.
    match p.args.first() {
        Some(Value::String(s)) if **s == *caller.id => {}
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "args[0] must be the sender's own client id '{}', got {other}",
                caller.id
            )))
        }
        None => {
            return Err(Error::BadRequest(format!(
                "args[0] must be the sender's own client id '{}', got nothing",
                caller.id
            )))
        }
    }
    Ok(p)
}

fn target_of(server: &P2pServer, caller: &Peer, id: &str) -> Result<Arc<Peer>, Error> {
    let target = server
        .peer(id)
        .ok_or_else(|| Error::UnknownTarget(id.to_string()))?;
    // Either end learns when the other goes away.
    caller.watch(&target.id);
    target.watch(&caller.id);
    Ok(target)
}

/// `P2P_EMIT({targetClientId, event, args})`: `event(...args)` to the target.
pub(crate) fn p2p_emit(server: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let p = match parse_emit(peer, args.into_iter().next()) {
        Ok(p) => p,
        Err(e) => return r.respond(peer, Err(e.into())),
    };
    let (p, r) = match crate::service::server::intercept(server, peer, p, r, false) {
        crate::service::server::Intercept::Handled => return,
        crate::service::server::Intercept::Relay(p, r) => (p, r),
    };
    let result = target_of(server, peer, &p.target_client_id)
        .and_then(|target| target.emit(&p.event, &p.args))
        .map(|()| vec![])
        .map_err(OpError::from);
    r.respond(peer, result);
}

/// `P2P_EMIT_ACKNOWLEDGE({targetClientId, event, args}, ack)`: `event(...args, ack')` to the
/// target; its answer goes back to the caller.
pub(crate) fn p2p_emit_acknowledge(
    server: &P2pServer,
    peer: &Arc<Peer>,
    args: Vec<Value>,
    r: Responder,
) {
    let p = match parse_emit(peer, args.into_iter().next()) {
        Ok(p) => p,
        Err(e) => return r.respond(peer, Err(e.into())),
    };
    let (p, r) = match crate::service::server::intercept(server, peer, p, r, true) {
        crate::service::server::Intercept::Handled => return,
        crate::service::server::Intercept::Relay(p, r) => (p, r),
    };
    let target = match target_of(server, peer, &p.target_client_id) {
        Ok(t) => t,
        Err(e) => return r.respond(peer, Err(e.into())),
    };
    let (timeout, max) = (
        server.inner.opts.reply_timeout,
        server.inner.opts.max_pending_per_client,
    );
    let peer = peer.clone();
    tokio::spawn(async move {
        let result = target.request(&p.event, &p.args, timeout, max).await;
        r.respond(&peer, result.map_err(OpError::from));
    });
}

/// `MULTI_API_ADD_TARGET(targetClientId, ack)`: asks the target to accept the caller as a peer.
pub(crate) fn add_target(server: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let target_id = match args.first() {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return r.respond(
                peer,
                Err(Error::BadRequest(
                    "MULTI_API_ADD_TARGET needs the target client id (a non-empty string)".into(),
                )
                .into()),
            )
        }
    };
    let target = match target_of(server, peer, &target_id) {
        Ok(t) => t,
        Err(_) => {
            let msg = protocol::not_registered(&target_id);
            return r.respond(
                peer,
                Err(OpError {
                    error: Error::remote("the relay", msg.clone()),
                    seed_ack: Some(vec![Value::from(msg)]),
                }),
            );
        }
    };
    let (timeout, max) = (
        server.inner.opts.reply_timeout,
        server.inner.opts.max_pending_per_client,
    );
    let peer = peer.clone();
    tokio::spawn(async move {
        let source = Value::from(&*peer.id);
        let result = target
            .request(event::MULTI_API_ADD_TARGET, &[source], timeout, max)
            .await;
        r.respond(&peer, result.map_err(OpError::from));
    });
}

/// `P2P_BATCH(payload, payload, ...)`: several `P2P_EMIT`s in one event. Messages for one
/// extension target are forwarded as one `P2P_BATCH([event, ...args], ...)`, in order.
pub(crate) fn p2p_batch(server: &P2pServer, peer: &Arc<Peer>, items: Vec<Value>, _: Responder) {
    let mut batches: HashMap<Arc<str>, (Arc<Peer>, Vec<Value>)> = HashMap::new();
    for raw in items {
        let result = parse_emit(peer, Some(raw)).and_then(|p| {
            let p = match crate::service::server::intercept(server, peer, p, Responder::None, false)
            {
                crate::service::server::Intercept::Handled => return Ok(()),
                crate::service::server::Intercept::Relay(p, _) => p,
            };
            let target = target_of(server, peer, &p.target_client_id)?;
            if target.ext {
                let mut frame = Vec::with_capacity(p.args.len() + 1);
                frame.push(Value::from(p.event));
                frame.extend(p.args);
                batches
                    .entry(target.id.clone())
                    .or_insert_with(|| (target.clone(), Vec::new()))
                    .1
                    .push(Value::Array(frame));
                Ok(())
            } else {
                target.emit(&p.event, &p.args)
            }
        });
        if let Err(e) = result {
            peer.server_error(&e.to_string());
        }
    }
    for (_, (target, frames)) in batches {
        if let Err(e) = target.emit(event::P2P_BATCH, &frames) {
            peer.server_error(&format!(
                "{e} ({} messages for '{}' were not delivered)",
                frames.len(),
                target.id
            ));
        }
    }
}
