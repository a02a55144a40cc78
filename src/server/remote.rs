//! The relay's side of a cluster (see [`crate::cluster`]): where a target id resolves to a
//! client of this relay or of another, and what this relay does with what other relays send it.

use super::{P2pServer, Peer, Reason};
use crate::cluster::{Claim, Cluster, ClusterOptions, Envelope, Host, WireArg};
use crate::error::{Error, WireError};
use crate::protocol::{batch_item, event, Arg, TargetDisconnect};
use socketioxide::adapter::Adapter;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// This relay's membership of a cluster, kept by the server.
pub(crate) struct Joined {
    pub(crate) cluster: Arc<Cluster>,
    /// What the cluster calls back; the cluster holds it weakly.
    _host: Arc<dyn Host>,
}

/// Where something addressed to a client id goes.
pub(crate) enum Target<A: Adapter> {
    /// A client of this relay (connected, or away for a moment).
    Local(Arc<Peer<A>>),
    /// A client this relay does not have: perhaps one of another relay of the cluster.
    Remote(Remote),
}

/// A client id this relay does not have, to look up in the cluster's directory.
pub(crate) struct Remote {
    cluster: Arc<Cluster>,
    id: Arc<str>,
}

impl<A: Adapter> P2pServer<A> {
    /// Joins the cluster of the relays sharing the Redis of `opts` (see [`crate::cluster`]):
    /// from then on a client id this relay does not have is looked up there, and this relay's
    /// clients are registered there. Must be called within a Tokio runtime, before clients
    /// connect; Redis need not be up yet. Fails with [`Error::Cluster`] for a Redis URL that
    /// cannot be used, or when this server already joined a cluster.
    pub fn join_cluster(&self, opts: ClusterOptions) -> Result<(), Error> {
        let host: Arc<dyn Host> = Arc::new(HostOf(Arc::downgrade(&self.inner)));
        let cluster = Cluster::start(opts, Arc::downgrade(&host))?;
        self.inner
            .cluster
            .set(Joined {
                cluster,
                _host: host,
            })
            .map_err(|_| Error::Cluster("this relay already joined a cluster".into()))
    }

    /// [`P2pServer::emit_to`] a client this relay does not have: handed to the cluster, or
    /// refused at once while Redis is out of reach. A failure to deliver it after that is logged.
    pub(super) fn emit_to_remote(
        &self,
        remote: Remote,
        event: &str,
        args: &[serde_json::Value],
    ) -> Result<(), Error> {
        crate::protocol::check_no_placeholder(args)?;
        if !remote.cluster.is_up() {
            let what = format!("not sent to client '{}'", remote.id);
            return Err(remote.cluster.unavailable(&what));
        }
        let to = remote.id.clone();
        let args = args.iter().cloned().map(Arg::Json).collect();
        Target::<A>::Remote(remote).emit_from(None, event.to_string(), args, move |sent| {
            if let Err(e) = sent {
                tracing::warn!(client = %to, "a server emit to another relay was not delivered: {e}");
            }
        });
        Ok(())
    }

