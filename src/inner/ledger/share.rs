//! Sharing `max_live_bytes` between tenants: who is served first when room frees, and the
//! room guarantees set aside. The policy beside the waiter queue (`wait.rs`, the
//! mechanism), as an allocator keeps page selection apart from page mechanics.
//!
//! # The serving rule: max-min fairness
//!
//! Waiters for the pool's room are grouped in *lines*, one per tenant (untenanted buffers
//! are one more line), each in arrival order. A line's *rank* is what its tenant holds
//! beyond its guarantee (its usage word less its guarantee; for the untenanted line, the
//! pool's usage less every tenant's). When room frees, the line of least rank is served
//! first (ties: the earlier head), then the next, and the first head that does not fit
//! stops the pass: no line of higher rank overtakes it, however small its request. So a
//! tenant that holds little is never behind one that holds most of the budget, and as
//! every tenant asks, what they hold converges to equal shares above their guarantees
//! (the memory cgroup's `memory.low`, DataFusion's `FairSpillPool` without its two flaws:
//! the rank is the tenant's whole holding, not one reservation's, and it is read anew at
//! every pass, so a share nobody uses is never kept from anyone).
//!
//! Ranks live in a `BTreeSet`: choosing whom to serve costs `O(log n)` with `n` waiting
//! tenants. A line's rank is read again whenever its tenant's usage changes with waiters
//! queued (a debit of that tenant runs a pass focused on it), and checked against the word
//! before its head is served.
//!
//! # Why nothing starves
//!
//! A waiter is overtaken only by lines of lower rank, and every overtake raises the
//! overtaker's rank by what it was granted. A line that holds nothing beyond its
//! guarantee is overtaken by nobody (ties go to the earlier head): its head, whatever its
//! size, is served as soon as drops free that much, since every line behind it waits.
//! A line of rank `r` is overtaken only while other tenants ask for room and hold less than
//! `r` each; for that to go on forever, the others must keep the pool full while each holds
//! less than `r`, that is the waiter's tenant holds more than an equal share. A tenant at
//! or below its equal share of the budget therefore always gets through; one above it
//! gets through once the others stop asking for more than their own equal share.
//!
//! # Guarantees
//!
//! `Tenant::set_guarantee(Some(g))` sets room aside that only that tenant may use (cgroup
//! `memory.min`, a Kubernetes request). The room set aside for tenant `i` is `g_i - u_i`
//! while its usage `u_i` is below `g_i`. A charge of `b` bytes by tenant `j` fits the pool
//! when `pool usage + b + (room set aside for every other tenant) <= max_live_bytes`, so:
//! - within its guarantee a tenant never waits for the budget (its own set-aside room
//!   pays for the charge), once the others hold no more than what is left outside the
//!   guarantees (a guarantee set while others hold that room takes effect as they drop);
//! - nobody else ever takes that room; the budget itself is never passed;
//! - the guarantees together never pass `max_live_bytes` (`set_guarantee` refuses);
//! - a request larger than `max_live_bytes` less the other tenants' guarantees can never
//!   fit and fails at once.
//!
//! A refusal reports the pool's limit from the tenant's point of view: `limit` is
//! `max_live_bytes` less the other tenants' guarantees, `live` the pool's live bytes less
//! what the others hold within their guarantees (without guarantees, both are the pool's
//! own figures).
//!
//! Exactness: a check reads the pool's usage word first, then the tenants'; a debit of a
//! tenant's bytes lowers the tenant's word first, then the pool's. So a check may see
//! room set aside that is already free (conservative), never free room that is still set
//! aside. A protected tenant (a guarantee under `max_live_bytes`) keeps no stock, and its
//! drops put nothing into a thread's pool stock: a pool stock is spendable by any tenant
//! of its thread, so it must never hold room a guarantee set aside. Pool stocks are
//! granted only from room outside every guarantee.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::wait::Focus;
use super::{Ledger, Magazines};
use crate::inner::account::TenantAccount;
use crate::PoolError;

/// A line's place in the serving order: (rank, id of its head, line key).
pub(super) type Place = (u64, u64, usize);

/// The sharing state, guarded by the ledger's lock (it lives in its queue).
#[derive(Debug, Default)]
pub(crate) struct Share {
    /// Lines whose head waits for the pool's room, least rank first.
    pub(super) order: BTreeSet<Place>,
    /// Accounts with a guarantee above 0.
    guaranteed: Vec<Arc<TenantAccount>>,
    /// Their guarantees, summed.
    total: u64,
}

/// The room other tenants' guarantees set aside, as a charge of one tenant sees it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Others {
    /// Their guarantees, summed.
    pub(super) guaranteed: u64,
    /// What they hold within their guarantees, summed.
    pub(super) covered: u64,
}

impl Others {
    /// Room set aside for them now.
    pub(super) fn set_aside(self) -> u64 {
        self.guaranteed - self.covered
    }
}

