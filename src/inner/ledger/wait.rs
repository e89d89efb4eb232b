//! Waiting for room instead of refusing: the queue of the async acquire, and the pass that
//! serves it.
//!
//! # The rules
//!
//! - A request waits only while a limit refuses it and waiting can help
//!   ([`PoolError::waiting_helps`]); one that can never fit fails at once.
//! - Waiters are served in arrival order, per tenant: a tenant's first waiter is its *head*,
//!   and the ones behind it wait even if they would fit (head-of-line: a large request is
//!   never starved by a stream of small ones). Each tenant's waiters form a *line*
//!   (untenanted ones one more line). Across lines, for the pool's `max_live_bytes`, the
//!   order is the sharing policy's (`share.rs`: least holding first, and no line of
//!   higher rank overtakes a head that does not fit).
//! - While a tenant (or the pool) has waiters, the room that frees up is theirs: a new
//!   buffer or reservation of that tenant (for the pool: of any tenant that would not rank
//!   before every line waiting for it, and not within its own guarantee) is refused by
//!   `try_*` and queued by the `_wait` forms. A buffer that already exists may still grow.
//! - Every debit that reaches a usage word, every limit change and every stock given back
//!   runs a *pass* when anyone waits: in arrival order, each head whose request now fits
//!   is charged, on its behalf, and woken.
//! - A waiter that can no longer ever fit (a limit was lowered under it) fails in the
//!   pass, with an error whose `waiting_helps()` is false, and holds up nobody after.
//!
//! # Hold and wait
//!
//! A growing buffer waits while it holds memory under the same limit (`needed - bytes`,
//! its *held* bytes), so two of them can each hold part of a limit and wait for the rest.
//! Every waiter's held bytes are summed per tenant and for the pool. When a limit refuses
//! its waiters and its live bytes are all held by its waiters, nothing else can ever free
//! room under it: new buffers queue behind the waiters, and only a live buffer that is not
//! waiting could grow or drop. The pass then fails the youngest waiter that holds memory
//! ([`PoolError::WaitDeadlock`]); once its caller lets go, the next pass goes on. A holder
//! that does not wait (a reservation, a buffer in use) is no deadlock: it may still let go.
//!
//! # No lost wakeup
//!
//! A waiter is queued and counted in `waiting`, then checks for room once more (the pass),
//! all under the ledger's lock. A debit decrements a usage word, then loads `waiting`: both
//! sides `SeqCst`, so either the debit sees the waiter and runs a pass, or the waiter's
//! last check sees the debit (the tokio-uring#280 race: registering after the last check).
//!
//! A drop on a fast path puts its bytes into its thread's stock and looks at nothing but
//! `pool_waits`. So when the pool's limit first blocks a waiter, the pass raises
//! `pool_waits`, takes every stock back (the freeze waits for a drop in progress, and a
//! drop after it sees the flag and goes to the usage word), and *then looks again*: a drop
//! that stocked its bytes before the flag went up is in the usage word by now.
//!
//! # Cancellation
//!
//! Dropping the future anywhere charges nothing: a queued waiter leaves the queue (counted
//! as an abandoned wait), and one already charged on its behalf gives the charge back;
//! either way a pass runs, so its turn goes to the next waiter.
//!
//! While a tenant has waiters its ceiling is 0 and its stocks have been taken back, so its
//! usage is its live bytes, every debit reaches the word, and no stock hides room.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

mod pass;

use super::share::{Place, Share};
use super::{Charged, Ledger, Magazines, Purpose};
use crate::inner::account::{AccountPtr, TenantAccount};
use crate::PoolError;

/// The waiters, by line, and the waiters already decided. Guarded by the ledger's lock.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    next_id: u64,
    /// The waiters not yet decided, per line (key: the account's address; 0 untenanted).
    lines: HashMap<usize, Line>,
    /// Waiters served or failed on their behalf, by id, until their future takes the
    /// outcome.
    decided: HashMap<u64, Decided>,
    /// Bytes the waiters not yet decided hold already (see "Hold and wait").
    held: u64,
    /// The sharing policy's state: the serving order and the guarantees (`share.rs`).
    pub(super) share: Share,
}

/// One tenant's waiters, in arrival order.
#[derive(Debug)]
struct Line {
    account: Option<Arc<TenantAccount>>,
    waiters: VecDeque<Waiter>,
    /// Its place in the serving order; `None` while its tenant's hard limit refuses its
    /// head (its own debits and limit changes look at it again).
    place: Option<Place>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    bytes: u64,
    purpose: Purpose,
    /// What the request holds in all once served (`bytes` plus what it holds already).
    needed: u64,
    waker: Waker,
    since: Instant,
}

impl Waiter {
    /// Bytes the request holds already (a growing buffer's capacity).
    fn held(&self) -> u64 {
        self.needed - self.bytes
    }
}

