//! Server side of the Message API: relaying events, replies and add-target between clients.

use crate::auth::Action;
use crate::error::Error;
use crate::protocol::{self, batch_item, event, AddTarget, Arg, Batch, Emit};
use crate::server::{
    CallerSlot, OpError, OpReply, Operations, P2pServer, Peer, Reason, Target, RELAY,
};
use crate::service::server::{intercept, Intercept};
use serde_json::Value;
use socketioxide::adapter::Adapter;
use std::collections::HashMap;
use std::sync::Arc;

/// Registers the Message API's relay operations.
pub(crate) fn register<A: Adapter>(ops: &mut Operations<A>) {
    ops.add(event::P2P_EMIT, p2p_emit);
    ops.add(event::P2P_EMIT_ACKNOWLEDGE, p2p_emit_acknowledge);
    ops.add(event::MULTI_API_ADD_TARGET, add_target);
    ops.add_ext(event::P2P_BATCH, p2p_batch);
}

/// Checks a decoded `{targetClientId, event, args}` payload from `caller`: `args[0]` is the
/// caller's own id. (The event name is checked once the call is known to be delivered to a
/// client, not taken by a service of this server: see [`P2pServer::check_event_name`].)
fn check<A: Adapter>(caller: &Peer<A>, p: &Emit) -> Result<(), Error> {
    // The sender id is the server's word, not the client's.
    match p.claimed_sender() {
        Ok(s) if *s == *caller.id => Ok(()),
        Ok(s) => Err(Error::BadRequest(format!(
            "args[0] must be the sender's own client id '{}', got {}",
            caller.id,
            Value::from(s)
        ))),
        Err(got) => Err(Error::BadRequest(format!(
            "args[0] must be the sender's own client id '{}', got {got}",
            caller.id
        ))),
    }
}

/// Checks that `caller` may send `p`: a built-in topic API is a subscription to the target's
/// topics, a call to a service of this server a call, anything else a message to a client (which
/// may be a service a client provides, so `call`'s allow list allows it too). A denial is
/// answered and the message goes nowhere.
fn authorize<A: Adapter>(server: &P2pServer<A>, caller: &Peer<A>, p: &Emit) -> Result<(), Error> {
    let target = p.target.as_str();
    let service = server.inner.services.contains(target);
    let action = match (crate::service::is_builtin_api(&p.event), service) {
        (true, true) => Action::Subscribe(target),
        (true, false) => Action::SubscribeClient(target),
        (false, true) => Action::Call(target),
        (false, false) => Action::Message(target),
    };
    caller.check(action)
}

/// Lets a service of this server take the call; what it does not take comes back to be relayed,
/// binary data intact.
fn offer_to_services<A: Adapter>(
    server: &P2pServer<A>,
    caller: &Arc<Peer<A>>,
    p: Emit,
    r: OpReply,
    wants_reply: bool,
) -> Option<(Emit, OpReply)> {
    if !server.inner.services.contains(&p.target) {
        return Some((p, r));
    }
    if p.args.iter().any(Arg::has_binary) {
        // Service handlers take JSON; the relayed call keeps its binary data.
        match intercept(server, caller, p.clone().into_payload(), r, wants_reply) {
            Intercept::Handled => None,
            Intercept::Relay(_, r) => Some((p, r)),
        }
    } else {
        match intercept(server, caller, p.into_payload(), r, wants_reply) {
            Intercept::Handled => None,
            Intercept::Relay(p, r) => Some((
                Emit {
                    target: p.target_client_id,
                    event: p.event,
                    args: p.args.into_iter().map(Arg::Json).collect(),
                },
                r,
            )),
        }
    }
}

/// One of `caller`'s slots for requests in flight, or the refusal to answer with.
fn caller_slot<A: Adapter>(server: &P2pServer<A>, caller: &Peer<A>) -> Result<CallerSlot, Error> {
    let max = server.inner.opts.max_pending_per_caller;
    CallerSlot::take(&caller.asking, max).ok_or_else(|| {
        caller.metrics.refused(Reason::Busy);
        Error::Overloaded(format!(
            "client '{}' already waits for {max} answers, the most one client may; nothing was \
             delivered",
            caller.id
        ))
    })
}

