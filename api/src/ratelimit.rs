//! Per-token request rate limiting (GCRA via governor) and the numbers behind the
//! `X-RateLimit-*` headers.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

type Limiter =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// Limits each token to `per_minute` requests per minute, as a bucket that refills steadily.
pub struct RateLimit {
    limiter: Limiter,
    per_minute: u32,
}

impl std::fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("per_minute", &self.per_minute)
            .finish()
    }
}

/// The outcome of one request against its token's budget.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    pub limit: u32,
    pub remaining: u32,
    /// Unix seconds at which the budget is full again.
    pub reset: u64,
    /// Set when the request is refused: whole seconds until one more request is allowed.
    pub retry_after: Option<u64>,
}

impl RateLimit {
    pub fn per_minute(per_minute: NonZeroU32) -> Self {
        let limiter = RateLimiter::keyed(Quota::per_minute(per_minute))
            .with_middleware::<StateInformationMiddleware>();
        RateLimit {
            limiter,
            per_minute: per_minute.get(),
        }
    }

    /// Counts one request for `key`.
    pub fn check(&self, key: &str) -> Decision {
        let refill = Duration::from_secs(60) / self.per_minute;
        let now = unix_now();
        match self.limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let to_full = refill * (self.per_minute - remaining.min(self.per_minute));
                Decision {
                    limit: self.per_minute,
                    remaining,
                    reset: now + ceil_secs(to_full),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                let to_full = wait + refill * self.per_minute.saturating_sub(1);
                Decision {
                    limit: self.per_minute,
                    remaining: 0,
                    reset: now + ceil_secs(to_full),
                    retry_after: Some(ceil_secs(wait).max(1)),
                }
            }
        }
    }

    /// Forgets tokens whose buckets are full again, bounding memory.
    pub fn shrink(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn unix_now() -> u64 {
    u64::try_from(wispd_store::unix_now()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_counts_down_then_refuses_with_retry_after() {
        let rl = RateLimit::per_minute(NonZeroU32::new(3).expect("nonzero"));
        let remaining: Vec<u32> = (0..3).map(|_| rl.check("t1").remaining).collect();
        assert_eq!(remaining, vec![2, 1, 0]);
        let refused = rl.check("t1");
        assert_eq!(refused.remaining, 0);
        let retry = refused.retry_after.expect("refused");
        assert!(
            (1..=20).contains(&retry),
            "one request refills in 20 s, got {retry}"
        );
        // another token has its own budget
        assert_eq!(rl.check("t2").remaining, 2);
        assert!(rl.check("t2").retry_after.is_none());
    }
}