    /// The cluster this relay joined, if it did.
    pub(crate) fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.inner.cluster.get().map(|j| &j.cluster)
    }

    /// Leaves the cluster, if this relay joined one: its client ids are released at once.
    pub(crate) async fn leave_cluster(&self) {
        if let Some(c) = self.cluster() {
            c.leave().await;
        }
    }

    /// The one place a target client id is resolved: a client of this relay (connected, or away
    /// for a moment, when what is sent to it is held for its return), else, in a cluster, the
    /// client of that id wherever it is; else [`Error::UnknownTarget`].
    pub(crate) fn target(&self, id: &str) -> Result<Target<A>, Error> {
        if let Some(p) = self.peer_or_away(id) {
            return Ok(Target::Local(p));
        }
        match self.cluster() {
            Some(cluster) => Ok(Target::Remote(Remote {
                cluster: cluster.clone(),
                id: id.into(),
            })),
            None => Err(Error::UnknownTarget(id.to_string())),
        }
    }

    /// The refusal of an operation that stays within one relay (a stream) for a client id this
    /// relay does not have: in a cluster it may be a client of another relay.
    pub(crate) fn not_here(&self, id: &str, what: &str) -> Error {
        match self.cluster() {
            Some(_) => Error::Cluster(format!(
                "client '{id}' is not connected to this relay, and {what} does not reach clients \
                 of the cluster's other relays"
            )),
            None => Error::UnknownTarget(id.to_string()),
        }
    }

    /// Claims the id of a connecting client in the cluster's directory; the reason to refuse it
    /// when another relay holds the id and the duplicate-id policy is to reject. With Redis out
    /// of reach the client is let in, and its id claimed when Redis is back.
    /// A connection presenting the resume secret of the session of `id` on another relay
    /// (`secret`) takes the id over whatever the policy.
    /// Under the policy `replace`, an unauthenticated connection (`authenticated` false) never
    /// takes the id from an authenticated one on another relay, as on one relay.
    pub(crate) async fn claim_in_cluster(
        &self,
        id: &str,
        secret: Option<&str>,
        authenticated: bool,
    ) -> Option<String> {
        let cluster = self.cluster()?;
        let take = self.inner.opts.duplicate_ids == super::DuplicateIdPolicy::Replace;
        let secret = secret.filter(|_| !self.inner.opts.resume_grace.is_zero());
        if !cluster.is_up() {
            // Not kept waiting on a Redis that is known to be away.
            tracing::debug!(client = %id, "Redis is out of reach: registered in the cluster later");
            cluster.claim_later();
            return None;
        }
        match cluster.claim(id, take, secret, authenticated).await {
            Ok(Claim::Claimed) => None,
            Ok(Claim::HeldBy(relay)) => {
                tracing::debug!(client = %id, %relay, "the client id is held by another relay");
                Some(format!("client id '{id}' is already connected"))
            }
            Err(e) => {
                tracing::warn!(client = %id, "could not register the client in the cluster: {e}");
                cluster.claim_later();
                None
            }
        }
    }

    /// Releases `id` in the cluster's directory unless this relay still has a client of that id.
    pub(crate) fn release_in_cluster(&self, id: &str) {
        if let Some(cluster) = self.cluster() {
            if self.peer_or_away(id).is_none() {
                cluster.release(id);
            }
        }
    }

    /// Client `gone` left: tells its watcher `w`, a client of this relay (now, or when it comes
    /// back); false when `w` is not a client of this relay.
    pub(super) fn tell_one(&self, w: &str, gone: &Arc<str>) -> bool {
        if let Some(other) = self.peer(w) {
            other.watchers.lock().unwrap().remove(gone);
            let notice = TargetDisconnect(gone.to_string());
            other.emit_control(
                event::MULTI_API_TARGET_DISCONNECT,
                &notice.to_values(),
                "a disconnect notice",
            );
            true
        } else if let Some(away) = self.inner.parked.lock().unwrap().get_mut(w) {
            // Away for a moment: told if it comes back.
            away.peer.watchers.lock().unwrap().remove(gone);
            away.missed.push(gone.clone());
            true
        } else {
            false
        }
    }

    /// The session of `peer` ended: the watchers of other relays are told, and its id is
    /// released (unless another connection of this relay holds it now).
    pub(super) fn left_cluster(&self, peer: &Peer<A>, remote_watchers: Vec<Arc<str>>) {
        let Some(cluster) = self.cluster() else {
            return;
        };
        for w in remote_watchers {
            let env = Envelope::Gone {
                relay: cluster.id().to_string(),
                client: peer.id.to_string(),
                to: w.to_string(),
            };
            cluster.send_to_client(&w, &env, None);
        }
        cluster.forget_watcher(&peer.id);
        self.release_in_cluster(&peer.id);
    }

    /// `LIST_CLIENTS` over the cluster: the ids of this relay's clients and of every other
    /// relay's, sorted.
    pub(crate) async fn cluster_client_ids(&self) -> Result<Vec<String>, Error> {
        let mut ids = self.client_ids();
        if let Some(cluster) = self.cluster() {
            ids.extend(cluster.list_clients().await?);
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Records the resume secret of a new session of `peer` in the cluster, so that it may come
    /// back on another relay.
    pub(super) fn note_resume_secret(&self, peer: &Peer<A>) {
        if let (Some(cluster), Some(secret)) = (self.cluster(), &peer.resume) {
            cluster.set_resume_secret(&peer.id, secret);
        }
    }

    /// Relay `relay` took the session of `id` over with its resume secret: ends it here (what
    /// was held for it is dropped and its senders told, requests waiting for it fail with
    /// `PEER_GONE`) without telling its peers, and hands its watchers to `relay`.
    fn resumed_elsewhere(&self, cluster: &Cluster, relay: &str, id: &str) {
        let parked = self.inner.parked.lock().unwrap().remove(id);
        let (peer, missed) = match (parked, self.peer(id)) {
            (Some(p), _) => (p.peer, p.missed),
            (None, Some(peer)) => (peer, Vec::new()),
            (None, None) => return,
        };
        tracing::info!(client = %id, %relay, "the client resumed its session on another relay");
        peer.taken_over
            .store(true, std::sync::atomic::Ordering::Release);
        let watchers: Vec<String> = peer
            .watchers
            .lock()
            .unwrap()
            .drain()
            .map(|w| w.to_string())
            .collect();
        self.unregister(&peer);
        self.end_held(&peer);
        if peer.socket.connected() {
            let _ = peer.socket.clone().disconnect();
        }
        cluster.forget_watcher(id);
        self.release_in_cluster(id);
        let env = Envelope::Watchers {
            client: id.to_string(),
            watchers,
            missed: missed.iter().map(|m| m.to_string()).collect(),
        };
        cluster.send_to_relay(relay, &env);
    }

    /// The watchers of the session of `id` that this relay took over from another: they are
    /// told when it leaves; and the peers that left while it was away, told to it now.
    fn take_watchers(&self, id: &str, watchers: Vec<String>, missed: Vec<String>) -> bool {
        let Some(peer) = self.peer(id) else {
            return false;
        };
        {
            let mut w = peer.watchers.lock().unwrap();
            w.extend(watchers.into_iter().map(Arc::<str>::from));
        }
        for gone in missed {
            let gone: Arc<str> = gone.into();
            self.tell_one(id, &gone);
        }
        true
    }

    /// Disconnects this relay's connection under `id`, telling it `reason`, as when a newer
    /// connection takes the id over.
    /// A session of `id` kept here for its return ends too, as when another connection takes
    /// the id.
    fn evict_local(&self, id: &str, reason: &str) {
        if let Some(old) = self.peer(id) {
            tracing::info!(client = %id, "{reason}");
            old.server_error(reason);
            self.forget(&old);
            let _ = old.socket.clone().disconnect();
        }
        let parked = self.inner.parked.lock().unwrap().remove(id);
        if let Some(p) = parked {
            tracing::info!(client = %id, "{reason} (its session kept for its return ends)");
            self.end_parked(p.peer);
        }
    }
}

impl<A: Adapter> Target<A> {
    /// Sends `event(...args)` from `from` (`None`: the server's own API); `done` hears whether it
    /// was delivered (for another relay: handed to it).
    pub(crate) fn emit_from(
        self,
        from: Option<&Arc<str>>,
        event: String,
        args: Vec<Arg>,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) {
        match self {
            Target::Local(t) => done(match from {
                Some(f) => t.emit_args_from(f, 1, &event, &args),
                None => t.emit_args(&event, &args),
            }),
            Target::Remote(r) => {
                let env = Envelope::Emit {
                    relay: r.cluster.id().to_string(),
                    from: from.map(|f| f.to_string()),
                    to: r.id.to_string(),
                    event,
                    args: WireArg::from_args(args),
                };
                r.send(&env, from, done);
            }
        }
    }

    /// Sends `event(...args)` and waits for the answer at most `timeout` (`from`: the asking
    /// client, `None` for the server's own API).
    pub(crate) async fn request_args(
        self,
        from: Option<&Arc<str>>,
        event: &str,
        args: Vec<Arg>,
        timeout: Duration,
        max_pending: usize,
    ) -> Result<Vec<Arg>, Error> {
        match self {
            Target::Local(t) => t.request_args(event, args, timeout, max_pending).await,
            Target::Remote(r) => {
                let id = r.cluster.next_request();
                let env = Envelope::Request {
                    relay: r.cluster.id().to_string(),
                    id,
                    from: from.map(|f| f.to_string()),
                    to: r.id.to_string(),
                    event: event.to_string(),
                    args: WireArg::from_args(args),
                    timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                };
                r.cluster
                    .request(id, &r.id, event, env, from.cloned(), timeout)
                    .await
            }
        }
    }
}

impl Remote {
    /// The client id.
    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Sends several messages from `from` to this client, in order.
    pub(crate) fn batch(
        &self,
        from: &Arc<str>,
        items: Vec<(String, Vec<Arg>)>,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) {
        let env = Envelope::Batch {
            relay: self.cluster.id().to_string(),
            from: from.to_string(),
            to: self.id.to_string(),
            items: items
                .into_iter()
                .map(|(e, a)| (e, WireArg::from_args(a)))
                .collect(),
        };
        self.send(&env, Some(from), done);
    }

    fn send(
        &self,
        env: &Envelope,
        from: Option<&Arc<str>>,
        done: impl FnOnce(Result<(), Error>) + Send + 'static,
    ) {
        let cluster = Arc::downgrade(&self.cluster);
        let (to, from) = (self.id.clone(), from.cloned());
        self.cluster.send_to_client(
            &self.id,
            env,
            Some(Box::new(move |sent: Result<String, Error>| {
                if let (Ok(relay), Some(from), Some(c)) = (&sent, &from, cluster.upgrade()) {
                    c.watch(relay, &to, from);
                }
                done(sent.map(|_| ()));
            })),
        );
    }
}

/// The relay as the cluster sees it.
struct HostOf<A: Adapter>(Weak<super::Inner<A>>);

impl<A: Adapter> HostOf<A> {
    fn server(&self) -> Option<P2pServer<A>> {
        self.0.upgrade().map(|inner| P2pServer { inner })
    }
}

impl<A: Adapter> Host for HostOf<A> {
    fn deliver(&self, cluster: &Arc<Cluster>, env: Envelope) {
        let Some(server) = self.server() else { return };
        deliver(&server, cluster, env);
    }

    fn frame(&self, relay: &str, frame: bytes::Bytes) {
        if let Some(server) = self.server() {
            crate::stream::server::from_relay(&server, relay, frame);
        }
    }

    fn link_lost(&self) {
        if let Some(server) = self.server() {
            crate::stream::server::link_lost(&server);
        }
    }

    fn relay_gone(&self, relay: &str, clients: Vec<(String, Vec<Arc<str>>)>) {
        let Some(server) = self.server() else { return };
        crate::stream::server::relay_gone(&server, relay);
        for (gone, watchers) in clients {
            let gone: Arc<str> = gone.into();
            for w in watchers {
                server.tell_one(&w, &gone);
            }
        }
    }

    fn local_ids(&self) -> Vec<(String, bool)> {
        let Some(server) = self.server() else {
            return Vec::new();
        };
        let mut ids: Vec<(String, bool)> = server
            .client_ids()
            .into_iter()
            .map(|id| {
                let authed = server.peer(&id).is_some_and(|p| p.authenticated);
                (id, authed)
            })
            .collect();
        ids.extend(
            server
                .inner
                .parked
                .lock()
                .unwrap()
                .iter()
                .map(|(k, p)| (k.to_string(), p.peer.authenticated)),
        );
        ids
    }

    fn evict(&self, client: &str, reason: &str) {
        if let Some(server) = self.server() {
            server.evict_local(client, reason);
        }
    }

    fn local_rooms(&self) -> std::collections::HashSet<String> {
        self.server()
            .map(|server| server.local_rooms())
            .unwrap_or_default()
    }
}

/// What this relay does with an envelope from another relay. Nothing here waits: a request is
/// answered from a task of its own.
fn deliver<A: Adapter>(server: &P2pServer<A>, cluster: &Arc<Cluster>, env: Envelope) {
    match env {
        Envelope::Emit {
            relay,
            from,
            to,
            event,
            args,
        } => {
            let from: Option<Arc<str>> = from.map(Into::into);
            let sent = WireArg::into_args(args).and_then(|args| {
                let target = server
                    .peer_or_away(&to)
                    .ok_or_else(|| Error::UnknownTarget(to.clone()))?;
                match &from {
                    Some(f) => {
                        target.watch(f);
                        cluster.watch(&relay, f, &target.id);
                        target.emit_args_from(f, 1, &event, &args)
                    }
                    None => target.emit_args(&event, &args),
                }
            });
            match (sent, from) {
                (Ok(()), _) => server.metrics().messages_relayed(1),
                (Err(e), Some(from)) => undelivered(cluster, &relay, &from, &to, 1, e),
                (Err(e), None) => {
                    tracing::debug!(client = %to, "a server emit from another relay was not delivered: {e}")
                }
            }
        }
        Envelope::Batch {
            relay,
            from,
            to,
            items,
        } => {
            let from: Arc<str> = from.into();
            let n = items.len();
            let items: Result<Vec<(String, Vec<Arg>)>, Error> = items
                .into_iter()
                .map(|(e, a)| WireArg::into_args(a).map(|a| (e, a)))
                .collect();
            let sent = items.and_then(|items| {
                let target = server
                    .peer_or_away(&to)
                    .ok_or_else(|| Error::UnknownTarget(to.clone()))?;
                target.watch(&from);
                cluster.watch(&relay, &from, &target.id);
                if target.ext {
                    let frames: Vec<Arg> =
                        items.into_iter().map(|(e, a)| batch_item(&e, a)).collect();
                    target.emit_args_from(&from, n, event::P2P_BATCH, &frames)
                } else {
                    for (e, a) in items {
                        target.emit_args_from(&from, 1, &e, &a)?;
                    }
                    Ok(())
                }
            });
            match sent {
                Ok(()) => server.metrics().messages_relayed(n),
                Err(e) => undelivered(cluster, &relay, &from, &to, n, e),
            }
        }
        Envelope::Request {
            relay,
            id,
            from,
            to,
            event,
            args,
            timeout_ms,
        } => {
            let target = WireArg::into_args(args).and_then(|args| {
                let target = server
                    .peer_or_away(&to)
                    .ok_or_else(|| Error::UnknownTarget(to.clone()))?;
                Ok((target, args))
            });
            let (target, args) = match target {
                Ok(t) => t,
                Err(e) => return cluster.send_to_relay(&relay, &Envelope::reply(id, Err(e))),
            };
            if let Some(from) = &from {
                let from: Arc<str> = from.as_str().into();
                target.watch(&from);
                cluster.watch(&relay, &from, &target.id);
            }
            // Bounded by the asking relay's own wait, and by this relay's.
            let timeout = Duration::from_millis(timeout_ms).min(server.inner.opts.reply_timeout);
            let max = server.inner.opts.max_pending_per_client;
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let result = target.request_args(&event, args, timeout, max).await;
                if !matches!(result, Err(Error::Busy(_))) {
                    target.metrics.request_relayed();
                } else {
                    target.metrics.refused(Reason::Busy);
                }
                cluster.send_to_relay(&relay, &Envelope::reply(id, result));
            });
        }
        Envelope::Reply { id, ok, err } => {
            cluster.answered(id, answer_of(ok, err));
        }
        Envelope::Gone { relay, client, to } => {
            cluster.unwatch(&relay, &client);
            let gone: Arc<str> = client.into();
            server.tell_one(&to, &gone);
        }
        Envelope::Undelivered { from, to, n, error } => {
            let Some(sender) = server.peer_or_away(&from) else {
                return;
            };
            let e = Error::from_wire(error, &to);
            sender.report(&Error::remote(
                crate::error::RELAY,
                format!("{e} ({n} message(s) for '{to}' were not delivered)"),
            ));
        }
        env @ (Envelope::RoomEmit { .. }
        | Envelope::RoomBusy { .. }
        | Envelope::RoomDestroy { .. }
        | Envelope::RoomMember { .. }) => server.room_from_cluster(cluster, env),
        Envelope::StreamOpen {
            relay,
            id,
            from,
            to,
            open,
            route,
            timeout_ms,
        } => crate::stream::server::open_from_relay(
            server, cluster, relay, id, from, to, open, route, timeout_ms,
        ),
        Envelope::StreamAnswer {
            relay,
            id,
            for_route,
            route,
            ok,
            err,
        } => {
            if let Some(route) = route {
                // Before the answer is read, so the frames behind it find the route's other half.
                crate::stream::server::connect_remote(server, cluster, for_route, &relay, route);
            }
            cluster.answered(id, answer_of(ok, err));
        }
        Envelope::Kick { client, reason } => server.evict_local(&client, &reason),
        Envelope::Missed { relay, gaps } => {
            let lost = cluster.missed(&relay, gaps, false);
            tell_lost(server, lost.clients);
            cluster.report_again(&relay, lost.reports);
            if !lost.ahead.is_empty() {
                // Their numbers may not be back from Redis yet: read again in a moment.
                let (server, cluster) = (server.clone(), cluster.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    let lost = cluster.missed(&relay, lost.ahead, true);
                    tell_lost(&server, lost.clients);
                    cluster.report_again(&relay, lost.reports);
                });
            }
        }
        Envelope::Resumed { relay, client } => server.resumed_elsewhere(cluster, &relay, &client),
        Envelope::Watchers {
            client,
            watchers,
            missed,
        } => {
            if !server.take_watchers(&client, watchers.clone(), missed.clone()) {
                // The connection that took the session over may still be being set up.
                let server = server.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    if !server.take_watchers(&client, watchers, missed) {
                        tracing::debug!(%client, "no session here for the watchers handed over");
                    }
                });
            }
        }
    }
}

