//! Adapter operations (room joins and leaves, room broadcasts) run in the order they were asked
//! for, without ever waiting on a socket's receive path.
//!
//! socketioxide's room operators return futures: the local adapter's are ready at once, a remote
//! adapter's (Redis, say) answer once the other servers have. A [`Lane`] runs an operation there
//! and then when it is ready at once and nothing of the lane is still running; otherwise the
//! operation goes to the lane's task, behind what is already there. Either way the operations of
//! one lane finish in order, and each one's outcome reaches its `done` callback.

use crate::error::Error;
use futures::FutureExt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One ordered lane of adapter operations: a client's, or the server's own.
pub(crate) struct Lane {
    /// How long one operation may take once it runs on the lane's task.
    timeout: Duration,
    state: Mutex<State>,
}

struct State {
    /// Operations handed to the task and not finished yet.
    queued: Arc<AtomicUsize>,
    /// The task's queue, made when an operation first has to wait.
    tx: Option<mpsc::UnboundedSender<Job>>,
}

impl Lane {
    /// A lane whose waiting operations each take at most `timeout`.
    pub(crate) fn new(timeout: Duration) -> Lane {
        Lane {
            timeout,
            state: Mutex::new(State {
                queued: Arc::new(AtomicUsize::new(0)),
                tx: None,
            }),
        }
    }

    /// Runs `op` (named `what` in errors) after the lane's earlier operations, and hands its
    /// outcome to `done`: at once when it completes at once, from the lane's task otherwise.
    pub(crate) fn run<F, D>(&self, what: &str, op: F, done: D)
    where
        F: Future<Output = Result<(), Error>> + Send + 'static,
        D: FnOnce(Result<(), Error>) + Send + 'static,
    {
        let mut op = Box::pin(op);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.queued.load(Ordering::Acquire) == 0 {
            if let Some(result) = (&mut op).now_or_never() {
                drop(st);
                return done(result);
            }
        }
        let tx = match &st.tx {
            Some(tx) if !tx.is_closed() => tx.clone(),
            _ => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    drop(st);
                    return done(Err(Error::Protocol(format!(
                        "'{what}' has to wait for the adapter, and there is no Tokio runtime to \
                         wait on"
                    ))));
                };
                let (tx, rx) = mpsc::unbounded_channel();
                runtime.spawn(drain(rx, st.queued.clone()));
                st.tx = Some(tx.clone());
                tx
            }
        };
        let (timeout, what) = (self.timeout, what.to_string());
        let job: Job = Box::pin(async move {
            let result = match tokio::time::timeout(timeout, op).await {
                Ok(result) => result,
                Err(_) => Err(Error::Timeout {
                    peer: None,
                    event: what,
                    after: timeout,
                }),
            };
            done(result);
        });
        st.queued.fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::error::SendError(job)) = tx.send(job) {
            // The task is gone (its runtime is shutting down): run the job where it stands, so
            // its `done` still hears of it.
            st.queued.fetch_sub(1, Ordering::AcqRel);
            drop(st);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(job);
            }
        }
    }
}

/// The lane's task: runs its waiting operations one after the other.
async fn drain(mut rx: mpsc::UnboundedReceiver<Job>, queued: Arc<AtomicUsize>) {
    while let Some(job) = rx.recv().await {
        job.await;
        queued.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ready_operation_is_done_at_once() {
        let lane = Lane::new(Duration::from_secs(1));
        let (tx, rx) = std::sync::mpsc::channel();
        lane.run("op", async { Ok(()) }, move |r| tx.send(r.is_ok()).unwrap());
        assert_eq!(rx.try_recv(), Ok(true), "answered before run returned");
    }

    #[tokio::test]
    async fn operations_finish_in_order_behind_one_that_waits() {
        let lane = Lane::new(Duration::from_secs(5));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let slow = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(())
        };
        let t = tx.clone();
        lane.run("slow", slow, move |r| t.send((1, r.is_ok())).unwrap());
        // Ready at once, yet it waits behind the slow one.
        let t = tx.clone();
        lane.run("fast", async { Ok(()) }, move |r| {
            t.send((2, r.is_ok())).unwrap()
        });
        let t = tx.clone();
        lane.run(
            "failing",
            async { Err(Error::BadRequest("no".into())) },
            move |r| t.send((3, r.is_ok())).unwrap(),
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(rx.recv().await.unwrap());
        }
        assert_eq!(got, vec![(1, true), (2, true), (3, false)]);
        // Once the lane is idle, a ready operation is done at once again.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (t, r) = std::sync::mpsc::channel();
        lane.run("after", async { Ok(()) }, move |x| {
            t.send(x.is_ok()).unwrap()
        });
        assert_eq!(r.try_recv(), Ok(true));
    }

    #[tokio::test]
    async fn an_operation_that_never_ends_times_out() {
        let lane = Lane::new(Duration::from_millis(30));
        let (tx, rx) = tokio::sync::oneshot::channel();
        lane.run("stuck", std::future::pending(), move |r| {
            let _ = tx.send(r);
        });
        let e = rx.await.unwrap().unwrap_err();
        assert!(
            matches!(e, Error::Timeout { peer: None, ref event, .. } if event == "stuck"),
            "{e}"
        );
    }
}
