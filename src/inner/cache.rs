//! Per-thread caches of Small and Medium slabs, in front of the shared free lists.
//!
//! # Why
//!
//! On this crate's 2-core reference machine a locked atomic operation (a compare-and-swap,
//! a mutex lock or unlock) costs about 7 ns, and glibc's `malloc` + `free` of 4 KiB about
//! 17 ns. The shared-list path of a Small cycle takes eight of them (mutex lock and unlock
//! twice, the idle budget twice, the live bytes twice) and measured 89 ns. A cache slot
//! that its thread pops with one `swap` and pushes with one plain `store`, with counters
//! only its thread writes, brings the cycle down to one locked operation.
//!
//! # Protocol
//!
//! Each slot is an `AtomicPtr` holding either null or the pointer of an empty slab of exactly
//! the class's capacity; a non-null slot *owns* that allocation.
//!
//! 1. Only the owning thread fills a slot, with a `Release` store into a slot it saw null.
//!    Other threads only ever `swap` a slot to null, which never turns null into non-null,
//!    so the owner's store cannot overwrite a slab.
//! 2. Whoever takes a slab out (the owner popping, or `trim` / pool drop / thread exit
//!    stealing) does so with an `Acquire` `swap(null)`; the swap is atomic, so exactly one
//!    taker gets each pointer, and it rebuilds the `Vec` it came from.
//! 3. The `Release` / `Acquire` pair orders the previous owner's writes into the slab before
//!    the taker's use (or deallocation) of it.
//!
//! Counters in [`LocalCache`] are written only by the owning thread (a load and a store, no
//! locked instruction) and read by `snapshot`; a thread that exits folds them into the pool
//! under the registry lock, so a snapshot never counts them twice or loses them.
//!
//! # Idle budget
//!
//! A cache holds *units* of the pool's idle budget (one slot of its class's
//! `max_idle_per_class` and the class's capacity of `max_idle_bytes`) for its slots, filled or
//! not: popping a slab keeps the unit, so the next push needs no shared atomic. Units are
//! reserved from the same counters the shared lists use, so idle memory across lists and
//! caches never passes either cap; they go back when the thread exits.

use std::mem::ManuallyDrop;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize};

#[cfg(loom)]
use loom::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize};

use crate::PoolClass;

/// The classes a thread caches, and how many slabs of each.
pub(crate) const CACHED: [(PoolClass, usize); 2] = [(PoolClass::Small, 8), (PoolClass::Medium, 4)];
const MAX_SLOTS: usize = 8;

/// The cache index of `class`, if it is cached.
#[inline]
pub(crate) fn cached_index(class: PoolClass) -> Option<usize> {
    match class {
        PoolClass::Small => Some(0),
        PoolClass::Medium => Some(1),
        _ => None,
    }
}

/// Slots of empty slabs of one capacity. See the module docs for the protocol.
// The loom model shows that "no double free, no leak" holds under every interleaving of
// the owner's pop/push and another thread's steal_all.
#[derive(Debug)]
pub(crate) struct Slots {
    slots: [AtomicPtr<u8>; MAX_SLOTS],
    len: usize,
    capacity: usize,
}

impl Slots {
    pub(crate) fn new(capacity: usize, len: usize) -> Slots {
        assert!(len <= MAX_SLOTS, "at most {MAX_SLOTS} slots");
        Slots {
            slots: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            len,
            capacity,
        }
    }

    /// How many slots this cache uses.
    pub(crate) fn limit(&self) -> usize {
        self.len
    }

    /// Owner only: takes a slab from the first `upto` slots, if any holds one.
    #[inline]
    pub(crate) fn pop(&self, upto: usize) -> Option<Vec<u8>> {
        for slot in &self.slots[..upto.min(self.len)] {
            if slot.load(Relaxed).is_null() {
                continue;
            }
            let ptr = slot.swap(std::ptr::null_mut(), Acquire);
            if !ptr.is_null() {
                return Some(self.rebuild(ptr));
            }
        }
        None
    }

    /// Owner only: takes the slab in slot `index`, if any.
    pub(crate) fn pop_at(&self, index: usize) -> Option<Vec<u8>> {
        let ptr = self.slots[index].swap(std::ptr::null_mut(), Acquire);
        (!ptr.is_null()).then(|| self.rebuild(ptr))
    }

    /// Owner only: puts an empty slab of exactly this capacity into the first free slot
    /// among the first `upto`, or hands it back when they are all full.
    #[inline]
    pub(crate) fn push(&self, upto: usize, slab: Vec<u8>) -> Result<(), Vec<u8>> {
        assert!(
            slab.capacity() == self.capacity && slab.is_empty(),
            "only empty slabs of exactly the class's capacity enter a cache"
        );
        let free = self.slots[..upto.min(self.len)]
            .iter()
            .find(|s| s.load(Relaxed).is_null());
        let Some(slot) = free else {
            return Err(slab);
        };
        let mut slab = ManuallyDrop::new(slab);
        // Only this (owning) thread stores into slots, and others only swap to null, so the
        // slot is still null here (protocol rule 1).
        #[cfg(not(loom))]
        slot.store(slab.as_mut_ptr(), Release);
        // Under loom the store is a swap that checks rule 1 (the slot is still null, so the
        // swap and the store are the same operation): loom mis-models a plain store racing
        // another thread's swap and reports values no execution can produce
        // (tokio-rs/loom#389).
        #[cfg(loom)]
        {
            let previous = slot.swap(slab.as_mut_ptr(), Release);
            assert!(previous.is_null(), "push overwrote a slab");
        }
        Ok(())
    }

