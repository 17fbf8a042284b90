//! A token bucket for requests per minute and tokens per minute.
//!
//! The bucket refills continuously at `limit / 60` per second and holds at most one
//! second's worth (at least 1), so calls are paced evenly rather than sent in a
//! burst of a whole minute's allowance. A caller takes what it needs at once and,
//! if that leaves the bucket in debt, sleeps until the debt would be repaid: waiters
//! are served in the order they arrived, without polling, and a request larger than
//! the bucket (a long prompt under a small tokens-per-minute limit) waits in
//! proportion instead of forever. Tokens taken for a request can be given back, or
//! more taken, once the server has said what the request really used.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many seconds' worth of refill the bucket holds.
const BURST_SECONDS: f64 = 1.0;

/// A continuously refilling token bucket whose balance may go negative.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    balance: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket allowing `limit` tokens a minute (`limit` > 0).
    pub(crate) fn per_minute(limit: f64) -> Self {
        let per_second = limit / 60.0;
        let capacity = (per_second * BURST_SECONDS).max(1.0);
        TokenBucket {
            capacity,
            per_second,
            state: Mutex::new(BucketState { balance: capacity, updated: Instant::now() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketState> {
        // The state is two numbers, valid after any panic: ignore poisoning.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn refill(&self, state: &mut BucketState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.balance = (state.balance + elapsed * self.per_second).min(self.capacity);
        state.updated = now;
    }

    /// Take `amount` tokens now and return how long the caller must wait before
    /// going ahead (zero when the bucket covered it).
    pub(crate) fn take(&self, amount: f64, now: Instant) -> Duration {
        let mut state = self.lock();
        self.refill(&mut state, now);
        state.balance -= amount;
        if state.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-state.balance / self.per_second)
        }
    }

    /// Take `amount` tokens, waiting as long as the limit requires.
    pub(crate) async fn acquire(&self, amount: f64) {
        let wait = self.take(amount, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Give back `amount` tokens (a negative amount takes more), as when a request
    /// used fewer tokens than it reserved.
    pub(crate) fn give_back(&self, amount: f64) {
        let mut state = self.lock();
        self.refill(&mut state, Instant::now());
        state.balance = (state.balance + amount).min(self.capacity);
    }

    /// The current balance, for tests.
    #[cfg(test)]
    fn balance(&self, now: Instant) -> f64 {
        let mut state = self.lock();
        self.refill(&mut state, now);
        state.balance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_at_the_limit_after_a_one_second_burst() {
        let bucket = TokenBucket::per_minute(120.0); // 2 a second, holds 2
        let t0 = Instant::now();
        assert_eq!(bucket.take(1.0, t0), Duration::ZERO);
        assert_eq!(bucket.take(1.0, t0), Duration::ZERO);
        assert_eq!(bucket.take(1.0, t0), Duration::from_millis(500));
        assert_eq!(bucket.take(1.0, t0), Duration::from_millis(1000));
        // A second later the debt of 2 is repaid.
        let t1 = t0 + Duration::from_secs(1);
        assert!(bucket.balance(t1).abs() < 1e-9);
        // It never holds more than its capacity.
        assert!((bucket.balance(t1 + Duration::from_secs(3600)) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn small_limits_still_allow_one_at_a_time() {
        let bucket = TokenBucket::per_minute(1.0);
        let t0 = Instant::now();
        assert_eq!(bucket.take(1.0, t0), Duration::ZERO);
        let wait = bucket.take(1.0, t0);
        assert!((wait.as_secs_f64() - 60.0).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn oversized_requests_wait_in_proportion_and_reconcile() {
        let bucket = TokenBucket::per_minute(6000.0); // 100 a second, holds 100
        let t0 = Instant::now();
        let wait = bucket.take(300.0, t0);
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-6, "{wait:?}");
        // The request used 50 of its 300: 250 come back.
        bucket.give_back(250.0);
        assert!(bucket.balance(Instant::now()) > 49.0);
    }

    #[tokio::test]
    async fn acquire_sleeps() {
        let bucket = TokenBucket::per_minute(600.0); // 10 a second, holds 10
        let start = Instant::now();
        for _ in 0..13 {
            bucket.acquire(1.0).await;
        }
        assert!(start.elapsed() >= Duration::from_millis(250), "{:?}", start.elapsed());
    }
}
