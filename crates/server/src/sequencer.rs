//! Group commit with in-order delivery.
//!
//! Sessions [`submit`](Sequencer::submit) stamped messages into a bounded queue. The commit task
//! takes everything queued (up to `storage.batch_max`), stores it in one transaction, and passes
//! the batch on; the delivery task delivers and acks each batch in commit order. Two tasks, so the
//! next batch commits while the last one is being delivered. A full queue makes the submitting
//! session wait, which stops it reading its socket: backpressure reaches only the clients that
//! send, never the ones that receive.
//!
//! If the commit fails, every sender of the batch gets an error reply (`store_unavailable`) and
//! nothing is delivered; the next batch tries again, so the node recovers when the store does.

use std::sync::Arc;

use natter_protocol::{ErrorReason, Msg};
use tokio::sync::{mpsc, oneshot};

use crate::{
    groups::Audience,
    hub::ConnId,
    messaging::{Delivery, Refusal},
    metrics::Metrics,
    store::{Appended, Store, StoreError},
};

#[derive(Debug)]
struct Submission {
    msg: Msg,
    target: Target,
}

/// Where a submission's outcome goes: the sending connection's ack (`conn`), the group
/// audience of a group message, and `done` for a submitter that waits for the outcome.
#[derive(Debug)]
struct Target {
    conn: ConnId,
    audience: Option<Audience>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

struct Committed {
    msgs: Vec<Msg>,
    targets: Vec<Target>,
    result: Result<Vec<Appended>, StoreError>,
}

/// The queue in front of the store. Dropping every handle stops both tasks once the queue is
/// drained.
#[derive(Debug, Clone)]
pub struct Sequencer {
    queue: mpsc::Sender<Submission>,
}

/// The sequencer's tasks have stopped.
#[derive(Debug)]
pub struct Stopped;

impl Sequencer {
    pub fn start(
        store: Arc<dyn Store>,
        delivery: Arc<Delivery>,
        metrics: Arc<Metrics>,
        batch_max: usize,
    ) -> Sequencer {
        let (queue, submissions) = mpsc::channel(batch_max * 4);
        let (committed_tx, committed) = mpsc::channel(4);
        tokio::spawn(commit_loop(
            submissions,
            store,
            committed_tx,
            metrics,
            batch_max,
        ));
        tokio::spawn(deliver_loop(committed, delivery));
        Sequencer { queue }
    }

    /// Queues a stamped message; waits while the queue is full. `audience` is set for a group
    /// message.
    pub async fn submit(
        &self,
        msg: Msg,
        conn: ConnId,
        audience: Option<Audience>,
    ) -> Result<(), Stopped> {
        let target = Target {
            conn,
            audience,
            done: None,
        };
        self.enqueue(msg, target).await
    }

    /// Queues a stamped message that no connection is waiting for (a group notice) and waits
    /// until it is stored and handed to the local devices of `audience`.
    pub async fn submit_and_wait(
        &self,
        msg: Msg,
        audience: Audience,
    ) -> Result<Result<(), String>, Stopped> {
        let (done, outcome) = oneshot::channel();
        let target = Target {
            conn: 0,
            audience: Some(audience),
            done: Some(done),
        };
        self.enqueue(msg, target).await?;
        outcome.await.map_err(|_| Stopped)
    }

    async fn enqueue(&self, msg: Msg, target: Target) -> Result<(), Stopped> {
        self.queue
            .send(Submission { msg, target })
            .await
            .map_err(|_| Stopped)
    }
}

async fn commit_loop(
    mut submissions: mpsc::Receiver<Submission>,
    store: Arc<dyn Store>,
    committed: mpsc::Sender<Committed>,
    metrics: Arc<Metrics>,
    batch_max: usize,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while submissions.recv_many(&mut batch, batch_max).await > 0 {
        let (msgs, targets): (Vec<Msg>, Vec<Target>) =
            batch.drain(..).map(|s| (s.msg, s.target)).unzip();
        let started = std::time::Instant::now();
        let result = store.append(&msgs).await;
        let took = started.elapsed();
        metrics.store_commit_latency.record(took);
        match &result {
            Ok(_) => {
                metrics.store_commits.increment(1);
                metrics.store_messages.increment(msgs.len() as u64);
            }
            Err(_) => metrics.store_failures.increment(1),
        }
        tracing::trace!(messages = msgs.len(), ?took, "batch committed");
        if committed
            .send(Committed {
                msgs,
                targets,
                result,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn deliver_loop(mut committed: mpsc::Receiver<Committed>, delivery: Arc<Delivery>) {
    while let Some(Committed {
        msgs,
        targets,
        result,
    }) = committed.recv().await
    {
        match result {
            Ok(outcomes) => {
                for ((mut msg, target), outcome) in msgs.into_iter().zip(targets).zip(outcomes) {
                    match outcome {
                        Appended::New { seq, send_seq } => {
                            msg.seq = seq;
                            msg.send_seq = send_seq;
                            delivery.deliver(msg, target.conn, target.audience);
                        }
                        Appended::Duplicate(original) => {
                            delivery.ack_duplicate(original, target.conn)
                        }
                    }
                    if let Some(done) = target.done {
                        let _ = done.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, messages = msgs.len(), "store commit failed");
                let refusal = Refusal {
                    reason: ErrorReason::StoreUnavailable,
                    detail: "the message could not be stored; send it again".into(),
                };
                for (msg, target) in msgs.iter().zip(targets) {
                    match target.done {
                        Some(done) => {
                            let _ = done.send(Err(e.to_string()));
                        }
                        None => delivery.refuse(&msg.send_id, target.conn, &msg.local_id, &refusal),
                    }
                }
            }
        }
    }
}
