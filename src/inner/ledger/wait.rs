//! Waiting for room instead of refusing: the queue of the async acquire, and the pass that
//! serves it.
//!
//! # The rules
//!
//! - A request waits only while a limit refuses it and waiting can help
//!   ([`PoolError::waiting_helps`]); one that can never fit fails at once.
//! - Waiters are served in arrival order, per tenant: a tenant's first waiter is its *head*,
//!   and the ones behind it wait even if they would fit (head-of-line: a large request is
//!   never starved by a stream of small ones). Waiters for the pool's `max_live_bytes` are
//!   served in arrival order across tenants the same way.
//! - While a tenant (or the pool) has waiters, the room that frees up is theirs: a new
//!   buffer or reservation of that tenant (of any tenant, for the pool) is refused by
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
//! Dropping the future anywhere charges nothing: a queued waiter leaves the queue, and one
//! already charged on its behalf gives the charge back; either way a pass runs, so its turn
//! goes to the next waiter.
//!
//! While a tenant has waiters its ceiling is 0 and its stocks have been taken back, so its
//! usage is its live bytes, every debit reaches the word, and no stock hides room.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::{Charged, Ledger, Magazines, Purpose};
use crate::inner::account::TenantAccount;
use crate::PoolError;

/// The waiters, in arrival order. Guarded by the ledger's lock.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// Scratch of a pass: the tenants whose head does not fit yet (account addresses).
    blocked: Vec<usize>,
    /// Scratch of a pass: those of them whose head their own hard limit refuses.
    over_hard: Vec<usize>,
    /// Bytes the waiters not yet served hold already (see "Hold and wait").
    held: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    account: Option<Arc<TenantAccount>>,
    bytes: u64,
    purpose: Purpose,
    /// What the request holds in all once served (`bytes` plus what it holds already).
    needed: u64,
    waker: Waker,
    since: Instant,
    /// Decided on the waiter's behalf: charged (the future takes the charge on its next
    /// poll), or failed. `None` while it waits.
    outcome: Option<Result<Charged, PoolError>>,
}

impl Waiter {
    fn key(&self) -> usize {
        self.account.as_ref().map_or(0, |a| Arc::as_ptr(a) as usize)
    }

    /// Bytes the request holds already (a growing buffer's capacity).
    fn held(&self) -> u64 {
        self.needed - self.bytes
    }
}

