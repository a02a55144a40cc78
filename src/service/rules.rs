//! The relay's rules for topic rooms, which hold whoever the clients claim to be: a topic room
//! belongs to its service, and only that service acts on it.
//!
//! A topic room is a room named `service:<s>:topic:<t>`; its service `<s>` is everything between
//! `service:` and the first `:topic:` (so a service whose name contains `:topic:` can have no
//! topics: its rooms would read as another service's). The owner is the client whose id is
//! exactly `<s>`, unless the server provides a service `<s>`: then no client owns it (no client
//! may connect under that id, and the server acts on its topics through its own API).
//!
//! - Only the service's `SUBSCRIBE_TOPIC` puts a client in a topic room: a plain `JOIN_ROOM` of a
//!   topic room is the owner's alone ([`check_join`]).
//! - `SERVICE_CREATE_TOPIC`, `CLIENT_SUBSCRIBE_TOPIC`, `CLIENT_UNSUBSCRIBE_TOPIC` and
//!   `SERVICE_DESTROY_TOPIC` act only on a topic room of the caller's own service
//!   ([`check_own_topic`]).
//! - Only the owner emits into a topic room, and a topic's events
//!   (`<room>-DEFAULT_TOPIC_EVENT`, `<room>-TOPIC_BEING_DESTROYED`) go nowhere but into that
//!   room ([`check_emit`], [`check_direct_event`]).
//!
//! Leaving a room oneself (`LEAVE_ROOM(room)`) is always allowed.

use super::{TOPIC_DESTROYED_SUFFIX, TOPIC_EVENT_SUFFIX};
use crate::error::Error;
use crate::server::P2pServer;
use socketioxide::adapter::Adapter;

const ROOM_PREFIX: &str = "service:";
const TOPIC_SEPARATOR: &str = ":topic:";

/// The service a topic room belongs to: `<s>` of `service:<s>:topic:<t>`, up to the first
/// `:topic:`. `None` for a room that is not a topic room.
pub(crate) fn topic_service(room: &str) -> Option<&str> {
    let rest = room.strip_prefix(ROOM_PREFIX)?;
    rest.find(TOPIC_SEPARATOR).map(|i| &rest[..i])
}

/// The topic room whose event `event` is (`<room>-DEFAULT_TOPIC_EVENT` or
/// `<room>-TOPIC_BEING_DESTROYED`), if it is one.
pub(crate) fn topic_event_room(event: &str) -> Option<&str> {
    let room = event
        .strip_suffix(TOPIC_EVENT_SUFFIX)
        .or_else(|| event.strip_suffix(TOPIC_DESTROYED_SUFFIX))?;
    topic_service(room).map(|_| room)
}

/// Whether a service called `name` can have topics: its topic rooms must read as its own.
pub(crate) fn can_have_topics(name: &str) -> Result<(), Error> {
    if name.contains(TOPIC_SEPARATOR) {
        return Err(Error::BadRequest(format!(
            "service '{name}' cannot have topics: its name contains '{TOPIC_SEPARATOR}', so its \
             topic rooms would read as those of service '{}'",
            name.split(TOPIC_SEPARATOR).next().unwrap_or_default()
        )));
    }
    Ok(())
}

/// Whether `caller` is the service that owns topic rooms of service `service`.
fn owns<A: Adapter>(server: &P2pServer<A>, caller: &str, service: &str) -> bool {
    caller == service && !server.inner.services.contains(service)
}

/// Who owns the topic rooms of `service`, as a refusal says it.
fn owner(server: &P2pServer<impl Adapter>, service: &str) -> String {
    if server.inner.services.contains(service) {
        format!("service '{service}', which the server provides")
    } else {
        format!("service '{service}'")
    }
}

