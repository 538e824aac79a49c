//! Where a write's time goes on the node that proposed it: from handing the command
//! to the batcher until its entry is committed and applied here ("commit"), then
//! until the 2-of-3 certificate is final ("certificate"). Kept in fixed 0.1 ms
//! buckets (lock-free counters), so recording costs two atomic adds and the figures
//! are exact to the bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Bucket width.
const BUCKET_US: u64 = 100;
/// Buckets up to 1 s; slower writes count in the last one.
const BUCKETS: usize = 10_000;

/// A histogram of durations in 0.1 ms buckets up to 1 s.
pub struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let bucket = (d.as_micros() / u128::from(BUCKET_US)).min(BUCKETS as u128 - 1) as usize;
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The upper bound of the bucket holding the `q`-quantile (`0.0..=1.0`), in ms;
    /// `None` before anything was counted.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // The rank of the q-quantile among `total` sorted values, 1-based.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(((i as u64 + 1) * BUCKET_US) as f64 / 1000.0);
            }
        }
        Some((BUCKETS as u64 * BUCKET_US) as f64 / 1000.0)
    }

    /// Forgets everything counted.
    pub fn reset(&self) {
        for c in self.counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// The write latencies of one node's own proposals (its clients' writes and the
/// writes followers forwarded to it), as [`ConsensusNode::write_latency`] reports.
///
/// [`ConsensusNode::write_latency`]: crate::ConsensusNode::write_latency
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WriteLatency {
    /// Writes counted.
    pub writes: u64,
    /// Batcher to committed and applied here, median, ms (bucket upper bound).
    pub commit_p50_ms: f64,
    /// The same, 99th percentile.
    pub commit_p99_ms: f64,
    /// Applied here to certificate final, median, ms.
    pub certificate_p50_ms: f64,
    /// The same, 99th percentile.
    pub certificate_p99_ms: f64,
}

/// The two histograms a node keeps.
#[derive(Default)]
pub(crate) struct WriteTimes {
    pub(crate) commit: LatencyHistogram,
    pub(crate) certificate: LatencyHistogram,
}

impl WriteTimes {
    pub(crate) fn report(&self) -> WriteLatency {
        let q = |h: &LatencyHistogram, p| h.quantile_ms(p).unwrap_or(0.0);
        WriteLatency {
            writes: self.certificate.count(),
            commit_p50_ms: q(&self.commit, 0.5),
            commit_p99_ms: q(&self.commit, 0.99),
            certificate_p50_ms: q(&self.certificate, 0.5),
            certificate_p99_ms: q(&self.certificate, 0.99),
        }
    }

    pub(crate) fn reset(&self) {
        self.commit.reset();
        self.certificate.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_the_upper_bounds_of_the_buckets_holding_the_ranks() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        // 1..=100 ms, one each: the median is the 50th (50.0 ms lands in the bucket
        // 50.0..50.1), the 99th percentile the 99th.
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.quantile_ms(0.5), Some(50.1));
        assert_eq!(h.quantile_ms(0.99), Some(99.1));
        assert_eq!(h.quantile_ms(1.0), Some(100.1));
        assert_eq!(h.quantile_ms(0.0), Some(1.1));
        // Beyond the last bucket: counted there.
        h.record(Duration::from_secs(5));
        assert_eq!(h.quantile_ms(1.0), Some(1000.0));
        h.reset();
        assert_eq!(h.count(), 0);
        assert_eq!(h.quantile_ms(0.99), None);
    }

    #[test]
    fn sub_bucket_durations_round_up_to_the_bucket_bound() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(0));
        h.record(Duration::from_micros(99));
        h.record(Duration::from_micros(100));
        assert_eq!(h.quantile_ms(0.5), Some(0.1));
        assert_eq!(h.quantile_ms(1.0), Some(0.2));
    }
}