/// A waiter served or failed on its behalf.
#[derive(Debug)]
struct Decided {
    account: Option<Arc<TenantAccount>>,
    bytes: u64,
    purpose: Purpose,
    since: Instant,
    outcome: Result<Charged, PoolError>,
}

/// Which lines a pass looks at again before serving, besides the serving order.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Focus {
    /// Only the order (a debit of untenanted bytes, stocks given back).
    Order,
    /// The line of the tenant at this address: its usage or its limits changed. An
    /// address, not a reference: after its last debit the account may be gone (then it
    /// has no line, since a line holds its account).
    Tenant(usize),
    /// The line of the tenant at this address, after a change of its limits: its
    /// waiters that can no longer ever fit fail.
    Limits(usize),
    /// Every line: the room guarantees set aside changed.
    All,
}

fn key_of(account: Option<&TenantAccount>) -> usize {
    account.map_or(0, |acc| acc as *const TenantAccount as usize)
}

impl Ledger {
    /// Whether queued waiters own the room this charge would take: a new buffer or
    /// reservation of a tenant with waiters, or, while the pool has waiters, of a tenant
    /// that would not rank before them all and is not within its guarantee. The caller
    /// holds the lock.
    pub(super) fn queued_ahead(
        &self,
        queue: &Queue,
        account: Option<&TenantAccount>,
        bytes: u64,
        purpose: Purpose,
    ) -> Option<PoolError> {
        if purpose == Purpose::Growth {
            return None;
        }
        if self.pool_waits.load(Relaxed) {
            let within_guarantee =
                account.is_some_and(|acc| acc.usage.load(Relaxed) + bytes <= acc.guaranteed());
            let first = queue.share.order.first().map(|place| place.0);
            if !within_guarantee && first.is_some_and(|rank| self.rank(account) >= rank) {
                return Some(PoolError::PoolLimit {
                    requested: bytes,
                    live: self.usage.load(Relaxed),
                    limit: self.pool_bound(&queue.share, account),
                    needed: bytes,
                });
            }
        }
        let acc = account.filter(|acc| acc.waiters.load(Relaxed) > 0)?;
        Some(PoolError::TenantHardLimit {
            tenant: acc.id().to_owned(),
            requested: bytes,
            live: acc.usage.load(Relaxed),
            limit: acc.hard_bound(),
            needed: bytes,
        })
    }

    /// Whether anyone waits, read after a debit reached a usage word (`SeqCst`: see the
    /// module docs). The caller then runs [`Ledger::serve`], outside any section.
    pub(crate) fn anyone_waits(&self) -> bool {
        self.waiting.load(SeqCst) > 0
    }

    /// Runs a pass, if anyone waits, looking again at `tenant`'s line (its usage changed).
    pub(crate) fn serve(&self, magazines: &Magazines, tenant: Option<AccountPtr>) {
        if self.anyone_waits() {
            let mut queue = self.lock.lock();
            let focus = tenant.map_or(Focus::Order, |a| Focus::Tenant(a.as_ptr() as usize));
            self.pass(&mut queue, magazines, focus);
        }
    }

    /// The first poll: charges at once if nobody is ahead and the limits allow; else queues
    /// the request if waiting can help (`needed` is what the request holds in all: for a
    /// growth step, the buffer's whole new capacity). Returns the charge or the waiter's id.
    fn charge_or_queue(
        &self,
        magazines: &Magazines,
        account: Option<&Arc<TenantAccount>>,
        bytes: u64,
        purpose: Purpose,
        needed: u64,
        waker: &Waker,
    ) -> Result<Result<Charged, u64>, PoolError> {
        let mut queue = self.lock.lock();
        let acc = account.map(|a| &**a);
        let refused = match self.queued_ahead(&queue, acc, bytes, purpose) {
            Some(err) => err,
            None => match self.commit(&queue.share, magazines, acc, bytes, purpose, false) {
                Ok((charged, _, _)) => {
                    if let Some(acc) = acc {
                        acc.buffers.fetch_add(purpose.buffers(), Relaxed);
                    }
                    return Ok(Ok(charged));
                }
                Err(err) => err,
            },
        };
        // A limit refusal names what the request holds in all; it waits if that fits the
        // limits themselves, with nothing else live.
        let mut refused = refused;
        if let PoolError::TenantHardLimit { needed: n, .. }
        | PoolError::PoolLimit { needed: n, .. } = &mut refused
        {
            *n = needed;
        }
        let hard = acc.map_or(u64::MAX, TenantAccount::hard_bound);
        let pool = self.pool_bound(&queue.share, acc);
        if !refused.waiting_helps() || needed > hard || needed > pool {
            if let PoolError::PoolLimit { limit, .. } = &mut refused {
                *limit = pool; // the bound the request can never fit
            }
            self.count_refusal(&refused, acc);
            return Err(refused);
        }
        let id = queue.next_id;
        queue.next_id += 1;
        let w = Waiter {
            id,
            bytes,
            purpose,
            needed,
            waker: waker.clone(),
            since: Instant::now(),
        };
        let held = w.held();
        queue.held += held;
        let Queue { lines, share, .. } = &mut *queue;
        let line = lines.entry(key_of(acc)).or_insert_with(|| Line {
            account: account.cloned(),
            waiters: VecDeque::new(),
            place: None,
        });
        line.waiters.push_back(w);
        if line.waiters.len() == 1 {
            self.place(share, line); // a new head: its line joins the order
        }
        self.waiting.fetch_add(1, SeqCst);
        if let Some(acc) = acc {
            acc.waiting_held.fetch_add(held, Relaxed);
            if acc.waiters.fetch_add(1, Relaxed) == 0 {
                // No stock may hide room from this tenant's waiters from now on.
                acc.ceiling.store(0, Relaxed);
                if acc.stock_slots.load(Relaxed) > 0 {
                    self.take_back(magazines, false, Some(acc));
                }
            }
        }
        // The last check, registered: a debit from now on sees `waiting`. The fence orders
        // the count before the loads of the usage words in the pass.
        fence(SeqCst);
        self.pass(&mut queue, magazines, Focus::for_line(acc));
        match self.take_outcome(&mut queue, id) {
            Some(outcome) => outcome.map(Ok),
            None => Ok(Err(id)),
        }
    }

