//! Server side of the Stream API: opening streams between clients and routing their frames.
//!
//! The relay keeps one [`Route`] per credit-mode stream and forwards each frame to the other end
//! after reading its nine-byte header. It keeps its own copy of the credit each end has, so a
//! client that sends more than the receiver granted is cut off here, before it can fill the
//! relay's memory: per stream the relay holds at most one window in each direction.

use super::flow::MAX_WINDOW;
use super::frame::{self, code, Frame, Kind, FRAME_EVENT};
use crate::error::Error;
use crate::protocol::{self, event};
use crate::server::{OpError, P2pServer, Peer, Responder};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One credit-mode stream as the relay sees it: `a` opened it, `b` accepted it.
struct Route {
    a: Arc<Peer>,
    b: Arc<Peer>,
    /// Bytes `a` may still send to `b`.
    credit_to_b: u64,
    /// Bytes `b` may still send to `a`.
    credit_to_a: u64,
    fin_a: bool,
    fin_b: bool,
    /// Frames from `b` that arrived before `a` was told the stream is open.
    opening: Option<Vec<Bytes>>,
}

/// The relay's routes.
#[derive(Default)]
pub(crate) struct Routes {
    table: Mutex<HashMap<u64, Route>>,
    next: AtomicU64,
}

impl Routes {
    /// How many credit-mode streams the relay is routing.
    pub(crate) fn len(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

fn valid_window(v: Option<&Value>) -> Option<u64> {
    let w = v?.as_u64()?;
    (w > 0 && w <= MAX_WINDOW).then_some(w)
}

fn reset_frame(route: u64, code: u32, reason: &str) -> Bytes {
    Frame::Reset {
        route,
        code,
        reason: reason.to_string(),
    }
    .encode()
}

/// `MULTI_API_CREATE_STREAM({sourceStreamId, targetStreamId, targetClientId, window?, ...}, ack)`.
pub(crate) fn create_stream(server: &P2pServer, peer: &Arc<Peer>, args: Vec<Value>, r: Responder) {
    let info = match args.into_iter().next() {
        Some(Value::Object(o)) => o,
        _ => {
            return r.respond(
                peer,
                Err(Error::BadRequest(
                    "MULTI_API_CREATE_STREAM needs {sourceStreamId, targetStreamId, targetClientId}"
                        .into(),
                )
                .into()),
            )
        }
    };
    let target_id = match info.get("targetClientId") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => {
            return r.respond(
                peer,
                Err(Error::BadRequest("MULTI_API_CREATE_STREAM: targetClientId must be a non-empty string".into()).into()),
            )
        }
    };
    for key in ["sourceStreamId", "targetStreamId"] {
        match info.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(Value::Number(_)) => {}
            _ => {
                return r.respond(
                    peer,
                    Err(Error::BadRequest(format!(
                        "MULTI_API_CREATE_STREAM: {key} must be a non-empty string"
                    ))
                    .into()),
                )
            }
        }
    }
    let window_a = match info.get("window") {
        None => None,
        w => match valid_window(w) {
            Some(w) => Some(w),
            None => {
                return r.respond(
                    peer,
                    Err(Error::BadRequest(format!(
                        "MULTI_API_CREATE_STREAM: window must be 1..={MAX_WINDOW}"
                    ))
                    .into()),
                )
            }
        },
    };
    let Some(target) = server.peer(&target_id) else {
        let msg = protocol::not_registered(&target_id);
        return r.respond(
            peer,
            Err(OpError {
                error: Error::Remote(msg.clone()),
                seed_ack: Some(vec![Value::from(msg)]),
            }),
        );
    };
    peer.watch(&target.id);
    target.watch(&peer.id);

