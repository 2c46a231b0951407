//! Ceilings on failed authentications, kept per client address and per presented credential.
//!
//! A client address that keeps presenting credentials that do not resolve (unknown, expired,
//! forged) is answered 429 for the rest of the window, which slows scanners; a credential that
//! keeps failing (a stolen token used to guess one-time codes, a disabled analyst's token) is
//! answered 429 whoever presents it. A working credential is never held back by other people's
//! failures from the same address (behind a load balancer everyone shares one), and one
//! analyst's wrong or reused codes count against that analyst's credential only.
//!
//! The counters live in each instance's memory. With several instances a client gets at most
//! `instances × auth.max_failures_per_client` failures per window; what must hold across
//! instances (the per-analyst lockout after wrong one-time codes) is kept in the database.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What failures are counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKey {
    Client(IpAddr),
    /// SHA-256 of a presented credential (token, JWT or session cookie), never the credential.
    Credential([u8; 32]),
}

impl FailureKey {
    pub fn credential(presented: &str) -> FailureKey {
        FailureKey::Credential(Sha256::digest(presented.as_bytes()).into())
    }
}

/// Beyond this many tracked keys, finished windows are forgotten (at most once a second: the
/// sweep holds the lock); if that is not enough (a flood of distinct credentials or addresses),
/// new keys are not tracked until some windows end, so memory stays bounded.
const MAX_TRACKED: usize = 100_000;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

pub struct FailureLimiter {
    max: u32,
    window: Duration,
    counts: Mutex<Counts>,
}

struct Counts {
    by_key: HashMap<FailureKey, (Instant, u32)>,
    swept: Instant,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max: max.max(1),
            window,
            counts: Mutex::new(Counts {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Seconds until `key` may try again, when it has used up its failures.
    pub fn blocked(&self, key: FailureKey) -> Option<u64> {
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (started, failures) = counts.by_key.get(&key)?;
        let elapsed = started.elapsed();
        (*failures >= self.max && elapsed < self.window)
            .then(|| (self.window - elapsed).as_secs().max(1))
    }

    pub fn record_failure(&self, key: FailureKey) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let Counts { by_key, swept } = &mut *counts;
        if by_key.len() >= MAX_TRACKED && !by_key.contains_key(&key) {
            if swept.elapsed() >= SWEEP_EVERY {
                let window = self.window;
                by_key.retain(|_, (started, _)| started.elapsed() < window);
                *swept = Instant::now();
            }
            if by_key.len() >= MAX_TRACKED {
                return;
            }
        }
        let now = Instant::now();
        let entry = by_key.entry(key).or_insert((now, 0));
        if entry.0.elapsed() >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_ceiling_until_the_window_ends_per_key() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        let client = FailureKey::Client("192.0.2.7".parse().unwrap());
        let other = FailureKey::Client("192.0.2.8".parse().unwrap());
        let token = FailureKey::credential("ks_stolen");
        for _ in 0..3 {
            assert_eq!(limiter.blocked(client), None);
            limiter.record_failure(client);
        }
        assert!(limiter.blocked(client).is_some());
        assert_eq!(limiter.blocked(other), None, "per client");
        assert_eq!(limiter.blocked(token), None, "per credential");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.blocked(client), None);
    }

    #[test]
    fn a_flood_of_distinct_keys_does_not_grow_memory_without_bound() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(60));
        let client = FailureKey::Client("192.0.2.7".parse().unwrap());
        for _ in 0..3 {
            limiter.record_failure(client);
        }
        for i in 0..MAX_TRACKED + 50 {
            limiter.record_failure(FailureKey::credential(&i.to_string()));
            let address = std::net::IpAddr::from((i as u128).to_be_bytes());
            limiter.record_failure(FailureKey::Client(address));
        }
        assert!(
            limiter.blocked(client).is_some(),
            "keys already tracked keep counting"
        );
        let tracked = limiter.counts.lock().unwrap().by_key.len();
        assert_eq!(tracked, MAX_TRACKED);
    }
}
