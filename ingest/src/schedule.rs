//! The poll grid (SPEC §2): a machine's polls are due at `phase + k × interval`
//! (milliseconds since the Unix epoch), its phase derived from its name so that a
//! fleet spreads evenly over the interval and a restart keeps the same instants.
//! Pure arithmetic; the scheduler maps grid instants to tokio time.

/// A stable 64-bit FNV-1a hash (the same on every build and platform, unlike
/// `DefaultHasher`), used for phases and sharding.
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Final avalanche so that similar names (web-1, web-2) land far apart.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// One machine's grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// Offset of the grid within each interval, `0..interval_ms`.
    pub phase_ms: i64,
    /// Poll interval.
    pub interval_ms: i64,
}

impl Grid {
    /// The grid of `machine` at `interval_ms` (at least 1).
    pub fn for_machine(machine: &str, interval_ms: u64) -> Grid {
        let interval_ms = interval_ms.max(1);
        Grid {
            phase_ms: (stable_hash(machine) % interval_ms) as i64,
            interval_ms: interval_ms as i64,
        }
    }

    /// The first grid instant at or after `t_ms`.
    pub fn first_at_or_after(&self, t_ms: i64) -> i64 {
        let k = (t_ms - self.phase_ms).div_euclid(self.interval_ms);
        let candidate = self.phase_ms + k * self.interval_ms;
        if candidate >= t_ms {
            candidate
        } else {
            candidate + self.interval_ms
        }
    }

    /// The first grid instant strictly after `t_ms`.
    pub fn first_after(&self, t_ms: i64) -> i64 {
        self.first_at_or_after(t_ms + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_phase_plus_k_intervals() {
        let g = Grid {
            phase_ms: 250,
            interval_ms: 1000,
        };
        assert_eq!(g.first_at_or_after(0), 250);
        assert_eq!(g.first_at_or_after(250), 250);
        assert_eq!(g.first_after(250), 1250);
        assert_eq!(g.first_at_or_after(1251), 2250);
        assert_eq!(g.first_at_or_after(-10), 250);
        assert_eq!(g.first_at_or_after(-800), -750);
    }

    #[test]
    fn phases_spread_a_fleet_over_the_interval() {
        let interval = 900_000u64;
        let buckets = 15usize; // one per minute
        let mut counts = vec![0u32; buckets];
        for i in 0..10_000 {
            let g = Grid::for_machine(&format!("web-{i}"), interval);
            assert!((0..interval as i64).contains(&g.phase_ms));
            counts[(g.phase_ms as usize) * buckets / interval as usize] += 1;
        }
        // 10,000 machines over 15 minutes: about 667 a minute; no minute gets twice that.
        for c in counts {
            assert!((500..=850).contains(&c), "uneven spread: {c}");
        }
    }

    #[test]
    fn phase_is_stable_across_runs() {
        assert_eq!(
            Grid::for_machine("web-1", 900_000),
            Grid::for_machine("web-1", 900_000)
        );
        assert_eq!(stable_hash("web-1"), stable_hash("web-1"));
        assert_ne!(stable_hash("web-1"), stable_hash("web-2"));
    }
}
