//! A per-client ceiling on failed authentications, so a stolen token cannot be used to guess
//! codes and a scanner cannot flood the audit log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct FailureLimiter {
    max: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter {
            max: max.max(1),
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `client` may try again, when it has used up its failures.
    pub fn blocked(&self, client: IpAddr) -> Option<u64> {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let (started, failures) = clients.get(&client)?;
        let elapsed = started.elapsed();
        (*failures >= self.max && elapsed < self.window)
            .then(|| (self.window - elapsed).as_secs().max(1))
    }

    pub fn record_failure(&self, client: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if clients.len() > 100_000 {
            // Forget finished windows rather than grow without bound under a scan.
            let window = self.window;
            clients.retain(|_, (started, _)| started.elapsed() < window);
        }
        let now = Instant::now();
        let entry = clients.entry(client).or_insert((now, 0));
        if entry.0.elapsed() >= self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_ceiling_until_the_window_ends() {
        let limiter = FailureLimiter::new(3, Duration::from_millis(200));
        let client: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.blocked(client), None);
            limiter.record_failure(client);
        }
        assert!(limiter.blocked(client).is_some());
        assert_eq!(limiter.blocked(other), None, "per client");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(limiter.blocked(client), None);
    }
}
