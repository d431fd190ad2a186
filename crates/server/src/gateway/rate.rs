//! The per-connection rate limit (`limits.rate`): a token bucket that refuses messages over the
//! rate and closes the connection on sustained abuse.

use tokio::time::Instant;

use crate::config::RateLimitConfig;

/// A token bucket per connection (`limits.rate`).
#[derive(Debug)]
pub(super) struct RateLimiter {
    pub(super) per_second: f64,
    pub(super) burst: f64,
    pub(super) tokens: f64,
    pub(super) last: Instant,
    /// Refused messages since the last accepted one.
    pub(super) strikes: u32,
    pub(super) close_after: u32,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Rate {
    Allow,
    /// Refuse this message with an error reply.
    Refuse,
    /// Sustained abuse: close the connection (4005).
    Close,
}

impl RateLimiter {
    pub(super) fn new(cfg: &RateLimitConfig) -> Option<RateLimiter> {
        (cfg.per_second > 0.0).then(|| RateLimiter {
            per_second: cfg.per_second,
            burst: f64::from(cfg.burst),
            tokens: f64::from(cfg.burst),
            last: Instant::now(),
            strikes: 0,
            close_after: cfg.close_after,
        })
    }

    pub(super) fn check(&mut self, now: Instant) -> Rate {
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = 0;
            return Rate::Allow;
        }
        self.strikes += 1;
        if self.strikes >= self.close_after {
            Rate::Close
        } else {
            Rate::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    pub(super) fn token_bucket_allows_burst_then_refuses_then_closes() {
        let cfg = RateLimitConfig {
            per_second: 10.0,
            burst: 5,
            close_after: 3,
        };
        let mut rl = RateLimiter::new(&cfg).unwrap();
        let t0 = rl.last;
        for _ in 0..5 {
            assert_eq!(rl.check(t0), Rate::Allow);
        }
        assert_eq!(rl.check(t0), Rate::Refuse);
        assert_eq!(rl.check(t0), Rate::Refuse);
        // 100 ms later one token is back; an accepted message clears the strikes.
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Allow);
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Refuse);
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Refuse);
        assert_eq!(rl.check(t0 + Duration::from_millis(100)), Rate::Close);
        assert!(RateLimiter::new(&RateLimitConfig::default()).is_none());
    }
}
