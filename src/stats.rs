//! Round-trip statistics as `ping` prints them (min/avg/max/mdev) plus
//! percentiles. Pure functions over milliseconds.

use serde::Serialize;

/// Summary of a set of round-trip times, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RttStats {
    /// Fastest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Slowest.
    pub max: f64,
    /// Mean deviation as ping computes it: sqrt(mean(x²) − mean(x)²).
    pub mdev: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
}

/// Summarise; `None` when there is nothing to summarise.
pub fn summarize(rtts: &[f64]) -> Option<RttStats> {
    if rtts.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = rtts.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    let avg = v.iter().sum::<f64>() / n;
    let sq = v.iter().map(|x| x * x).sum::<f64>() / n;
    Some(RttStats {
        min: v[0],
        avg,
        max: v[v.len() - 1],
        mdev: (sq - avg * avg).max(0.0).sqrt(),
        p50: percentile(&v, 50.0),
        p90: percentile(&v, 90.0),
        p99: percentile(&v, 99.0),
    })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_sequence() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = summarize(&v).unwrap();
        assert_eq!((s.min, s.max, s.avg), (1.0, 100.0, 50.5));
        assert_eq!((s.p50, s.p90, s.p99), (50.0, 90.0, 99.0));
        // Population standard deviation of 1..=100.
        assert!((s.mdev - 28.866_070_047_722_12).abs() < 1e-9, "{}", s.mdev);
    }

    #[test]
    fn ping_example() {
        let s = summarize(&[0.1, 0.2, 0.3]).unwrap();
        assert!((s.avg - 0.2).abs() < 1e-12);
        assert!((s.mdev - 0.081_649_658).abs() < 1e-6);
        assert_eq!(s.p50, 0.2);
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[5.0]).unwrap().mdev, 0.0);
    }
}
