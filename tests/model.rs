//! A proptest state machine: random sequences of acquire (with and without a tenant, sizes at
//! every class boundary), writes that grow, `read_from`, freeze, clone, slice, drop in random
//! order, `into_vec`, reservations, limit changes and trim run against a real pool and
//! against a plain single-threaded model written from DESIGN.md. After every step the pool's
//! snapshot must equal the model's prediction exactly, and at the end every live figure is 0.
//!
//! The model shares no code with the crate: it has its own class table, its own free-list,
//! cache-slot and budget-unit counts, and its own charge rules. It uses the crate's public
//! names only to read figures. Where DESIGN.md leaves room, it follows what the crate
//! documents: the thread cache in front of the shared lists (pool.rs, "Thread caches" and
//! "Caps": 8 Small and 4 Medium slabs, none of the bigger classes, refill half, spill half; src/inner/depot.rs: units of idle
//! budget reserved half a magazine at a time, at most that many kept beyond the idle
//! slabs, one once emptied by acquires), the pool's one spare magazine that a thread
//! without one adopts on its first drop (src/inner/local.rs), and the shared live figure
//! that bounds reservations (and every charge of a pool with `max_live_bytes`).
//!
//! Threads. Most operations run on the test thread, but some run on other threads, one at a
//! time (the test thread sends the work and waits for the answer, so the sequence stays
//! deterministic): a persistent *worker* acquires buffers and hands them back, drops objects
//! it is sent, and exits on demand (`WorkerAcquire`, `WorkerDrop`, `WorkerExit`), and fresh
//! *stranger* threads drop one object each (`StrangerDrop`). The model gives each thread
//! that has charged anything its own magazine (`Idle::caches`: the test thread's, the
//! worker's, and a stranger's while it runs); a thread that has none adopts the pool's
//! spare on its drop if there is one (`Idle::spare`), else returns to the shared lists; a
//! thread's exit (the worker's, every stranger's) moves its magazine home. Every figure,
//! live ones included, must match at every rest point. One operation is a race on purpose
//! (`RaceSnapshots`: snapshots taken while the worker cycles buffers must keep the idle
//! caps and count each slab once); the model re-synchronises after it.
//!
//! Memory is real, so sizes stay cheap: big slabs are allocated but only touched by writes
//! of at most `fill_max` bytes, and `max_live_bytes` (or, without it, `MAX_BIG`) bounds how
//! many can be outstanding. Under Miri the pool is built with `max_request_bytes` = 64 KiB
//! and only the Small and Medium boundaries are drawn.

use std::any::Any;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::thread;

use axon_buffer::{
    BufferPool, BufferPoolSnapshot, PoolClass, PoolError, PooledBuf, Reservation, Tenant,
    OVERFLOW_TENANT_ID,
};
use bytes::{BufMut, Bytes};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config as ProptestConfig;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

// ---------------------------------------------------------------------------------------
// The model's own class table (DESIGN.md: 4 KiB, 64 KiB, 1 MiB, 10 MiB; above: Oversize).
// ---------------------------------------------------------------------------------------

/// Capacities of the four pooled classes, smallest first. Index 4 is Oversize.
const CLASS_CAP: [u64; 4] = [4096, 65536, 1_048_576, 10_485_760];
const OVERSIZE: usize = 4;

/// Most Huge or Oversize buffers outstanding in a pool without `max_live_bytes`.
const MAX_BIG: usize = 4;

/// The smallest pooled class whose capacity holds `n`, else Oversize.
fn model_class(n: u64) -> usize {
    CLASS_CAP
        .iter()
        .position(|&cap| n <= cap)
        .unwrap_or(OVERSIZE)
}

/// The crate's name for a model class index: used only to read the snapshot's maps.
fn pool_class(i: usize) -> PoolClass {
    [
        PoolClass::Small,
        PoolClass::Medium,
        PoolClass::Large,
        PoolClass::Huge,
        PoolClass::Oversize,
    ][i]
}

// ---------------------------------------------------------------------------------------
// The pool under test: small caps, so that every cap and limit is reached.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Setup {
    default_soft: u64,
    idle_per_class: u64,
    idle_bytes: u64,
    max_request: u64,
    /// `max_live_bytes`, or none (buffers are then charged to per-thread figures).
    max_live: Option<u64>,
    t1_hard: u64,
    t1_soft: u64,
    /// Largest capacity a "fill to capacity" write fills (memory is real; Miri is slow).
    fill_max: u64,
    /// Longest write done one byte at a time through `Extend<u8>`.
    iter_max: u64,
}

const SETUP: Setup = if cfg!(miri) {
    Setup {
        default_soft: 8 * KIB as u64,
        idle_per_class: 3,
        // One Medium and two Small slabs: the byte cap bites before the list cap.
        idle_bytes: (64 * KIB + 2 * 4 * KIB) as u64,
        max_request: 64 * KIB as u64,
        max_live: Some(256 * KIB as u64),
        t1_hard: 80 * KIB as u64,
        t1_soft: 16 * KIB as u64,
        // Only Small slabs are filled, and loops that run per byte in the crate (`resize`,
        // `Extend<u8>`, the zero-fill of `read_from`) stay short: Miri interprets each byte.
        fill_max: 4 * KIB as u64,
        iter_max: 600,
    }
} else {
    Setup {
        default_soft: 64 * KIB as u64,
        idle_per_class: 3,
        // One Huge, one Large, two Medium and three Small slabs at most together.
        idle_bytes: (10 * MIB + MIB + 2 * 64 * KIB + 3 * 4 * KIB) as u64,
        max_request: 40 * MIB as u64,
        // Bounds the Huge and Oversize buffers outstanding at once (about six); without it
        // the test itself keeps at most `MAX_BIG` of them.
        max_live: Some(64 * MIB as u64),
        t1_hard: 2 * MIB as u64,
        t1_soft: MIB as u64,
        fill_max: MIB as u64,
        iter_max: 70_000,
    }
};

/// Tenants: "t0" (default limits), "t1" (hard limit), and an id too long to be tracked,
/// which is charged to the overflow tenant.
const TENANTS: usize = 3;

fn tenant_arg(t: usize) -> String {
    match t {
        0 => "t0".to_owned(),
        1 => "t1".to_owned(),
        _ => "x".repeat(300),
    }
}

fn tenant_key(t: usize) -> &'static str {
    ["t0", "t1", OVERFLOW_TENANT_ID][t]
}

fn acquire_sizes() -> Vec<usize> {
    let mut sizes = vec![0, 1, 4095, 4096, 4097, 65535, 65536, 65537];
    if !cfg!(miri) {
        sizes.extend([
            MIB - 1,
            MIB,
            MIB + 1,
            10 * MIB - 1,
            10 * MIB,
            10 * MIB + 1,
            12 * MIB,
            40 * MIB, // exactly max_request_bytes: allowed
        ]);
    }
    sizes.push(SETUP.max_request as usize + 1);
    sizes.push(usize::MAX);
    sizes
}

/// Sizes that press on t1's hard limit.
fn pressing_sizes() -> Vec<usize> {
    if cfg!(miri) {
        vec![4096, 4097, 65536]
    } else {
        vec![65537, MIB, MIB + 1, 10 * MIB + 1]
    }
}

fn write_lens() -> Vec<usize> {
    let mut lens = vec![0, 1, 100, 4095, 4096, 4097];
    if !cfg!(miri) {
        lens.push(65537);
    }
    lens
}

fn reserve_additionals() -> Vec<usize> {
    let mut adds = vec![0, 1, 4096, 4097, 65536];
    if !cfg!(miri) {
        adds.extend([MIB, 10 * MIB, 12 * MIB, 30 * MIB]);
    }
    adds.push(SETUP.max_request as usize + 1);
    adds.push(usize::MAX);
    adds
}

fn reservation_sizes() -> Vec<u64> {
    let s = SETUP;
    vec![
        0,
        1,
        4096,
        64 * KIB as u64,
        s.t1_hard,
        s.t1_hard + 1,
        s.max_live.unwrap(),
        s.max_live.unwrap() + 1,
        u64::MAX / 2,
        u64::MAX,
    ]
}

// ---------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------

/// Which of the candidate handles (or positions) an operation picks: `self.0 % count`.
#[derive(Debug, Clone, Copy)]
struct Pick(usize);

impl Pick {
    fn of(self, count: usize) -> usize {
        self.0 % count
    }
}

fn pick_strategy() -> impl Strategy<Value = Pick> {
    (0usize..64).prop_map(Pick)
}

#[derive(Debug, Clone, Copy)]
enum Via {
    /// `extend_from_slice` (reserves the whole length; panics on refusal).
    Extend,
    /// `BufMut::put_slice` (same).
    PutSlice,
    /// `resize` (same).
    Resize,
    /// `Extend<u8>` with an exact size hint (same).
    ExtendExact,
    /// `io::Write::write` (returns the refusal as an `io::Error`).
    IoWrite,
    /// `BufMut::put` of a slice: goes through `chunk_mut` / `advance_mut`, promoting one
    /// class at a time when the buffer is full.
    Put,
    /// `Extend<u8>` with no size hint: one byte at a time, promoting when full.
    ExtendIter,
}

#[derive(Debug, Clone, Copy)]
enum Len {
    Fixed(usize),
    /// Exactly up to the capacity, or one byte past it (skipped above `fill_max`).
    ToCapacity {
        past: bool,
    },
}

/// How many bytes `read_from` may append, against what the reader holds.
#[derive(Debug, Clone, Copy)]
enum ReadMax {
    /// Exactly what the reader holds.
    Exact,
    /// Half of it.
    Half,
    /// One more than it holds: the reader ends first.
    PlusOne,
    /// `usize::MAX` (as `PlusOne` above `fill_max`: `read_from` zero-fills what it lends).
    Unbounded,
}

#[derive(Debug, Clone, Copy)]
enum Additional {
    Fixed(usize),
    /// `capacity - len + 1`: one byte past the capacity.
    PastCapacity,
    /// `capacity - len`: exactly fits.
    ToCapacity,
}

