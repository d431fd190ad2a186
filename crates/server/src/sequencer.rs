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

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use natter_protocol::{ErrorReason, Msg};
use tokio::sync::{mpsc, oneshot};

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

/// How large a commit batch may grow.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    messages: usize,
    bytes: usize,
}

/// The submissions waiting for a batch, one queue per sending connection (group notices share
/// one), taken in turn: a connection with one message waiting gets it into the next batch
/// however many a busy sender has queued before it. Each connection's messages stay in order.
#[derive(Default)]
struct Admission {
    queues: HashMap<Option<ConnId>, VecDeque<Submission>>,
    /// The connections with something waiting, in the order their turns come.
    turns: VecDeque<Option<ConnId>>,
}

impl Admission {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn push(&mut self, s: Submission) {
        let sender = s.target.conn();
        let queue = self.queues.entry(sender).or_default();
        if queue.is_empty() {
            self.turns.push_back(sender);
        }
        queue.push_back(s);
    }

    /// A batch within `bounds` (at least one submission), a submission per connection per turn.
    fn batch(&mut self, bounds: Bounds) -> Vec<Submission> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < bounds.messages {
            let Some(sender) = self.turns.pop_front() else {
                break;
            };
            let Some(queue) = self.queues.get_mut(&sender) else {
                continue;
            };
            let Some(next) = queue.pop_front() else {
                self.queues.remove(&sender);
                continue;
            };
            if !batch.is_empty() && bytes + next.bytes() > bounds.bytes {
                queue.push_front(next);
                self.turns.push_front(sender);
                break;
            }
            bytes += next.bytes();
            batch.push(next);
            if queue.is_empty() {
                self.queues.remove(&sender);
            } else {
                self.turns.push_back(sender);
            }
        }
        batch
    }
}

/// The next batch: everything waiting joins the admission queues, and a batch is taken from
/// them in turn. `None` once the queue is closed and nothing waits.
async fn next_batch(
    submissions: &mut mpsc::Receiver<Submission>,
    waiting: &mut Admission,
    bounds: Bounds,
) -> Option<Vec<Submission>> {
    let mut arrived = Vec::with_capacity(bounds.messages);
    if waiting.is_empty() && submissions.recv_many(&mut arrived, bounds.messages).await == 0 {
        return None;
    }
    // What else is queued joins too (the queue is bounded, and so is each sender's share).
    while let Ok(s) = submissions.try_recv() {
        arrived.push(s);
    }
    for s in arrived {
        waiting.push(s);
    }
    Some(waiting.batch(bounds))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn submission(conn: ConnId, content_len: usize) -> Submission {
        Submission {
            msg: Msg {
                content: "x".repeat(content_len),
                ..Msg::default()
            },
            target: Target::Direct(conn),
            inflight: None,
        }
    }

    #[tokio::test]
    async fn batches_are_bounded_in_messages_and_bytes_and_keep_their_order() {
        let (tx, mut rx) = mpsc::channel(100);
        for len in [1000, 1000, 5000, 10, 10, 10] {
            tx.send(submission(1, len)).await.unwrap();
        }
        drop(tx);
        let bounds = Bounds {
            messages: 4,
            bytes: 2500,
        };
        let mut waiting = Admission::default();
        let mut sizes = Vec::new();
        while let Some(batch) = next_batch(&mut rx, &mut waiting, bounds).await {
            sizes.push(
                batch
                    .iter()
                    .map(|s| s.msg.content.len())
                    .collect::<Vec<_>>(),
            );
        }
        // Two of 1,064 bytes fit; the 5,000 goes alone (a batch holds at least one); then the
        // small ones together.
        assert_eq!(sizes, [vec![1000, 1000], vec![5000], vec![10, 10, 10]]);
    }

    #[tokio::test]
    async fn senders_take_turns_and_each_keeps_its_order() {
        let (tx, mut rx) = mpsc::channel(100);
        // A busy sender queues 6 large messages, then two others one small message each.
        for i in 0..6 {
            tx.send(submission(7, 1000 + i)).await.unwrap();
        }
        tx.send(submission(8, 1)).await.unwrap();
        tx.send(submission(9, 2)).await.unwrap();
        drop(tx);
        let bounds = Bounds {
            messages: 100,
            bytes: 3500,
        };
        let mut waiting = Admission::default();
        let mut batches = Vec::new();
        while let Some(batch) = next_batch(&mut rx, &mut waiting, bounds).await {
            batches.push(
                batch
                    .iter()
                    .map(|s| (s.target.conn().unwrap(), s.msg.content.len()))
                    .collect::<Vec<_>>(),
            );
        }
        // The small ones ride in the first batch; the busy sender's messages keep their order.
        assert_eq!(
            batches,
            [
                vec![(7, 1000), (8, 1), (9, 2), (7, 1001), (7, 1002)],
                vec![(7, 1003), (7, 1004), (7, 1005)],
            ]
        );
    }
}
