//! Client side of the Core API: rooms and the client list.

use crate::client::P2pClient;
use crate::error::{Error, Result};
use crate::message::IntoArgs;
use crate::protocol::{event, FromValues};
use serde_json::Value;

fn check_room(room: &str) -> Result<()> {
    if room.is_empty() {
        Err(Error::BadRequest("the room name is empty".into()))
    } else {
        Ok(())
    }
}

impl P2pClient {
    /// Joins a room; resolves once the server has added this client to it.
    ///
    /// The client remembers its rooms: after it reconnects as a new session (the relay lost the
    /// old one), it joins them again before its state turns
    /// [`Connected`](crate::ConnectionState::Connected).
    pub async fn join_room(&self, room: &str) -> Result<()> {
        check_room(room)?;
        self.inner
            .request(
                event::JOIN_ROOM,
                vec![Value::from(room)],
                self.inner.opts.timeout,
            )
            .await?;
        self.inner
            .session
            .lock()
            .unwrap()
            .rooms
            .insert(room.to_string());
        Ok(())
    }

    /// Leaves a room; resolves once the server has removed this client from it.
    pub async fn leave_room(&self, room: &str) -> Result<()> {
        check_room(room)?;
        self.inner.session.lock().unwrap().rooms.remove(room);
        self.inner
            .request(
                event::LEAVE_ROOM,
                vec![Value::from(room)],
                self.inner.opts.timeout,
            )
            .await
            .map(|_| ())
    }

    /// Emits `event(...args)` to every other member of `room`; members receive it through
    /// [`on_raw`](P2pClient::on_raw) (a room emit has no sender, so it is never a
    /// [`PeerMessage`](crate::PeerMessage), whatever its first argument). Resolves once the server
    /// has queued it for every member; fails with [`Error::Overloaded`] naming the members whose
    /// queue on the relay was full (they did not get it, the others did).
    ///
    /// With relays sharing a Redis (a cluster), members on the other relays get it through their
    /// own relays: this resolves once it is handed to them, and members busy there are reported
    /// afterwards through [`on_server_error`](P2pClient::on_server_error), named. While the
    /// relay cannot reach Redis this fails with [`Error::Cluster`]; the members on this client's
    /// relay got it.
    pub async fn emit_room(&self, room: &str, event: &str, args: impl IntoArgs) -> Result<()> {
        check_room(room)?;
        if event.is_empty() {
            return Err(Error::BadRequest("the event name is empty".into()));
        }
        let mut all = vec![Value::from(room), Value::from(event)];
        all.extend(args.into_args()?);
        self.inner
            .request(event::EMIT_ROOM, all, self.inner.opts.timeout)
            .await
            .map(|_| ())
    }

    /// The ids of the clients connected to the server, sorted.
    pub async fn list_clients(&self) -> Result<Vec<String>> {
        let reply = self
            .inner
            .request(event::LIST_CLIENTS, vec![], self.inner.opts.timeout)
            .await?;
        crate::protocol::ClientList::from_values(reply)
            .map(|list| list.0)
            .map_err(|e| Error::Protocol(e.0))
    }
}
