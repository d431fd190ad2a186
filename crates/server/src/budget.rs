//! What one connection may have in flight between its socket and its acks: a number of
//! messages and a number of bytes (`limits.inflight_messages`, `limits.inflight_bytes`). A
//! session reserves a message's share before handing it on and the share comes back when the
//! message's ack (or error reply) is queued; a connection over its budget waits for it, so it
//! stops reading its socket and TCP slows that client alone. No sender can fill the shared
//! queue in front of the store: each holds at most its budget of it.

use std::sync::Arc;

use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A connection's budget.
#[derive(Debug)]
pub struct Budget {
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    /// The node's bytes in flight, all connections together (`natter_inflight_bytes`).
    node: Gauge,
}

/// One message's share of its connection's budget, held until its ack is queued.
#[derive(Debug)]
pub struct InFlight {
    _message: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
    node: Gauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.decrement(self.bytes.num_permits() as f64);
    }
}

impl Budget {
    pub fn new(messages: usize, bytes: usize, node: Gauge) -> Budget {
        Budget {
            messages: Arc::new(Semaphore::new(messages.max(1))),
            bytes: Arc::new(Semaphore::new(bytes.max(1))),
            max_bytes: bytes.max(1),
            node,
        }
    }

    /// Waits until a message of `len` bytes fits in the budget (a message larger than the whole
    /// byte budget takes all of it), and reserves its share.
    pub async fn reserve(&self, len: usize) -> InFlight {
        let len = len.clamp(1, self.max_bytes) as u32;
        // The semaphores are never closed, so acquiring cannot fail; were one closed, the
        // message would go without a share rather than never.
        let message = self.messages.clone().acquire_owned().await;
        let bytes = self.bytes.clone().acquire_many_owned(len).await;
        match (message, bytes) {
            (Ok(m), Ok(b)) => {
                self.node.increment(f64::from(len));
                InFlight {
                    _message: m,
                    bytes: b,
                    node: self.node.clone(),
                }
            }
            _ => unreachable!("a budget's semaphores are never closed"),
        }
    }

    /// Shares free now, in messages and bytes (metrics, tests).
    pub fn available(&self) -> (usize, usize) {
        (
            self.messages.available_permits(),
            self.bytes.available_permits(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_over_its_budget_waits_until_a_share_comes_back() {
        let budget = Budget::new(2, 100, Gauge::noop());
        let a = budget.reserve(60).await;
        let b = budget.reserve(30).await;
        assert_eq!(budget.available(), (0, 10));
        // A third message waits for the count; a big one for the bytes.
        let third = tokio::time::timeout(std::time::Duration::from_secs(1), budget.reserve(1));
        assert!(third.await.is_err());
        drop(a);
        let c = budget.reserve(50).await;
        assert_eq!(budget.available(), (0, 20));
        drop((b, c));
        // Larger than the whole budget: takes all of it, and does not wait for ever.
        let huge = budget.reserve(1_000).await;
        assert_eq!(budget.available(), (1, 0));
        drop(huge);
        assert_eq!(budget.available(), (2, 100));
    }
}
