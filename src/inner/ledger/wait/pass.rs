//! The pass: what runs under the ledger's lock whenever room may have freed or a limit
//! changed. It looks again at the lines a change touched, serves heads in the sharing
//! policy's order (`share.rs`), and fails the waiters that can never fit or that wait for
//! each other (the rules are in the parent module's docs).

use std::collections::HashMap;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use super::{key_of, Decided, Focus, Line, Queue, Waiter};
use crate::inner::account::TenantAccount;
use crate::inner::ledger::share::Share;
use crate::inner::ledger::{Charged, Ledger, Magazines, Purpose};
use crate::PoolError;

impl Ledger {
    /// Looks at `focus` again, then serves the lines in the policy's order; waiters that
    /// can never fit, or that wait for each other, fail.
    pub(in crate::inner::ledger) fn pass(
        &self,
        queue: &mut Queue,
        magazines: &Magazines,
        focus: Focus,
    ) {
        match focus {
            Focus::Order => {}
            Focus::Tenant(key) => self.refresh(queue, key, false),
            Focus::Limits(key) => self.refresh(queue, key, true),
            Focus::All => {
                let keys: Vec<usize> = queue.lines.keys().copied().collect();
                for key in keys {
                    self.refresh(queue, key, true);
                }
            }
        }
        loop {
            let pool_blocked = self.serve_in_order(queue, magazines);
            if pool_blocked && !self.pool_waits.swap(true, Relaxed) {
                // From now on no pool stock may hide room the waiters need: take them
                // back, then look again (see "No lost wakeup").
                self.take_back_pool_stocks(magazines);
                continue;
            }
            if !pool_blocked {
                self.pool_waits.store(false, Relaxed);
            } else {
                self.break_pool_deadlock(queue);
            }
            return;
        }
    }

    /// A line whose tenant's usage or limits changed: puts it back in the serving order
    /// with its rank read anew, and after a limit change first fails the waiters that can
    /// never fit (a debit makes nothing impossible: it skips that look at every waiter).
    pub(super) fn refresh(&self, queue: &mut Queue, key: usize, limits_changed: bool) {
        let Queue {
            lines,
            decided,
            held,
            share,
            ..
        } = queue;
        let Some(line) = lines.get_mut(&key) else {
            return;
        };
        let mut at = 0;
        while limits_changed && at < line.waiters.len() {
            match self.never_fits(share, line.account.as_deref(), &line.waiters[at]) {
                Some(err) => {
                    let w = line.waiters.remove(at).expect("in the line");
                    self.fail(line.account.as_ref(), w, err, held, decided);
                }
                None => at += 1,
            }
        }
        self.place(share, line);
        if line.waiters.is_empty() {
            lines.remove(&key);
        }
    }

    /// Puts `line` in the serving order at its rank now (out of it if empty).
    pub(super) fn place(&self, share: &mut Share, line: &mut Line) {
        if let Some(place) = line.place.take() {
            share.order.remove(&place);
        }
        if let Some(head) = line.waiters.front() {
            let place = (
                self.rank(line.account.as_deref()),
                head.id,
                key_of(line.account.as_deref()),
            );
            share.order.insert(place);
            line.place = Some(place);
        }
    }

    /// Serves heads in the policy's order until one does not fit the pool. Returns
    /// whether the pool's limit blocks a head.
    fn serve_in_order(&self, queue: &mut Queue, magazines: &Magazines) -> bool {
        let mut took_back = false;
        while let Some(&place) = queue.share.order.first() {
            let Queue {
                lines,
                decided,
                held,
                share,
                ..
            } = &mut *queue;
            let key = place.2;
            let line = lines.get_mut(&key).expect("a placed line has waiters");
            let account = line.account.clone();
            let acc = account.as_deref();
            // A growth of a waiting tenant's buffer may have raised its rank: re-place it.
            if self.rank(acc) != place.0 {
                self.place(share, line);
                continue;
            }
            let w = line.waiters.front().expect("a placed line has waiters");
            let mut fits = self.check(share, acc, w.bytes, w.purpose);
            if matches!(fits, Err(PoolError::PoolLimit { .. })) && !took_back {
                // Idle threads' pool stocks may hold the room: take them back once.
                self.take_back(magazines, true, None);
                took_back = true;
                fits = self.check(share, acc, w.bytes, w.purpose);
            }
            match fits {
                Ok(()) => {
                    let w = line.waiters.pop_front().expect("the head");
                    let charged = self.grant(acc, &w, held);
                    w.waker.wake_by_ref();
                    decided.insert(w.id, Decided::new(account.clone(), &w, Ok(charged)));
                    self.place(share, line);
                    if line.waiters.is_empty() {
                        lines.remove(&key);
                    }
                }
                Err(PoolError::PoolLimit { .. }) => return true,
                Err(PoolError::TenantHardLimit { .. }) => {
                    // Out of the order until its own debits or limits change.
                    share.order.remove(&place);
                    line.place = None;
                    self.break_tenant_deadlock(line, held, decided);
                    if line.waiters.is_empty() {
                        lines.remove(&key);
                    }
                }
                Err(err) => {
                    // A sum would overflow: nothing waiting can fix.
                    let w = line.waiters.pop_front().expect("the head");
                    self.fail(account.as_ref(), w, err, held, decided);
                    self.place(share, line);
                    if line.waiters.is_empty() {
                        lines.remove(&key);
                    }
                }
            }
        }
        false
    }