    let mut forward = info.clone();
    forward.insert("sourceClientId".into(), Value::from(&*peer.id));
    forward.remove("route");
    let routes = &server.inner.streams;
    let route = match (window_a, peer.ext && target.ext) {
        (Some(w), true) => {
            let id = routes.next.fetch_add(1, Ordering::Relaxed) + 1;
            routes.table.lock().unwrap().insert(
                id,
                Route {
                    a: peer.clone(),
                    b: target.clone(),
                    credit_to_b: 0,
                    credit_to_a: w,
                    fin_a: false,
                    fin_b: false,
                    opening: Some(Vec::new()),
                },
            );
            peer.routes.lock().unwrap().insert(id);
            target.routes.lock().unwrap().insert(id);
            forward.insert("route".into(), Value::from(id));
            Some(id)
        }
        _ => None,
    };
    let (timeout, max) = (
        server.inner.opts.reply_timeout,
        server.inner.opts.max_pending_per_client,
    );
    let server = server.clone();
    let peer = peer.clone();
    tokio::spawn(async move {
        let answer = target
            .request(event::MULTI_API_CREATE_STREAM, &[Value::Object(forward)], timeout, max)
            .await;
        let routes = &server.inner.streams;
        let drop_route = |id: u64| {
            routes.table.lock().unwrap().remove(&id);
            peer.routes.lock().unwrap().remove(&id);
            target.routes.lock().unwrap().remove(&id);
        };
        match answer {
            Ok(args) => match args.first() {
                None | Some(Value::Null) => {
                    // A seed-era acceptor: no credit, no route.
                    if let Some(id) = route {
                        drop_route(id);
                    }
                    r.respond(&peer, Ok(vec![]));
                }
                Some(Value::String(refusal)) => {
                    if let Some(id) = route {
                        drop_route(id);
                    }
                    r.respond(
                        &peer,
                        Err(OpError {
                            error: Error::Remote(refusal.clone()),
                            seed_ack: Some(vec![Value::from(refusal.clone())]),
                        }),
                    );
                }
                Some(obj) => {
                    let window_b = valid_window(obj.get("window"));
                    match (route, window_b) {
                        (Some(id), Some(wb)) => {
                            let mut table = routes.table.lock().unwrap();
                            match table.get_mut(&id) {
                                Some(rt) => {
                                    rt.credit_to_b = wb;
                                    // Answer first, then what `b` already sent, so `a` knows
                                    // the route before its frames arrive.
                                    r.respond(&peer, Ok(vec![json!({ "window": wb, "route": id })]));
                                    for f in rt.opening.take().unwrap_or_default() {
                                        let _ = peer.socket.emit(FRAME_EVENT, &f);
                                    }
                                }
                                None => r.respond(
                                    &peer,
                                    Err(Error::PeerGone(target.id.to_string()).into()),
                                ),
                            }
                        }
                        (Some(id), None) => {
                            drop_route(id);
                            let _ = target.socket.emit(
                                FRAME_EVENT,
                                &reset_frame(id, code::PROTOCOL, "accept answer had no valid window"),
                            );
                            r.respond(
                                &peer,
                                Err(Error::Protocol(format!(
                                    "'{}' accepted the stream without a valid window",
                                    target.id
                                ))
                                .into()),
                            );
                        }
                        (None, _) => r.respond(&peer, Ok(vec![])),
                    }
                }
            },
            Err(e) => {
                if let Some(id) = route {
                    drop_route(id);
                }
                r.respond(&peer, Err(e.into()));
            }
        }
    });
}

