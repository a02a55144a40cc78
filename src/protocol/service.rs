//! Wire types of the Service API: the built-in topic APIs every service answers.

use serde_json::Value;

/// Arguments of the built-in `SUBSCRIBE_TOPIC(clientId, topic)` and
/// `UNSUBSCRIBE_TOPIC(clientId, topic)` calls of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMembership {
    /// The client to add to (or remove from) the topic's room.
    pub client: String,
    /// The topic's name, not empty.
    pub topic: String,
}

/// Why a `SUBSCRIBE_TOPIC`/`UNSUBSCRIBE_TOPIC` call's arguments were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipError {
    /// The first argument is not a string.
    ClientId,
    /// The second argument is missing, not a string, or empty (the seed's `topicName can not be
    /// empty`).
    EmptyTopic,
}

impl TopicMembership {
    /// Decodes the call's arguments (after the caller id).
    pub fn from_args(args: &[Value]) -> Result<TopicMembership, MembershipError> {
        let mut it = args.iter();
        let client = match it.next() {
            Some(Value::String(c)) => c.clone(),
            _ => return Err(MembershipError::ClientId),
        };
        match it.next() {
            Some(Value::String(t)) if !t.is_empty() => Ok(TopicMembership {
                client,
                topic: t.clone(),
            }),
            _ => Err(MembershipError::EmptyTopic),
        }
    }
}

/// A service's answer to `SUBSCRIBE_TOPIC`: the seed acknowledges success with nothing (or an
/// empty text) and a refusal with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeAnswer {
    /// The caller is in the topic's room.
    Accepted,
    /// The service refused; its words.
    Refused(String),
}

impl SubscribeAnswer {
    /// Decodes the answer's arguments.
    pub fn from_args(args: &[Value]) -> SubscribeAnswer {
        match args.first() {
            None | Some(Value::Null) => SubscribeAnswer::Accepted,
            Some(Value::String(s)) if s.is_empty() => SubscribeAnswer::Accepted,
            Some(Value::String(s)) => SubscribeAnswer::Refused(s.clone()),
            Some(other) => SubscribeAnswer::Refused(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn membership_arguments() {
        let ok = TopicMembership::from_args(&[json!("bob"), json!("jobs")]).unwrap();
        assert_eq!((ok.client.as_str(), ok.topic.as_str()), ("bob", "jobs"));
        assert_eq!(
            TopicMembership::from_args(&[json!(5), json!("jobs")]),
            Err(MembershipError::ClientId)
        );
        for bad in [
            vec![json!("bob")],
            vec![json!("bob"), json!("")],
            vec![json!("bob"), json!(1)],
        ] {
            assert_eq!(
                TopicMembership::from_args(&bad),
                Err(MembershipError::EmptyTopic)
            );
        }
    }

    #[test]
    fn subscribe_answers() {
        assert_eq!(SubscribeAnswer::from_args(&[]), SubscribeAnswer::Accepted);
        assert_eq!(
            SubscribeAnswer::from_args(&[json!(null)]),
            SubscribeAnswer::Accepted
        );
        assert_eq!(
            SubscribeAnswer::from_args(&[json!("")]),
            SubscribeAnswer::Accepted
        );
        assert_eq!(
            SubscribeAnswer::from_args(&[json!("no")]),
            SubscribeAnswer::Refused("no".into())
        );
    }
}
