//! Round-trip statistics as `ping` prints them (min/avg/max/mdev) plus
//! percentiles to p99.9, kept in bounded memory: [`Rtt`] records each RTT
//! into an HDR histogram (3 significant digits, 1 µs to 1 h: about 100 KB
//! whatever the count) and running sums for the mean and deviation, which
//! are exact. Pure computation over milliseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Summary of a set of round-trip times, in milliseconds (each JSON field
/// says so: `min_ms`, …).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RttStats {
    /// Fastest (exact).
    #[serde(rename = "min_ms")]
    pub min: f64,
    /// Mean (exact).
    #[serde(rename = "avg_ms")]
    pub avg: f64,
    /// Slowest (exact).
    #[serde(rename = "max_ms")]
    pub max: f64,
    /// Mean deviation as ping computes it: sqrt(mean(x²) − mean(x)²) (exact).
    #[serde(rename = "mdev_ms")]
    pub mdev: f64,
    /// Median, to 3 significant digits.
    #[serde(rename = "p50_ms")]
    pub p50: f64,
    /// 90th percentile, to 3 significant digits.
    #[serde(rename = "p90_ms")]
    pub p90: f64,
    /// 99th percentile, to 3 significant digits.
    #[serde(rename = "p99_ms")]
    pub p99: f64,
    /// 99.9th percentile, to 3 significant digits.
    #[serde(rename = "p99_9_ms")]
    pub p99_9: f64,
}

impl RttStats {
    /// The two lines ping-like commands print: `rtt min/avg/max/mdev = …`
    /// as iputils does, then the percentiles.
    pub fn text(&self) -> String {
        format!(
            "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms\nrtt p50/p90/p99/p99.9 = {:.3}/{:.3}/{:.3}/{:.3} ms",
            self.min, self.avg, self.max, self.mdev, self.p50, self.p90, self.p99, self.p99_9
        )
    }
}

/// An RTT as iputils prints one reply's: three significant decimals below
/// 1 ms, fewer above (`0.045`, `1.23`, `12.3`, `123`).
pub fn reply_ms(ms: f64) -> String {
    if ms >= 99.95 {
        format!("{ms:.0}")
    } else if ms >= 9.995 {
        format!("{ms:.1}")
    } else if ms >= 1.0 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

/// A percentage as iputils prints loss (`%g`): `0`, `20`, `33.3333`.
pub fn pct(p: f64) -> String {
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() {
        "0".into()
    } else {
        s.to_string()
    }
}

/// Largest RTT the histogram tells apart, in µs (an hour: the longest
/// timeout); longer ones count as this.
const MAX_US: u64 = 3_600_000_000;

/// RTTs recorded one at a time, in constant memory.
#[derive(Debug, Clone)]
pub struct Rtt {
    hist: Option<Histogram<u32>>,
    n: u64,
    sum: f64,
    sum_sq: f64,
    min: f64,
    max: f64,
    last: Option<f64>,
}

impl Default for Rtt {
    /// Percentiles to 3 significant digits.
    fn default() -> Self {
        Rtt::with_digits(3)
    }
}

impl Rtt {
    /// Percentiles to `digits` significant digits (1 to 5). The histogram
    /// grows with the largest RTT recorded, so a loopback target holds a
    /// few KiB, not the hour-wide range up front.
    pub fn with_digits(digits: u8) -> Rtt {
        Rtt {
            // A precision hdrhistogram accepts; without the histogram only
            // the percentiles would be missing.
            hist: Histogram::new(digits.clamp(1, 5)).ok(),
            n: 0,
            sum: 0.0,
            sum_sq: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: None,
        }
    }

    /// Exact min/avg/max/mdev only, no percentiles (no histogram at all).
    pub fn without_percentiles() -> Rtt {
        Rtt {
            hist: None,
            ..Rtt::with_digits(1)
        }
    }

    /// Record one RTT in milliseconds (non-finite values are ignored).
    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        self.n += 1;
        self.sum += ms;
        self.sum_sq += ms * ms;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        self.last = Some(ms);
        if let Some(h) = self.hist.as_mut() {
            let us = (ms * 1e3).round().clamp(1.0, MAX_US as f64) as u64;
            // Grows the histogram as needed; a failed resize loses only
            // this value's percentile share.
            let _ = h.record(us);
        }
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The most recent one.
    pub fn last(&self) -> Option<f64> {
        self.last
    }

    /// The summary; `None` when nothing was recorded.
    pub fn summary(&self) -> Option<RttStats> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let avg = self.sum / n;
        let q = |p: f64| {
            self.hist
                .as_ref()
                .map_or(f64::NAN, |h| {
                    h.median_equivalent(h.value_at_quantile(p)) as f64 / 1e3
                })
                // The histogram rounds to its buckets; the exact ends bound it.
                .clamp(self.min, self.max)
        };
        Some(RttStats {
            min: self.min,
            avg,
            max: self.max,
            mdev: (self.sum_sq / n - avg * avg).max(0.0).sqrt(),
            p50: q(0.50),
            p90: q(0.90),
            p99: q(0.99),
            p99_9: q(0.999),
        })
    }
}

/// Summarise a slice of RTTs; `None` when there is nothing to summarise.
pub fn summarize(rtts: &[f64]) -> Option<RttStats> {
    let mut r = Rtt::default();
    for &x in rtts {
        r.record(x);
    }
    r.summary()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.min, s.max, s.avg), (1.0, 1000.0, 500.5));
        // Nearest rank, to 3 significant digits (within 0.1 %).
        let near = |got: f64, want: f64| (got - want).abs() <= want * 1e-3;
        for (got, want) in [
            (s.p50, 500.0),
            (s.p90, 900.0),
            (s.p99, 990.0),
            (s.p99_9, 999.0),
        ] {
            assert!(near(got, want), "{got} for {want}");
        }
        // Population standard deviation of 1..=1000.
        assert!((s.mdev - 288.674_990_257_210_7).abs() < 1e-6, "{}", s.mdev);
    }

    #[test]
    fn ping_example() {
        let s = summarize(&[0.1, 0.2, 0.3]).unwrap();
        assert!((s.avg - 0.2).abs() < 1e-12);
        assert!((s.mdev - 0.081_649_658).abs() < 1e-6);
        assert_eq!(s.p50, 0.2);
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[5.0]).unwrap().mdev, 0.0);
        assert_eq!(summarize(&[f64::NAN]), None);
    }

    #[test]
    fn a_million_in_constant_memory_and_three_digits() {
        let mut r = Rtt::default();
        for i in 0..1_000_000u64 {
            r.record(0.020 + (i % 1000) as f64 * 0.001); // 20 µs … 1.019 ms
        }
        assert_eq!(r.count(), 1_000_000);
        let s = r.summary().unwrap();
        assert!((s.p50 - 0.519).abs() <= 0.001, "{}", s.p50);
        assert!((s.p99_9 - 1.018).abs() <= 0.002, "{}", s.p99_9);
        assert!((s.min - 0.020).abs() < 1e-12 && (s.max - 1.019).abs() < 1e-9);
    }
}
