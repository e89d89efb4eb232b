//! One thread's magazine for one pool: a stack of empty slabs per class (Bonwick and
//! Adams' magazine), the idle-budget units it holds, and its charge stocks (the Linux
//! memory cgroup's per-CPU stock): bytes prepaid to the pool and to a few tenants, so the
//! common acquire and drop charge and debit with plain loads and stores.
//!
//! # Why
//!
//! On this crate's 2-core reference machine a locked atomic operation (a compare-and-swap,
//! a swap, a mutex lock) costs about 7 ns, and glibc's `malloc` + `free` of 4 KiB 18 to
//! 35 ns. A magazine takes none: its thread works on it with plain loads and stores.
//!
//! # Protocol
//!
//! Two parties may touch a magazine: its owner (the thread it belongs to), thousands of
//! times a second, and a freezer (`trim`, `snapshot`, the ledger taking stocks back, the
//! pool's drop; one at a time, under the pool's magazine-list lock), rarely. They exclude
//! each other with two flags and a pair of asymmetric fences ([`super::fence`]), as in
//! Dekker's algorithm:
//!
//! - The owner [`enter`](Magazine::enter)s: it stores `busy = true`, makes a light fence,
//!   then loads `stealing` (`Acquire`). If it is set, the owner clears `busy` and takes the
//!   slow path instead (the section is refused, never waited for). Otherwise it works on
//!   the magazine and leaves with `busy = false` (`Release`).
//! - The freezer stores `stealing = true` on every magazine, makes one heavy fence, then
//!   waits on each until it loads `busy == false` (`Acquire`); it then has them all to
//!   itself until it clears `stealing` (`Release`).
//!
//! The fences order each side's store before its load, so at least one side sees the
//! other's flag: either the owner sees `stealing` and backs off, or the freezer sees `busy`
//! and waits for the `Release` that ends the section. Every access to the stacks, the units
//! and the stocks therefore happens inside a section or a freeze, never both at once, and
//! the `Release` / `Acquire` pairs order one side's writes before the other's reads. On
//! Linux the owner's light fence is a compiler fence, so a section costs no locked
//! instruction. The loom models at the end of this file check the protocol with `SeqCst`
//! fences on both sides.
//!
//! One rule keeps this free of deadlock: a section takes no lock but a free list's (a
//! leaf: nobody waits for a section while holding one), and a freezer never holds a free
//! list's lock while it waits.
//!
//! The hit and return counters are written only by the owner, inside sections, and read by
//! anyone; a frozen magazine's figures are exact.
//!
//! # The ticker
//!
//! Each acquire counts down the magazine's ticker (a load, a decrement and a store in the
//! section, jemalloc's decay ticker); every [`TICK_EVERY`]-th acquire the caller, once out
//! of its section, reads the clock and runs the pool's idle decay if it is due. So traffic
//! decays idle slabs, fast paths only or other classes, with or without the decay thread,
//! and a drop never runs a decay (it may take milliseconds).

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
#[cfg(not(axon_loom))]
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::Arc;

#[cfg(axon_loom)]
use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

mod stack;

use self::stack::Stack;
use super::account::TenantAccount;
use super::fence;
use crate::PoolClass;

/// How many slabs of each pooled class (in index order) a magazine holds: at most 32 KiB
/// and 256 KiB per thread. Large and Huge slabs are never cached per thread (see
/// [`cached`]).
pub(crate) const ROUNDS: [usize; 4] = [8, 4, 0, 0];

/// Whether class index `k` has a per-thread cache. Large and Huge do not: a buffer of 1 MiB
/// or more is written for far longer than the shared list's lock costs, while a slab
/// cached on one thread is out of reach of another thread's acquire (which allocates and
/// faults in a fresh one) and holds idle budget that other threads' returns then lack.
/// Measured in the noisy-neighbour scenario with `max_idle_bytes` 24 MiB (`scripts/noisy.sh`,
/// 8 s of flood): with one Huge and two Large rounds per thread, 367 of 1 084 Huge acquires
/// were fresh allocations and 366 returns were discarded, and their page faults were most
/// of the server's system time.
#[inline(always)]
pub(crate) const fn cached(k: usize) -> bool {
    ROUNDS[k] > 0
}
/// The most rounds any class has.
const MAX_ROUNDS: usize = 8;

/// Acquires between two looks at the clock for the idle decay (jemalloc ticks its decay
/// every 1000 allocation events). At 20 ns a look (`Instant::now`), 0.02 ns an acquire.
pub(crate) const TICK_EVERY: u32 = 1024;