    /// Any thread: takes every slab out.
    pub(crate) fn steal_all(&self) -> Vec<Vec<u8>> {
        let mut stolen = Vec::new();
        for slot in &self.slots[..self.len] {
            let ptr = slot.swap(std::ptr::null_mut(), Acquire);
            if !ptr.is_null() {
                stolen.push(self.rebuild(ptr));
            }
        }
        stolen
    }

    /// Slabs waiting now.
    pub(crate) fn filled(&self) -> usize {
        self.slots[..self.len]
            .iter()
            .filter(|s| !s.load(Relaxed).is_null())
            .count()
    }

    #[inline]
    fn rebuild(&self, ptr: *mut u8) -> Vec<u8> {
        // SAFETY: a non-null slot holds a pointer `push` leaked from an empty global-allocator
        // `Vec<u8>` of capacity exactly `self.capacity` (asserted there); the atomic `swap`
        // made this caller its only taker (rule 2); length 0 needs nothing initialised.
        unsafe { Vec::from_raw_parts(ptr, 0, self.capacity) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        drop(self.steal_all());
    }
}

/// A counter written by one thread only: a load and a store, no locked instruction.
#[inline]
pub(crate) fn bump(counter: &AtomicU64, by: u64) {
    counter.store(counter.load(Relaxed).wrapping_add(by), Relaxed);
}

/// One thread's cache for one pool, shared with the pool's registry so `trim` and
/// `snapshot` reach it.
#[derive(Debug)]
pub(crate) struct LocalCache {
    pub(crate) slots: [Slots; 2],
    /// Idle-budget units held, per cached class (owner writes). A cache holding `n` units
    /// fills only its first `n` slots, so slots from `n` on are always empty.
    pub(crate) held: [AtomicUsize; 2],
    /// Slabs popped from the slots for a buffer (owner writes).
    pub(crate) hits: [AtomicU64; 2],
    /// Slabs a buffer returned into the slots (owner writes).
    pub(crate) returned: [AtomicU64; 2],
    /// Bytes charged minus bytes debited on this thread, wrapping (owner writes).
    pub(crate) live: AtomicU64,
}

impl LocalCache {
    pub(crate) fn new() -> LocalCache {
        LocalCache {
            slots: CACHED.map(|(class, len)| Slots::new(class.capacity(), len)),
            held: [AtomicUsize::new(0), AtomicUsize::new(0)],
            hits: [AtomicU64::new(0), AtomicU64::new(0)],
            returned: [AtomicU64::new(0), AtomicU64::new(0)],
            live: AtomicU64::new(0),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn push_pop_steal_round_trip() {
        let slots = Slots::new(4096, 2);
        assert!(slots.pop(2).is_none());
        let a = Vec::with_capacity(4096);
        let a_ptr = a.as_ptr();
        slots.push(2, a).unwrap();
        let refused = slots.push(1, Vec::with_capacity(4096)).unwrap_err();
        slots.push(2, refused).unwrap();
        let third = slots.push(2, Vec::with_capacity(4096)).unwrap_err();
        assert_eq!(third.capacity(), 4096);
        assert_eq!(slots.filled(), 2);
        let b = slots.pop_at(1).unwrap();
        assert_eq!((b.len(), b.capacity()), (0, 4096));
        let rest = slots.steal_all();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].as_ptr() == a_ptr || b.as_ptr() == a_ptr);
        assert_eq!(slots.filled(), 0);
        slots.push(2, b).unwrap();
        drop(slots); // frees the slab left in it
    }

    #[test]
    #[should_panic(expected = "exactly the class's capacity")]
    fn refuses_a_slab_of_another_capacity() {
        let slots = Slots::new(4096, 2);
        let _ = slots.push(2, Vec::with_capacity(8192));
    }

    #[test]
    fn owner_and_stealer_never_share_a_slab() {
        let slots = Slots::new(64, 4);
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    drop(slots.steal_all());
                }
            });
            for _ in 0..rounds {
                let slab = slots.pop(4).unwrap_or_else(|| Vec::with_capacity(64));
                let _ = slots.push(4, slab);
            }
        });
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// The owner pops and pushes while another thread steals: every slab is owned by exactly
    /// one side at the end: never both (a double free) and never neither (a leak).
    #[test]
    fn owner_pop_push_against_steal() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(16, 2));
            slots.push(2, Vec::with_capacity(16)).unwrap();
            let stealer = {
                let slots = Arc::clone(&slots);
                loom::thread::spawn(move || slots.steal_all().len())
            };
            let popped = slots.pop(2);
            let pushed_back = popped.map(|slab| slots.push(2, slab).is_ok());
            let stolen = stealer.join().unwrap();
            let left = slots.filled();
            // The one slab is in exactly one place: stolen, or popped (and maybe pushed back).
            match pushed_back {
                None => assert_eq!((stolen, left), (1, 0)),
                Some(true) => assert_eq!(stolen + left, 1),
                Some(false) => unreachable!("two free slots"),
            }
        });
    }

    #[test]
    fn owner_push_into_a_slot_being_stolen() {
        loom::model(|| {
            let slots = Arc::new(Slots::new(16, 1));
            let stealer = {
                let slots = Arc::clone(&slots);
                loom::thread::spawn(move || slots.steal_all().len())
            };
            let pushed = slots.push(1, Vec::with_capacity(16)).is_ok();
            let stolen = stealer.join().unwrap();
            assert!(pushed);
            assert_eq!(stolen + slots.filled(), 1);
        });
    }
}