    /// The refusal of a waiter that can never fit the limits as they are now.
    fn never_fits(
        &self,
        share: &Share,
        account: Option<&TenantAccount>,
        w: &Waiter,
    ) -> Option<PoolError> {
        if let Some(acc) = account.filter(|acc| w.needed > acc.hard_bound()) {
            return Some(PoolError::TenantHardLimit {
                tenant: acc.id().to_owned(),
                requested: w.bytes,
                live: acc.usage.load(Relaxed),
                limit: acc.hard_bound(),
                needed: w.needed,
            });
        }
        let bound = self.pool_bound(share, account);
        (w.needed > bound).then(|| PoolError::PoolLimit {
            requested: w.bytes,
            live: self.usage.load(Relaxed),
            limit: bound,
            needed: w.needed,
        })
    }

    /// A line its tenant's hard limit blocks: if the tenant's live bytes are all held by
    /// its waiters, fails the youngest of them that holds memory (see "Hold and wait").
    fn break_tenant_deadlock(
        &self,
        line: &mut Line,
        held: &mut u64,
        decided: &mut HashMap<u64, Decided>,
    ) {
        let Some(acc) = line.account.as_deref() else {
            return;
        };
        // A tenant has no stock while it waits: its usage is its live bytes.
        let live = acc.usage.load(Relaxed);
        if live == 0 || live > acc.waiting_held.load(Relaxed) {
            return;
        }
        let Some(at) = line.waiters.iter().rposition(|w| w.held() > 0) else {
            return;
        };
        let w = line.waiters.remove(at).expect("in the line");
        let err = PoolError::WaitDeadlock {
            tenant: Some(acc.id().to_owned()),
            requested: w.bytes,
            held: w.held(),
            live,
            limit: acc.hard_bound(),
        };
        let account = line.account.clone();
        self.fail(account.as_ref(), w, err, held, decided);
    }

    /// The pool's limit blocks a head: if the pool's live bytes are all held by waiters,
    /// fails the youngest waiter that holds memory, of any line.
    fn break_pool_deadlock(&self, queue: &mut Queue) {
        // With `pool_waits` up and the stocks taken back, the pool's usage is live.
        let live = self.usage.load(Relaxed);
        if live == 0 || live > queue.held {
            return;
        }
        let youngest = queue
            .lines
            .iter()
            .flat_map(|(&key, line)| {
                let holders = line.waiters.iter().filter(|w| w.held() > 0);
                holders.map(move |w| (w.id, key))
            })
            .max();
        let Some((id, key)) = youngest else { return };
        let Queue {
            lines,
            decided,
            held,
            share,
            ..
        } = queue;
        let line = lines.get_mut(&key).expect("found above");
        let at = line
            .waiters
            .iter()
            .position(|w| w.id == id)
            .expect("found above");
        let w = line.waiters.remove(at).expect("in the line");
        let err = PoolError::WaitDeadlock {
            tenant: None,
            requested: w.bytes,
            held: w.held(),
            live,
            limit: self.limit,
        };
        let account = line.account.clone();
        self.fail(account.as_ref(), w, err, held, decided);
        self.place(share, line);
        if line.waiters.is_empty() {
            lines.remove(&key);
        }
    }

    /// Takes a waiter off the waiting counts (served, failed or cancelled).
    pub(super) fn leave(&self, account: Option<&TenantAccount>, w: &Waiter, held: &mut u64) {
        self.waiting.fetch_sub(1, SeqCst);
        *held -= w.held();
        if let Some(acc) = account {
            acc.waiting_held.fetch_sub(w.held(), Relaxed);
            if acc.waiters.fetch_sub(1, Relaxed) == 1 {
                acc.restore_ceiling();
            }
        }
    }

    /// Fails a waiter taken out of its line: it leaves the waiting counts, is counted as
    /// a refusal, and is woken to take its error.
    pub(super) fn fail(
        &self,
        account: Option<&Arc<TenantAccount>>,
        w: Waiter,
        err: PoolError,
        held: &mut u64,
        decided: &mut HashMap<u64, Decided>,
    ) {
        self.leave(account.map(|a| &**a), &w, held);
        self.count_refusal(&err, account.map(|a| &**a));
        w.waker.wake_by_ref();
        decided.insert(w.id, Decided::new(account.cloned(), &w, Err(err)));
    }

    /// Charges a served waiter's request, straight to the usage words, and takes it off the
    /// waiting counts.
    pub(super) fn grant(
        &self,
        account: Option<&TenantAccount>,
        w: &Waiter,
        held: &mut u64,
    ) -> Charged {
        let (bytes, purpose) = (w.bytes, w.purpose);
        self.usage.fetch_add(bytes, Relaxed);
        if purpose == Purpose::Reservation {
            self.reserved.fetch_add(bytes, Relaxed);
        }
        self.leave(account, w, held);
        let Some(acc) = account else {
            return Charged { over_soft: false };
        };
        self.tenant_charge(acc, bytes);
        acc.buffers.fetch_add(purpose.buffers(), Relaxed);
        // The tenant had no stock while it had waiters: usage is its live bytes.
        Charged {
            over_soft: acc.usage.load(Relaxed) > acc.soft_limit(),
        }
    }
}