#[derive(Debug, Clone)]
enum Op {
    Acquire {
        tenant: Option<usize>,
        size: usize,
        fallible: bool,
        fresh_handle: bool,
    },
    Write {
        target: Pick,
        len: Len,
        via: Via,
    },
    TryReserve {
        target: Pick,
        additional: Additional,
        panicking: bool,
    },
    Freeze {
        target: Pick,
        via_from: bool,
    },
    CloneBytes {
        target: Pick,
    },
    SliceBytes {
        target: Pick,
        a: Pick,
        b: Pick,
    },
    Drop {
        target: Pick,
    },
    IntoVec {
        target: Pick,
    },
    ReadFrom {
        target: Pick,
        /// What the reader holds.
        len: Len,
        max: ReadMax,
    },
    Truncate {
        target: Pick,
        to: Pick,
    },
    Reserve {
        tenant: usize,
        bytes: u64,
        fallible: bool,
    },
    SetHardLimit {
        limit: Option<u64>,
    },
    SetSoftLimit {
        tenant: usize,
        bytes: u64,
        via_pool: bool,
    },
    /// `n` acquires of one Small or Medium size in a row, then (unless `keep`) their drops
    /// in order: fills, empties and spills the thread cache.
    Burst {
        tenant: Option<usize>,
        size: usize,
        n: usize,
        keep: bool,
    },
    Trim,
    /// `n` acquires in a row on the worker thread (registering its magazine on the first
    /// that is charged), each buffer handed back to the main thread; then, if `cycle`, the
    /// worker drops them again in order (fills, spills and refills its magazine).
    WorkerAcquire {
        tenant: Option<usize>,
        size: usize,
        fallible: bool,
        n: usize,
        cycle: bool,
    },
    /// `n` objects (a buffer, one `Bytes` handle of a frozen group, or a reservation) sent
    /// to the worker thread one at a time, which drops them.
    WorkerDrop {
        target: Pick,
        n: usize,
    },
    /// One object dropped on a fresh thread that never acquired: it has no magazine.
    StrangerDrop {
        target: Pick,
    },
    /// The worker exits and is joined: its magazine comes home. The next worker operation
    /// starts a fresh worker.
    WorkerExit,
    /// The worker runs `rounds` cycles of "acquire 16 Small buffers, drop them all" while
    /// the main thread takes snapshots until it is done; which path each slab takes is
    /// timing-dependent, so the model re-synchronises after a trim.
    RaceSnapshots {
        rounds: usize,
    },
}

fn via_strategy() -> impl Strategy<Value = Via> {
    prop_oneof![
        Just(Via::Extend),
        Just(Via::PutSlice),
        Just(Via::Resize),
        Just(Via::ExtendExact),
        Just(Via::IoWrite),
        Just(Via::Put),
        Just(Via::ExtendIter),
    ]
}

fn len_strategy() -> impl Strategy<Value = Len> {
    prop_oneof![
        3 => select(write_lens()).prop_map(Len::Fixed),
        2 => any::<bool>().prop_map(|past| Len::ToCapacity { past }),
    ]
}

fn additional_strategy() -> impl Strategy<Value = Additional> {
    prop_oneof![
        3 => select(reserve_additionals()).prop_map(Additional::Fixed),
        2 => Just(Additional::PastCapacity),
        1 => Just(Additional::ToCapacity),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let s = SETUP;
    prop_oneof![
        8 => (
            prop::option::of(0..TENANTS),
            select(acquire_sizes()),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(tenant, size, fallible, fresh_handle)| Op::Acquire {
                tenant,
                size,
                fallible,
                fresh_handle,
            }),
        2 => (select(pressing_sizes()), any::<bool>()).prop_map(|(size, fallible)| {
            Op::Acquire {
                tenant: Some(1),
                size,
                fallible,
                fresh_handle: false,
            }
        }),
        5 => (pick_strategy(), len_strategy(), via_strategy())
            .prop_map(|(target, len, via)| Op::Write { target, len, via }),
        3 => (pick_strategy(), additional_strategy(), any::<bool>()).prop_map(
            |(target, additional, panicking)| Op::TryReserve {
                target,
                additional,
                panicking,
            }
        ),
        3 => (pick_strategy(), any::<bool>())
            .prop_map(|(target, via_from)| Op::Freeze { target, via_from }),
        2 => pick_strategy().prop_map(|target| Op::CloneBytes { target }),
        2 => (pick_strategy(), pick_strategy(), pick_strategy())
            .prop_map(|(target, a, b)| Op::SliceBytes { target, a, b }),
        7 => pick_strategy().prop_map(|target| Op::Drop { target }),
        1 => pick_strategy().prop_map(|target| Op::IntoVec { target }),
        2 => (
            pick_strategy(),
            len_strategy(),
            prop_oneof![
                Just(ReadMax::Exact),
                Just(ReadMax::Half),
                Just(ReadMax::PlusOne),
                Just(ReadMax::Unbounded),
            ],
        )
            .prop_map(|(target, len, max)| Op::ReadFrom { target, len, max }),
        1 => (pick_strategy(), pick_strategy())
            .prop_map(|(target, to)| Op::Truncate { target, to }),
        3 => (0..TENANTS, select(reservation_sizes()), any::<bool>()).prop_map(
            |(tenant, bytes, fallible)| Op::Reserve {
                tenant,
                bytes,
                fallible,
            }
        ),
        1 => select(vec![None, Some(0), Some(64 * KIB as u64), Some(s.t1_hard)])
            .prop_map(|limit| Op::SetHardLimit { limit }),
        1 => (
            0..TENANTS,
            select(vec![0, 4096, s.default_soft, MIB as u64, u64::MAX]),
            any::<bool>(),
        )
            .prop_map(|(tenant, bytes, via_pool)| Op::SetSoftLimit {
                tenant,
                bytes,
                via_pool,
            }),
        3 => (
            prop::option::of(0..TENANTS),
            select(vec![1, 4096, 4097, 65536]),
            1..if cfg!(miri) { 11usize } else { 20 },
            any::<bool>(),
        )
            .prop_map(|(tenant, size, n, keep)| Op::Burst {
                tenant,
                size,
                n,
                keep,
            }),
        1 => Just(Op::Trim),
        4 => (
            prop::option::of(0..TENANTS),
            prop_oneof![
                2 => select(acquire_sizes()),
                3 => select(vec![1, 4096, 4097, 65536]),
            ],
            any::<bool>(),
            count_strategy(),
            prop::bool::weighted(0.3),
        )
            .prop_map(|(tenant, size, fallible, n, cycle)| Op::WorkerAcquire {
                tenant,
                size,
                fallible,
                n,
                cycle,
            }),
        4 => (pick_strategy(), count_strategy())
            .prop_map(|(target, n)| Op::WorkerDrop { target, n }),
        2 => pick_strategy().prop_map(|target| Op::StrangerDrop { target }),
        1 => Just(Op::WorkerExit),
        1 => (1..if cfg!(miri) { 2usize } else { 6 })
            .prop_map(|rounds| Op::RaceSnapshots { rounds }),
    ]
}

/// How many objects one worker operation acquires or drops: mostly one, sometimes enough
/// to fill, spill and refill the worker's magazine.
fn count_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => Just(1usize),
        2 => 2..if cfg!(miri) { 6usize } else { 9 },
        // Past the 8 Small slots: a cycle spills.
        1 => if cfg!(miri) { 9..11usize } else { 9..17 },
    ]
}

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct TenantModel {
    live: u64,
    soft: u64,
    hard: Option<u64>,
    soft_exceeded: u64,
    hard_refusals: u64,
    buffers: u64,
}

/// One outstanding buffer (or frozen `Bytes` group) and what it holds.
#[derive(Debug, Clone)]
struct Obj {
    class: usize,
    cap: u64,
    charged: u64,
    tenant: Option<usize>,
    /// Content as runs of one byte value.
    runs: Vec<(u8, u64)>,
    len: u64,
    /// Live `Bytes` handles sharing it once frozen.
    refs: u32,
}

/// A thread's magazine: its cache of Small and Medium slabs in front of the shared lists
/// (pool.rs: "each thread keeps up to 8 Small and 4 Medium slabs"); Large and Huge slabs
/// wait on the shared lists only.
const CACHE_SLOTS: [usize; 4] = [8, 4, 0, 0];

/// The thread an operation runs on. Every thread that has acquired (or reserved, or grown a
/// buffer) has one magazine for the pool, registered by that first charge; a thread with
/// none adopts the pool's spare magazine on the drop that returns a slab, if the pool has
/// a spare (`Idle::spare`), and keeps it; else its drops go to the shared lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// The test thread: every operation but the worker's and strangers' runs here.
    Main,
    /// The persistent worker thread (a fresh one after `WorkerExit`).
    Worker,
    /// A fresh thread that only drops one object and exits: a magazine only if it adopts
    /// the spare, given back at its exit.
    Stranger,
}

impl On {
    /// The index of the thread's magazine in `Idle::caches`.
    fn cache(self) -> usize {
        match self {
            On::Main => 0,
            On::Worker => 1,
            On::Stranger => 2,
        }
    }
}

/// Units a magazine reserves at once for a return, and the most it keeps beyond the slabs
/// it caches (src/inner/depot.rs, `spare`): half its slots, at least one; none for a class
/// it does not cache.
fn spare_units(k: usize) -> usize {
    match CACHE_SLOTS[k] {
        0 => 0, // not cached
        slots => (slots / 2).max(1),
    }
}

/// One thread's magazine: slabs and units of idle budget held, per pooled class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cache {
    /// Slabs cached, per class.
    cached: [usize; 4],
    /// Units held, per class: never fewer than the slabs cached, at most `spare_units` more
    /// (a return reserves that many at once, and a magazine keeps the unit of a slab it
    /// hands out, so the next returns need no shared atomic), at most one more when it
    /// caches none, and at most `CACHE_SLOTS`.
    held: [usize; 4],
}

/// Where slabs wait, and the idle budget they take. Both caps (`max_idle_per_class`,
/// `max_idle_bytes`) are kept on *units*: one per slab on a shared list, and the units each
/// magazine holds (`trim` empties every magazine and frees its units; a magazine whose
/// thread exits moves its slabs to the shared lists with their units and frees its spares).
#[derive(Debug, Clone)]
struct Idle {
    /// Slabs on the shared list, per pooled class.
    shared: [u64; 4],
    /// Units taken per pooled class: shared slabs plus units held by the magazines.
    units: [u64; 4],
    /// The magazines of the main thread, the worker and the running stranger
    /// (`On::cache`), once registered or adopted.
    caches: [Option<Cache>; 3],
    /// The pool holds a spare magazine, empty, for the next thread without one to adopt on
    /// a drop. None at first; made by a thread's registration, and by an acquire of a
    /// pooled class that finds no slab of it in the thread's own magazine (a refill or a
    /// miss), when there is none; taken by an adoption.
    spare: bool,
}

impl Idle {
    fn idle_slabs(&self) -> [u64; 4] {
        let mut idle = self.shared;
        for cache in self.caches.iter().flatten() {
            for (idle, cached) in idle.iter_mut().zip(cache.cached) {
                *idle += cached as u64;
            }
        }
        idle
    }

    fn idle_bytes(&self) -> u64 {
        let idle = self.idle_slabs();
        (0..4).map(|c| idle[c] * CLASS_CAP[c]).sum()
    }

    fn budget(&self) -> u64 {
        (0..4).map(|c| self.units[c] * CLASS_CAP[c]).sum()
    }
}

#[derive(Debug, Clone)]
struct Model {
    s: Setup,
    idle: Idle,
    hits: [u64; 4],
    misses: [u64; 4],
    oversize: u64,
    discarded: [u64; 5],
    outstanding: [u64; 5],
    too_large: u64,
    pool_limit: u64,
    promotions: u64,
    /// Live bytes of buffers and reservations.
    live: u64,
    /// The part of `live` charged to the pool's shared figure: reservations, and every
    /// charge of a pool with `max_live_bytes`. (Without one, buffers are charged to the
    /// thread's own figure, with no limit to check.) Bounded by `max_live_bytes`, else by
    /// 2^63 - 1, so no sum can wrap.
    shared_live: u64,
    reserved: u64,
    tenants: [TenantModel; TENANTS],
    objs: BTreeMap<u64, Obj>,
    next_obj: u64,
}