impl Ledger {
    /// Whether queued waiters own the room this charge would take: a new buffer or
    /// reservation of a tenant with waiters, or of anyone while the pool has waiters. The
    /// caller holds the lock.
    pub(super) fn queued_ahead(
        &self,
        account: Option<&TenantAccount>,
        bytes: u64,
        purpose: Purpose,
    ) -> Option<PoolError> {
        if purpose == Purpose::Growth {
            return None;
        }
        if self.pool_waits.load(Relaxed) {
            return Some(PoolError::PoolLimit {
                requested: bytes,
                live: self.usage.load(Relaxed),
                limit: self.limit,
                needed: bytes,
            });
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

    /// Runs a pass, if anyone waits.
    pub(crate) fn serve(&self, magazines: &Magazines) {
        if self.anyone_waits() {
            let mut queue = self.lock.lock();
            self.pass(&mut queue, magazines);
        }
    }

    /// Serves the queue in arrival order: each tenant's head (and, for the pool, the
    /// first waiter it refuses and everyone behind it) is charged and woken if it fits;
    /// waiters that can never fit, or that wait for each other, fail.
    pub(super) fn pass(&self, queue: &mut Queue, magazines: &Magazines) {
        loop {
            let pool_blocked = self.serve_fitting(queue, magazines);
            if pool_blocked && !self.pool_waits.swap(true, Relaxed) {
                // From now on no pool stock may hide room the waiters need: take them
                // back, then look again (see "No lost wakeup").
                self.take_back_pool_stocks(magazines);
                continue;
            }
            if !pool_blocked {
                self.pool_waits.store(false, Relaxed);
            }
            self.break_deadlock(queue, pool_blocked);
            return;
        }
    }

    /// One look at the queue in arrival order: serves what fits, fails what never can.
    /// Returns whether the pool's limit blocks a waiter.
    fn serve_fitting(&self, queue: &mut Queue, magazines: &Magazines) -> bool {
        let Queue {
            waiters,
            blocked,
            over_hard,
            held,
            ..
        } = queue;
        blocked.clear();
        over_hard.clear();
        let mut pool_blocked = false;
        let mut took_back = false;
        for w in waiters.iter_mut().filter(|w| w.outcome.is_none()) {
            if let Some(err) = self.never_fits(w) {
                self.fail(w, err, held);
                continue;
            }
            let key = w.key();
            if (key != 0 && blocked.contains(&key)) || pool_blocked {
                if key != 0 {
                    blocked.push(key);
                }
                continue;
            }
            let account = w.account.as_deref();
            let mut fits = self.check(account, w.bytes, w.purpose);
            if matches!(fits, Err(PoolError::PoolLimit { .. })) && !took_back {
                // Idle threads' pool stocks may hold the room: take them back once.
                self.take_back(magazines, true, None);
                took_back = true;
                fits = self.check(account, w.bytes, w.purpose);
            }
            match fits {
                Ok(()) => {
                    let charged = self.grant(w, held);
                    w.outcome = Some(Ok(charged));
                    w.waker.wake_by_ref();
                }
                Err(err) => {
                    pool_blocked |= matches!(err, PoolError::PoolLimit { .. });
                    if key != 0 {
                        blocked.push(key);
                    }
                    if matches!(err, PoolError::TenantHardLimit { .. }) {
                        over_hard.push(key);
                    }
                }
            }
        }
        pool_blocked
    }

    /// The refusal of a waiter that can never fit the limits as they are now.
    fn never_fits(&self, w: &Waiter) -> Option<PoolError> {
        let err = match &w.account {
            Some(acc) if w.needed > acc.hard_bound() => PoolError::TenantHardLimit {
                tenant: acc.id().to_owned(),
                requested: w.bytes,
                live: acc.usage.load(Relaxed),
                limit: acc.hard_bound(),
                needed: w.needed,
            },
            _ if w.needed > self.limit => PoolError::PoolLimit {
                requested: w.bytes,
                live: self.usage.load(Relaxed),
                limit: self.limit,
                needed: w.needed,
            },
            _ => return None,
        };
        Some(err)
    }

    /// Fails the youngest waiter that holds memory under a limit whose live bytes are all
    /// held by its waiters (see "Hold and wait"): a tenant's hard limit first, then the
    /// pool's. One waiter a pass; the next pass, after it let go, looks again.
    fn break_deadlock(&self, queue: &mut Queue, pool_blocked: bool) {
        let Queue {
            waiters,
            over_hard,
            held,
            ..
        } = queue;
        // A tenant has no stock while it waits, so its usage is its live bytes.
        let all_held = |acc: &TenantAccount| {
            let live = acc.usage.load(Relaxed);
            live > 0 && live <= acc.waiting_held.load(Relaxed)
        };
        let stuck = over_hard.iter().copied().find(|&key| {
            let acc = waiters.iter().find(|w| w.key() == key);
            acc.and_then(|w| w.account.as_deref()).is_some_and(all_held)
        });
        // With `pool_waits` up and the stocks taken back, the pool's usage is live too.
        let pool_live = self.usage.load(Relaxed);
        if stuck.is_none() && !(pool_blocked && pool_live > 0 && pool_live <= *held) {
            return;
        }
        let victim = waiters.iter_mut().rev().find(|w| {
            w.outcome.is_none() && w.held() > 0 && stuck.is_none_or(|key| w.key() == key)
        });
        let Some(victim) = victim else { return };
        let err = match (stuck, victim.account.as_deref()) {
            (Some(_), Some(acc)) => PoolError::WaitDeadlock {
                tenant: Some(acc.id().to_owned()),
                requested: victim.bytes,
                held: victim.held(),
                live: acc.usage.load(Relaxed),
                limit: acc.hard_bound(),
            },
            _ => PoolError::WaitDeadlock {
                tenant: None,
                requested: victim.bytes,
                held: victim.held(),
                live: pool_live,
                limit: self.limit,
            },
        };
        self.fail(victim, err, held);
    }

    /// Takes a waiter off the waiting counts (served, failed or cancelled).
    fn leave(&self, w: &Waiter, held: &mut u64) {
        self.waiting.fetch_sub(1, SeqCst);
        *held -= w.held();
        if let Some(acc) = &w.account {
            acc.waiting_held.fetch_sub(w.held(), Relaxed);
            if acc.waiters.fetch_sub(1, Relaxed) == 1 {
                acc.restore_ceiling();
            }
        }
    }

    /// Fails a waiter: it leaves the waiting counts, is counted as a refusal, and is woken
    /// to take its error.
    fn fail(&self, w: &mut Waiter, err: PoolError, held: &mut u64) {
        self.leave(w, held);
        self.count_refusal(&err, w.account.as_deref());
        w.outcome = Some(Err(err));
        w.waker.wake_by_ref();
    }

    /// Charges a served waiter's request, straight to the usage words, and takes it off the
    /// waiting counts.
    fn grant(&self, w: &Waiter, held: &mut u64) -> Charged {
        let (bytes, purpose) = (w.bytes, w.purpose);
        self.usage.fetch_add(bytes, Relaxed);
        if purpose == Purpose::Reservation {
            self.reserved.fetch_add(bytes, Relaxed);
        }
        self.leave(w, held);
        let Some(acc) = w.account.as_deref() else {
            return Charged { over_soft: false };
        };
        acc.usage.fetch_add(bytes, Relaxed);
        acc.buffers.fetch_add(purpose.buffers(), Relaxed);
        // The tenant had no stock while it had waiters: usage is its live bytes.
        Charged {
            over_soft: acc.usage.load(Relaxed) > acc.soft_limit(),
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
        let refused = match self.queued_ahead(acc, bytes, purpose) {
            Some(err) => err,
            None => match self.commit(magazines, acc, bytes, purpose, false) {
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
        if !refused.waiting_helps() || needed > hard || needed > self.limit {
            self.count_refusal(&refused, acc);
            return Err(refused);
        }
        let id = queue.next_id;
        queue.next_id += 1;
        queue.waiters.push_back(Waiter {
            id,
            account: account.cloned(),
            bytes,
            purpose,
            needed,
            waker: waker.clone(),
            since: Instant::now(),
            outcome: None,
        });
        let held = needed - bytes;
        queue.held += held;
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
        self.pass(&mut queue, magazines);
        match self.take_outcome(&mut queue, id) {
            Some(outcome) => outcome.map(Ok),
            None => Ok(Err(id)),
        }
    }

    /// A later poll: the waiter's outcome if it was decided (it leaves the queue), else
    /// its waker is updated.
    fn poll_queued(&self, id: u64, waker: &Waker) -> Option<Result<Charged, PoolError>> {
        let mut queue = self.lock.lock();
        let outcome = self.take_outcome(&mut queue, id);
        if outcome.is_none() {
            if let Some(w) = queue.waiters.iter_mut().find(|w| w.id == id) {
                w.waker.clone_from(waker);
            }
        }
        outcome
    }

    /// Removes a served or failed waiter and returns its outcome, counting the time it
    /// waited.
    fn take_outcome(&self, queue: &mut Queue, id: u64) -> Option<Result<Charged, PoolError>> {
        let at = queue
            .waiters
            .iter()
            .position(|w| w.id == id && w.outcome.is_some())?;
        let w = queue.waiters.remove(at)?;
        self.count_wait(&w);
        w.outcome
    }

    /// Adds the time `w` waited to its tenant's figure and the pool's.
    fn count_wait(&self, w: &Waiter) {
        let nanos = u64::try_from(w.since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(nanos, Relaxed);
        if let Some(acc) = &w.account {
            acc.wait_nanos.fetch_add(nanos, Relaxed);
        }
    }

    /// The future was dropped: nothing stays charged, and the turn goes on.
    fn cancel(&self, magazines: &Magazines, id: u64) {
        let mut queue = self.lock.lock();
        let Some(at) = queue.waiters.iter().position(|w| w.id == id) else {
            return;
        };
        let Some(w) = queue.waiters.remove(at) else {
            return;
        };
        self.count_wait(&w);
        match &w.outcome {
            Some(Ok(_)) => {
                // Served but never taken: give the charge back.
                self.usage.fetch_sub(w.bytes, SeqCst);
                if w.purpose == Purpose::Reservation {
                    self.reserved.fetch_sub(w.bytes, Relaxed);
                }
                if let Some(acc) = w.account.as_deref() {
                    acc.buffers.fetch_sub(w.purpose.buffers(), Relaxed);
                    acc.usage.fetch_sub(w.bytes, SeqCst);
                }
            }
            Some(Err(_)) => {} // failed: it left the counts then
            None => self.leave(&w, &mut queue.held),
        }
        self.pass(&mut queue, magazines);
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
        }
    }
}

/// The future of [`Ledger::charge_wait`]: the charge, once made.
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
}

impl Future for ChargeWait<'_> {
    type Output = Result<Charged, PoolError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match this.queued {
            Some(id) => match this.ledger.poll_queued(id, cx.waker()) {
                Some(outcome) => {
                    this.queued = None;
                    Poll::Ready(outcome)
                }
                None => Poll::Pending,
            },
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
            self.ledger.cancel(self.magazines, id);
        }
    }
}

#[cfg(all(test, axon_loom))]
#[path = "wait_loom.rs"]
mod loom_tests;