/// The target client `id`: connected, or away for a moment, when what is sent to it is held for
/// its return; in a cluster, perhaps a client of another relay (see [`P2pServer::target`]).
fn target_of<A: Adapter>(
    server: &P2pServer<A>,
    caller: &Peer<A>,
    id: &str,
) -> Result<Target<A>, Error> {
    let target = server.target(id)?;
    // Either end learns when the other goes away (a client of another relay: through its
    // relay, once it is reached).
    match &target {
        Target::Local(t) => {
            caller.watch(&t.id);
            t.watch(&caller.id);
        }
        Target::Remote(r) => caller.watch(r.id()),
    }
    Ok(target)
}

/// `P2P_EMIT({targetClientId, event, args})`: `event(...args)` to the target.
fn p2p_emit<A: Adapter>(server: &P2pServer<A>, peer: &Arc<Peer<A>>, p: Emit, r: OpReply) {
    if let Err(e) = check(peer, &p).and_then(|()| authorize(server, peer, &p)) {
        return r.respond(Err(e.into()));
    }
    let Some((p, r)) = offer_to_services(server, peer, p, r, false) else {
        return;
    };
    if let Err(e) = server.check_event_name(&p.event) {
        return r.respond(Err(e.into()));
    }
    let target = match target_of(server, peer, &p.target) {
        Ok(t) => t,
        Err(e) => return r.respond(Err(e.into())),
    };
    let metrics = peer.metrics.clone();
    target.emit_from(Some(&peer.id), p.event, p.args, move |sent| {
        let result = sent
            .inspect(|()| metrics.messages_relayed(1))
            .map(|()| vec![])
            .map_err(OpError::from);
        r.respond(result);
    });
}

/// `P2P_EMIT_ACKNOWLEDGE({targetClientId, event, args}, ack)`: `event(...args, ack')` to the
/// target; its answer goes back to the caller.
fn p2p_emit_acknowledge<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    p: Emit,
    r: OpReply,
) {
    if let Err(e) = check(peer, &p).and_then(|()| authorize(server, peer, &p)) {
        return r.respond(Err(e.into()));
    }
    let Some((p, r)) = offer_to_services(server, peer, p, r, true) else {
        return;
    };
    if let Err(e) = server.check_event_name(&p.event) {
        return r.respond(Err(e.into()));
    }
    let target = match target_of(server, peer, &p.target) {
        Ok(t) => t,
        Err(e) => return r.respond(Err(e.into())),
    };
    let slot = match caller_slot(server, peer) {
        Ok(slot) => slot,
        Err(e) => return r.respond(Err(e.into())),
    };
    let (timeout, max) = (
        server.inner.opts.reply_timeout,
        server.inner.opts.max_pending_per_client,
    );
    let (caller, metrics) = (peer.id.clone(), peer.metrics.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let result = target
            .request_args(Some(&caller), &p.event, p.args, timeout, max)
            .await;
        if !matches!(result, Err(Error::Busy(_))) {
            // Delivered, whether answered in time or not (a refusal is counted as one).
            metrics.request_relayed();
        }
        r.respond_args(result.map_err(OpError::from));
    });
}

/// `MULTI_API_ADD_TARGET(targetClientId, ack)`: asks the target to accept the caller as a peer.
fn add_target<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    AddTarget(target_id): AddTarget,
    r: OpReply,
) {
    if let Err(e) = peer.check(Action::Send(&target_id)) {
        return r.respond(Err(e.into()));
    }
    let target = match target_of(server, peer, &target_id) {
        Ok(t) => t,
        Err(error) => {
            let msg = protocol::not_registered(&target_id);
            return r.respond(Err(OpError {
                error,
                seed_ack: Some(vec![Value::from(msg)]),
            }));
        }
    };
    let (timeout, max) = (
        server.inner.opts.reply_timeout,
        server.inner.opts.max_pending_per_client,
    );
    let slot = match caller_slot(server, peer) {
        Ok(slot) => slot,
        Err(e) => return r.respond(Err(e.into())),
    };
    let peer = peer.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let source = AddTarget(peer.id.to_string());
        let result = target
            .request_args(
                Some(&peer.id),
                event::MULTI_API_ADD_TARGET,
                vec![Arg::Json(Value::from(source.0))],
                timeout,
                max,
            )
            .await;
        let result = result.map(|args| args.into_iter().map(Arg::into_value).collect());
        r.respond(result.map_err(|error| match error {
            // A client of no relay of the cluster: answered as for one not connected here.
            Error::UnknownTarget(id) => OpError {
                seed_ack: Some(vec![Value::from(protocol::not_registered(&id))]),
                error: Error::UnknownTarget(id),
            },
            error => OpError::from(error),
        }));
    });
}

