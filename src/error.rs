//! Errors of the relay and the client.

/// Everything that can go wrong talking through the relay.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Error {
    /// The target client is not connected to the server.
    #[error("{}", crate::protocol::unknown_target(.0))]
    UnknownTarget(String),
    /// The request was malformed; the text says what was wrong.
    #[error("Error: bad request: {0}")]
    BadRequest(String),
    /// The peer (or the server) answered with an error.
    #[error("{0}")]
    Remote(String),
    /// No answer came within the allowed time.
    #[error("Error: timed out: {0}")]
    Timeout(String),
    /// The peer disconnected before it answered.
    #[error("Error: client '{0}' disconnected")]
    PeerGone(String),
    /// The target's send buffer is full; nothing was delivered.
    #[error("Error: client '{0}' is busy (its send buffer is full); nothing was delivered")]
    Busy(String),
    /// The peer broke the protocol.
    #[error("Error: protocol violation: {0}")]
    Protocol(String),
    /// The connection to the server is closed.
    #[error("Error: not connected: {0}")]
    Disconnected(String),
    /// The server refused the connection; the text is its reason.
    #[error("{0}")]
    Refused(String),
    /// Connecting failed at the transport level.
    #[error("Error: could not connect: {0}")]
    Connect(String),
    /// A value could not be converted to or from JSON.
    #[error("Error: could not convert the payload: {0}")]
    Json(String),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
