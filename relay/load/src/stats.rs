//! What one subscriber saw (`Tally`), and a small log-linear latency
//! histogram that costs nothing until its first sample, so 20 000 idle
//! subscribers do not carry one each.

use serde::Serialize;

use crate::payload::Stamp;

/// Values below this are counted exactly (µs).
const LINEAR: u64 = 64;
/// Sub-buckets per power of two above `LINEAR`: about 3% precision.
const SUB_BITS: u32 = 5;
const SUB: u64 = 1 << SUB_BITS;
/// Powers of two covered: up to 2^40 µs, about 12 days.
const TOP_EXP: u32 = 40;
const BUCKETS: usize = LINEAR as usize + ((TOP_EXP - 6) as usize + 1) * SUB as usize;

/// Latency samples in µs, bucketed with about 3% precision.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: Vec<u32>,
    max: u64,
}

fn bucket(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let exp = (63 - v.leading_zeros()).min(TOP_EXP);
    let sub = (v >> (exp - SUB_BITS)).min(2 * SUB - 1) - SUB;
    LINEAR as usize + (exp as usize - 6) * SUB as usize + sub as usize
}

fn bucket_floor(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let rest = index - LINEAR as usize;
    let exp = (rest / SUB as usize) as u32 + 6;
    let sub = (rest % SUB as usize) as u64;
    (SUB + sub) << (exp - SUB_BITS)
}

impl Histogram {
    /// Counts one sample.
    pub fn record(&mut self, us: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        let b = bucket(us);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.max = self.max.max(us);
    }

    /// Adds another histogram's samples to this one.
    pub fn merge(&mut self, other: &Histogram) {
        if other.counts.is_empty() {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a = a.saturating_add(*b);
        }
        self.max = self.max.max(other.max);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.counts.iter().map(|c| u64::from(*c)).sum()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value below which `q` (0..=1) of the samples fall (bucket floor;
    /// the maximum is exact).
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.len();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return bucket_floor(i).min(self.max);
            }
        }
        self.max
    }

    /// p50, p90, p99 and max, in µs.
    pub fn summary(&self) -> Latency {
        Latency {
            p50_us: self.quantile(0.50),
            p90_us: self.quantile(0.90),
            p99_us: self.quantile(0.99),
            max_us: self.max,
        }
    }
}

/// Latency percentiles of a run, in µs.
#[derive(Debug, Default, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest sample.
    pub max_us: u64,
}

/// Everything one subscriber saw of the messages of its room.
#[derive(Debug, Clone)]
pub struct Tally {
    /// The room this subscriber is in.
    pub room: u32,
    seen: Vec<u64>,
    /// Distinct messages received.
    pub received: u64,
    /// Messages received more than once.
    pub duplicates: u64,
    /// Messages stamped for another room.
    pub wrong_room: u64,
    /// Hash of the sequence numbers in arrival order: equal for two
    /// subscribers of a room exactly when they saw one order.
    pub order: u64,
    /// Latency from send to receipt.
    pub latency: Histogram,
    /// When the last message arrived (µs since the epoch).
    pub last_us: u64,
    /// True when the connection ended before the run did.
    pub dropped: bool,
    /// True once the subscription was confirmed.
    pub ready: bool,
    /// Its room's presence as it sees it, when the run follows presence.
    pub presence: Option<Box<crate::presence::PeerView>>,
}

impl Tally {
    /// A tally for a subscriber of `room`.
    pub fn new(room: u32) -> Tally {
        Tally {
            room,
            seen: Vec::new(),
            received: 0,
            duplicates: 0,
            wrong_room: 0,
            order: 0xcbf2_9ce4_8422_2325,
            latency: Histogram::default(),
            last_us: 0,
            dropped: false,
            ready: false,
            presence: None,
        }
    }

    /// Counts one received message, `now_us` after the epoch.
    pub fn record(&mut self, stamp: Stamp, now_us: u64) {
        if stamp.room != self.room {
            self.wrong_room += 1;
            return;
        }
        let word = (stamp.seq / 64) as usize;
        let bit = 1u64 << (stamp.seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= bit;
        self.received += 1;
        // FNV-1a over the sequence numbers.
        for byte in stamp.seq.to_le_bytes() {
            self.order = (self.order ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        self.latency.record(now_us.saturating_sub(stamp.sent_us));
        self.last_us = now_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_floors_round_trip() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, 1 << 33, u64::MAX]) {
            let b = bucket(v);
            assert!(b >= last, "bucket of {v} went down");
            assert!(b < BUCKETS);
            assert!(bucket_floor(b) <= v);
            last = b;
        }
        for b in 0..BUCKETS {
            assert_eq!(bucket(bucket_floor(b)), b);
        }
    }

    #[test]
    fn quantiles_are_within_precision() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let s = h.summary();
        assert!((4800..=5000).contains(&s.p50_us), "{s:?}");
        assert!((9600..=9900).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 10_000);
    }

    #[test]
    fn a_tally_counts_duplicates_and_order() {
        let stamp = |seq| Stamp {
            room: 1,
            seq,
            sent_us: 10,
        };
        let mut a = Tally::new(1);
        let mut b = Tally::new(1);
        for seq in [0, 1, 2] {
            a.record(stamp(seq), 20);
        }
        for seq in [1, 0, 2, 2] {
            b.record(stamp(seq), 20);
        }
        a.record(
            Stamp {
                room: 2,
                ..stamp(3)
            },
            20,
        );
        assert_eq!((a.received, a.duplicates, a.wrong_room), (3, 0, 1));
        assert_eq!((b.received, b.duplicates), (3, 1));
        assert_ne!(a.order, b.order);
    }
}