type ObjId = u64;

impl Model {
    fn new(s: Setup) -> Model {
        let mut tenants: [TenantModel; TENANTS] = Default::default();
        for t in &mut tenants {
            t.soft = s.default_soft;
        }
        tenants[1].hard = Some(s.t1_hard);
        tenants[1].soft = s.t1_soft;
        Model {
            s,
            idle: Idle {
                shared: [0; 4],
                units: [0; 4],
                caches: [None; 3],
                spare: false,
            },
            hits: [0; 4],
            misses: [0; 4],
            oversize: 0,
            discarded: [0; 5],
            outstanding: [0; 5],
            too_large: 0,
            pool_limit: 0,
            promotions: 0,
            live: 0,
            shared_live: 0,
            reserved: 0,
            tenants,
            objs: BTreeMap::new(),
            next_obj: 0,
        }
    }

    fn too_large(&mut self, requested: u64, max: u64) -> PoolError {
        self.too_large += 1;
        PoolError::TooLarge { requested, max }
    }

    /// The thread's magazine, registered on its first charge (unless it adopted one); a
    /// registration makes the spare magazine if the pool has none.
    fn register(&mut self, on: On) {
        let cache = &mut self.idle.caches[on.cache()];
        if cache.is_none() {
            *cache = Some(Cache::default());
            self.idle.spare = true;
        }
    }

    /// A thread without a magazine, on the drop that returns a slab (whatever its class):
    /// it adopts the pool's spare, if there is one.
    fn adopt(&mut self, on: On) {
        let cache = &mut self.idle.caches[on.cache()];
        if cache.is_none() && self.idle.spare {
            *cache = Some(Cache::default());
            self.idle.spare = false;
        }
    }

    /// A charge, all or nothing: the tenant first (overflow, then its hard limit), then
    /// the pool. A buffer of a pool without `max_live_bytes` is charged to its thread's
    /// figure, unchecked; everything else to the shared figure, within `max_live_bytes`
    /// (refused as the pool limit) or 2^63 - 1 (refused as too large). Equal to a limit is
    /// allowed.
    fn charge(
        &mut self,
        on: On,
        tenant: Option<usize>,
        bytes: u64,
        reservation: bool,
    ) -> Result<(), PoolError> {
        // Any charge (acquire, growth, reservation; refused or not) registers the thread's
        // magazine first.
        self.register(on);
        if let Some(t) = tenant {
            let live = self.tenants[t].live;
            let Some(after) = live.checked_add(bytes) else {
                return Err(self.too_large(bytes, u64::MAX));
            };
            if let Some(limit) = self.tenants[t].hard {
                if after > limit {
                    self.tenants[t].hard_refusals += 1;
                    return Err(PoolError::TenantHardLimit {
                        tenant: tenant_key(t).to_owned(),
                        requested: bytes,
                        live,
                        limit,
                        needed: bytes,
                    });
                }
            }
        }
        let shared = reservation || self.s.max_live.is_some();
        if shared {
            let limit = self.s.max_live.unwrap_or(i64::MAX as u64);
            let Some(after) = self.shared_live.checked_add(bytes) else {
                return Err(self.too_large(bytes, u64::MAX)); // the counter itself would wrap
            };
            if after > limit {
                if self.s.max_live.is_none() {
                    return Err(self.too_large(bytes, limit));
                }
                self.pool_limit += 1;
                return Err(PoolError::PoolLimit {
                    requested: bytes,
                    live: self.shared_live,
                    limit,
                    needed: bytes,
                });
            }
            self.shared_live = after;
        }
        self.live += bytes;
        if let Some(t) = tenant {
            self.tenants[t].live += bytes;
        }
        Ok(())
    }

    /// Bytes a charge may still take under the tenant's hard limit and `max_live_bytes`.
    fn room(&self, tenant: Option<usize>) -> u64 {
        let pool = self
            .s
            .max_live
            .map_or(u64::MAX, |m| m.saturating_sub(self.live));
        let tenant = tenant
            .and_then(|t| {
                self.tenants[t]
                    .hard
                    .map(|h| h.saturating_sub(self.tenants[t].live))
            })
            .unwrap_or(u64::MAX);
        pool.min(tenant)
    }

    /// The seed's soft-limit counting, after a charge succeeded.
    fn count_soft(&mut self, tenant: Option<usize>) {
        if let Some(t) = tenant {
            let acc = &mut self.tenants[t];
            if acc.live > acc.soft {
                acc.soft_exceeded += 1;
            }
        }
    }

    fn debit(&mut self, tenant: Option<usize>, bytes: u64, reservation: bool) {
        self.live -= bytes;
        if reservation || self.s.max_live.is_some() {
            self.shared_live -= bytes;
        }
        if let Some(t) = tenant {
            self.tenants[t].live -= bytes;
        }
    }

    /// One unit of idle budget for `class`, if both caps have room.
    fn reserve_unit(&mut self, class: usize) -> bool {
        self.reserve_units(class, 1) == 1
    }

    /// Up to `want` units of idle budget for `class`: as many as both caps have room for.
    fn reserve_units(&mut self, class: usize, want: usize) -> usize {
        let per_class = self.s.idle_per_class.saturating_sub(self.idle.units[class]);
        let bytes = self.s.idle_bytes.saturating_sub(self.idle.budget()) / CLASS_CAP[class];
        let got = (want as u64).min(per_class).min(bytes);
        self.idle.units[class] += got;
        got as usize
    }

    /// A slab from the magazine, else a refill of half its slots from the shared list (one
    /// hit; the units of the moved slabs go to the magazine, as many as it needs).
    fn take_cached(&mut self, c: &mut Cache, k: usize) -> bool {
        let held = c.held[k];
        if c.cached[k] > 0 {
            c.cached[k] -= 1;
            self.hits[k] += 1;
            // Past `spare_units` beyond the idle slabs, or more than one once none is left,
            // the units beyond one go back: a thread that takes buffers for others to drop
            // hands their returns the budget half a magazine at a time.
            let cached = c.cached[k];
            if held > cached + spare_units(k) || (cached == 0 && held > 1) {
                c.held[k] = cached + 1;
                self.idle.units[k] -= (held - (cached + 1)) as u64;
            }
            return true;
        }
        let take = self.idle.shared[k].min(CACHE_SLOTS[k] as u64 / 2 + 1) as usize;
        if take == 0 {
            return false;
        }
        self.idle.shared[k] -= take as u64;
        self.hits[k] += 1;
        let moved = take - 1;
        c.held[k] = moved + 1;
        self.idle.units[k] -= held as u64;
        c.cached[k] = moved;
        true
    }

    /// A returned slab into the magazine: a spare unit, else (after spilling the upper half
    /// of a full magazine to the shared list) newly reserved units, `spare_units` at once
    /// (fewer where the slots or the caps have no room for more). False: no room for one.
    fn give_cached(&mut self, c: &mut Cache, k: usize) -> bool {
        let mut held = c.held[k];
        if c.cached[k] < held {
            c.cached[k] += 1;
            return true;
        }
        if held == CACHE_SLOTS[k] {
            // Full (as many slabs as units): the upper half moves, units and all.
            let keep = held / 2;
            self.idle.shared[k] += (held - keep) as u64;
            c.cached[k] = keep;
            held = keep;
            c.held[k] = held;
        }
        let got = self.reserve_units(k, spare_units(k).min(CACHE_SLOTS[k] - held));
        if got == 0 {
            return false;
        }
        c.held[k] = held + got;
        c.cached[k] += 1;
        true
    }

    /// A slab for a buffer taken on thread `on`: a hit (its magazine, then the shared list),
    /// a miss, or an Oversize allocation. A pooled slab not found in the thread's own
    /// magazine makes the spare magazine if the pool has none.
    fn take(&mut self, class: usize, on: On) {
        self.outstanding[class] += 1;
        if class == OVERSIZE {
            self.oversize += 1;
            return;
        }
        let i = on.cache();
        if self.idle.caches[i].is_none_or(|c| c.cached[class] == 0) {
            self.idle.spare = true;
        }
        if let Some(mut c) = self.idle.caches[i].filter(|_| CACHE_SLOTS[class] > 0) {
            let hit = self.take_cached(&mut c, class);
            self.idle.caches[i] = Some(c);
            if !hit {
                self.misses[class] += 1; // the shared list is empty too
            }
            return;
        }
        if self.idle.shared[class] > 0 {
            self.idle.shared[class] -= 1;
            self.idle.units[class] -= 1;
            self.hits[class] += 1;
        } else {
            self.misses[class] += 1;
        }
    }

    /// A slab coming back from a buffer on thread `on` (which adopts the spare magazine
    /// first if it has none): into its magazine, onto the shared list, or freed (discarded)
    /// when the caps have no room; Oversize slabs, and slabs not of their class's capacity,
    /// are always freed.
    fn release(&mut self, class: usize, cap: u64, on: On) {
        self.adopt(on);
        self.outstanding[class] -= 1;
        if class == OVERSIZE || cap != CLASS_CAP[class] {
            self.discarded[class] += 1;
            return;
        }
        let i = on.cache();
        if let Some(mut c) = self.idle.caches[i].filter(|_| CACHE_SLOTS[class] > 0) {
            let given = self.give_cached(&mut c, class);
            self.idle.caches[i] = Some(c);
            if given {
                return;
            }
        }
        if self.reserve_unit(class) {
            self.idle.shared[class] += 1;
        } else {
            self.discarded[class] += 1;
        }
    }

    fn acquire(
        &mut self,
        on: On,
        tenant: Option<usize>,
        requested: usize,
    ) -> Result<ObjId, PoolError> {
        let n = requested as u64;
        if n > self.s.max_request {
            return Err(self.too_large(n, self.s.max_request));
        }
        let class = model_class(n);
        let cap = if class == OVERSIZE {
            n
        } else {
            CLASS_CAP[class]
        };
        self.charge(on, tenant, cap, false)?;
        self.take(class, on);
        self.count_soft(tenant);
        if let Some(t) = tenant {
            self.tenants[t].buffers += 1;
        }
        let id = self.next_obj;
        self.next_obj += 1;
        self.objs.insert(
            id,
            Obj {
                class,
                cap,
                charged: cap,
                tenant,
                runs: Vec::new(),
                len: 0,
                refs: 0,
            },
        );
        Ok(id)
    }