    /// A later poll: the waiter's outcome if it was decided (it leaves the queue), else
    /// its waker is updated. Unless `take`, a waiter granted its charge stays decided
    /// (`Polled::Granted`): its future yields once first (see [`ChargeWait`]), and if it
    /// is dropped meanwhile, [`Self::cancel`] gives the charge back.
    fn poll_queued(
        &self,
        id: u64,
        account: Option<&TenantAccount>,
        waker: &Waker,
        take: bool,
    ) -> Polled {
        let mut queue = self.lock.lock();
        if !take && queue.decided.get(&id).is_some_and(|d| d.outcome.is_ok()) {
            return Polled::Granted;
        }
        match self.take_outcome(&mut queue, id) {
            Some(outcome) => Polled::Decided(outcome),
            None => {
                let line = queue.lines.get_mut(&key_of(account));
                if let Some(w) = line.and_then(|l| l.waiters.iter_mut().find(|w| w.id == id)) {
                    w.waker.clone_from(waker);
                }
                Polled::Waiting
            }
        }
    }

    /// Removes a decided waiter and returns its outcome, counting the time it waited.
    fn take_outcome(&self, queue: &mut Queue, id: u64) -> Option<Result<Charged, PoolError>> {
        let d = queue.decided.remove(&id)?;
        self.count_wait(d.account.as_deref(), d.since);
        Some(d.outcome)
    }

    /// Adds the time a waiter waited to its tenant's figure and the pool's.
    fn count_wait(&self, account: Option<&TenantAccount>, since: Instant) {
        let nanos = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Relaxed);
        if let Some(acc) = account {
            acc.wait_nanos.fetch_add(nanos, Relaxed);
        }
    }

    /// The future was dropped: nothing stays charged, and the turn goes on.
    fn cancel(&self, magazines: &Magazines, id: u64, account: Option<&TenantAccount>) {
        let mut queue = self.lock.lock();
        if let Some(d) = queue.decided.remove(&id) {
            self.count_wait(d.account.as_deref(), d.since);
            if d.outcome.is_ok() {
                // Served but never taken: give the charge back.
                if let Some(acc) = d.account.as_deref() {
                    acc.buffers.fetch_sub(d.purpose.buffers(), Relaxed);
                    self.tenant_debit(acc, d.bytes);
                }
                self.usage.fetch_sub(d.bytes, SeqCst);
                if d.purpose == Purpose::Reservation {
                    self.reserved.fetch_sub(d.bytes, Relaxed);
                }
            } // failed: it left the counts then
            self.pass(&mut queue, magazines, Focus::for_line(account));
            return;
        }
        let key = key_of(account);
        let Queue {
            lines, held, share, ..
        } = &mut *queue;
        let Some(line) = lines.get_mut(&key) else {
            return;
        };
        let Some(at) = line.waiters.iter().position(|w| w.id == id) else {
            return;
        };
        let w = line.waiters.remove(at).expect("in the line");
        if at == 0 && line.place.is_some() {
            self.place(share, line); // a new head, or an empty line out of the order
        }
        if line.waiters.is_empty() {
            lines.remove(&key);
        }
        self.count_wait(account, w.since);
        self.leave(account, &w, held);
        self.abandoned.fetch_add(1, Relaxed);
        if let Some(acc) = account {
            acc.waits_abandoned.fetch_add(1, Relaxed);
        }
        self.pass(&mut queue, magazines, Focus::for_line(account));
    }

    /// Time the waiters still waiting have waited so far: in all, and per tenant (by
    /// account address).
    pub(crate) fn waiting_for(&self) -> (Duration, HashMap<usize, Duration>) {
        let queue = self.lock.lock();
        let now = Instant::now();
        let mut total = Duration::ZERO;
        let mut per = HashMap::new();
        for (&key, line) in &queue.lines {
            let line_total: Duration = line
                .waiters
                .iter()
                .map(|w| now.saturating_duration_since(w.since))
                .sum();
            total += line_total;
            if key != 0 {
                per.insert(key, line_total);
            }
        }
        (total, per)
    }

    /// Charges `bytes` to `account` and the pool, waiting for room while a limit refuses
    /// and waiting can help. See the module docs.
    pub(crate) fn charge_wait<'a>(
        &'a self,
        magazines: &'a Magazines,
        account: Option<Arc<TenantAccount>>,
        bytes: u64,
        purpose: Purpose,
        needed: u64,
    ) -> ChargeWait<'a> {
        ChargeWait {
            ledger: self,
            magazines,
            account,
            bytes,
            purpose,
            needed,
            queued: None,
            yielded: false,
        }
    }
}

