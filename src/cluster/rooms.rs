//! Rooms across relays: which relays hold members of a room, and room events sent to those
//! relays only.
//!
//! Each relay writes, for every room one of its clients is in (connected, or a session kept for
//! its return; the relay's own rooms, `__p2p_…`, left out), its id into the set `P:room:<room>`, and the room into its own index
//! `P:relay:<relay>:rooms` (with which the others remove its entries once it is dead). A join
//! writes the entry before it is answered, so that a room emit from another relay that follows
//! the join's answer reaches the new member. Entries of rooms this relay no longer has members
//! in are withdrawn at the next heartbeat; until then a room event may reach a relay that
//! delivers it to nobody, which costs a message and loses nothing. The whole part is written
//! again with the rest of the relay's entries (after a Redis restart, and every few seconds).
//!
//! A room event is published by a Lua script that reads the room's set and publishes to each
//! live relay in it but the sender, in one round trip: a room whose members are all on one
//! relay costs the others nothing.

use super::{Cluster, Host};
use crate::error::Error;
use std::collections::HashSet;

/// Publishes `ARGV[3]` to the channel of every live relay of set `KEYS[1]` but `ARGV[2]`
/// (`ARGV[1]`: the start of a relay's liveness key and channel), each numbered for its relay.
/// Returns how many relays received it, then relay, number and epoch of each.
pub(super) const ROOM_PUBLISH: &str = concat!(
    publish_lua!(),
    r#"
local out = {0}
for _, r in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if r ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. r) == 1 then
    local got, n, e = publish(ARGV[1], ARGV[2], r, ARGV[3])
    if got > 0 then
      out[1] = out[1] + 1
      table.insert(out, r)
      table.insert(out, n)
      table.insert(out, e)
    end
  end
end
return out
"#
);

/// What this relay wrote of its rooms into Redis.
#[derive(Default)]
pub(super) struct Rooms {
    /// The rooms this relay's entry is in Redis for (as far as it knows). Held across the Redis
    /// round trip of a change, so that a join's entry and a heartbeat's withdrawal never cross.
    advertised: tokio::sync::Mutex<HashSet<String>>,
}

impl Cluster {
    /// `P:room:<room>`: the relays holding members of `room`.
    pub(super) fn room_key(&self, room: &str) -> String {
        self.key(&format!("room:{room}"))
    }

    /// `P:relay:<relay>:rooms`: the rooms this relay has members in.
    fn own_rooms_key(&self) -> String {
        self.key(&format!("relay:{}:rooms", self.id))
    }

    /// Records in Redis that this relay has a member in `room`, unless it already did. Returns
    /// once Redis has it, or at once while Redis is out of reach (then it is written when Redis
    /// is back, with the rest of this relay's part).
    pub(crate) async fn advertise_room(&self, room: &str) {
        let mut advertised = self.rooms.advertised.lock().await;
        if advertised.contains(room) {
            return;
        }
        if !self.is_up() {
            self.claim_later();
            return;
        }
        let mut pipe = redis::pipe();
        pipe.sadd(self.room_key(room), &self.id).ignore();
        pipe.sadd(self.own_rooms_key(), room).ignore();
        match self.run_pipe(&pipe).await {
            Ok(_) => {
                advertised.insert(room.to_string());
            }
            Err(e) => {
                tracing::debug!(room, "could not record the room in the cluster: {e}");
                self.claim_later();
            }
        }
    }

    /// Brings this relay's rooms in Redis in line with the rooms its clients are in: withdraws
    /// the entries of rooms it has no member in any more, and writes those missing (all of them
    /// when `full`, as after a Redis restart).
    pub(super) async fn sync_rooms(&self, host: &dyn Host, full: bool) -> Result<(), Error> {
        let mut advertised = self.rooms.advertised.lock().await;
        let local = host.local_rooms();
        let add: Vec<&String> = if full {
            local.iter().collect()
        } else {
            local.difference(&advertised).collect()
        };
        let remove: Vec<&String> = advertised.difference(&local).collect();
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        let (add, remove): (Vec<String>, Vec<String>) = (
            add.into_iter().cloned().collect(),
            remove.into_iter().cloned().collect(),
        );
        for chunk in add.chunks(super::PIPELINE) {
            let mut pipe = redis::pipe();
            for room in chunk {
                pipe.sadd(self.room_key(room), &self.id).ignore();
                pipe.sadd(self.own_rooms_key(), room).ignore();
            }
            self.run_pipe(&pipe).await?;
            advertised.extend(chunk.iter().cloned());
        }
        for chunk in remove.chunks(super::PIPELINE) {
            let mut pipe = redis::pipe();
            for room in chunk {
                pipe.srem(self.room_key(room), &self.id).ignore();
                pipe.srem(self.own_rooms_key(), room).ignore();
            }
            self.run_pipe(&pipe).await?;
            for room in chunk {
                advertised.remove(room);
            }
        }
        Ok(())
    }
}
