//! Group commit with in-order delivery.
//!
//! Sessions submit stamped messages into a bounded queue. The commit task
//! takes everything queued (up to `storage.batch_max`), stores it in one transaction, and passes
//! the batch on; the delivery task delivers and acks each batch in commit order. Two tasks, so the
//! next batch commits while the last one is being delivered. A full queue makes the submitting
//! session wait, which stops it reading its socket: backpressure reaches only the clients that
//! send, never the ones that receive.
//!
//! If the commit fails, every sender of the batch gets an error reply (`store_unavailable`) and
//! nothing is delivered; the next batch tries again, so the node recovers when the store does.

mod admission;

use std::sync::Arc;

use natter_protocol::{ErrorReason, Msg};
use tokio::sync::{mpsc, oneshot};

use self::admission::{Admission, Bounds, next_batch};
use crate::{
    budget::InFlight,
    delivery::{Delivery, Refusal},
    groups::Audience,
    hub::ConnId,
    metrics::Metrics,
    store::{Appended, Store, StoreError},
};

#[derive(Debug)]
struct Submission {
    msg: Msg,
    target: Target,
    /// The sender's share of its connection's budget, given back once the ack is queued.
    inflight: Option<InFlight>,
}

impl Submission {
    /// What the message weighs in a commit batch (its strings; the numbers are noise).
    fn bytes(&self) -> usize {
        let m = &self.msg;
        64 + m.content.len() + m.receiver_id.len() + m.send_id.len() + m.local_id.len()
    }
}

/// Where a submission's outcome goes.
#[derive(Debug)]
enum Target {
    /// A one-to-one message from this connection (its ack goes there).
    Direct(ConnId),
    /// A group message from this connection, to this audience.
    Group(ConnId, Audience),
    /// A group notice, to this audience; its submitter waits for the outcome.
    Notice(Audience, oneshot::Sender<Result<(), String>>),
}

struct Committed {
    msgs: Vec<Msg>,
    targets: Vec<Target>,
    result: Result<Vec<Appended>, StoreError>,
    /// Held until the batch's acks are queued.
    inflight: Vec<Option<InFlight>>,
}

impl Target {
    /// The connection that sent the message (`None` for a notice).
    fn conn(&self) -> Option<ConnId> {
        match self {
            Target::Direct(conn) | Target::Group(conn, _) => Some(*conn),
            Target::Notice(..) => None,
        }
    }
}

/// Bytes one connection gives a commit batch per turn: its whole window of small messages,
/// one or two of the largest.
const TURN_BYTES: usize = 64 * 1024;

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
        batch_bytes: usize,
    ) -> Sequencer {
        let (queue, submissions) = mpsc::channel(batch_max * 4);
        let (committed_tx, committed) = mpsc::channel(4);
        tokio::spawn(commit_loop(
            submissions,
            store,
            committed_tx,
            metrics,
            Bounds {
                messages: batch_max,
                bytes: batch_bytes,
                turn: TURN_BYTES,
            },
        ));
        tokio::spawn(deliver_loop(committed, delivery));
        Sequencer { queue }
    }

    /// Queues a stamped one-to-one message; waits while the queue is full.
    pub async fn submit_direct(
        &self,
        msg: Msg,
        conn: ConnId,
        inflight: InFlight,
    ) -> Result<(), Stopped> {
        self.enqueue(msg, Target::Direct(conn), Some(inflight))
            .await
    }

    /// Queues a stamped group message; waits while the queue is full.
    pub async fn submit_group(
        &self,
        msg: Msg,
        conn: ConnId,
        audience: Audience,
        inflight: InFlight,
    ) -> Result<(), Stopped> {
        self.enqueue(msg, Target::Group(conn, audience), Some(inflight))
            .await
    }

    /// Queues a stamped message that no connection is waiting for (a group notice) and waits
    /// until it is stored and handed to the local devices of `audience`.
    pub async fn submit_notice(
        &self,
        msg: Msg,
        audience: Audience,
    ) -> Result<Result<(), String>, Stopped> {
        let (done, outcome) = oneshot::channel();
        self.enqueue(msg, Target::Notice(audience, done), None)
            .await?;
        outcome.await.map_err(|_| Stopped)
    }

    async fn enqueue(
        &self,
        msg: Msg,
        target: Target,
        inflight: Option<InFlight>,
    ) -> Result<(), Stopped> {
        self.queue
            .send(Submission {
                msg,
                target,
                inflight,
            })
            .await
            .map_err(|_| Stopped)
    }
}

async fn commit_loop(
    mut submissions: mpsc::Receiver<Submission>,
    store: Arc<dyn Store>,
    committed: mpsc::Sender<Committed>,
    metrics: Arc<Metrics>,
    bounds: Bounds,
) {
    let mut waiting = Admission::default();
    while let Some(batch) = next_batch(&mut submissions, &mut waiting, bounds).await {
        let mut msgs = Vec::with_capacity(batch.len());
        let mut targets = Vec::with_capacity(batch.len());
        let mut inflight = Vec::with_capacity(batch.len());
        for s in batch {
            msgs.push(s.msg);
            targets.push(s.target);
            inflight.push(s.inflight);
        }
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
                inflight,
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
        inflight,
    }) = committed.recv().await
    {
        match result {
            Ok(outcomes) => {
                for ((mut msg, target), outcome) in msgs.into_iter().zip(targets).zip(outcomes) {
                    let original = match outcome {
                        Appended::New { seq, send_seq } => {
                            msg.seq = seq;
                            msg.send_seq = send_seq;
                            None
                        }
                        Appended::Duplicate(original) => Some(original),
                    };
                    match (target, original) {
                        (Target::Direct(conn), None) => delivery.direct(msg, conn),
                        (Target::Group(conn, audience), None) => {
                            delivery.group(msg, audience, Some(conn))
                        }
                        (Target::Direct(conn) | Target::Group(conn, _), Some(original)) => {
                            delivery.ack_duplicate(original, conn)
                        }
                        (Target::Notice(audience, done), original) => {
                            // A notice has no local_id: it is never a duplicate.
                            if original.is_none() {
                                delivery.group(msg, audience, None);
                            }
                            let _ = done.send(Ok(()));
                        }
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
                    match target {
                        Target::Notice(_, done) => {
                            let _ = done.send(Err(e.to_string()));
                        }
                        Target::Direct(conn) | Target::Group(conn, _) => {
                            delivery.refuse(&msg.send_id, conn, &msg.local_id, &refusal)
                        }
                    }
                }
            }
        }
        // Every ack and error reply of the batch is queued: the senders' shares come back.
        drop(inflight);
    }
}
