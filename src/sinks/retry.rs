//! Retry policy, kept apart from transport: which failures may succeed later, and how long
//! to wait before the next try (exponential, capped, full jitter so that many agents
//! retrying after a Pushgateway restart do not hit it in step).

use std::time::Duration;

/// Whether an HTTP status may succeed when sent again: 408, 429 and 5xx except 501.
/// Anything else (a 400 for inconsistent metrics, say) would only fail the same way again.
pub fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status) && status != 501
}

/// Delay before retry number `attempt` (0 for the first retry): a random duration up to
/// `base × 2^attempt`, capped at `cap`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(cap);
    let ms = u64::try_from(ceiling.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(fastrand::u64(ms / 2..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 202, 400, 401, 403, 404, 409, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(2);
        for _ in 0..100 {
            let d0 = backoff(0, base, cap);
            assert!(d0 >= Duration::from_millis(50) && d0 <= base, "{d0:?}");
            let d10 = backoff(10, base, cap);
            assert!(d10 >= Duration::from_secs(1) && d10 <= cap, "{d10:?}");
            assert!(backoff(40, base, cap) <= cap);
        }
    }
}
