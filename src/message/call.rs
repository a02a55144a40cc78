//! [`Request`]: a call that waits for an answer, with per-call options, awaited directly.

use super::args::parse_args;
use crate::error::Result;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// Sends the request and waits for its raw answer, at most the given time.
type Send = Box<dyn FnOnce(Duration) -> BoxFuture<'static, Result<Vec<Value>>> + std::marker::Send>;

/// A request to a peer, a service or a client, waiting for its answer: await it to send it and
/// get the answer deserialized as `R` (a tuple for several answer arguments, the value itself
/// for one, `()` for none, `Vec<Value>` for the arguments as they came).
///
/// Options go between the call and the `.await`:
///
/// ```no_run
/// # async fn f(client: socketio_p2p::P2pClient) -> socketio_p2p::Result<()> {
/// use std::time::Duration;
/// let sum: i64 = client.request("bob", "add", (2, 3)).await?;
/// let sum: i64 = client
///     .request("bob", "add", (2, 3))
///     .timeout(Duration::from_millis(200))
///     .await?;
/// # Ok(()) }
/// ```
///
/// It is a future: nothing is sent until it is first polled. It does not borrow the client, so it
/// may be spawned (`tokio::spawn(client.request::<i64>("bob", "add", (2, 3)))`) or given to
/// `tokio::time::timeout`, `select!` and the like.
#[must_use = "a request does nothing until it is awaited"]
pub struct Request<R> {
    state: State,
    timeout: Duration,
    _answer: PhantomData<fn() -> R>,
}

enum State {
    /// Not sent yet.
    Ready(Send),
    /// Sent; waiting for the answer.
    Sent(BoxFuture<'static, Result<Vec<Value>>>),
    /// Answered (polling again panics, as for any future).
    Done,
}

impl<R> std::fmt::Debug for Request<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<R> Request<R> {
    /// A request that `send` performs; `timeout` is the default wait.
    pub(crate) fn new<F, Fut>(timeout: Duration, send: F) -> Self
    where
        F: FnOnce(Duration) -> Fut + std::marker::Send + 'static,
        Fut: Future<Output = Result<Vec<Value>>> + std::marker::Send + 'static,
    {
        Request {
            state: State::Ready(Box::new(move |t| Box::pin(send(t)))),
            timeout,
            _answer: PhantomData,
        }
    }

    /// A request that fails at once with `e` when awaited (e.g. an empty target name).
    pub(crate) fn failed(e: crate::Error) -> Self {
        Request::new(Duration::ZERO, move |_| async move { Err(e) })
    }

    /// Waits at most `timeout` for the answer (instead of the client's or server's default);
    /// past it the request fails with [`Error::Timeout`](crate::Error::Timeout).
    ///
    /// A request to a peer travels through the relay, which waits for the peer at most its own
    /// [`ServerOptions::reply_timeout`](crate::ServerOptions::reply_timeout) (30 s by default):
    /// past that the relay answers with a timeout of its own, whatever this one says.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<R: DeserializeOwned> Future for Request<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let this = &mut *self;
        if let State::Ready(_) = this.state {
            let State::Ready(send) = std::mem::replace(&mut this.state, State::Done) else {
                unreachable!()
            };
            this.state = State::Sent(send(this.timeout));
        }
        let State::Sent(answer) = &mut this.state else {
            panic!("a Request was polled after it completed");
        };
        let answer = std::task::ready!(answer.as_mut().poll(cx));
        this.state = State::Done;
        Poll::Ready(answer.and_then(|args| parse_args(&args)))
    }
}