/// The result an answer from another relay carries: its error if it has one, else its
/// arguments.
fn answer_of(ok: Option<Vec<WireArg>>, err: Option<WireError>) -> Result<Vec<Arg>, Error> {
    match (ok, err) {
        (_, Some(err)) => Err(Error::from_wire(err, "another relay")),
        (Some(ok), None) => WireArg::into_args(ok),
        (None, None) => Err(Error::Protocol(
            "an answer from another relay with neither a result nor an error".into(),
        )),
    }
}

/// Tells relay `relay` that `n` messages its client `from` sent to `to` were not delivered.
fn undelivered(cluster: &Cluster, relay: &str, from: &str, to: &str, n: usize, e: Error) {
    tracing::debug!(client = %to, %from, "messages from another relay not delivered: {e}");
    let env = Envelope::Undelivered {
        from: from.to_string(),
        to: to.to_string(),
        n,
        error: e.to_wire(),
    };
    cluster.send_to_relay(relay, &env);
}

/// Tells each client of this relay how many of its messages and room events another relay lost
/// (see [`Cluster::missed`]).
fn tell_lost<A: Adapter>(
    server: &P2pServer<A>,
    lost: std::collections::HashMap<String, (usize, usize)>,
) {
    for (from, (messages, events)) in lost {
        tracing::warn!(
            client = %from,
            messages,
            room_events = events,
            "what the client sent to another relay was lost on its way"
        );
        let Some(sender) = server.peer_or_away(&from) else {
            continue;
        };
        if messages > 0 {
            sender.report(&Error::Cluster(format!(
                "{messages} message(s) to clients of another relay were lost: its link to Redis \
                 broke"
            )));
        }
        if events > 0 {
            sender.report(&Error::Cluster(format!(
                "{events} room event(s) to members on other relays were lost: a relay's link to \
                 Redis broke"
            )));
        }
    }
}