    /// `try_reserve(additional)`: nothing when it fits, else promotion to the class that
    /// fits `len + additional`; Oversize grows by at least doubling (within
    /// `max_request_bytes`). One net charge, counted against the soft limit once.
    fn try_reserve(&mut self, id: ObjId, additional: usize) -> Result<(), PoolError> {
        let o = self.objs[&id].clone();
        let needed = o.len.checked_add(additional as u64);
        let max = self.s.max_request;
        let needed = match needed {
            Some(n) if n <= o.cap && n <= max => return Ok(()),
            Some(n) if n <= max => n,
            other => return Err(self.too_large(other.unwrap_or(u64::MAX), max)),
        };
        let class = model_class(needed);
        let cap = if class == OVERSIZE {
            // At least doubling, unless the doubling alone would not fit the room the
            // limits leave: then exactly what is needed.
            let doubled = o.cap.saturating_mul(2).min(max).max(needed);
            // The room at rest, whatever other threads hold prepaid (DESIGN.md, "Exact from
            // any thread"; see `oversize_growth_at_rest_ignores_other_threads_stock`).
            let room = self.room(o.tenant);
            if doubled > needed && doubled - o.charged > room {
                needed
            } else {
                doubled
            }
        } else {
            CLASS_CAP[class]
        };
        let extra = cap - o.charged;
        // A growth step's refusal names the buffer's whole new capacity as `needed`.
        self.charge(On::Main, o.tenant, extra, false)
            .map_err(|mut err| {
                if let PoolError::TenantHardLimit { needed, .. }
                | PoolError::PoolLimit { needed, .. } = &mut err
                {
                    *needed = cap;
                }
                err
            })?;
        if class == OVERSIZE && o.class == OVERSIZE {
            self.oversize += 1; // grown in place: a new Oversize allocation, same buffer
        } else {
            self.take(class, On::Main);
            self.release(o.class, o.cap, On::Main);
        }
        self.count_soft(o.tenant);
        self.promotions += 1;
        let o = self.objs.get_mut(&id).unwrap();
        o.class = class;
        o.cap = cap;
        o.charged += extra;
        Ok(())
    }

    fn append(&mut self, id: ObjId, value: u8, n: u64) {
        if n == 0 {
            return;
        }
        let o = self.objs.get_mut(&id).unwrap();
        match o.runs.last_mut() {
            Some((v, len)) if *v == value => *len += n,
            _ => o.runs.push((value, n)),
        }
        o.len += n;
    }

    /// Writes that reserve their whole length first (`extend_from_slice`, `put_slice`,
    /// `resize`, `io::Write`, `Extend` with an exact hint).
    fn write_all(&mut self, id: ObjId, value: u8, n: usize) -> Result<(), PoolError> {
        self.try_reserve(id, n)?;
        self.append(id, value, n as u64);
        Ok(())
    }

    /// `BufMut::put` / `Extend<u8>` without a size hint: fill the spare capacity, and when
    /// full, reserve one more byte (a promotion to the class that fits `len + 1`).
    fn write_chunked(&mut self, id: ObjId, value: u8, n: usize) -> Result<(), PoolError> {
        let mut rest = n as u64;
        while rest > 0 {
            let (len, cap) = (self.objs[&id].len, self.objs[&id].cap);
            if len == cap {
                self.try_reserve(id, 1)?;
            }
            let (len, cap) = (self.objs[&id].len, self.objs[&id].cap);
            let chunk = (cap - len).min(self.s.max_request - len).min(rest);
            self.append(id, value, chunk);
            rest -= chunk;
        }
        Ok(())
    }

    /// `read_from(reader, max)` with a reader holding `available` bytes: appends up to
    /// `max` bytes, growing (one class at a time, as a write past capacity) only when the
    /// buffer is full and the reader still has bytes; a reader at end of file needs no
    /// room. A refused growth ends the call with an error; what was read stays.
    fn read_from(
        &mut self,
        id: ObjId,
        value: u8,
        available: usize,
        max: usize,
    ) -> (u64, Result<(), PoolError>) {
        let (available, max) = (available as u64, max as u64);
        let mut total = 0;
        let spare = |m: &Model| {
            let o = &m.objs[&id];
            o.cap.min(m.s.max_request) - o.len
        };
        while total < max && total < available {
            if spare(self) == 0 {
                if let Err(err) = self.try_reserve(id, 1) {
                    return (total, Err(err));
                }
            }
            let read = (max - total).min(spare(self)).min(available - total);
            self.append(id, value, read);
            total += read;
        }
        (total, Ok(()))
    }

    fn truncate(&mut self, id: ObjId, to: u64) {
        let o = self.objs.get_mut(&id).unwrap();
        let mut kept = 0;
        let mut runs = Vec::new();
        for &(v, n) in &o.runs {
            if kept == to {
                break;
            }
            let take = n.min(to - kept);
            runs.push((v, take));
            kept += take;
        }
        o.runs = runs;
        o.len = o.len.min(to);
    }

    /// The last owner of a buffer dropped, on thread `on`.
    fn drop_obj(&mut self, id: ObjId, on: On) {
        let o = self.objs.remove(&id).unwrap();
        self.release(o.class, o.cap, on);
        self.debit(o.tenant, o.charged, false);
        if let Some(t) = o.tenant {
            self.tenants[t].buffers -= 1;
        }
    }

    /// `into_vec`: the slab leaves the pool; the charge is debited now.
    fn detach(&mut self, id: ObjId) -> Obj {
        let o = self.objs.remove(&id).unwrap();
        self.outstanding[o.class] -= 1;
        self.debit(o.tenant, o.charged, false);
        if let Some(t) = o.tenant {
            self.tenants[t].buffers -= 1;
        }
        o
    }

    fn reserve(&mut self, t: usize, bytes: u64) -> Result<(), PoolError> {
        self.charge(On::Main, Some(t), bytes, true)?;
        self.count_soft(Some(t));
        self.reserved += bytes;
        Ok(())
    }

    fn unreserve(&mut self, t: usize, bytes: u64) {
        self.debit(Some(t), bytes, true);
        self.reserved -= bytes;
    }

    /// Memory is real: without `max_live_bytes` to bound them, the test keeps at most
    /// `MAX_BIG` Huge or Oversize buffers outstanding, and skips steps that would make more.
    fn too_many_big(&self) -> bool {
        self.s.max_live.is_none() && self.objs.values().filter(|o| o.class >= 3).count() > MAX_BIG
    }

    /// Frees every idle slab, shared or cached by any thread, with every unit of idle
    /// budget they held (the magazines' spare ones too: no memory is behind them). The
    /// magazines stay registered, empty.
    fn trim(&mut self) -> u64 {
        let freed = self.idle.idle_bytes();
        for c in 0..4 {
            self.idle.units[c] -= self.idle.shared[c];
            self.idle.shared[c] = 0;
        }
        for cache in self.idle.caches.iter_mut().flatten() {
            for c in 0..4 {
                self.idle.units[c] -= cache.held[c] as u64;
            }
            *cache = Cache::default();
        }
        freed
    }

    /// A thread exits (the worker, a stranger): its magazine comes home. Every slab it
    /// caches moves to its class's shared list with its unit, its spare units go back to
    /// the budget (its hit and return counts stay counted). The next thread starts with no
    /// magazine; the pool's spare stays as it was.
    fn retire(&mut self, on: On) {
        let Some(c) = self.idle.caches[on.cache()].take() else {
            return;
        };
        for k in 0..4 {
            self.idle.shared[k] += c.cached[k] as u64;
            self.idle.units[k] -= (c.held[k] - c.cached[k]) as u64;
        }
    }

    fn figures(&self) -> Figures {
        let four = |a: &[u64; 4]| *a;
        Figures {
            hits: four(&self.hits),
            misses: four(&self.misses),
            idle_slabs: self.idle.idle_slabs(),
            idle_bytes: self.idle.idle_bytes(),
            oversize_allocations: self.oversize,
            live_bytes: self.live,
            reserved_bytes: self.reserved,
            discarded: self.discarded,
            outstanding: self.outstanding,
            too_large: self.too_large,
            pool_limit_refusals: self.pool_limit,
            alloc_failures: 0,
            promotions: self.promotions,
            tenants: (0..TENANTS)
                .map(|t| {
                    let a = &self.tenants[t];
                    (
                        tenant_key(t).to_owned(),
                        TenantFigures {
                            live: a.live,
                            soft_exceeded: a.soft_exceeded,
                            hard_refusals: a.hard_refusals,
                            buffers: a.buffers,
                        },
                    )
                })
                .collect(),
        }
    }
}

/// Every figure compared after each step, read from the model or from a snapshot.
#[derive(Debug, PartialEq, Eq)]
struct Figures {
    hits: [u64; 4],
    misses: [u64; 4],
    idle_slabs: [u64; 4],
    idle_bytes: u64,
    oversize_allocations: u64,
    live_bytes: u64,
    reserved_bytes: u64,
    discarded: [u64; 5],
    outstanding: [u64; 5],
    too_large: u64,
    pool_limit_refusals: u64,
    alloc_failures: u64,
    promotions: u64,
    tenants: BTreeMap<String, TenantFigures>,
}

#[derive(Debug, PartialEq, Eq)]
struct TenantFigures {
    live: u64,
    soft_exceeded: u64,
    hard_refusals: u64,
    buffers: u64,
}

/// The model's index of a crate class name.
fn class_index(class: PoolClass) -> usize {
    (0..5).find(|&i| pool_class(i) == class).unwrap()
}

// The snapshot's maps are read by iterating them, never by lookups: hashing is slow under
// Miri, and this runs after every step.

fn per_class<const N: usize>(map: &HashMap<PoolClass, u64>, what: &str) -> [u64; N] {
    let mut figures = [None; N];
    for (&class, &value) in map {
        let slot = figures.get_mut(class_index(class));
        let slot = slot.unwrap_or_else(|| panic!("{what}: unexpected key {class:?}"));
        *slot = Some(value);
    }
    assert_eq!(map.len(), N, "{what}: expected {N} class keys: {map:?}");
    figures.map(|f| f.unwrap_or_else(|| panic!("{what}: a class key is missing: {map:?}")))
}