/// Tenants a magazine keeps a stock for at once (the kernel keeps 7 per CPU).
pub(crate) const SLOTS: usize = 4;

/// A figure written by one party at a time: a load and a store, no locked instruction.
#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

/// A stock of bytes prepaid to one tenant's account.
struct TenantSlot {
    /// The account, or null for a free slot.
    account: AtomicPtr<TenantAccount>,
    /// Bytes charged to the account and not yet handed to a buffer.
    stock: AtomicU64,
    /// Buffers of this account acquired minus dropped on this thread, wrapping.
    buffers: AtomicU64,
}

/// One thread's magazine for one pool, shared with the pool's magazine list so `trim`,
/// `snapshot` and the ledger reach it.
pub(crate) struct Magazine {
    /// The owner is inside a section.
    busy: AtomicBool,
    /// A freezer wants the magazine, or has it.
    stealing: AtomicBool,
    /// Whether the fences were asymmetric when the magazine was made (`fence::light`).
    asymmetric: bool,
    stacks: [Stack; 4],
    /// Idle-budget units held, per class: never fewer than the slabs held.
    held: [AtomicUsize; 4],
    /// Acquires left before the next look at the clock (owner only, like a thread-local).
    ticks: AtomicU32,
    /// Bytes prepaid to the pool's usage.
    pool_stock: AtomicU64,
    slots: [TenantSlot; SLOTS],
    /// The slot to give up next when a new tenant needs one.
    victim: AtomicUsize,
    /// Slabs popped for a buffer, per class (owner writes).
    hits: [AtomicU64; 4],
    /// Slabs a buffer returned into the stacks, per class (owner writes).
    returned: [AtomicU64; 4],
}

// The raw pointers are allocations the stacks own (like the `Vec`s they came from, which
// are `Send + Sync`) and accounts the ledger keeps alive while a slot is bound
// (`account.rs`).
// SAFETY: so they may move between threads; which thread may touch them, and when, is the
// protocol in the module docs, and every other field is an atomic.
unsafe impl Send for Magazine {}
// SAFETY: as for `Send`: shared access to the stacks happens only inside a section (the
// owner) or a freeze (one freezer), which exclude each other; the rest is atomics.
unsafe impl Sync for Magazine {}

impl std::fmt::Debug for Magazine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Magazine")
            .field("idle", &std::array::from_fn::<_, 4, _>(|k| self.idle(k)))
            .field("pool_stock", &self.pool_stock)
            .finish_non_exhaustive()
    }
}

impl Default for Magazine {
    fn default() -> Self {
        Magazine::new()
    }
}

impl Magazine {
    pub(crate) fn new() -> Magazine {
        Magazine {
            busy: AtomicBool::new(false),
            stealing: AtomicBool::new(false),
            asymmetric: fence::asymmetric(),
            stacks: std::array::from_fn(|k| {
                Stack::new(PoolClass::non_oversize()[k].capacity(), ROUNDS[k])
            }),
            held: Default::default(),
            ticks: AtomicU32::new(TICK_EVERY),
            pool_stock: AtomicU64::new(0),
            slots: std::array::from_fn(|_| TenantSlot {
                account: AtomicPtr::new(std::ptr::null_mut()),
                stock: AtomicU64::new(0),
                buffers: AtomicU64::new(0),
            }),
            victim: AtomicUsize::new(0),
            hits: Default::default(),
            returned: Default::default(),
        }
    }

    /// Owner only: starts a section, or `None` while a freezer is at work (the caller then
    /// takes the slow path; nobody waits).
    #[inline(always)]
    pub(crate) fn enter(&self) -> Option<Section<'_>> {
        self.busy.store(true, Relaxed);
        fence::light(self.asymmetric);
        if self.stealing.load(Acquire) {
            self.busy.store(false, Release);
            return None;
        }
        Some(Section(Exclusive(self)))
    }

    /// Slabs of class index `k` waiting now (a figure: exact when frozen).
    pub(crate) fn idle(&self, k: usize) -> usize {
        self.stacks[k].len.load(Relaxed)
    }

    /// Slabs of class index `k` taken from this magazine for a buffer.
    pub(crate) fn hits(&self, k: usize) -> u64 {
        self.hits[k].load(Relaxed)
    }

    /// Slabs of class index `k` a buffer returned into this magazine.
    pub(crate) fn returned(&self, k: usize) -> u64 {
        self.returned[k].load(Relaxed)
    }

    /// The pool stock now (a figure: exact when frozen or on the owner's thread).
    pub(crate) fn pool_stock(&self) -> u64 {
        self.pool_stock.load(Relaxed)
    }

    /// The stock held for `account` now, if a slot is bound to it (a figure).
    pub(crate) fn stock_of(&self, account: *const TenantAccount) -> u64 {
        self.slots
            .iter()
            .filter(|slot| std::ptr::eq(slot.account.load(Relaxed), account))
            .map(|slot| slot.stock.load(Relaxed))
            .sum()
    }
}

