//! The per-connection rate limits (`limits.rate`): a token bucket of messages that refuses
//! messages over the rate and closes the connection on sustained abuse, and a token bucket of
//! bytes that paces the connection instead: over it, the server stops reading the socket until
//! the bucket has refilled (TCP backpressure on that client alone, nothing refused).

use std::time::Duration;

use tokio::time::Instant;

use crate::{config::RateLimitConfig, limits::Bucket};

/// Both limits of one connection.
#[derive(Debug)]
pub(super) struct RateLimiter {
    messages: Option<Bucket>,
    bytes: Option<Bucket>,
    /// Refused messages since the last accepted one.
    strikes: u32,
    close_after: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rate {
    /// Accept the message; if the duration is not zero, read nothing more from the socket
    /// until it has passed.
    Allow(Duration),
    /// Refuse this message with an error reply.
    Refuse,
    /// Sustained abuse: close the connection (4005).
    Close,
}

impl RateLimiter {
    pub(super) fn new(cfg: &RateLimitConfig) -> Option<Box<RateLimiter>> {
        let now = Instant::now();
        let messages = Bucket::new(cfg.per_second, f64::from(cfg.burst), now);
        let bytes = Bucket::new(cfg.bytes_per_second as f64, cfg.burst_bytes as f64, now);
        (messages.is_some() || bytes.is_some()).then(|| {
            Box::new(RateLimiter {
                messages,
                bytes,
                strikes: 0,
                close_after: cfg.close_after,
            })
        })
    }

    /// Counts a message of `len` bytes arriving at `now`.
    pub(super) fn check(&mut self, len: usize, now: Instant) -> Rate {
        if let Some(messages) = &mut self.messages
            && !messages.take_one(now)
        {
            self.strikes += 1;
            return if self.strikes >= self.close_after {
                Rate::Close
            } else {
                Rate::Refuse
            };
        }
        self.strikes = 0;
        let pause = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |bytes| bytes.take_debt(len, now));
        Rate::Allow(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(per_second: f64, burst: u32, bytes_per_second: usize) -> RateLimitConfig {
        RateLimitConfig {
            per_second,
            burst,
            close_after: 3,
            bytes_per_second,
            burst_bytes: 1000,
        }
    }

    #[test]
    fn message_bucket_allows_burst_then_refuses_then_closes() {
        let mut rl = RateLimiter::new(&config(10.0, 5, 0)).unwrap();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(rl.check(10, t0), Rate::Allow(Duration::ZERO));
        }
        assert_eq!(rl.check(10, t0), Rate::Refuse);
        assert_eq!(rl.check(10, t0), Rate::Refuse);
        // 100 ms later one token is back; an accepted message clears the strikes.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(rl.check(10, t1), Rate::Allow(Duration::ZERO));
        assert_eq!(rl.check(10, t1), Rate::Refuse);
        assert_eq!(rl.check(10, t1), Rate::Refuse);
        assert_eq!(rl.check(10, t1), Rate::Close);
    }

    #[test]
    fn byte_bucket_paces_instead_of_refusing() {
        // 1,000 bytes a second, a burst of 1,000: the burst passes, then each message waits
        // for its bytes; nothing is refused.
        let mut rl = RateLimiter::new(&config(0.0, 1, 1000)).unwrap();
        let t0 = Instant::now();
        assert_eq!(rl.check(1000, t0), Rate::Allow(Duration::ZERO));
        assert_eq!(rl.check(500, t0), Rate::Allow(Duration::from_millis(500)));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(rl.check(250, t1), Rate::Allow(Duration::from_millis(250)));
    }

    #[test]
    fn both_off_is_no_limiter() {
        assert!(RateLimiter::new(&config(0.0, 1, 0)).is_none());
    }
}