fn figures_of(snap: &BufferPoolSnapshot) -> Figures {
    let mut tenants: BTreeMap<String, [Option<u64>; 4]> = BTreeMap::new();
    let maps = [
        &snap.tenant_live_bytes,
        &snap.tenant_soft_limit_exceeded_total,
        &snap.hard_limit_refusals_total,
        &snap.tenant_outstanding_buffers,
    ];
    for (i, map) in maps.into_iter().enumerate() {
        for (id, &value) in map {
            tenants.entry(id.clone()).or_default()[i] = Some(value);
        }
    }
    Figures {
        hits: per_class(&snap.pool_hits, "pool_hits"),
        misses: per_class(&snap.pool_misses, "pool_misses"),
        idle_slabs: per_class(&snap.idle_slabs, "idle_slabs"),
        idle_bytes: snap.idle_bytes,
        oversize_allocations: snap.oversize_allocations_total,
        live_bytes: snap.live_bytes,
        reserved_bytes: snap.reserved_bytes,
        discarded: per_class(&snap.discarded_total, "discarded_total"),
        outstanding: per_class(&snap.outstanding_buffers, "outstanding_buffers"),
        too_large: snap.too_large_total,
        pool_limit_refusals: snap.pool_limit_refusals_total,
        alloc_failures: snap.alloc_failures_total,
        promotions: snap.promotions_total,
        tenants: tenants
            .into_iter()
            .map(|(id, figures)| {
                let [live, soft_exceeded, hard_refusals, buffers] = figures
                    .map(|f| f.unwrap_or_else(|| panic!("tenant {id:?} missing from a map")));
                let figures = TenantFigures {
                    live,
                    soft_exceeded,
                    hard_refusals,
                    buffers,
                };
                (id, figures)
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------
// The real side
// ---------------------------------------------------------------------------------------

enum Handle {
    Buf {
        buf: PooledBuf,
        obj: ObjId,
    },
    /// A frozen buffer, a clone or a slice; `obj` is `None` for an empty slice, which
    /// `bytes` makes without referring to the owner.
    Bytes {
        bytes: Bytes,
        obj: Option<ObjId>,
        start: u64,
    },
    Res {
        res: Reservation,
        tenant: usize,
    },
}

/// Asserts that `actual` equals the model's runs from byte `start` on, by `memcmp` against
/// a stack pattern (cheap in debug builds and under Miri).
/// Where a check runs, for failure messages; formatted only when one fails (formatting the
/// operation at every step is a large part of the run time under Miri).
#[derive(Clone, Copy)]
struct Ctx<'a> {
    step: Option<(usize, &'a Op)>,
    what: &'static str,
}

impl<'a> Ctx<'a> {
    fn step(step: usize, op: &'a Op, what: &'static str) -> Ctx<'a> {
        Ctx {
            step: Some((step, op)),
            what,
        }
    }

    fn at(what: &'static str) -> Ctx<'static> {
        Ctx { step: None, what }
    }
}

impl std::fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.step {
            Some((step, op)) => write!(f, "step {step} ({}): {op:?}", self.what),
            None => f.write_str(self.what),
        }
    }
}

fn assert_content(actual: &[u8], runs: &[(u8, u64)], start: u64, ctx: Ctx<'_>) {
    let end = start + actual.len() as u64;
    let mut pos = 0u64; // position of the current run in the model's content
    for &(value, n) in runs {
        let (lo, hi) = (pos.max(start), (pos + n).min(end));
        if lo < hi {
            let pattern = [value; 4096];
            let part = &actual[(lo - start) as usize..(hi - start) as usize];
            for chunk in part.chunks(pattern.len()) {
                assert!(
                    chunk == &pattern[..chunk.len()],
                    "{ctx}: content differs from the model in run of {value} at {pos}"
                );
            }
        }
        pos += n;
    }
    assert!(pos >= end, "{ctx}: {} bytes, model has {pos}", actual.len());
}

fn assert_buf(buf: &PooledBuf, o: &Obj, ctx: Ctx<'_>) {
    assert_eq!(buf.class(), pool_class(o.class), "{ctx}: class");
    assert_eq!(buf.capacity() as u64, o.cap, "{ctx}: capacity");
    assert_eq!(buf.len() as u64, o.len, "{ctx}: len");
    assert_eq!(buf.tenant(), o.tenant.map(tenant_key), "{ctx}: tenant");
    assert_eq!(
        buf.remaining_mut() as u64,
        SETUP.max_request - o.len,
        "{ctx}: remaining_mut"
    );
}

thread_local! {
    /// Set while a panic is expected, so the panic hook stays quiet.
    static EXPECTING_PANIC: Cell<bool> = const { Cell::new(false) };
}

fn install_quiet_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANIC.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs `f` with the panic hook quiet on this thread: its value, or its panic's message.
fn catch_quiet<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    EXPECTING_PANIC.with(|e| e.set(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    EXPECTING_PANIC.with(|e| e.set(false));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

/// Asserts that a panic's `message` names `try_form` and says `err`.
fn assert_refusal_message(message: &str, err: &PoolError, try_form: &str, ctx: Ctx<'_>) {
    assert!(
        message.contains(try_form) && message.contains(&err.to_string()),
        "{ctx}: panic message {message:?} should name {try_form} and say {err}"
    );
}

/// Runs `f`, which must panic with a message that names `try_form` and carries `err`.
fn expect_panic<R>(f: impl FnOnce() -> R, err: &PoolError, try_form: &str, ctx: Ctx<'_>) {
    match catch_quiet(f) {
        Ok(_) => panic!("{ctx}: expected a panic naming {try_form} ({err})"),
        Err(message) => assert_refusal_message(&message, err, try_form, ctx),
    }
}

fn io_pool_error(err: &std::io::Error) -> &PoolError {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<PoolError>())
        .unwrap_or_else(|| panic!("io::Error {err:?} does not wrap a PoolError"))
}

/// The positions of handles that `keep` selects, then one of them by `index`.
fn pick(handles: &[Handle], index: Pick, keep: impl Fn(&Handle) -> bool) -> Option<usize> {
    let positions: Vec<usize> = (0..handles.len()).filter(|&i| keep(&handles[i])).collect();
    (!positions.is_empty()).then(|| positions[index.of(positions.len())])
}

fn is_buf(h: &Handle) -> bool {
    matches!(h, Handle::Buf { .. })
}

fn is_bytes(h: &Handle) -> bool {
    matches!(h, Handle::Bytes { .. })
}

// ---------------------------------------------------------------------------------------
// Other threads
// ---------------------------------------------------------------------------------------

type Job = Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>;

/// The persistent worker thread: it runs one job at a time, sent by the main thread, which
/// waits for the answer (`run`), so operations stay one at a time; `start` / `finish` let
/// the main thread work meanwhile (the race). A job's panic is carried back to the main
/// thread.
struct Worker {
    jobs: Option<mpsc::Sender<Job>>,
    answers: mpsc::Receiver<thread::Result<Box<dyn Any + Send>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn() -> Worker {
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (outbox, answers) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("model-worker".to_owned())
            .spawn(move || {
                for job in inbox {
                    let answer = panic::catch_unwind(AssertUnwindSafe(job));
                    if outbox.send(answer).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn the worker thread");
        Worker {
            jobs: Some(jobs),
            answers,
            thread: Some(thread),
        }
    }

    fn start<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) {
        let job: Job = Box::new(move || Box::new(job()) as Box<dyn Any + Send>);
        self.jobs
            .as_ref()
            .unwrap()
            .send(job)
            .expect("the worker thread is gone");
    }

    fn finish<R: 'static>(&self) -> R {
        match self.answers.recv().expect("the worker thread is gone") {
            Ok(answer) => *answer.downcast::<R>().expect("the job's answer"),
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Runs `job` on the worker and waits for its answer.
    fn run<R: Send + 'static>(&self, job: impl FnOnce() -> R + Send + 'static) -> R {
        self.start(job);
        self.finish()
    }

    /// Lets the thread exit (its thread-locals, the magazine among them, are destroyed)
    /// and joins it.
    fn exit(mut self) {
        self.jobs = None;
        if let Err(payload) = self.thread.take().unwrap().join() {
            panic::resume_unwind(payload);
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a fresh thread (which never acquired anything) and joins it.
fn on_stranger(f: impl FnOnce() + Send + 'static) {
    if let Err(payload) = thread::spawn(f).join() {
        panic::resume_unwind(payload);
    }
}

/// What the worker's acquire gave.
enum Acquired {
    Buf(PooledBuf),
    Refused(PoolError),
    /// `acquire` panicked, with this message.
    Panicked(String),
}

/// A figure the race may move (the Small class's slab path, the live figure read while
/// charges move): masked before the rest is compared exactly.
fn mask_race(mut f: Figures) -> Figures {
    f.hits[0] = 0;
    f.misses[0] = 0;
    f.idle_slabs[0] = 0;
    f.idle_bytes = 0;
    f.discarded[0] = 0;
    f.outstanding[0] = 0;
    f.live_bytes = 0;
    f
}

struct World {
    pool: BufferPool,
    tenants: Vec<Tenant>,
    model: Model,
    handles: Vec<Handle>,
    /// Dropped last (fields drop in order): joins the worker thread.
    worker: Option<Worker>,
}

impl World {
    fn new(knobs: Knobs) -> World {
        let s = Setup {
            idle_per_class: knobs.idle_per_class,
            idle_bytes: knobs.idle_bytes,
            max_live: knobs.max_live,
            ..SETUP
        };
        let mut builder = BufferPool::builder()
            .default_tenant_soft_limit(s.default_soft)
            .max_idle_per_class(s.idle_per_class as usize)
            .max_idle_bytes(s.idle_bytes)
            .max_request_bytes(s.max_request as usize)
            .zero_on_release(knobs.zero_on_release)
            // The model frees idle slabs only when asked (`trim`): none by age, however
            // long a case runs (a Miri case can outlast the default timeout).
            .idle_timeout(None);
        if let Some(max_live) = s.max_live {
            builder = builder.max_live_bytes(max_live);
        }
        let pool = builder.build();
        let tenants: Vec<Tenant> = (0..TENANTS).map(|t| pool.tenant(&tenant_arg(t))).collect();
        for (t, tenant) in tenants.iter().enumerate() {
            assert_eq!(tenant.id(), tenant_key(t));
            assert_eq!(tenant.is_overflow(), t == 2);
        }
        tenants[1].set_hard_limit(Some(s.t1_hard));
        pool.set_tenant_soft_limit("t1", s.t1_soft);
        World {
            pool,
            tenants,
            model: Model::new(s),
            handles: Vec::new(),
            worker: None,
        }
    }

    fn tenant_handle(&self, t: usize, fresh: bool) -> Tenant {
        if fresh {
            self.pool.tenant(&tenant_arg(t))
        } else {
            self.tenants[t].clone()
        }
    }

    fn check(&self, ctx: Ctx<'_>) {
        let snap = self.pool.snapshot();
        assert_eq!(figures_of(&snap), self.model.figures(), "{ctx}");
        assert_eq!(
            self.pool.live_bytes(),
            self.model.live,
            "{ctx}: live_bytes()"
        );
        for (t, tenant) in self.tenants.iter().enumerate() {
            let m = &self.model.tenants[t];
            assert_eq!(tenant.live_bytes(), m.live, "{ctx}: {t} live_bytes()");
            assert_eq!(tenant.soft_limit(), m.soft, "{ctx}: {t} soft_limit()");
            assert_eq!(tenant.hard_limit(), m.hard, "{ctx}: {t} hard_limit()");
        }
        for h in &self.handles {
            match h {
                Handle::Buf { buf, obj } => assert_buf(buf, &self.model.objs[obj], ctx),
                Handle::Bytes { bytes, obj, start } => match obj {
                    Some(id) => {
                        let o = &self.model.objs[id];
                        assert!(start + bytes.len() as u64 <= o.len, "{ctx}: slice bounds");
                        assert!(o.refs > 0);
                    }
                    None => assert!(bytes.is_empty()),
                },
                Handle::Res { res, tenant } => {
                    assert_eq!(res.tenant(), tenant_key(*tenant), "{ctx}: reservation");
                }
            }
        }
    }

    /// The worker thread, started if none runs.
    fn worker(&mut self) -> &Worker {
        self.worker.get_or_insert_with(Worker::spawn)
    }

    /// Removes handle `pos` and lets the model know what its drop returns.
    fn drop_handle(&mut self, pos: usize) {
        self.drop_handle_on(pos, On::Main);
    }

    /// Removes handle `pos`, drops it on thread `on`, and lets the model know what its
    /// drop returned there.
    fn drop_handle_on(&mut self, pos: usize, on: On) {
        let handle = self.handles.remove(pos);
        let (obj, reservation) = match &handle {
            Handle::Buf { obj, .. } => (Some(*obj), None),
            Handle::Bytes { obj, .. } => (*obj, None),
            Handle::Res { res, tenant } => (None, Some((*tenant, res.bytes()))),
        };
        let last = match &handle {
            Handle::Buf { .. } => true,
            Handle::Bytes { obj, .. } => obj.is_some_and(|id| self.model.objs[&id].refs == 1),
            Handle::Res { .. } => false,
        };
        match on {
            On::Main => drop(handle),
            On::Worker => self.worker().run(move || drop(handle)),
            On::Stranger => on_stranger(move || drop(handle)),
        }
        if let Some(id) = obj {
            if last {
                self.model.drop_obj(id, on);
            } else {
                self.model.objs.get_mut(&id).unwrap().refs -= 1;
            }
        }
        if let Some((tenant, bytes)) = reservation {
            self.model.unreserve(tenant, bytes);
        }
        if on == On::Stranger {
            self.model.retire(On::Stranger); // joined: its thread-locals are gone
        }
    }

    fn apply(&mut self, step: usize, op: &Op) {
        let ctx = Ctx::step(step, op, "");
        // The byte value this step writes, so that the runs of different steps differ.
        let value = (step % 251) as u8 + 1;
        match *op {
            Op::Acquire {
                tenant,
                size,
                fallible,
                fresh_handle,
            } => {
                let mut next = self.model.clone();
                let predicted = next.acquire(On::Main, tenant, size);
                if next.too_many_big() {
                    return;
                }
                let handle = tenant.map(|t| self.tenant_handle(t, fresh_handle));
                let try_acquire = || match &handle {
                    Some(t) => t.try_acquire(size),
                    None => self.pool.try_acquire(size),
                };
                let actual = match (&predicted, fallible) {
                    (_, true) => try_acquire(),
                    (Ok(_), false) => Ok(match &handle {
                        Some(t) => t.acquire(size),
                        None => self.pool.acquire(size),
                    }),
                    (Err(err), false) => {
                        let acquire = || match &handle {
                            Some(t) => t.acquire(size),
                            None => self.pool.acquire(size),
                        };
                        expect_panic(acquire, err, "try_acquire", ctx);
                        Err(err.clone())
                    }
                };
                self.model = next;
                match (predicted, actual) {
                    (Ok(obj), Ok(buf)) => {
                        assert_buf(&buf, &self.model.objs[&obj], ctx);
                        self.handles.push(Handle::Buf { buf, obj });
                    }
                    (Err(want), Err(got)) => assert_eq!(got, want, "{ctx}"),
                    (want, got) => panic!("{ctx}: model says {want:?}, pool says {got:?}"),
                }
            }
            Op::Write { target, len, via } => {
                let Some(pos) = pick(&self.handles, target, is_buf) else {
                    return;
                };
                let Handle::Buf { buf, obj } = &mut self.handles[pos] else {
                    unreachable!()
                };
                let (obj, o) = (*obj, &self.model.objs[obj]);
                let n = match len {
                    Len::Fixed(n) => n,
                    Len::ToCapacity { .. } if o.cap > self.model.s.fill_max => return,
                    Len::ToCapacity { past } => (o.cap - o.len) as usize + usize::from(past),
                };
                let mut next = self.model.clone();
                let chunked = matches!(via, Via::Put | Via::ExtendIter);
                let predicted = if chunked {
                    next.write_chunked(obj, value, n)
                } else {
                    next.write_all(obj, value, n)
                };
                // A chunked write refused half-way would panic with part of it written;
                // such writes go through io::Write (all or nothing) instead.
                let (via, predicted) = match (via, predicted) {
                    (Via::Put | Via::ExtendIter, Err(_)) => {
                        next = self.model.clone();
                        (Via::IoWrite, next.write_all(obj, value, n))
                    }
                    (Via::ExtendIter, Ok(())) if n as u64 > self.model.s.iter_max => {
                        (Via::Put, Ok(()))
                    }
                    (Via::ExtendExact, predicted) if n as u64 > self.model.s.iter_max => {
                        (Via::Extend, predicted)
                    }
                    other => other,
                };
                if next.too_many_big() {
                    return;
                }
                let data = vec![value; n];
                match (via, &predicted) {
                    (Via::IoWrite, _) => {
                        let got = buf.write(&data);
                        match (&predicted, got) {
                            (Ok(()), Ok(written)) => assert_eq!(written, n, "{ctx}"),
                            (Err(want), Err(got)) => {
                                assert_eq!(io_pool_error(&got), want, "{ctx}")
                            }
                            (want, got) => panic!("{ctx}: model {want:?}, pool {got:?}"),
                        }
                    }
                    (Via::Put, Ok(())) => buf.put(&data[..]),
                    (Via::ExtendIter, Ok(())) => {
                        buf.extend(data.iter().copied().filter(|_| true));
                    }
                    (Via::Extend, Ok(())) => buf.extend_from_slice(&data),
                    (Via::PutSlice, Ok(())) => buf.put_slice(&data),
                    (Via::Resize, Ok(())) => buf.resize(buf.len() + n, value),
                    (Via::ExtendExact, Ok(())) => buf.extend(data.iter().copied()),
                    (Via::Extend, Err(err)) => {
                        expect_panic(|| buf.extend_from_slice(&data), err, "try_reserve", ctx)
                    }
                    (Via::PutSlice, Err(err)) => {
                        expect_panic(|| buf.put_slice(&data), err, "try_reserve", ctx)
                    }
                    (Via::Resize, Err(err)) => {
                        let new_len = buf.len() + n;
                        expect_panic(|| buf.resize(new_len, value), err, "try_reserve", ctx)
                    }
                    (Via::ExtendExact, Err(err)) => {
                        expect_panic(|| buf.extend(data.iter().copied()), err, "try_reserve", ctx)
                    }
                    (Via::Put | Via::ExtendIter, Err(_)) => unreachable!(),
                }
                self.model = next;
                let o = &self.model.objs[&obj];
                assert_buf(buf, o, ctx);
                assert_content(buf, &o.runs, 0, ctx);
            }
            Op::TryReserve {
                target,
                additional,
                panicking,
            } => {
                let Some(pos) = pick(&self.handles, target, is_buf) else {
                    return;
                };
                let Handle::Buf { buf, obj } = &mut self.handles[pos] else {
                    unreachable!()
                };
                let (obj, o) = (*obj, &self.model.objs[obj]);
                let additional = match additional {
                    Additional::Fixed(n) => n,
                    Additional::PastCapacity => (o.cap - o.len + 1) as usize,
                    Additional::ToCapacity => (o.cap - o.len) as usize,
                };
                let mut next = self.model.clone();
                let predicted = next.try_reserve(obj, additional);
                if next.too_many_big() {
                    return;
                }
                match (&predicted, panicking) {
                    (Ok(()), true) => buf.reserve(additional),
                    (Err(err), true) => {
                        expect_panic(|| buf.reserve(additional), err, "try_reserve", ctx)
                    }
                    (_, false) => {
                        assert_eq!(buf.try_reserve(additional), predicted, "{ctx}")
                    }
                }
                self.model = next;
                let o = &self.model.objs[&obj];
                assert_buf(buf, o, ctx);
                assert_content(buf, &o.runs, 0, ctx);
                if predicted.is_ok() {
                    assert!(buf.capacity() - buf.len() >= additional, "{ctx}: room");
                }
            }
            Op::Freeze { target, via_from } => {
                let Some(pos) = pick(&self.handles, target, is_buf) else {
                    return;
                };
                let Handle::Buf { buf, obj } = self.handles.remove(pos) else {
                    unreachable!()
                };
                let ptr = buf.as_ptr();
                let bytes = if via_from {
                    Bytes::from(buf)
                } else {
                    buf.freeze()
                };
                assert_eq!(bytes.as_ptr(), ptr, "{ctx}: freeze copied");
                let o = self.model.objs.get_mut(&obj).unwrap();
                o.refs = 1;
                assert_eq!(bytes.len() as u64, o.len, "{ctx}");
                assert_content(&bytes, &o.runs, 0, ctx);
                self.handles.push(Handle::Bytes {
                    bytes,
                    obj: Some(obj),
                    start: 0,
                });
            }
            Op::CloneBytes { target } => {
                let Some(pos) = pick(&self.handles, target, is_bytes) else {
                    return;
                };
                let Handle::Bytes { bytes, obj, start } = &self.handles[pos] else {
                    unreachable!()
                };
                let (bytes, obj, start) = (bytes.clone(), *obj, *start);
                if let Some(id) = obj {
                    self.model.objs.get_mut(&id).unwrap().refs += 1;
                }
                self.handles.push(Handle::Bytes { bytes, obj, start });
            }
            Op::SliceBytes { target, a, b } => {
                let Some(pos) = pick(&self.handles, target, is_bytes) else {
                    return;
                };
                let Handle::Bytes { bytes, obj, start } = &self.handles[pos] else {
                    unreachable!()
                };
                let len = bytes.len();
                let (i, j) = (a.of(len + 1), b.of(len + 1));
                let (lo, hi) = (i.min(j), i.max(j));
                let slice = bytes.slice(lo..hi);
                let start = start + lo as u64;
                // An empty slice is a fresh empty `Bytes` that pins nothing.
                let obj = if hi > lo { *obj } else { None };
                if let Some(id) = obj {
                    let o = self.model.objs.get_mut(&id).unwrap();
                    o.refs += 1;
                    assert_content(&slice, &o.runs, start, ctx);
                }
                self.handles.push(Handle::Bytes {
                    bytes: slice,
                    obj,
                    start,
                });
            }
            Op::Drop { target } => {
                if let Some(pos) = pick(&self.handles, target, |_| true) {
                    self.drop_handle(pos);
                }
            }
            Op::IntoVec { target } => {
                let Some(pos) = pick(&self.handles, target, is_buf) else {
                    return;
                };
                let Handle::Buf { buf, obj } = self.handles.remove(pos) else {
                    unreachable!()
                };
                let ptr = buf.as_ptr();
                let vec = buf.into_vec();
                let o = self.model.detach(obj);
                assert_eq!(vec.as_ptr(), ptr, "{ctx}: into_vec copied");
                assert_eq!(vec.capacity() as u64, o.cap, "{ctx}: into_vec capacity");
                assert_eq!(vec.len() as u64, o.len, "{ctx}: into_vec len");
                assert_content(&vec, &o.runs, 0, ctx);
            }
            Op::ReadFrom { target, len, max } => {
                let Some(pos) = pick(&self.handles, target, is_buf) else {
                    return;
                };
                let Handle::Buf { buf, obj } = &mut self.handles[pos] else {
                    unreachable!()
                };
                let (obj, o) = (*obj, &self.model.objs[obj]);
                let fill_max = self.model.s.fill_max;
                let available = match len {
                    Len::Fixed(n) => n,
                    Len::ToCapacity { .. } if o.cap > fill_max => return,
                    Len::ToCapacity { past } => (o.cap - o.len) as usize + usize::from(past),
                };
                let max = match max {
                    ReadMax::Exact => available,
                    ReadMax::Half => available / 2,
                    ReadMax::PlusOne => available + 1,
                    ReadMax::Unbounded if o.cap > fill_max => available + 1,
                    ReadMax::Unbounded => usize::MAX,
                };
                let mut next = self.model.clone();
                let (appended, predicted) = next.read_from(obj, value, available, max);
                if next.too_many_big() {
                    return;
                }
                let data = vec![value; available];
                let got = buf.read_from(&mut &data[..], max);
                match (predicted, got) {
                    (Ok(()), Ok(read)) => assert_eq!(read as u64, appended, "{ctx}"),
                    (Err(want), Err(got)) => assert_eq!(io_pool_error(&got), &want, "{ctx}"),
                    (want, got) => panic!(
                        "{ctx}: model says {want:?} after {appended} bytes, pool says {got:?}"
                    ),
                }
                self.model = next;
                let o = &self.model.objs[&obj];
                assert_buf(buf, o, ctx);
                assert_content(buf, &o.runs, 0, ctx);
            }
            Op::Truncate { target, to } => {
                let Some(pos) = pick(&self.handles, target, is_buf) else {
                    return;
                };
                let Handle::Buf { buf, obj } = &mut self.handles[pos] else {
                    unreachable!()
                };
                let to = to.of(buf.len() + 1);
                if to == 0 {
                    buf.clear();
                } else {
                    buf.truncate(to);
                }
                self.model.truncate(*obj, to as u64);
                let o = &self.model.objs[obj];
                assert_buf(buf, o, ctx);
                assert_content(buf, &o.runs, 0, ctx);
            }
            Op::Reserve {
                tenant,
                bytes,
                fallible,
            } => {
                let mut next = self.model.clone();
                let predicted = next.reserve(tenant, bytes);
                let handle = &self.tenants[tenant];
                let actual = match (&predicted, fallible) {
                    (_, true) => handle.try_reserve(bytes),
                    (Ok(()), false) => Ok(handle.reserve(bytes)),
                    (Err(err), false) => {
                        expect_panic(|| handle.reserve(bytes), err, "try_reserve", ctx);
                        Err(err.clone())
                    }
                };
                self.model = next;
                match (predicted, actual) {
                    (Ok(()), Ok(res)) => {
                        assert_eq!(res.bytes(), bytes, "{ctx}");
                        self.handles.push(Handle::Res { res, tenant });
                    }
                    (Err(want), Err(got)) => assert_eq!(got, want, "{ctx}"),
                    (want, got) => panic!("{ctx}: model says {want:?}, pool says {got:?}"),
                }
            }
            Op::SetHardLimit { limit } => {
                self.tenants[1].set_hard_limit(limit);
                self.model.tenants[1].hard = limit;
            }
            Op::SetSoftLimit {
                tenant,
                bytes,
                via_pool,
            } => {
                if via_pool {
                    self.pool.set_tenant_soft_limit(&tenant_arg(tenant), bytes);
                } else {
                    self.tenants[tenant].set_soft_limit(bytes);
                }
                self.model.tenants[tenant].soft = bytes;
            }
            Op::Burst {
                tenant,
                size,
                n,
                keep,
            } => {
                let first = self.handles.len();
                for _ in 0..n {
                    let acquire = Op::Acquire {
                        tenant,
                        size,
                        fallible: true,
                        fresh_handle: false,
                    };
                    self.apply(step, &acquire);
                    if !cfg!(miri) {
                        self.check(Ctx::step(step, op, "acquired"));
                    }
                }
                while !keep && self.handles.len() > first {
                    self.drop_handle(first);
                    if !cfg!(miri) {
                        // Under Miri a snapshot costs ~0.1 s: the step's end checks the burst.
                        self.check(Ctx::step(step, op, "dropped"));
                    }
                }
            }
            Op::Trim => {
                let want = self.model.trim();
                assert_eq!(self.pool.trim(), want, "{ctx}: trim()");
            }
            Op::WorkerAcquire {
                tenant,
                size,
                fallible,
                n,
                cycle,
            } => {
                let first = self.handles.len();
                for i in 0..n {
                    if i > 0 && !cfg!(miri) {
                        self.check(Ctx::step(step, op, "acquired on the worker"));
                    }
                    let mut next = self.model.clone();
                    let predicted = next.acquire(On::Worker, tenant, size);
                    if next.too_many_big() {
                        break;
                    }
                    let pool = self.pool.clone();
                    let handle = tenant.map(|t| self.tenants[t].clone());
                    let acquired = self.worker().run(move || {
                        if fallible {
                            let got = match &handle {
                                Some(t) => t.try_acquire(size),
                                None => pool.try_acquire(size),
                            };
                            return got.map_or_else(Acquired::Refused, Acquired::Buf);
                        }
                        let got = catch_quiet(|| match &handle {
                            Some(t) => t.acquire(size),
                            None => pool.acquire(size),
                        });
                        got.map_or_else(Acquired::Panicked, Acquired::Buf)
                    });
                    self.model = next;
                    match (predicted, acquired) {
                        (Ok(obj), Acquired::Buf(buf)) => {
                            assert_buf(&buf, &self.model.objs[&obj], ctx);
                            self.handles.push(Handle::Buf { buf, obj });
                        }
                        (Err(want), Acquired::Refused(got)) => assert_eq!(got, want, "{ctx}"),
                        (Err(want), Acquired::Panicked(message)) => {
                            assert_refusal_message(&message, &want, "try_acquire", ctx)
                        }
                        (want, Acquired::Buf(got)) => {
                            panic!("{ctx}: model says {want:?}, the worker got {got:?}")
                        }
                        (want, Acquired::Refused(got)) => {
                            panic!("{ctx}: model says {want:?}, the worker got {got:?}")
                        }
                        (want, Acquired::Panicked(got)) => {
                            panic!("{ctx}: model says {want:?}, the worker panicked: {got}")
                        }
                    }
                }
                while cycle && self.handles.len() > first {
                    if !cfg!(miri) {
                        self.check(Ctx::step(step, op, "acquired on the worker"));
                    }
                    self.drop_handle_on(first, On::Worker);
                }
            }
            Op::WorkerDrop { target, n } => {
                for i in 0..n {
                    let Some(pos) = pick(&self.handles, target, |_| true) else {
                        return;
                    };
                    if i > 0 && !cfg!(miri) {
                        self.check(Ctx::step(step, op, "dropped on the worker"));
                    }
                    self.drop_handle_on(pos, On::Worker);
                }
            }
            Op::StrangerDrop { target } => {
                if let Some(pos) = pick(&self.handles, target, |_| true) {
                    self.drop_handle_on(pos, On::Stranger);
                }
            }
            Op::WorkerExit => {
                if let Some(worker) = self.worker.take() {
                    worker.exit();
                }
                self.model.retire(On::Worker);
            }
            Op::RaceSnapshots { rounds } => self.race(rounds, ctx),
        }
    }

    /// `RaceSnapshots`: the worker cycles Small buffers through its magazine while this
    /// thread takes snapshots; each must keep the idle caps and count every idle slab once.
    fn race(&mut self, rounds: usize, ctx: Ctx<'_>) {
        const BATCH: usize = 16;
        let small = CLASS_CAP[0];
        // The worker's acquires must not be refused: skip when `max_live_bytes` leaves no
        // room for a whole batch.
        if self.model.room(None) < BATCH as u64 * small {
            return;
        }
        let before = self.model.figures();
        let done = Arc::new(AtomicBool::new(false));
        let pool = self.pool.clone();
        let flag = Arc::clone(&done);
        self.worker().start(move || {
            /// Sets the flag however the job ends, so the main thread never spins forever.
            struct Done(Arc<AtomicBool>);
            impl Drop for Done {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Release);
                }
            }
            let _done = Done(flag);
            for _ in 0..rounds {
                let bufs: Vec<PooledBuf> =
                    (0..BATCH).map(|_| pool.acquire(small as usize)).collect();
                drop(bufs);
            }
        });
        let (s, masked) = (self.model.s, mask_race(self.model.figures()));
        let mut snapshots = 0u64;
        loop {
            let finished = done.load(Ordering::Acquire);
            let snap = self.pool.snapshot();
            snapshots += 1;
            let idle = per_class::<4>(&snap.idle_slabs, "idle_slabs");
            let sum: u64 = (0..4).map(|c| idle[c] * CLASS_CAP[c]).sum();
            let figures = mask_race(figures_of(&snap));
            // (Formatted only on failure: this loop runs as fast as it can.)
            let fail =
                |what: &str| panic!("{ctx}: snapshot {snapshots} of the race: {what}: {snap:?}");
            if idle[0] > s.idle_per_class {
                fail("Small idle slabs past max_idle_per_class");
            }
            if snap.idle_bytes > s.idle_bytes {
                fail("idle_bytes past max_idle_bytes");
            }
            if snap.idle_bytes != sum {
                fail("idle_bytes is not the sum of the idle slabs' capacities");
            }
            if figures != masked {
                fail(&format!(
                    "a figure the race cannot move moved: {figures:?} != {masked:?}"
                ));
            }
            if finished {
                break;
            }
        }
        self.worker().finish::<()>();
        // At rest: everything but the Small slabs' path is as the model says.
        let snap = self.pool.snapshot();
        let got = figures_of(&snap);
        assert_eq!(
            mask_race(figures_of(&snap)),
            masked,
            "{ctx}: after the race"
        );
        assert_eq!(got.live_bytes, before.live_bytes, "{ctx}: after the race");
        assert_eq!(
            got.outstanding[0], before.outstanding[0],
            "{ctx}: after the race"
        );
        let (hits, misses) = (
            got.hits[0] - before.hits[0],
            got.misses[0] - before.misses[0],
        );
        assert_eq!(
            hits + misses,
            (rounds * BATCH) as u64,
            "{ctx}: every acquisition of the race is one hit or one miss"
        );
        assert_eq!(
            self.pool.trim(),
            snap.idle_bytes,
            "{ctx}: trim() after the race"
        );
        // Re-synchronise: the observed Small deltas, and everything idle freed. The pool has
        // a spare magazine: of each round's 16 acquires at least 8 found none in the
        // worker's magazine (it holds 8 Small slabs at most), and each of those makes one.
        self.model.register(On::Worker);
        self.model.idle.spare = true;
        self.model.hits[0] = got.hits[0];
        self.model.misses[0] = got.misses[0];
        self.model.discarded[0] = got.discarded[0];
        self.model.trim();
    }
}

/// The knobs drawn per case.
#[derive(Debug, Clone, Copy)]
struct Knobs {
    zero_on_release: bool,
    idle_per_class: u64,
    idle_bytes: u64,
    max_live: Option<u64>,
}

fn knobs_strategy() -> impl Strategy<Value = Knobs> {
    // Idle byte caps that a mix of idle slabs can meet exactly, so `equal` is tested too.
    let idle_bytes = if cfg!(miri) {
        vec![
            SETUP.idle_bytes,
            (2 * 64 * KIB + 3 * 4 * KIB) as u64,
            (3 * 4 * KIB) as u64,
        ]
    } else {
        vec![
            SETUP.idle_bytes,
            (10 * MIB + 2 * 64 * KIB + 3 * 4 * KIB) as u64,
            (MIB + 64 * KIB + 2 * 4 * KIB) as u64,
            (64 * KIB + 2 * 4 * KIB) as u64,
        ]
    };
    // Zeroing runs per byte under Miri (up to 64 KiB a release): the walkthrough covers it.
    let zero_on_release = prop::bool::weighted(if cfg!(miri) { 0.0 } else { 0.5 });
    (
        zero_on_release,
        select(vec![1, 3, 8, 8, 64]),
        select(idle_bytes),
        select(vec![SETUP.max_live, None]),
    )
        .prop_map(
            |(zero_on_release, idle_per_class, idle_bytes, max_live)| Knobs {
                zero_on_release,
                idle_per_class,
                idle_bytes,
                max_live,
            },
        )
}

fn run(knobs: Knobs, ops: &[Op]) {
    install_quiet_panic_hook();
    let mut world = World::new(knobs);
    world.check(Ctx::at("after setup"));
    for (step, op) in ops.iter().enumerate() {
        world.apply(step, op);
        world.check(Ctx::step(step, op, "after"));
    }
    // Drop whatever is left, oldest first.
    while !world.handles.is_empty() {
        world.drop_handle(0);
        world.check(Ctx::at("while dropping the rest"));
    }
    let snap = world.pool.snapshot();
    assert_eq!(snap.live_bytes, 0);
    assert_eq!(snap.reserved_bytes, 0);
    assert!(snap.tenant_live_bytes.values().all(|&b| b == 0), "{snap:?}");
    assert!(
        snap.outstanding_buffers.values().all(|&b| b == 0),
        "{snap:?}"
    );
    assert!(snap.tenant_outstanding_buffers.values().all(|&b| b == 0));
    assert_eq!(world.pool.trim(), snap.idle_bytes);
    world.model.trim();
    world.check(Ctx::at("after the final trim"));
    let snap = world.pool.snapshot();
    assert_eq!(snap.idle_bytes, 0);
    assert!(snap.idle_slabs.values().all(|&n| n == 0));
}

fn proptest_config() -> ProptestConfig {
    // `default()` honours PROPTEST_CASES (256 when unset).
    let mut config = ProptestConfig::default();
    if cfg!(miri) {
        // Miri is ~1000x slower, and isolation forbids the regression file.
        config.failure_persistence = None;
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = 8;
        }
    }
    config
}

proptest! {
    #![proptest_config(proptest_config())]

    #[test]
    #[cfg_attr(panic = "abort", ignore = "checks the state after catch_unwind, which panic=abort cannot do")]
    fn pool_matches_model(
        knobs in knobs_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..if cfg!(miri) { 30 } else { 60 }),
    ) {
        run(knobs, &ops);
    }
}

/// A fixed walk through the interesting paths, so they run even on an unlucky seed.
#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn model_walkthrough() {
    let i = Pick;
    let mut ops = vec![
        Op::Acquire {
            tenant: Some(0),
            size: 0,
            fallible: false,
            fresh_handle: false,
        },
        Op::Write {
            target: i(0),
            len: Len::ToCapacity { past: true },
            via: Via::Put,
        },
        Op::Write {
            target: i(0),
            len: Len::Fixed(4097),
            via: Via::Extend,
        },
        Op::Freeze {
            target: i(0),
            via_from: false,
        },
        Op::CloneBytes { target: i(0) },
        Op::SliceBytes {
            target: i(1),
            a: i(1),
            b: i(2 * 4097), // to the end
        },
        Op::Acquire {
            tenant: Some(1),
            size: 65536,
            fallible: true,
            fresh_handle: false,
        },
        Op::TryReserve {
            target: i(0),
            additional: Additional::PastCapacity,
            panicking: false,
        },
        Op::Reserve {
            tenant: 1,
            bytes: u64::MAX,
            fallible: false,
        },
        Op::Reserve {
            tenant: 2,
            bytes: 4096,
            fallible: false,
        },
        Op::Acquire {
            tenant: None,
            size: usize::MAX,
            fallible: false,
            fresh_handle: false,
        },
        Op::Drop { target: i(0) },
        Op::Drop { target: i(0) },
        Op::Trim,
    ];
    if !cfg!(miri) {
        ops.extend([
            Op::Acquire {
                tenant: Some(2),
                size: 10 * MIB,
                fallible: false,
                fresh_handle: true,
            },
            // Huge -> Oversize (20 MiB), then Oversize doubling (capped at 40 MiB).
            Op::TryReserve {
                target: i(1),
                additional: Additional::PastCapacity,
                panicking: true,
            },
            Op::TryReserve {
                target: i(1),
                additional: Additional::PastCapacity,
                panicking: false,
            },
            Op::Acquire {
                tenant: None,
                size: 12 * MIB,
                fallible: false,
                fresh_handle: false,
            },
            Op::Write {
                target: i(2),
                len: Len::Fixed(100),
                via: Via::Put,
            },
            Op::IntoVec { target: i(2) },
        ]);
    }
    for (zero_on_release, max_live) in [(false, SETUP.max_live), (true, None)] {
        let knobs = Knobs {
            zero_on_release,
            idle_per_class: SETUP.idle_per_class,
            idle_bytes: SETUP.idle_bytes,
            max_live,
        };
        run(knobs, &ops);
    }
}

/// A fixed walk through the thread paths: drops on a thread with no magazine (the test
/// thread before its first acquire and a fresh worker, which adopt the spare magazine; a
/// stranger with no spare left, and one that adopts it), the worker's magazine filling,
/// spilling and refilling, a frozen group's handles dropped on three threads, a
/// reservation dropped on the worker, the worker's exit with slabs cached, and the race.
#[test]
#[cfg_attr(
    panic = "abort",
    ignore = "checks the state after catch_unwind, which panic=abort cannot do"
)]
fn threads_walkthrough() {
    let i = Pick;
    let worker_acquire = |tenant, n, cycle| Op::WorkerAcquire {
        tenant,
        size: 4096,
        fallible: false,
        n,
        cycle,
    };
    let ops = vec![
        // Three buffers from the worker (its magazine registers, and the pool makes its
        // spare magazine). The test thread has none yet: its drop adopts the spare, whose
        // first return reserves four units; the stranger finds no spare left, and its drop
        // goes to the shared list.
        worker_acquire(Some(0), 3, false),
        Op::Drop { target: i(0) },
        Op::StrangerDrop { target: i(0) },
        Op::WorkerDrop { target: i(0), n: 1 },
        // The test thread's first acquire registers nothing (it has the adopted magazine):
        // it pops the slab waiting there, and gives back all units but one.
        Op::Acquire {
            tenant: Some(1),
            size: 1,
            fallible: false,
            fresh_handle: false,
        },
        // Fill, spill and refill the worker's magazine (an acquire that finds it empty
        // makes a new spare).
        worker_acquire(None, 12, true),
        worker_acquire(Some(2), 10, true),
        // A frozen group: one handle dropped on each thread, the last on the worker.
        Op::Freeze {
            target: i(0),
            via_from: false,
        },
        Op::CloneBytes { target: i(0) },
        Op::CloneBytes { target: i(0) },
        Op::StrangerDrop { target: i(0) },
        Op::Drop { target: i(0) },
        Op::WorkerDrop { target: i(0), n: 1 },
        Op::Reserve {
            tenant: 0,
            bytes: 4096,
            fallible: false,
        },
        Op::WorkerDrop { target: i(0), n: 1 },
        // The worker exits with slabs cached; a fresh worker has no magazine, and adopts
        // the spare on its first drop.
        worker_acquire(Some(0), 2, false),
        Op::WorkerExit,
        Op::WorkerDrop { target: i(0), n: 2 },
        Op::RaceSnapshots {
            rounds: if cfg!(miri) { 1 } else { 2 },
        },
        worker_acquire(None, 3, true),
        // A stranger adopts the spare the race left, and its exit brings the slab home.
        Op::Acquire {
            tenant: None,
            size: 4096,
            fallible: false,
            fresh_handle: false,
        },
        Op::StrangerDrop { target: i(0) },
        Op::Trim,
        Op::WorkerExit,
    ];
    for idle_per_class in [64, SETUP.idle_per_class] {
        let knobs = Knobs {
            zero_on_release: false,
            idle_per_class,
            idle_bytes: SETUP.idle_bytes,
            max_live: SETUP.max_live,
        };
        run(knobs, &ops);
    }
}

/// `read_from` whose reader ends exactly where the buffer is full needs no room: nothing
/// may be promoted, charged or taken from the pool (DESIGN.md: only a write *past* the
/// capacity promotes).
#[test]
fn read_from_at_end_of_file_takes_no_room() {
    let ops = [
        Op::Acquire {
            tenant: Some(0),
            size: 4096,
            fallible: false,
            fresh_handle: false,
        },
        Op::ReadFrom {
            target: Pick(0),
            len: Len::ToCapacity { past: false },
            max: ReadMax::Unbounded,
        },
    ];
    let knobs = Knobs {
        zero_on_release: false,
        idle_per_class: SETUP.idle_per_class,
        idle_bytes: SETUP.idle_bytes,
        max_live: SETUP.max_live,
    };
    run(knobs, &ops);
}

/// The same at `max_request_bytes`: every byte the reader had was read, so the call
/// succeeds; it must not fail because a growth nobody needed would be too large.
#[test]
fn read_from_at_end_of_file_at_max_request_bytes_succeeds() {
    let pool = BufferPool::builder().max_request_bytes(4096).build();
    let mut buf = pool.acquire(4096);
    let frame = [7u8; 4096];
    let read = buf.read_from(&mut &frame[..], 10_000);
    assert_eq!(
        read.ok(),
        Some(4096),
        "read_from of a frame that fits exactly"
    );
    assert_eq!(&buf[..], &frame[..]);
    assert_eq!(pool.snapshot().too_large_total, 0);
}

/// Another thread's unused stock must not shrink an Oversize growth at rest (DESIGN.md,
/// "Exact from any thread": stocks never make a limit bite before it is reached; buf.rs:
/// grow by exactly `needed` only "when the doubling alone would not fit the room the limits
/// leave"). The worker's one acquire leaves it a prepaid pool stock; live bytes are then
/// exactly 52 MiB of a 64 MiB `max_live_bytes`, so doubling the 12 MiB buffer (12 MiB more)
/// fits exactly and the buffer must grow to 24 MiB.
#[test]
fn oversize_growth_at_rest_ignores_other_threads_stock() {
    if cfg!(miri) {
        return; // Miri's pool has no Oversize class below max_request_bytes
    }
    let ops = [
        Op::WorkerAcquire {
            tenant: None,
            size: 1,
            fallible: true,
            n: 1,
            cycle: false,
        },
        Op::WorkerDrop {
            target: Pick(0),
            n: 1,
        },
        Op::Acquire {
            tenant: None,
            size: 40 * MIB,
            fallible: true,
            fresh_handle: false,
        },
        Op::Acquire {
            tenant: None,
            size: 12 * MIB,
            fallible: true,
            fresh_handle: false,
        },
        Op::TryReserve {
            target: Pick(1),
            additional: Additional::PastCapacity,
            panicking: false,
        },
    ];
    let knobs = Knobs {
        zero_on_release: false,
        idle_per_class: SETUP.idle_per_class,
        idle_bytes: SETUP.idle_bytes,
        max_live: SETUP.max_live,
    };
    run(knobs, &ops);
}
