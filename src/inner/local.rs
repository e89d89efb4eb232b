//! How a thread finds its magazine for a pool: thread-locals, registration on a thread's
//! first acquire, and the magazine's return to the pool when the thread exits.
//!
//! The process-global pool has a slot of its own (one thread-local load, no search);
//! other pools' magazines are found by pool id in a short per-thread list. Both fast paths
//! ([`PoolRef::magazine`]) only look: a drop never registers (registering allocates, and a
//! drop must not), so a thread that only drops buffers has no magazine and its drops take
//! the slow paths. The first acquire on a thread registers ([`PoolRef::magazine_or_register`]).

use std::cell::{Cell, OnceCell, RefCell};
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use super::magazine::Magazine;
use super::{fence, PoolInner, PoolRef};

/// One thread's magazine for one pool, as the thread sees it.
struct Entry {
    pool_id: u64,
    magazine: Arc<Magazine>,
    /// Enough to give the magazine back when the thread exits, without keeping the pool
    /// alive.
    pool: Weak<PoolInner>,
}

impl Drop for Entry {
    /// The thread is exiting (or the pool is gone): give the magazine back to the pool.
    fn drop(&mut self) {
        if let Some(inner) = self.pool.upgrade() {
            inner.retire(&self.magazine);
        }
    }
}

/// This thread's magazine for the process-global pool: its own slot, so the global pool's
/// hot path needs no search.
struct GlobalEntry(OnceCell<Arc<Magazine>>);

impl Drop for GlobalEntry {
    /// The thread is exiting: give the magazine back to the global pool. Drops that run
    /// later on this thread (other thread-locals' destructors) find no magazine and take
    /// the slow path.
    fn drop(&mut self) {
        let _ = GLOBAL_MAGAZINE.try_with(|mag| mag.set(std::ptr::null()));
        if let Some(magazine) = self.0.get() {
            super::global().retire(magazine);
        }
    }
}

thread_local! {
    /// The global pool's magazine for this thread as a plain pointer: null until the
    /// thread's first acquire, and again once its exit gave the magazine back. It has no
    /// destructor, so reading it is one load, with no check of a thread-local's state.
    static GLOBAL_MAGAZINE: Cell<*const Magazine> = const { Cell::new(std::ptr::null()) };
    /// Owns that magazine and gives it back when the thread exits.
    static GLOBAL_LOCAL: GlobalEntry = const { GlobalEntry(OnceCell::new()) };
    static LOCAL: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

impl PoolRef {
    /// The fast path: this thread's magazine for this pool, if it has one and its
    /// thread-local storage is alive and not being changed.
    ///
    /// The reference is good for the current call on this thread: the magazine is held by
    /// this thread's entry, whose destructor runs at the thread's exit and never in the
    /// middle of a call that has a `PoolRef`.
    #[inline(always)]
    pub(crate) fn magazine(&self) -> Option<&Magazine> {
        let ptr = if self.is_global() {
            NonNull::new(GLOBAL_MAGAZINE.with(Cell::get).cast_mut())?
        } else {
            self.find_local()?
        };
        // `ptr` points into an `Arc<Magazine>` held by this thread's entry (`GLOBAL_LOCAL`,
        // whose destructor nulls `GLOBAL_MAGAZINE` before letting go, or `LOCAL` for a pool
        // that is alive: `self` keeps it so) and by the pool's magazine list until `retire`.
        // SAFETY: so it is valid for this call: only the entry's destructor lets go of both,
        // at this thread's exit, never during a call; and magazines are only shared.
        Some(unsafe { ptr.as_ref() })
    }

    #[inline]
    fn find_local(&self) -> Option<NonNull<Magazine>> {
        let id = self.id;
        LOCAL
            .try_with(|entries| {
                let entries = entries.try_borrow().ok()?;
                let entry = entries.iter().find(|e| e.pool_id == id)?;
                Some(NonNull::from(&*entry.magazine))
            })
            .ok()
            .flatten()
    }

    /// The slow path: this thread's magazine, registering one on first use. `None` when
    /// the thread-local storage is gone (a drop inside a thread-local destructor) or busy.
    pub(crate) fn magazine_or_register(&self) -> Option<&Magazine> {
        if let Some(mag) = self.magazine() {
            return Some(mag);
        }
        self.register()?;
        self.magazine()
    }

    #[cold]
    fn register(&self) -> Option<()> {
        fence::init();
        match &self.owner {
            None => GLOBAL_LOCAL
                .try_with(|entry| {
                    let magazine = entry.0.get_or_init(|| {
                        let magazine = Arc::new(Magazine::new());
                        self.magazines.lock().push(Arc::clone(&magazine));
                        magazine
                    });
                    GLOBAL_MAGAZINE.with(|mag| mag.set(Arc::as_ptr(magazine)));
                })
                .ok(),
            Some(inner) => LOCAL
                .try_with(|entries| {
                    let mut entries = entries.try_borrow_mut().ok()?;
                    // Entries of pools that are gone hold nothing (the pool's drop emptied
                    // them).
                    entries.retain(|e| e.pool.strong_count() > 0);
                    let magazine = Arc::new(Magazine::new());
                    self.magazines.lock().push(Arc::clone(&magazine));
                    entries.push(Entry {
                        pool_id: self.id,
                        magazine,
                        pool: Arc::downgrade(inner),
                    });
                    Some(())
                })
                .ok()
                .flatten(),
        }
    }
}