impl Magazine {
    /// Buffers counted in the slot bound to `account`, wrapping (a figure).
    pub(crate) fn buffers_of(&self, account: *const TenantAccount) -> u64 {
        self.slots
            .iter()
            .filter(|slot| std::ptr::eq(slot.account.load(Relaxed), account))
            .fold(0u64, |sum, slot| {
                sum.wrapping_add(slot.buffers.load(Relaxed))
            })
    }
}

impl Drop for Magazine {
    fn drop(&mut self) {
        // `&mut self`: nobody else can reach the stacks.
        for stack in &self.stacks {
            while stack.pop_exclusive().is_some() {}
        }
    }
}

/// A magazine the caller has to itself: its owner inside a section, or a freezer.
#[derive(Clone, Copy)]
pub(crate) struct Exclusive<'a>(&'a Magazine);

impl<'a> Exclusive<'a> {
    pub(crate) fn magazine(self) -> &'a Magazine {
        self.0
    }

    /// Slabs of class index `k`.
    #[inline(always)]
    pub(crate) fn len(self, k: usize) -> usize {
        self.0.stacks[k].len.load(Relaxed)
    }

    /// The most recently pushed slab of class index `k`, if any.
    #[inline(always)]
    pub(crate) fn pop(self, k: usize) -> Option<Vec<u8>> {
        self.0.stacks[k].pop_exclusive()
    }

    /// The most recently pushed slab of class index `k` and when it went idle, if any.
    pub(crate) fn pop_idle(self, k: usize) -> Option<(Vec<u8>, u64)> {
        let since = self.0.stacks[k].top_since()?;
        Some((self.pop(k)?, since))
    }

    /// Moves every slab of class index `k` that went idle at or before `cutoff` (coarse
    /// milliseconds; `u64::MAX`: every slab) into `out`, with its stamp, oldest first;
    /// returns how many.
    pub(crate) fn take_idle_since(
        self,
        k: usize,
        cutoff: u64,
        out: &mut Vec<(Vec<u8>, u64)>,
    ) -> usize {
        self.0.stacks[k].take_idle_since(cutoff, out)
    }

    /// Pushes an empty slab of exactly its class's capacity while fewer than `upto` (and
    /// the class's rounds) are held, or hands it back. `since`: when it went idle (coarse
    /// milliseconds: [`super::clock::coarse`] for a slab a buffer just gave back).
    #[inline(always)]
    pub(crate) fn push(
        self,
        k: usize,
        upto: usize,
        slab: Vec<u8>,
        since: u64,
    ) -> Result<(), Vec<u8>> {
        self.0.stacks[k].push_exclusive(upto, slab, since)
    }

    /// Counts an acquire down; `true` every [`TICK_EVERY`]-th, when the caller (once out
    /// of its section) looks at the clock for the idle decay.
    #[inline(always)]
    pub(crate) fn tick(self) -> bool {
        let left = self.0.ticks.load(Relaxed).wrapping_sub(1);
        if left == 0 {
            self.0.ticks.store(TICK_EVERY, Relaxed);
            return true;
        }
        self.0.ticks.store(left, Relaxed);
        false
    }

    #[inline(always)]
    pub(crate) fn held(self, k: usize) -> usize {
        self.0.held[k].load(Relaxed)
    }

    #[inline(always)]
    pub(crate) fn set_held(self, k: usize, units: usize) {
        self.0.held[k].store(units, Relaxed);
    }

    #[inline(always)]
    pub(crate) fn count_hit(self, k: usize) {
        bump(&self.0.hits[k], 1);
    }

    #[inline(always)]
    pub(crate) fn count_returned(self, k: usize) {
        bump(&self.0.returned[k], 1);
    }

    #[inline(always)]
    pub(crate) fn pool_stock(self) -> u64 {
        self.0.pool_stock.load(Relaxed)
    }

    #[inline(always)]
    pub(crate) fn set_pool_stock(self, bytes: u64) {
        self.0.pool_stock.store(bytes, Relaxed);
    }

    /// The slot bound to `account`, if any.
    #[inline(always)]
    pub(crate) fn find(self, account: *const TenantAccount) -> Option<Slot<'a>> {
        self.0
            .slots
            .iter()
            .find(|slot| std::ptr::eq(slot.account.load(Relaxed), account))
            .map(Slot)
    }

    /// Every bound slot.
    pub(crate) fn bound(self) -> impl Iterator<Item = Slot<'a>> {
        self.0
            .slots
            .iter()
            .filter(|slot| !slot.account.load(Relaxed).is_null())
            .map(Slot)
    }

    /// A free slot, else the next victim (still bound: the caller unbinds it).
    pub(crate) fn victim(self) -> Slot<'a> {
        let free = self
            .0
            .slots
            .iter()
            .find(|s| s.account.load(Relaxed).is_null());
        free.map(Slot).unwrap_or_else(|| {
            let i = self.0.victim.load(Relaxed) % SLOTS;
            self.0.victim.store(i + 1, Relaxed);
            Slot(&self.0.slots[i])
        })
    }
}

