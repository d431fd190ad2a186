//! Group commit with in-order delivery.
//!
//! Sessions submit stamped messages into a bounded queue. The commit task
//! takes everything queued (up to `storage.batch_max`), stores it in one transaction, and passes
//! the batch on; the delivery task delivers and acks each batch in commit order. Two tasks, so the
//! next batch commits while the last one is being delivered. A full queue makes the submitting
//! session wait, which stops it reading its socket: backpressure reaches only the clients that
//! send, never the ones that receive.
//!
//! If the commit fails because the store refused the data of a message, the batch is split in
//! halves and each committed in turn, down to the one message that fails alone: its sender gets
//! an error reply (`store_unavailable`) and every other message of the batch is stored. If the
//! store is unavailable, every sender of the batch gets that reply and nothing is delivered; the
//! next batch tries again, so the node recovers when the store does.

mod admission;

use std::sync::Arc;

use natter_protocol::{ErrorReason, Msg};
use tokio::sync::{mpsc, oneshot};

use self::admission::{Admission, Bounds, next_batch};
use crate::{
    budget::InFlight,
    delivery::{Delivery, Refusal, Reply},
    groups::Audience,
    metrics::Metrics,
    store::{Appended, Store},
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
    /// A one-to-one message (its ack goes to `Reply`).
    Direct(Reply),
    /// A group message, to this audience.
    Group(Reply, Audience),
    /// A group notice, to this audience; its submitter waits for the outcome.
    Notice(Audience, oneshot::Sender<Result<(), String>>),
}

struct Committed {
    msgs: Vec<Msg>,
    targets: Vec<Target>,
    /// One per message, in order.
    outcomes: Vec<Result<Appended, String>>,
    /// Held until the batch's acks are queued.
    inflight: Vec<Option<InFlight>>,
}

impl Target {
    /// The connection that sent the message (`None` for a notice or an API call).
    fn conn(&self) -> Option<crate::hub::ConnId> {
        match self {
            Target::Direct(reply) | Target::Group(reply, _) => reply.conn(),
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
        reply: Reply,
        inflight: Option<InFlight>,
    ) -> Result<(), Stopped> {
        self.enqueue(msg, Target::Direct(reply), inflight).await
    }

    /// Queues a stamped group message; waits while the queue is full.
    pub async fn submit_group(
        &self,
        msg: Msg,
        reply: Reply,
        audience: Audience,
        inflight: Option<InFlight>,
    ) -> Result<(), Stopped> {
        self.enqueue(msg, Target::Group(reply, audience), inflight)
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
        let outcomes = append_isolating(&*store, &msgs, &metrics).await;
        if committed
            .send(Committed {
                msgs,
                targets,
                outcomes,
                inflight,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Stores `msgs`, in one transaction when it succeeds. When the store refuses the data of a
/// message, the failed range is split in halves, committed left first (each sender's messages
/// stay in order), down to the messages that fail alone. One outcome per message.
async fn append_isolating(
    store: &dyn Store,
    msgs: &[Msg],
    metrics: &Metrics,
) -> Vec<Result<Appended, String>> {
    let mut outcomes: Vec<Option<Result<Appended, String>>> = Vec::new();
    outcomes.resize_with(msgs.len(), || None);
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(32);
    ranges.push(0..msgs.len());
    while let Some(range) = ranges.pop() {
        let part = &msgs[range.clone()];
        let started = std::time::Instant::now();
        let result = store.append(part).await;
        let took = started.elapsed();
        metrics.store_commit_latency.record(took);
        tracing::trace!(messages = part.len(), ?took, "batch committed");
        match result {
            Ok(appended) => {
                metrics.store_commits.increment(1);
                metrics.store_messages.increment(part.len() as u64);
                for (slot, outcome) in outcomes[range].iter_mut().zip(appended) {
                    *slot = Some(Ok(outcome));
                }
            }
            Err(e) if part.len() > 1 && e.refused_the_data() => {
                metrics.store_failures.increment(1);
                tracing::warn!(error = %e, messages = part.len(), "the store refused a message of the batch: committing it in halves");
                let middle = range.start + part.len() / 2;
                ranges.push(middle..range.end);
                ranges.push(range.start..middle);
            }
            Err(e) => {
                metrics.store_failures.increment(1);
                tracing::error!(error = %e, messages = part.len(), "store commit failed");
                let e = e.to_string();
                for slot in &mut outcomes[range] {
                    *slot = Some(Err(e.clone()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err("not committed".into())))
        .collect()
}

async fn deliver_loop(mut committed: mpsc::Receiver<Committed>, delivery: Arc<Delivery>) {
    let refusal = Refusal {
        reason: ErrorReason::StoreUnavailable,
        detail: "the message could not be stored; send it again".into(),
    };
    while let Some(Committed {
        msgs,
        targets,
        outcomes,
        inflight,
    }) = committed.recv().await
    {
        for ((mut msg, target), outcome) in msgs.into_iter().zip(targets).zip(outcomes) {
            let original = match outcome {
                Ok(Appended::New {
                    seq,
                    send_seq,
                    conv_seq,
                }) => {
                    msg.seq = seq;
                    msg.send_seq = send_seq;
                    msg.conv_seq = conv_seq;
                    None
                }
                Ok(Appended::Duplicate(original)) => Some(original),
                Err(e) => {
                    match target {
                        Target::Notice(_, done) => {
                            let _ = done.send(Err(e));
                        }
                        Target::Direct(reply) | Target::Group(reply, _) => {
                            delivery.refuse(&msg.send_id, reply, &msg.local_id, &refusal)
                        }
                    }
                    continue;
                }
            };
            match (target, original) {
                (Target::Direct(reply), None) => delivery.direct(msg, reply),
                (Target::Group(reply, audience), None) => {
                    delivery.group(msg, audience, Some(reply))
                }
                (Target::Direct(reply) | Target::Group(reply, _), Some(original)) => {
                    delivery.ack_duplicate(original, reply)
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
        // Every ack and error reply of the batch is queued: the senders' shares come back.
        drop(inflight);
    }
}
