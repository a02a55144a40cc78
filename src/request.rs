//! The one request path: a table of requests waiting for their answers, and the answer-once
//! [`Reply`] a handler uses to answer one. The client, the server and services all use these two
//! types, whatever carries the answer (a `P2P_RES` event or a Socket.IO acknowledgement).

use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// What a request is answered with: the answer's arguments, or an error.
pub(crate) type Answer = Result<Vec<Value>>;

/// Requests that wait for an answer, by request id.
pub(crate) struct PendingRequests<T = Answer> {
    next: AtomicU64,
    limit: usize,
    map: Mutex<HashMap<u64, oneshot::Sender<T>>>,
}

/// One registered request: its id and where its answer arrives.
pub(crate) struct Waiting<T> {
    pub(crate) id: u64,
    rx: oneshot::Receiver<T>,
}

/// Why a wait ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoAnswer {
    /// The time ran out; the request was removed from the table.
    TimedOut,
    /// The request was dropped from the table (its peer or connection went away).
    Abandoned,
}

impl<T> PendingRequests<T> {
    /// A table that holds at most `limit` requests at once.
    pub(crate) fn new(limit: usize) -> Self {
        PendingRequests {
            next: AtomicU64::new(1),
            limit,
            map: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a new request, or `None` when `limit` requests already wait.
    pub(crate) fn register(&self) -> Option<Waiting<T>> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut map = self.map.lock().unwrap();
        if map.len() >= self.limit {
            return None;
        }
        map.insert(id, tx);
        Some(Waiting { id, rx })
    }

    /// Hands `answer` to the request `id`; false when nobody waits for it (any more).
    pub(crate) fn resolve(&self, id: u64, answer: T) -> bool {
        let tx = self.map.lock().unwrap().remove(&id);
        match tx {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// Forgets the request `id` (its caller stopped waiting).
    pub(crate) fn cancel(&self, id: u64) {
        self.map.lock().unwrap().remove(&id);
    }

    /// Ends every wait with [`NoAnswer::Abandoned`].
    pub(crate) fn abandon_all(&self) {
        self.map.lock().unwrap().clear();
    }

    /// How many requests wait.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    /// Waits for the answer to `w`, at most `timeout`; on timeout the request is removed.
    pub(crate) async fn wait(
        &self,
        w: Waiting<T>,
        timeout: Duration,
    ) -> std::result::Result<T, NoAnswer> {
        match tokio::time::timeout(timeout, w.rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(NoAnswer::Abandoned),
            Err(_) => {
                self.cancel(w.id);
                Err(NoAnswer::TimedOut)
            }
        }
    }
}

type Sink = Box<dyn FnOnce(Answer) + Send>;

/// The way to answer a request. Clones share one answer: the first [`send`](Reply::send) or
/// [`error`](Reply::error) wins. If every clone is dropped unanswered, the caller is told at once
/// that no answer will come. A `Reply` may be kept and used later, from any task.
#[derive(Clone)]
pub struct Reply(Arc<ReplyInner>);

struct ReplyInner {
    /// Who is answered.
    to: String,
    /// What they asked.
    event: String,
    /// Who answers, as the caller knows it (a client id or a service name).
    answerer: String,
    done: AtomicBool,
    sink: Mutex<Option<Sink>>,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("to", &self.0.to)
            .field("event", &self.0.event)
            .finish()
    }
}

impl Reply {
    /// A reply to `to`'s request `event`, answered by `answerer`; `sink` carries the answer.
    pub(crate) fn new(
        to: impl Into<String>,
        event: impl Into<String>,
        answerer: impl Into<String>,
        sink: impl FnOnce(Answer) + Send + 'static,
    ) -> Reply {
        Reply(Arc::new(ReplyInner {
            to: to.into(),
            event: event.into(),
            answerer: answerer.into(),
            done: AtomicBool::new(false),
            sink: Mutex::new(Some(Box::new(sink))),
        }))
    }

    /// The client that waits for this answer.
    pub fn to(&self) -> &str {
        &self.0.to
    }

    /// The event (or API) being answered.
    pub fn event(&self) -> &str {
        &self.0.event
    }

    /// Whether an answer was already sent.
    pub fn is_answered(&self) -> bool {
        self.0.done.load(Ordering::Acquire)
    }

    /// Answers with `value`: a tuple is several arguments, `()` none, any other value one (see
    /// [`IntoArgs`](crate::IntoArgs)). Returns false if an answer was already sent. A value that
    /// cannot be converted to JSON is answered as an error, so the caller still hears back.
    ///
    /// ```no_run
    /// # fn f(reply: socketio_p2p::Reply) {
    /// reply.send(5);             // one argument
    /// reply.send((5, "five"));   // two arguments
    /// # }
    /// ```
    pub fn send(&self, value: impl serde::Serialize) -> bool {
        use crate::message::IntoArgs;
        match value.into_args() {
            Ok(args) => self.finish(Ok(args)),
            Err(e) => {
                let text = format!("could not encode its answer to '{}': {e}", self.0.event);
                self.error(text)
            }
        }
    }

    /// Answers with these arguments already converted; false if an answer was already sent.
    pub(crate) fn send_args(&self, args: Vec<Value>) -> bool {
        self.finish(Ok(args))
    }

    /// Answers with an error the caller sees as [`Error::Remote`] (naming this side); false if an
    /// answer was already sent.
    pub fn error(&self, message: impl Into<String>) -> bool {
        let e = Error::remote(self.0.answerer.clone(), message);
        self.finish(Err(e))
    }

    /// Answers with any error; false if an answer was already sent.
    pub(crate) fn fail(&self, e: Error) -> bool {
        self.finish(Err(e))
    }

    fn finish(&self, answer: Answer) -> bool {
        if self.0.done.swap(true, Ordering::AcqRel) {
            return false;
        }
        // The sink sends; it runs after the lock is released.
        let sink = self.0.sink.lock().unwrap().take();
        if let Some(sink) = sink {
            sink(answer);
        }
        true
    }
}

impl Drop for ReplyInner {
    fn drop(&mut self) {
        if !*self.done.get_mut() {
            if let Some(sink) = self.sink.get_mut().unwrap().take() {
                sink(Err(Error::remote(
                    self.answerer.clone(),
                    format!(
                        "its handler of '{}' dropped the reply without answering",
                        self.event
                    ),
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_reaches_its_request_once() {
        let table: PendingRequests = PendingRequests::new(2);
        let a = table.register().unwrap();
        let b = table.register().unwrap();
        assert!(table.register().is_none(), "the limit holds");
        let (ida, idb) = (a.id, b.id);
        assert!(table.resolve(ida, Ok(vec![Value::from(1)])));
        assert!(
            !table.resolve(ida, Ok(vec![])),
            "a second answer finds nobody"
        );
        let got = table
            .wait(a, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, vec![Value::from(1)]);
        let late = table.wait(b, Duration::from_millis(10)).await;
        assert_eq!(late.unwrap_err(), NoAnswer::TimedOut);
        assert!(
            !table.resolve(idb, Ok(vec![])),
            "a timed-out request is gone"
        );
        assert_eq!(table.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_reply_tells_the_caller() {
        let (tx, rx) = oneshot::channel();
        let r = Reply::new("alice", "add", "bob", move |a| {
            let _ = tx.send(a);
        });
        let r2 = r.clone();
        drop(r);
        drop(r2);
        let e = rx.await.unwrap().unwrap_err();
        assert!(
            matches!(e, Error::Remote { ref peer, .. } if peer == "bob"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_first_answer_wins() {
        let (tx, rx) = oneshot::channel();
        let r = Reply::new("alice", "add", "bob", move |a| {
            let _ = tx.send(a);
        });
        assert!(r.send_args(vec![Value::from(5)]));
        assert!(!r.error("too late"));
        assert_eq!(rx.await.unwrap().unwrap(), vec![Value::from(5)]);
    }
}
