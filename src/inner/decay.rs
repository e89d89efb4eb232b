//! The decay thread: one background thread for every pool of the process (named
//! `axon-buffer-decay`), which frees idle slabs when nothing else runs.
//!
//! Its life, and why it costs nothing while nothing is idle:
//!
//! - **Started lazily.** A pool with `idle_decay_thread` on (the default) and an idle
//!   timeout registers itself here, by `Weak` reference (the global pool by `&'static`),
//!   the first time its idle budget leaves zero: the first slab to go idle, on a return's
//!   slow path ([`went_idle`]). The thread is spawned then if it does not run. A process
//!   that never has an idle slab never has the thread.
//! - **Ticking while something is idle.** Each tick refreshes the coarse clock
//!   ([`super::clock`]) and runs each registered pool's decay if it is due
//!   (`PoolInner::decay_if_due`), then sleeps until the next tick: the shortest period
//!   (a quarter of `idle_timeout`, at most 5 s) among the pools with idle budget left.
//! - **Parked while nothing is idle.** When no pool has idle budget left (the decay frees
//!   old slabs and gives back the magazines' spare units, so a quiet process gets there),
//!   the thread waits on a condition variable with no timeout: no wakeups at all. The
//!   next budget to leave zero wakes it; one that needs a shorter tick than the current
//!   one wakes it too.
//! - **Ended with the last pool.** A registered pool's drop removes it and wakes the
//!   thread; with no pool left, the thread ends (the global pool, being `'static`, stays
//!   registered once it has been).
//! - **Spawn failure.** If the thread cannot be spawned, nothing panics: the pools decay
//!   through their traffic's ticker (and `trim_idle`), and a later budget leaving zero
//!   tries again, at most once a second.
//!
//! The thread holds the registry's lock only to read or change it, never while it works
//! on a pool (whose drop takes that lock: the thread may hold a pool's last `Arc`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{clock, global, pages, PoolInner, PoolRef};

/// The decay thread's name (Linux shows its first 15 bytes: `axon-buffer-dec`).
const NAME: &str = "axon-buffer-decay";

/// How a registered pool is held: never keeping it alive.
#[derive(Clone)]
enum Held {
    Global,
    Built(Weak<PoolInner>),
}

/// A pool the thread is working on, alive for the while.
enum Alive {
    Global(&'static PoolInner),
    Built(Arc<PoolInner>),
}

impl std::ops::Deref for Alive {
    type Target = PoolInner;

    fn deref(&self) -> &PoolInner {
        match self {
            Alive::Global(inner) => inner,
            Alive::Built(inner) => inner,
        }
    }
}

impl Held {
    fn upgrade(&self) -> Option<Alive> {
        match self {
            Held::Global => Some(Alive::Global(global())),
            Held::Built(weak) => weak.upgrade().map(Alive::Built),
        }
    }
}

struct State {
    /// Registered pools, by id.
    pools: Vec<(u64, Held)>,
    /// The thread runs (it clears this itself, under the lock, as it ends).
    running: bool,
    /// Something changed since the thread last looked: it looks again before it waits.
    pending: bool,
    /// While the thread waits: `Some(None)` parked, `Some(Some(p))` ticking every `p`.
    waiting: Option<Option<Duration>>,
    /// After a failed spawn: not before this instant again.
    retry_at: Option<Instant>,
}

static STATE: Mutex<State> = Mutex::new(State {
    pools: Vec::new(),
    running: false,
    pending: false,
    waiting: None,
    retry_at: None,
});
static WAKE: Condvar = Condvar::new();

/// `pool`'s idle budget left zero: registers it (once), starts the thread if it does not
/// run, and wakes it if it is parked or ticks slower than `pool` needs. Called on a
/// return's slow path, outside any section and lock; a few hundred nanoseconds when
/// nothing needs doing, a thread spawn once per process.
pub(super) fn went_idle(pool: &PoolRef) {
    if !pool.config.idle_decay_thread {
        return;
    }
    let Some(period) = pool.decay_period() else {
        return;
    };
    let mut state = STATE.lock();
    if !pool.decay_registered.swap(true, Relaxed) {
        let held = match &pool.owner {
            None => Held::Global,
            Some(inner) => Held::Built(Arc::downgrade(inner)),
        };
        state.pools.push((pool.id, held));
    }
    state.pending = true;
    if !state.running {
        spawn(&mut state);
        return;
    }
    match state.waiting {
        Some(None) => {
            WAKE.notify_one();
        }
        Some(Some(ticking)) if period < ticking => {
            WAKE.notify_one();
        }
        _ => {}
    }
}

/// A registered pool is being dropped: forget it, and let the thread end if it was the
/// last.
pub(super) fn forget(pool_id: u64) {
    let mut state = STATE.lock();
    state.pools.retain(|(id, _)| *id != pool_id);
    state.pending = true;
    if state.waiting.is_some() {
        WAKE.notify_one();
    }
}

fn spawn(state: &mut State) {
    let now = Instant::now();
    if state.retry_at.is_some_and(|at| now < at) {
        return;
    }
    match std::thread::Builder::new().name(NAME.into()).spawn(run) {
        Ok(_) => {
            state.running = true;
            state.retry_at = None;
        }
        // The pools decay through their traffic meanwhile.
        Err(_) => state.retry_at = Some(now + Duration::from_secs(1)),
    }
}

/// The thread's body: tick while some pool has idle budget, park while none has, end when
/// no pool is left.
fn run() {
    loop {
        let pools: Vec<Held> = {
            let mut state = STATE.lock();
            state.pending = false;
            if state.pools.is_empty() {
                state.running = false;
                return;
            }
            state.pools.iter().map(|(_, held)| held.clone()).collect()
        };
        let tick = Instant::now();
        let now = clock::refresh();
        let mut period: Option<Duration> = None;
        let mut trim = false;
        for held in pools {
            // A pool dropped meanwhile is gone (its drop calls `forget`); one whose last
            // `Arc` this is drops here, outside the lock.
            let Some(pool) = held.upgrade() else { continue };
            trim |= pool.decay_if_due(now) > 0 && pool.config.trim_allocator;
            if pool.depot.idle_budget() > 0 {
                if let Some(p) = pool.decay_period() {
                    period = Some(period.map_or(p, |q| q.min(p)));
                }
            }
        }
        if trim {
            pages::trim_allocator(); // once for every pool, after their decays
        }
        let mut state = STATE.lock();
        if state.pending {
            continue;
        }
        state.waiting = Some(period);
        match period {
            None => WAKE.wait(&mut state),
            Some(p) => {
                WAKE.wait_until(&mut state, tick + p);
            }
        }
        state.waiting = None;
    }
}
