//! Fair admission to commit batches: the submissions waiting, one queue per sending
//! connection, taken in turn into batches bounded in messages and bytes.

use std::collections::{HashMap, VecDeque};

use tokio::sync::mpsc;

use super::Submission;
use crate::hub::ConnId;

/// How large a commit batch may grow.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) messages: usize,
    pub(super) bytes: usize,
    /// Bytes one connection gives a batch per turn.
    pub(super) turn: usize,
}

/// The submissions waiting for a batch, one queue per sending connection (group notices share
/// one), taken in turn: a connection with one message waiting gets it into the next batch
/// however many a busy sender has queued before it. Each connection's messages stay in order.
#[derive(Default)]
pub(super) struct Admission {
    queues: HashMap<Option<ConnId>, VecDeque<Submission>>,
    /// The connections with something waiting, in the order their turns come.
    turns: VecDeque<Option<ConnId>>,
    /// Submissions waiting here.
    len: usize,
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
        self.len += 1;
    }

    /// A batch within `bounds` (at least one submission). Each turn a connection gives up to
    /// `bounds.turn` bytes of its waiting messages (at least one): a sender of small messages
    /// puts all it has waiting into the batch at once (its window commits together), a sender
    /// of large ones one or two per turn (deficit round robin, without the carried deficit).
    fn batch(&mut self, bounds: Bounds) -> Vec<Submission> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        'turns: while batch.len() < bounds.messages {
            let Some(sender) = self.turns.pop_front() else {
                break;
            };
            let Some(queue) = self.queues.get_mut(&sender) else {
                continue;
            };
            let mut this_turn = 0;
            while batch.len() < bounds.messages && this_turn < bounds.turn {
                let Some(next) = queue.pop_front() else {
                    break;
                };
                if !batch.is_empty() && bytes + next.bytes() > bounds.bytes {
                    queue.push_front(next);
                    self.turns.push_front(sender);
                    break 'turns;
                }
                bytes += next.bytes();
                this_turn += next.bytes();
                batch.push(next);
                self.len -= 1;
            }
            if queue.is_empty() {
                self.queues.remove(&sender);
            } else {
                self.turns.push_back(sender);
            }
        }
        batch
    }
}

/// Batches' worth of submissions the admission queues hold at most, beside the sequencer's
/// queue (itself four batches).
const WAITING_BATCHES: usize = 4;

/// The next batch: everything waiting joins the admission queues, and a batch is taken from
/// them in turn. `None` once the queue is closed and nothing waits.
pub(super) async fn next_batch(
    submissions: &mut mpsc::Receiver<Submission>,
    waiting: &mut Admission,
    bounds: Bounds,
) -> Option<Vec<Submission>> {
    let mut arrived = Vec::with_capacity(bounds.messages);
    if waiting.is_empty() && submissions.recv_many(&mut arrived, bounds.messages).await == 0 {
        return None;
    }
    // What else is queued joins too, up to a few batches' worth: the rest stays in the bounded
    // queue, so senders still wait when the store falls behind.
    while waiting.len + arrived.len() < WAITING_BATCHES * bounds.messages {
        match submissions.try_recv() {
            Ok(s) => arrived.push(s),
            Err(_) => break,
        }
    }
    for s in arrived {
        waiting.push(s);
    }
    Some(waiting.batch(bounds))
}

#[cfg(test)]
mod tests {
    use natter_protocol::Msg;

    use super::*;
    use crate::sequencer::Target;

    fn submission(conn: ConnId, content_len: usize) -> Submission {
        Submission {
            msg: Msg {
                content: "x".repeat(content_len),
                ..Msg::default()
            },
            target: Target::Direct(crate::delivery::Reply::Conn(conn)),
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
            turn: 64 * 1024,
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
            turn: 1,
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

    #[tokio::test]
    async fn a_turn_takes_a_senders_small_messages_together() {
        let (tx, mut rx) = mpsc::channel(100);
        for conn in [7, 8] {
            for i in 0..3 {
                tx.send(submission(conn, 10 + i)).await.unwrap();
            }
        }
        drop(tx);
        let bounds = Bounds {
            messages: 100,
            bytes: 1 << 20,
            turn: 64 * 1024,
        };
        let mut waiting = Admission::default();
        let batch = next_batch(&mut rx, &mut waiting, bounds).await.unwrap();
        let order: Vec<(ConnId, usize)> = batch
            .iter()
            .map(|s| (s.target.conn().unwrap(), s.msg.content.len()))
            .collect();
        assert_eq!(
            order,
            [(7, 10), (7, 11), (7, 12), (8, 10), (8, 11), (8, 12)]
        );
    }

    #[tokio::test]
    async fn the_admission_queues_hold_a_few_batches_and_leave_the_rest_queued() {
        let (tx, mut rx) = mpsc::channel(100);
        for i in 0..50 {
            tx.send(submission(i, 10)).await.unwrap();
        }
        let bounds = Bounds {
            messages: 2,
            bytes: 1 << 20,
            turn: 64 * 1024,
        };
        let mut waiting = Admission::default();
        let batch = next_batch(&mut rx, &mut waiting, bounds).await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(waiting.len, WAITING_BATCHES * 2 - 2);
        assert_eq!(
            rx.len(),
            50 - WAITING_BATCHES * 2,
            "the rest waits in the bounded queue"
        );
    }
}
