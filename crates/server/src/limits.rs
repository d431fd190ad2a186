//! Token buckets, and the per-user limits of the HTTP API: requests per second and history
//! reads running at once (`limits.http`). Each map holds only the users who used the API lately,
//! so its memory follows the active users, not every user ever seen.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use crate::config::HttpLimitsConfig;

/// A token bucket: `tokens` refill at `per_second` up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket, or `None` when `per_second` is 0 (the limit is off).
    pub fn new(per_second: f64, burst: f64, now: Instant) -> Option<Bucket> {
        (per_second > 0.0).then_some(Bucket {
            per_second,
            burst,
            tokens: burst,
            last: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn take_one(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, going into debt if need be; returns how long until the debt is paid.
    pub fn take_debt(&mut self, n: usize, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }

    /// Whether the bucket would be full by `now` (nothing to remember about its user).
    fn full_at(&self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens + refill >= self.burst
    }
}

/// The per-user limits of the HTTP API on this node.
#[derive(Debug)]
pub struct UserLimits {
    config: HttpLimitsConfig,
    reads_per_user: usize,
    requests: Mutex<Requests>,
    reads: Reads,
}

#[derive(Debug, Default)]
struct Requests {
    buckets: HashMap<String, Bucket>,
    /// Past this many entries, the full buckets are forgotten.
    prune_at: usize,
}

const PRUNE_AT_LEAST: usize = 1024;

impl UserLimits {
    pub fn new(config: HttpLimitsConfig, reads_per_user: usize) -> UserLimits {
        UserLimits {
            config,
            reads_per_user,
            requests: Mutex::new(Requests {
                buckets: HashMap::new(),
                prune_at: PRUNE_AT_LEAST,
            }),
            reads: Arc::default(),
        }
    }

    /// Counts one API request of `user`; false when the user is over `limits.http.per_second`.
    pub fn request(&self, user: &str) -> bool {
        let now = Instant::now();
        let Some(fresh) = Bucket::new(self.config.per_second, f64::from(self.config.burst), now)
        else {
            return true;
        };
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = requests.buckets.get_mut(user) {
            return bucket.take_one(now);
        }
        if requests.buckets.len() >= requests.prune_at {
            requests.buckets.retain(|_, b| !b.full_at(now));
            requests.prune_at = (requests.buckets.len() * 2).max(PRUNE_AT_LEAST);
        }
        requests
            .buckets
            .entry(user.to_owned())
            .or_insert(fresh)
            .take_one(now)
    }

    /// A history read of `user`, unless `limits.reads_per_user` are running already.
    pub fn read(&self, user: &str) -> Option<ReadGuard> {
        let permit = self.semaphore(user).try_acquire_owned().ok();
        self.guard(user, permit)
    }

    /// A history read of `user`, once fewer than `limits.reads_per_user` are running
    /// (a replay waits for its turn rather than failing).
    pub async fn read_wait(&self, user: &str) -> ReadGuard {
        let permit = self.semaphore(user).acquire_owned().await.ok();
        self.guard(user, permit)
            .expect("a user's read semaphore is never closed")
    }

    fn semaphore(&self, user: &str) -> Arc<Semaphore> {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        reads
            .entry(user.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.reads_per_user)))
            .clone()
    }

    fn guard(&self, user: &str, permit: Option<OwnedSemaphorePermit>) -> Option<ReadGuard> {
        let guard = ReadGuard {
            reads: self.reads.clone(),
            user: user.to_owned(),
            permit,
        };
        // A refused read is dropped at once, forgetting the user if nothing else runs.
        guard.permit.is_some().then_some(guard)
    }

    /// Users with a read running or waiting.
    pub fn users_reading(&self) -> usize {
        self.reads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

type Reads = Arc<Mutex<HashMap<String, Arc<Semaphore>>>>;

/// A running history read; dropping it counts the read out.
#[derive(Debug)]
pub struct ReadGuard {
    reads: Reads,
    user: String,
    permit: Option<OwnedSemaphorePermit>,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        let mut reads = self.reads.lock().unwrap_or_else(PoisonError::into_inner);
        drop(self.permit.take());
        // Only the map holds the semaphore: no read of this user runs or waits.
        if reads
            .get(&self.user)
            .is_some_and(|semaphore| Arc::strong_count(semaphore) == 1)
        {
            reads.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: f64, burst: u32, reads_per_user: usize) -> UserLimits {
        let http = HttpLimitsConfig {
            per_second,
            burst,
            ..HttpLimitsConfig::default()
        };
        UserLimits::new(http, reads_per_user)
    }

    #[test]
    fn requests_are_limited_per_user() {
        let limits = limits(1.0, 3, 1);
        for _ in 0..3 {
            assert!(limits.request("alice"));
        }
        assert!(!limits.request("alice"));
        assert!(limits.request("bob"), "one user's limit is not another's");
        let off = self::limits(0.0, 1, 1);
        assert!((0..1000).all(|_| off.request("alice")));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let limits = limits(1e9, 1, 1);
        for i in 0..PRUNE_AT_LEAST * 3 {
            assert!(limits.request(&format!("user{i}")));
        }
        let held = limits.requests.lock().unwrap().buckets.len();
        assert!(held < PRUNE_AT_LEAST * 2, "{held} buckets held");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_read_runs_when_one_ends() {
        let limits = Arc::new(limits(0.0, 1, 1));
        let first = limits.read("alice").unwrap();
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.read_wait("alice").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        let second = waiting.await.unwrap();
        assert!(limits.read("alice").is_none());
        drop(second);
        assert_eq!(limits.users_reading(), 0);
    }

    #[test]
    fn reads_are_capped_per_user_and_counted_out() {
        let limits = limits(0.0, 1, 2);
        let a = limits.read("alice").unwrap();
        let b = limits.read("alice").unwrap();
        assert!(limits.read("alice").is_none());
        assert!(limits.read("bob").is_some());
        drop(a);
        assert!(limits.read("alice").is_some());
        drop(b);
        assert_eq!(limits.users_reading(), 0);
    }
}