impl Decided {
    fn new(
        account: Option<Arc<TenantAccount>>,
        w: &Waiter,
        outcome: Result<Charged, PoolError>,
    ) -> Decided {
        Decided {
            account,
            bytes: w.bytes,
            purpose: w.purpose,
            since: w.since,
            outcome,
        }
    }
}

impl Focus {
    /// The tenant's line, or only the order for an untenanted waiter.
    pub(super) fn for_line(account: Option<&TenantAccount>) -> Focus {
        account.map_or(Focus::Order, |acc| Focus::Tenant(key_of(Some(acc))))
    }
}

/// What a later poll of a queued waiter finds.
enum Polled {
    /// Still waiting (its waker is updated).
    Waiting,
    /// Granted its charge, which stays decided until the next poll takes it.
    Granted,
    /// Decided, and taken out of the queue.
    Decided(Result<Charged, PoolError>),
}

/// The future of [`Ledger::charge_wait`]: the charge, once made.
///
/// A waiter that was granted its charge by another task's drop yields once before it
/// returns (it wakes itself and returns `Pending`). The drop's task woke it, and tokio runs
/// a task woken that way next on the same worker, in its LIFO slot, ahead of every task
/// that was ready before: a flood's upload served by a drop would keep cutting in front of
/// a quiet tenant's small requests. Yielding puts it at the back of the queue instead.
/// Measured with the noisy-neighbour scenario (`examples/ingest`, a guaranteed quiet
/// tenant beside 8 flooding ones, 10 rounds interleaved): the quiet tenant's requests/s
/// 1.30x of the same server without the yield (median of per-round ratios), the flood's
/// unchanged.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub(crate) struct ChargeWait<'a> {
    ledger: &'a Ledger,
    magazines: &'a Magazines,
    account: Option<Arc<TenantAccount>>,
    bytes: u64,
    purpose: Purpose,
    needed: u64,
    /// The waiter's id once queued; `None` before the first poll and after the end.
    queued: Option<u64>,
    /// The waiter was granted and has yielded once.
    yielded: bool,
}

impl Future for ChargeWait<'_> {
    type Output = Result<Charged, PoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.queued {
            Some(id) => {
                match this
                    .ledger
                    .poll_queued(id, this.account.as_deref(), cx.waker(), this.yielded)
                {
                    Polled::Granted => {
                        this.yielded = true;
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Polled::Decided(outcome) => {
                        this.queued = None;
                        Poll::Ready(outcome)
                    }
                    Polled::Waiting => Poll::Pending,
                }
            }
            None => {
                let first = this.ledger.charge_or_queue(
                    this.magazines,
                    this.account.as_ref(),
                    this.bytes,
                    this.purpose,
                    this.needed,
                    cx.waker(),
                );
                match first {
                    Ok(Ok(charged)) => Poll::Ready(Ok(charged)),
                    Ok(Err(id)) => {
                        this.queued = Some(id);
                        Poll::Pending
                    }
                    Err(err) => Poll::Ready(Err(err)),
                }
            }
        }
    }
}

impl Drop for ChargeWait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.queued.take() {
            self.ledger
                .cancel(self.magazines, id, self.account.as_deref());
        }
    }
}

#[cfg(all(test, axon_loom))]
#[path = "wait_loom.rs"]
mod loom_tests;

#[cfg(all(test, axon_loom))]
#[path = "wait/hangs_loom.rs"]
mod loom_tests_hangs;