/// A binary `P2P_FRAME` from a client: checked against the route's credit and forwarded.
pub(crate) fn on_frame(server: &P2pServer, sender: &Arc<Peer>, bytes: Bytes) {
    let h = match frame::peek(&bytes) {
        Ok(h) => h,
        Err(e) => return sender.server_error(&format!("Error: bad stream frame: {e}")),
    };
    let id = h.route;
    let routes = &server.inner.streams;
    let mut table = routes.table.lock().unwrap();
    let Some(rt) = table.get_mut(&id) else {
        // Frames may cross a reset on the wire; those for a closed route are dropped.
        tracing::trace!(client = %sender.id, route = id, "frame for a closed route");
        return;
    };
    let from_a = Arc::ptr_eq(&rt.a, sender);
    if !from_a && !Arc::ptr_eq(&rt.b, sender) {
        drop(table);
        return sender.server_error(&format!("Error: stream route {id} is not yours"));
    }
    let mut violation = None;
    match h.kind {
        Kind::Data => {
            let n = u64::from(h.value);
            let encoded = (bytes.len() - frame::DATA_HEADER_LEN) as u64;
            let fin = if from_a { rt.fin_a } else { rt.fin_b };
            let credit = if from_a { &mut rt.credit_to_b } else { &mut rt.credit_to_a };
            if n > *credit {
                violation = Some(format!("sent {n} bytes with {credit} bytes of credit"));
            } else if encoded < n || encoded > 2 * n {
                violation = Some(format!("DATA frame declares {n} bytes but carries {encoded}"));
            } else if fin {
                violation = Some("DATA after FIN".to_string());
            } else {
                *credit -= n;
            }
        }
        Kind::Fin => {
            if from_a {
                rt.fin_a = true;
            } else {
                rt.fin_b = true;
            }
        }
        Kind::Window => {
            // The sender lets the other end send more to it.
            let credit = if from_a { &mut rt.credit_to_a } else { &mut rt.credit_to_b };
            let next = *credit + u64::from(h.value);
            if h.value == 0 || next > MAX_WINDOW {
                violation = Some(format!("impossible window grant of {}", h.value));
            } else {
                *credit = next;
            }
        }
        Kind::Reset => {}
    }
    if let Some(why) = violation {
        let rt = table.remove(&id).expect("route present");
        drop(table);
        let reason = format!("protocol violation by '{}': {why}", sender.id);
        tracing::info!(route = id, "{reason}");
        for end in [&rt.a, &rt.b] {
            end.routes.lock().unwrap().remove(&id);
            let _ = end.socket.emit(FRAME_EVENT, &reset_frame(id, code::PROTOCOL, &reason));
        }
        return;
    }
    let dest = if from_a { rt.b.clone() } else { rt.a.clone() };
    let finished = h.kind == Kind::Reset || (rt.fin_a && rt.fin_b);
    if !from_a {
        if let Some(q) = rt.opening.as_mut() {
            q.push(bytes);
            return;
        }
    }
    if let Err(e) = dest.socket.emit(FRAME_EVENT, &bytes) {
        // The frame cannot be forwarded (the destination's buffer is full or it is gone):
        // the stream cannot go on without losing data, so both ends are told.
        let rt = table.remove(&id).expect("route present");
        drop(table);
        let reason = format!("relay could not forward to '{}': {e}", dest.id);
        for end in [&rt.a, &rt.b] {
            end.routes.lock().unwrap().remove(&id);
            let _ = end.socket.emit(FRAME_EVENT, &reset_frame(id, code::RELAY, &reason));
        }
        return;
    }
    if finished {
        let rt = table.remove(&id).expect("route present");
        rt.a.routes.lock().unwrap().remove(&id);
        rt.b.routes.lock().unwrap().remove(&id);
    }
}

/// A client disconnected: the other end of each of its routes gets a RESET.
pub(crate) fn peer_gone(server: &P2pServer, peer: &Arc<Peer>) {
    let ids: Vec<u64> = peer.routes.lock().unwrap().drain().collect();
    let mut table = server.inner.streams.table.lock().unwrap();
    for id in ids {
        if let Some(rt) = table.remove(&id) {
            let other = if Arc::ptr_eq(&rt.a, peer) { &rt.b } else { &rt.a };
            other.routes.lock().unwrap().remove(&id);
            let reason = format!("client '{}' disconnected", peer.id);
            let _ = other
                .socket
                .emit(FRAME_EVENT, &reset_frame(id, code::PEER_GONE, &reason));
        }
    }
}