/// `JOIN_ROOM(room)`: a topic room only for its own service; subscribers go through the
/// service's `SUBSCRIBE_TOPIC`.
pub(crate) fn check_join<A: Adapter>(
    server: &P2pServer<A>,
    caller: &str,
    room: &str,
) -> Result<(), Error> {
    match topic_service(room) {
        Some(s) if !owns(server, caller, s) => Err(Error::BadRequest(format!(
            "JOIN_ROOM: '{room}' is a topic room of {}; a client joins it by calling the \
             service's SUBSCRIBE_TOPIC",
            owner(server, s)
        ))),
        _ => Ok(()),
    }
}

/// `SERVICE_CREATE_TOPIC`, `CLIENT_SUBSCRIBE_TOPIC`, `CLIENT_UNSUBSCRIBE_TOPIC`,
/// `SERVICE_DESTROY_TOPIC` (`action`): only on a topic room of the caller's own service.
pub(crate) fn check_own_topic<A: Adapter>(
    server: &P2pServer<A>,
    caller: &str,
    action: &str,
    room: &str,
) -> Result<(), Error> {
    let whose = match topic_service(room) {
        Some(s) if owns(server, caller, s) => return Ok(()),
        Some(s) => format!("a topic room of {}", owner(server, s)),
        None => "not a topic room".to_string(),
    };
    Err(Error::BadRequest(format!(
        "{action}: client '{caller}' acts only on the topic rooms of its own service \
         ('{ROOM_PREFIX}{caller}{TOPIC_SEPARATOR}<topic>'); '{room}' is {whose}"
    )))
}

/// `EMIT_ROOM(room, event, ...)`: into a topic room only from its own service, and a topic's
/// events only into that topic's room.
pub(crate) fn check_emit<A: Adapter>(
    server: &P2pServer<A>,
    caller: &str,
    room: &str,
    event: &str,
) -> Result<(), Error> {
    if let Some(s) = topic_service(room) {
        if !owns(server, caller, s) {
            return Err(Error::BadRequest(format!(
                "EMIT_ROOM: only {} publishes into its topic room '{room}'",
                owner(server, s)
            )));
        }
    }
    match topic_event_room(event) {
        Some(of) if of != room => Err(topic_event_elsewhere(server, event, of)),
        _ => Ok(()),
    }
}

/// An event a client sends to one client (`P2P_EMIT`, `P2P_EMIT_ACKNOWLEDGE`, a batch item, a
/// service's `emit_client`): never a topic's event, which only its service sends, into its room.
pub(crate) fn check_direct_event<A: Adapter>(
    server: &P2pServer<A>,
    event: &str,
) -> Result<(), Error> {
    match topic_event_room(event) {
        Some(room) => Err(topic_event_elsewhere(server, event, room)),
        None => Ok(()),
    }
}

fn topic_event_elsewhere<A: Adapter>(server: &P2pServer<A>, event: &str, room: &str) -> Error {
    let s = topic_service(room).unwrap_or_default();
    Error::BadRequest(format!(
        "event name '{event}' is an event of topic room '{room}': only {} sends it, into that \
         room",
        owner(server, s)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_segment_ends_at_the_first_topic_separator() {
        assert_eq!(topic_service("service:news:topic:t"), Some("news"));
        assert_eq!(topic_service("service:news:topic:"), Some("news"));
        assert_eq!(topic_service("service:news:topic:t:topic:z"), Some("news"));
        assert_eq!(topic_service("service::topic:t"), Some(""));
        assert_eq!(topic_service("service:news"), None);
        assert_eq!(topic_service("lobby"), None);
        assert_eq!(topic_service("xservice:news:topic:t"), None);
    }

    #[test]
    fn topic_events_name_their_room() {
        let room = "service:news:topic:t";
        assert_eq!(
            topic_event_room(&format!("{room}-DEFAULT_TOPIC_EVENT")),
            Some(room)
        );
        assert_eq!(
            topic_event_room(&format!("{room}-TOPIC_BEING_DESTROYED")),
            Some(room)
        );
        assert_eq!(topic_event_room("lobby-DEFAULT_TOPIC_EVENT"), None);
        assert_eq!(topic_event_room(room), None);
        assert!(can_have_topics("news").is_ok());
        assert!(can_have_topics("news:topic:t").is_err());
    }
}