impl Share {
    /// The other tenants' guarantees and what they hold within them, as `account` sees
    /// them (every tenant's, for an untenanted charge). `O(tenants with a guarantee)`.
    pub(super) fn others(&self, account: Option<&TenantAccount>) -> Others {
        let mut others = Others::default();
        for acc in &self.guaranteed {
            if account.is_some_and(|a| std::ptr::eq(a, &**acc)) {
                continue;
            }
            let g = acc.guaranteed();
            others.guaranteed += g;
            others.covered += g.min(acc.usage.load(Relaxed));
        }
        others
    }

    /// Whether any guarantee is set.
    pub(super) fn any(&self) -> bool {
        self.total > 0
    }
}

impl Ledger {
    /// A line's rank: what its tenant holds beyond its guarantee; for the untenanted line,
    /// the pool's usage less every tenant's (exact at rest).
    pub(super) fn rank(&self, account: Option<&TenantAccount>) -> u64 {
        match account {
            Some(acc) => acc.usage.load(Relaxed).saturating_sub(acc.guaranteed()),
            None => self
                .usage
                .load(Relaxed)
                .saturating_sub(self.tenanted.load(Relaxed)),
        }
    }

    /// Whether the pool's limit, with the room guarantees set aside, has room for `bytes`
    /// more charged to `account`, with the pool's usage word read as `pool_used` (read
    /// before the tenants' words: see "Exactness").
    pub(super) fn check_share(
        &self,
        share: &Share,
        account: Option<&TenantAccount>,
        pool_used: u64,
        bytes: u64,
    ) -> Result<(), PoolError> {
        let others = match share.any() {
            true => share.others(account),
            false => Others::default(),
        };
        let limit = self.limit - others.guaranteed;
        let live = pool_used.saturating_sub(others.covered);
        match live.checked_add(bytes) {
            Some(after) if after <= limit => Ok(()),
            None => Err(PoolError::TooLarge {
                requested: bytes,
                max: u64::MAX,
            }),
            Some(_) => Err(PoolError::PoolLimit {
                requested: bytes,
                live,
                limit,
                needed: bytes,
            }),
        }
    }

    /// The most stock a charge of `bytes` to `account` may add to this thread's pool
    /// stock: room outside every guarantee, after the charge.
    pub(super) fn grantable(
        &self,
        share: &Share,
        account: Option<&TenantAccount>,
        bytes: u64,
    ) -> u64 {
        let pool_used = self.usage.load(Relaxed);
        let mut set_aside = 0;
        if share.any() {
            set_aside = share.others(account).set_aside();
            if let Some(acc) = account {
                let g = acc.guaranteed();
                set_aside += g.saturating_sub(acc.usage.load(Relaxed) + bytes);
            }
        }
        self.limit
            .saturating_sub(pool_used + bytes)
            .saturating_sub(set_aside)
    }

    /// The largest request `account` could ever have granted under the pool's limit:
    /// `max_live_bytes` less the other tenants' guarantees.
    pub(super) fn pool_bound(&self, share: &Share, account: Option<&TenantAccount>) -> u64 {
        match share.any() {
            true => self.limit - share.others(account).guaranteed,
            false => self.limit,
        }
    }

    /// Sets a tenant's guarantee under the ledger's lock, or refuses it changing nothing
    /// (`share.rs`). The stocks that could hold the room it sets aside are taken back, and
    /// every waiter is looked at again.
    pub(crate) fn set_guarantee(
        &self,
        magazines: &Magazines,
        account: &Arc<TenantAccount>,
        bytes: Option<u64>,
    ) -> Result<(), PoolError> {
        let mut queue = self.lock.lock();
        self.set_guarantee_locked(&mut queue.share, account, bytes)?;
        if account.protected.load(Relaxed) {
            // No stock may hold its room: its own, and every pool stock (spendable by any
            // tenant of its thread).
            self.take_back(magazines, false, Some(account));
            self.take_back_pool_stocks(magazines);
        }
        self.pass(&mut queue, magazines, Focus::All);
        Ok(())
    }

    /// Sets `account`'s guarantee under the lock, or refuses (changing nothing) when the
    /// guarantees together would pass `max_live_bytes`. The caller then runs a pass over
    /// every line: the room that others may use changed.
    pub(super) fn set_guarantee_locked(
        &self,
        share: &mut Share,
        account: &Arc<TenantAccount>,
        bytes: Option<u64>,
    ) -> Result<(), PoolError> {
        let old = account.guaranteed();
        let new = bytes.unwrap_or(0);
        let others = share.total - old;
        if self.limit != u64::MAX && others.checked_add(new).is_none_or(|sum| sum > self.limit) {
            return Err(PoolError::GuaranteesPastLimit {
                tenant: account.id().to_owned(),
                requested: new,
                others,
                limit: self.limit,
            });
        }
        share.total = others + new;
        share.guaranteed.retain(|acc| !Arc::ptr_eq(acc, account));
        if new > 0 {
            share.guaranteed.push(Arc::clone(account));
        }
        self.guarantees.store(share.total, Relaxed);
        account.set_guarantee(bytes, new > 0 && self.limit != u64::MAX);
        Ok(())
    }
}

#[cfg(all(test, axon_loom))]
#[path = "share_loom.rs"]
mod loom_tests;
