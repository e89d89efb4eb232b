//! The coarse clock the idle decay stamps slabs with: milliseconds since a process epoch,
//! in one `AtomicU64` that only moves forward.
//!
//! Reading `Instant::now()` costs about 20 ns (the vDSO's `clock_gettime`), more than the
//! rest of a slab's return. So the fast path never reads it: a slab going idle is stamped
//! with [`coarse`], one relaxed load of the value the last [`refresh`] stored. Whatever
//! reads the real clock anyway moves the coarse one forward (`fetch_max`, so racing
//! refreshes never move it back): the decay thread at each tick, the acquire path's
//! ticker every [`TICK_EVERY`](super::magazine::TICK_EVERY) acquires, `trim_idle`, and a
//! pool whose idle budget leaves zero (the first slab to go idle after a quiet spell).
//!
//! A stamp is therefore never later than the moment the slab went idle, and earlier by at
//! most the gap between two refreshes: while anything is idle and the decay thread runs,
//! at most its period (a quarter of the shortest `idle_timeout` with something idle, 5 s at
//! most) plus scheduling delay.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();
/// Milliseconds from [`EPOCH`] at the latest refresh.
static COARSE: AtomicU64 = AtomicU64::new(0);

/// The coarse time, in milliseconds: one relaxed load, no clock read.
#[inline(always)]
pub(crate) fn coarse() -> u64 {
    COARSE.load(Relaxed)
}

/// Reads the real clock, moves the coarse one forward to it, and returns it (milliseconds
/// since the epoch; never less than any earlier [`coarse`] value).
#[cold]
pub(crate) fn refresh() -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
    COARSE.fetch_max(now, Relaxed).max(now)
}

/// A duration in whole milliseconds, rounded up (a timeout of 1.5 ms waits 2).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

#[cfg(all(test, not(axon_loom)))]
mod tests {
    #[test]
    fn refresh_moves_the_coarse_clock_forward_only() {
        let a = super::refresh();
        assert!(super::coarse() >= a);
        std::thread::sleep(std::time::Duration::from_millis(3));
        let b = super::refresh();
        assert!(b >= a + 2, "{a} -> {b}");
        assert!(super::coarse() >= b);
        assert_eq!(super::millis(std::time::Duration::from_micros(1500)), 2);
    }
}