/// The messages of one `P2P_BATCH` for each client of another relay, in order.
type RemoteBatches = HashMap<Arc<str>, (crate::server::Remote, Vec<(String, Vec<Arg>)>)>;

/// The messages of one `P2P_BATCH` for each extension target, in order.
type Batches<A> = HashMap<Arc<str>, (Arc<Peer<A>>, Vec<Arg>)>;

/// `P2P_BATCH(payload, payload, ...)`: several `P2P_EMIT`s in one event. Messages for one
/// extension target are forwarded as one `P2P_BATCH([event, ...args], ...)`, in order.
fn p2p_batch<A: Adapter>(
    server: &P2pServer<A>,
    peer: &Arc<Peer<A>>,
    Batch(items): Batch,
    r: OpReply,
) {
    let mut batches: Batches<A> = HashMap::new();
    // Messages for clients of other relays, by target, in order.
    let mut remote: RemoteBatches = HashMap::new();
    for item in items {
        let p = match item {
            Ok(p) => p,
            Err(e) => {
                peer.report(&Error::from(e));
                continue;
            }
        };
        if let Err(e) = check(peer, &p).and_then(|()| authorize(server, peer, &p)) {
            peer.report(&e);
            continue;
        }
        // Each message is answered like a `P2P_EMIT`: nothing on success, `SERVER_ERROR` else.
        // Only a message to a service of this server needs an answer of its own; the others
        // (nearly all) are reported directly when they fail.
        let (p, item_reply) = if server.inner.services.contains(&p.target) {
            let item_reply = OpReply::seed(peer, event::P2P_EMIT, None);
            match offer_to_services(server, peer, p, item_reply, false) {
                Some((p, r)) => (p, Some(r)),
                None => continue,
            }
        } else {
            (p, None)
        };
        let result = server.check_event_name(&p.event);
        let result = result
            .and_then(|()| target_of(server, peer, &p.target))
            .and_then(|target| {
                let target = match target {
                    Target::Local(t) => t,
                    Target::Remote(r) => {
                        remote
                            .entry(r.id().clone())
                            .or_insert_with(|| (r, Vec::new()))
                            .1
                            .push((p.event, p.args));
                        return Ok(());
                    }
                };
                if target.ext {
                    batches
                        .entry(target.id.clone())
                        .or_insert_with(|| (target.clone(), Vec::new()))
                        .1
                        .push(batch_item(&p.event, p.args));
                    Ok(())
                } else {
                    let sent = target.emit_args_from(&peer.id, 1, &p.event, &p.args);
                    sent.inspect(|()| server.metrics().messages_relayed(1))
                }
            });
        match (item_reply, result) {
            (Some(r), result) => r.respond(result.map(|()| vec![]).map_err(OpError::from)),
            (None, Ok(())) => {}
            (None, Err(e)) => peer.report(&e),
        }
    }
    for (_, (target, frames)) in batches {
        let sent = target.emit_args_from(&peer.id, frames.len(), event::P2P_BATCH, &frames);
        let sent = sent.inspect(|()| server.metrics().messages_relayed(frames.len()));
        if let Err(e) = sent {
            let n = frames.len();
            peer.report(&match e {
                Error::Busy(id) => Error::Overloaded(format!(
                    "client '{id}' is busy (its queue on the relay is full): {n} messages for it \
                     were not delivered, try again later"
                )),
                e => Error::remote(
                    RELAY,
                    format!("{e} ({n} messages for '{}' were not delivered)", target.id),
                ),
            });
        }
    }
    for (_, (target, items)) in remote {
        let n = items.len();
        let (caller, metrics, to) = (peer.clone(), peer.metrics.clone(), target.id().clone());
        target.batch(&peer.id, items, move |sent| match sent {
            Ok(()) => metrics.messages_relayed(n),
            Err(e) => caller.report(&Error::remote(
                RELAY,
                format!("{e} ({n} messages for '{to}' were not delivered)"),
            )),
        });
    }
    r.respond(Ok(vec![]));
}
