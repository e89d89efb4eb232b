//! A magazine's stack of empty slabs for one class: an array of raw pointers the owner
//! pushes and pops with plain loads and stores, and beside it the coarse time
//! ([`super::super::clock`]) each slab went idle, for the idle decay. Every method expects
//! the caller to have the stack to itself (a section or a freeze, by the protocol in
//! [`super`]'s docs).

use std::mem::ManuallyDrop;
#[cfg(not(axon_loom))]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

#[cfg(axon_loom)]
use loom::sync::atomic::AtomicUsize;

use super::MAX_ROUNDS;

#[cfg(axon_loom)]
use loom::cell::UnsafeCell;

/// `std`'s `UnsafeCell` with loom's access API, so loom can check every access.
#[cfg(not(axon_loom))]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(axon_loom))]
impl<T> UnsafeCell<T> {
    fn new(value: T) -> Self {
        UnsafeCell(std::cell::UnsafeCell::new(value))
    }

    #[inline(always)]
    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Empty slabs of one capacity: `slots[..len]` own their allocations, and `since[i]` is
/// when `slots[i]` went idle (coarse milliseconds).
pub(super) struct Stack {
    slots: UnsafeCell<[*mut u8; MAX_ROUNDS]>,
    since: UnsafeCell<[u64; MAX_ROUNDS]>,
    /// Written only with the magazine to oneself; read by anyone as a figure.
    pub(super) len: AtomicUsize,
    limit: usize,
    capacity: usize,
}

impl Stack {
    pub(super) fn new(capacity: usize, limit: usize) -> Stack {
        assert!(limit <= MAX_ROUNDS, "at most {MAX_ROUNDS} rounds");
        Stack {
            slots: UnsafeCell::new([std::ptr::null_mut(); MAX_ROUNDS]),
            since: UnsafeCell::new([0; MAX_ROUNDS]),
            len: AtomicUsize::new(0),
            limit,
            capacity,
        }
    }

    /// The caller has the stack to itself. When the top slab went idle (coarse
    /// milliseconds), if there is one.
    pub(super) fn top_since(&self) -> Option<u64> {
        let len = self.len.load(Relaxed);
        let top = len.checked_sub(1)?;
        // SAFETY: the caller has the stack to itself, so nothing writes the stamps
        // meanwhile; `top < len <= MAX_ROUNDS`.
        Some(self.since.with_mut(|since| unsafe { (*since)[top] }))
    }

    /// The caller has the stack to itself (a section, a freeze, or `&mut`).
    #[inline(always)]
    pub(super) fn pop_exclusive(&self) -> Option<Vec<u8>> {
        let len = self.len.load(Relaxed);
        if len == 0 {
            return None;
        }
        let ptr = self.slots.with_mut(|slots| {
            // SAFETY: the caller has the stack to itself (the protocol in the module docs),
            // so nothing else reads or writes the array meanwhile; `len - 1 < MAX_ROUNDS`.
            unsafe { (*slots)[len - 1] }
        });
        self.len.store(len - 1, Relaxed);
        // SAFETY: `slots[..len]` hold pointers `push_exclusive` took from empty slabs of
        // exactly `self.capacity`; shortening `len` first made this caller their only owner.
        Some(unsafe { Vec::from_raw_parts(ptr, 0, self.capacity) })
    }

    /// The caller has the stack to itself. Moves every slab that went idle at or before
    /// `cutoff` (coarse milliseconds; `u64::MAX`: all of them) into `out` with its stamp,
    /// keeping the others in their order; returns how many moved.
    pub(super) fn take_idle_since(&self, cutoff: u64, out: &mut Vec<(Vec<u8>, u64)>) -> usize {
        let len = self.len.load(Relaxed);
        let capacity = self.capacity;
        let mut kept = 0;
        self.slots.with_mut(|slots| {
            self.since.with_mut(|since| {
                // SAFETY: the caller has the stack to itself (the protocol in the module
                // docs), so nothing else reads or writes either array meanwhile.
                let (slots, since) = unsafe { (&mut *slots, &mut *since) };
                for i in 0..len {
                    if since[i] <= cutoff {
                        // SAFETY: as in `pop_exclusive`: `slots[..len]` own empty slabs of
                        // exactly `capacity`; each is taken over once here and never kept
                        // below `kept`, and `len` shrinks to `kept` before anyone else looks.
                        let slab = unsafe { Vec::from_raw_parts(slots[i], 0, capacity) };
                        out.push((slab, since[i]));
                    } else {
                        slots[kept] = slots[i];
                        since[kept] = since[i];
                        kept += 1;
                    }
                }
            });
        });
        self.len.store(kept, Relaxed);
        len - kept
    }

    /// The caller has the stack to itself. Refuses (hands back) a slab when the first
    /// `upto` slots are full, or one that is not empty and of exactly the class's capacity.
    /// `since` is when it went idle (coarse milliseconds).
    #[inline(always)]
    pub(super) fn push_exclusive(
        &self,
        upto: usize,
        slab: Vec<u8>,
        since: u64,
    ) -> Result<(), Vec<u8>> {
        let len = self.len.load(Relaxed);
        if len >= upto.min(self.limit) || slab.capacity() != self.capacity || !slab.is_empty() {
            return Err(slab);
        }
        let ptr = ManuallyDrop::new(slab).as_mut_ptr();
        self.slots.with_mut(|slots| {
            // SAFETY: the caller has the stack to itself; `len < limit <= MAX_ROUNDS`.
            unsafe { (*slots)[len] = ptr };
        });
        self.since.with_mut(|stamps| {
            // SAFETY: as above, for the stamps beside the slots.
            unsafe { (*stamps)[len] = since };
        });
        self.len.store(len + 1, Relaxed);
        Ok(())
    }
}
