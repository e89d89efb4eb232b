//! How a thread finds its magazine for a pool: thread-locals, registration on a thread's
//! first acquire, and the magazine's return to the pool when the thread exits.
//!
//! The process-global pool has a slot of its own (one thread-local load, no search); other
//! pools' magazines are found by pool id in a short per-thread list, behind a one-entry
//! cache of the last one found (a thread that works with one pool, the common case,
//! searches once). Both fast paths ([`PoolRef::magazine`]) only look. The first acquire on
//! a thread registers a new magazine ([`PoolRef::magazine_or_register`]). The pool keeps
//! one *spare* magazine beside the registered ones, empty and in no thread's hands: a
//! registration makes it if the pool has none, and so does an acquire that finds no slab of
//! its class in its own magazine (a refill or a miss, which a producer whose buffers die
//! elsewhere meets every few acquires). Both points are on acquire paths, which may
//! allocate; neither depends on the charge stocks, so when a spare exists is a plain rule
//! (tests/model.rs follows it).
//!
//! A thread that only drops (a consumer thread, tokio's blocking pool, a worker that
//! stole the task) adopts the spare on its first drop ([`PoolRef::magazine_or_adopt`]):
//! a drop must not allocate (a registration does), so it takes the magazine an acquire
//! made for it, and its next drops take the fast path, as mimalloc's remote frees land in
//! a page of the freeing thread's own. Without a spare (another drop-only thread took it
//! and no acquire made a new one since), its drops take the slow paths. The adopted
//! magazine is the thread's from then on, as a registered one: its exit gives it back.

use std::cell::{Cell, OnceCell, RefCell};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::Relaxed;
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

/// This thread's entries for pools other than the global one.
struct Entries(RefCell<Vec<Entry>>);

impl Drop for Entries {
    /// The thread is exiting: forget the cached magazine before the entries (and the
    /// magazines they hold) go, so drops that run later on this thread take the slow path.
    fn drop(&mut self) {
        forget_last();
    }
}

thread_local! {
    /// The global pool's magazine for this thread as a plain pointer: null until the
    /// thread's first acquire, and again once its exit gave the magazine back. It has no
    /// destructor, so reading it is one load, with no check of a thread-local's state.
    static GLOBAL_MAGAZINE: Cell<*const Magazine> = const { Cell::new(std::ptr::null()) };
    /// Owns that magazine and gives it back when the thread exits.
    static GLOBAL_LOCAL: GlobalEntry = const { GlobalEntry(OnceCell::new()) };
    /// The id of the pool whose entry [`PoolRef::find_local`] found last, and that entry's
    /// magazine; pool id 0 (no pool has it) when none. It points into an entry of `LOCAL`
    /// only while that entry is there: set when an entry is found, cleared before any entry
    /// leaves (`Entries`' destructor, the sweep in `register`). No destructor, as for
    /// `GLOBAL_MAGAZINE`.
    static LAST: Cell<(u64, *const Magazine)> = const { Cell::new((0, std::ptr::null())) };
    static LOCAL: Entries = const { Entries(RefCell::new(Vec::new())) };
}

/// Clears [`LAST`].
fn forget_last() {
    let _ = LAST.try_with(|last| last.set((0, std::ptr::null())));
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
            match LAST.with(Cell::get) {
                (id, last) if id == self.id => NonNull::new(last.cast_mut())?,
                _ => self.find_local()?,
            }
        };
        // `ptr` points into an `Arc<Magazine>` held by this thread's entry (`GLOBAL_LOCAL`,
        // whose destructor nulls `GLOBAL_MAGAZINE` before letting go, or `LOCAL` for a pool
        // that is alive: `self` keeps it so, and `LAST` holds a pointer only while its
        // entry is in `LOCAL`; pool ids are never reused) and by the pool's magazine list
        // until `retire`.
        // SAFETY: so it is valid for this call: only the entry's destructor lets go of both,
        // at this thread's exit, never during a call (`register`'s sweep drops entries of
        // pools that are gone, never this one's); and magazines are only shared.
        Some(unsafe { ptr.as_ref() })
    }

    #[inline]
    fn find_local(&self) -> Option<NonNull<Magazine>> {
        let id = self.id;
        LOCAL
            .try_with(|entries| {
                let entries = entries.0.try_borrow().ok()?;
                let entry = entries.iter().find(|e| e.pool_id == id)?;
                let magazine = NonNull::from(&*entry.magazine);
                LAST.with(|last| last.set((id, magazine.as_ptr())));
                Some(magazine)
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

    /// The drop's path: this thread's magazine, adopting the pool's spare if the thread has
    /// none. Allocates nothing but what the first use of a thread-local needs.
    #[inline]
    pub(crate) fn magazine_or_adopt(&self) -> Option<&Magazine> {
        if let Some(mag) = self.magazine() {
            return Some(mag);
        }
        self.adopt()?;
        self.magazine()
    }

    /// Makes the pool's spare magazine if it has none (on an acquire path, out of any
    /// section: it may allocate). One relaxed load when a spare is there.
    #[inline]
    pub(crate) fn top_up_spare(&self) {
        if self.spare_taken.load(Relaxed) {
            self.make_spare();
        }
    }

    #[cold]
    fn make_spare(&self) {
        fence::init();
        let fresh = Arc::new(Magazine::new());
        let mut spare = self.spare.lock();
        if spare.is_none() {
            *spare = Some(fresh);
            self.spare_taken.store(false, Relaxed);
        }
    }

    /// Takes the pool's spare magazine into this thread's entry and the pool's list, or
    /// `None` (nothing changed) without a spare or when the thread-local storage, or any
    /// storage, is not to be had.
    #[cold]
    #[inline(never)]
    fn adopt(&self) -> Option<()> {
        if self.spare_taken.load(Relaxed) {
            return None;
        }
        // The entry is checked first: a thread-local that is gone (the thread is exiting)
        // must not cost the pool its spare.
        match &self.owner {
            None => GLOBAL_LOCAL
                .try_with(|entry| {
                    if entry.0.get().is_some() {
                        return None; // set, yet not found: only while its exit gives it back
                    }
                    let magazine = self.take_spare()?;
                    let ptr = Arc::as_ptr(&magazine);
                    let _ = entry.0.set(magazine);
                    GLOBAL_MAGAZINE.with(|mag| mag.set(ptr));
                    Some(())
                })
                .ok()
                .flatten(),
            Some(inner) => LOCAL
                .try_with(|entries| {
                    let mut entries = entries.0.try_borrow_mut().ok()?;
                    entries.try_reserve(1).ok()?;
                    let magazine = self.take_spare()?;
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

    /// The spare, already in the pool's magazine list (so the caller only has to install
    /// it), or `None`.
    fn take_spare(&self) -> Option<Arc<Magazine>> {
        let mut list = self.magazines.lock();
        list.try_reserve(1).ok()?;
        let magazine = {
            // The flag changes only under the spare's lock, so it never says "taken" while
            // a spare waits (nor the reverse, for long).
            let mut spare = self.spare.lock();
            let magazine = spare.take()?;
            self.spare_taken.store(true, Relaxed);
            magazine
        };
        list.push(Arc::clone(&magazine));
        Some(magazine)
    }

    #[cold]
    fn register(&self) -> Option<()> {
        fence::init();
        self.top_up_spare();
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
                    let mut entries = entries.0.try_borrow_mut().ok()?;
                    // Entries of pools that are gone hold nothing (the pool's drop emptied
                    // them).
                    forget_last();
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
