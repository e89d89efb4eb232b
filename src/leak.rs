//! Sampled tracking of outstanding buffers, for finding the ones that never come back:
//! Netty's leak detector in Rust terms.
//!
//! Off by default, when it costs one branch per acquire. Turned on with
//! [`BufferPoolBuilder::leak_tracking`](crate::BufferPoolBuilder::leak_tracking), it records
//! one buffer in N at acquire (a per-thread countdown picks them, no shared counter) with the
//! time, class, capacity, tenant and, with
//! [`leak_backtraces`](crate::BufferPoolBuilder::leak_backtraces), the backtrace of the
//! acquisition; the record goes when the buffer (or its last `Bytes`) drops.
//! [`BufferPool::oldest_outstanding`](crate::BufferPool::oldest_outstanding) lists the
//! records still open, oldest first: a buffer that stays at the top of that list for
//! minutes is most likely leaked (held by a forgotten `Bytes` slice, a `mem::forget`, a
//! task that never finished).

use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::PoolClass;

/// One sampled buffer still outstanding, as [`BufferPool::oldest_outstanding`] reports it.
///
/// [`BufferPool::oldest_outstanding`]: crate::BufferPool::oldest_outstanding
#[non_exhaustive]
#[derive(Clone)]
pub struct OutstandingBuffer {
    /// Time since the buffer was acquired.
    pub age: Duration,
    /// Its class now (promotion changes it).
    pub class: PoolClass,
    /// Its capacity now, in bytes.
    pub capacity: usize,
    /// The tenant it is charged to, if any.
    pub tenant: Option<String>,
    /// Where it was acquired, when `leak_backtraces` is on (rendered by
    /// `std::backtrace::Backtrace`; symbols need debug info).
    pub backtrace: Option<String>,
}

impl fmt::Debug for OutstandingBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutstandingBuffer")
            .field("age", &self.age)
            .field("class", &self.class)
            .field("capacity", &self.capacity)
            .field("tenant", &self.tenant)
            .field("backtrace", &self.backtrace.as_ref().map(|_| ".."))
            .finish()
    }
}

struct Record {
    acquired: Instant,
    class: PoolClass,
    capacity: usize,
    tenant: Option<String>,
    backtrace: Option<Backtrace>,
}

thread_local! {
    /// Buffers this thread still lets pass before it samples one.
    static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}

/// The open records of one pool.
pub(crate) struct LeakTracker {
    every: u32,
    backtraces: bool,
    next_id: AtomicU64,
    records: Mutex<HashMap<u64, Record>>,
}

impl fmt::Debug for LeakTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeakTracker")
            .field("every", &self.every)
            .field("backtraces", &self.backtraces)
            .field("open", &self.records.lock().len())
            .finish()
    }
}

impl LeakTracker {
    /// `every` must be at least 1 (1 tracks every buffer).
    pub(crate) fn new(every: u32, backtraces: bool) -> LeakTracker {
        LeakTracker {
            every: every.max(1),
            backtraces,
            next_id: AtomicU64::new(1),
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Records this acquisition if it is this thread's turn; returns the record's id.
    pub(crate) fn sample(
        &self,
        class: PoolClass,
        capacity: usize,
        tenant: Option<&str>,
    ) -> Option<NonZeroU64> {
        let due = COUNTDOWN
            .try_with(|countdown| match countdown.get() {
                0 => {
                    countdown.set(self.every - 1);
                    true
                }
                n => {
                    countdown.set(n - 1);
                    false
                }
            })
            .unwrap_or(false);
        if !due {
            return None;
        }
        let record = Record {
            acquired: Instant::now(),
            class,
            capacity,
            tenant: tenant.map(str::to_owned),
            backtrace: self.backtraces.then(Backtrace::force_capture),
        };
        let id = self.next_id.fetch_add(1, Relaxed);
        self.records.lock().insert(id, record);
        NonZeroU64::new(id)
    }

    pub(crate) fn promoted(&self, id: NonZeroU64, class: PoolClass, capacity: usize) {
        if let Some(record) = self.records.lock().get_mut(&id.get()) {
            record.class = class;
            record.capacity = capacity;
        }
    }

    pub(crate) fn closed(&self, id: NonZeroU64) {
        let record = self.records.lock().remove(&id.get());
        drop(record); // a backtrace can be large: free it outside the lock
    }

    /// Open records, oldest first, at most `limit`.
    pub(crate) fn oldest(&self, limit: usize) -> Vec<OutstandingBuffer> {
        let now = Instant::now();
        let records = self.records.lock();
        let mut open: Vec<(&u64, &Record)> = records.iter().collect();
        open.sort_by_key(|(id, record)| (record.acquired, **id));
        open.into_iter()
            .take(limit)
            .map(|(_, record)| OutstandingBuffer {
                age: now.saturating_duration_since(record.acquired),
                class: record.class,
                capacity: record.capacity,
                tenant: record.tenant.clone(),
                backtrace: record.backtrace.as_ref().map(ToString::to_string),
            })
            .collect()
    }
}