/// One tenant stock slot of a magazine the caller has to itself.
#[derive(Clone, Copy)]
pub(crate) struct Slot<'a>(&'a TenantSlot);

impl Slot<'_> {
    #[inline(always)]
    pub(crate) fn account(self) -> *mut TenantAccount {
        self.0.account.load(Relaxed)
    }

    pub(crate) fn bind(self, account: *mut TenantAccount) {
        self.0.account.store(account, Relaxed);
        self.0.stock.store(0, Relaxed);
        self.0.buffers.store(0, Relaxed);
    }

    pub(crate) fn unbind(self) {
        self.bind(std::ptr::null_mut());
    }

    #[inline(always)]
    pub(crate) fn stock(self) -> u64 {
        self.0.stock.load(Relaxed)
    }

    #[inline(always)]
    pub(crate) fn set_stock(self, bytes: u64) {
        self.0.stock.store(bytes, Relaxed);
    }

    /// Buffers acquired minus dropped through this slot, wrapping.
    pub(crate) fn buffers(self) -> u64 {
        self.0.buffers.load(Relaxed)
    }

    /// Adds `delta` (wrapping: `u64::MAX` is -1) to the slot's buffer count.
    #[inline(always)]
    pub(crate) fn count_buffers(self, delta: u64) {
        bump(&self.0.buffers, delta);
    }
}

/// The owner's exclusive access to its magazine, from [`Magazine::enter`] until dropped.
pub(crate) struct Section<'a>(Exclusive<'a>);

impl<'a> std::ops::Deref for Section<'a> {
    type Target = Exclusive<'a>;

    #[inline(always)]
    fn deref(&self) -> &Exclusive<'a> {
        &self.0
    }
}

impl Drop for Section<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.0 .0.busy.store(false, Release);
    }
}

/// Every magazine of a list, frozen: the freezer has each to itself until this drops.
pub(crate) struct Frozen<'a> {
    magazines: &'a [Arc<Magazine>],
}

impl<'a> Frozen<'a> {
    /// Freezes every magazine of `magazines`. The caller keeps other freezers out (it
    /// holds the list's lock) and holds no free list's lock. `None`, freezing nothing,
    /// when the heavy fence could not be made.
    pub(crate) fn freeze(magazines: &'a [Arc<Magazine>]) -> Option<Frozen<'a>> {
        if magazines.is_empty() {
            return Some(Frozen { magazines }); // nothing to wait for: no fence needed
        }
        for magazine in magazines {
            magazine.stealing.store(true, Relaxed);
        }
        let frozen = Frozen { magazines };
        if !fence::heavy() {
            return None; // `frozen` drops: the flags are cleared
        }
        for magazine in magazines {
            let mut spins = 0u32;
            while magazine.busy.load(Acquire) {
                // A section is a few dozen instructions, unless its thread was preempted.
                spins += 1;
                // (Under loom every turn yields: a busy loop would multiply its schedules.)
                if spins < 64 && !cfg!(axon_loom) {
                    std::hint::spin_loop();
                } else {
                    yield_now();
                }
            }
        }
        Some(frozen)
    }

    /// Each frozen magazine.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Exclusive<'_>> + '_ {
        self.magazines.iter().map(|m| Exclusive(m))
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        for magazine in self.magazines {
            magazine.stealing.store(false, Release);
        }
    }
}

#[cfg(not(axon_loom))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(axon_loom)]
fn yield_now() {
    loom::thread::yield_now();
}

#[cfg(test)]
#[path = "magazine_tests.rs"]
mod tests;
