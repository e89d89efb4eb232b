//! Stocks: the slow charge that grants them, granted stock put into a thread's magazine
//! (binding a tenant slot), and stocks taken back: from every magazine before a refusal,
//! from one when its thread exits, from a slot given up for another tenant.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;

use super::{Charged, Ledger, Magazines, Purpose};
use crate::inner::account::{AccountPtr, TenantAccount};
use crate::inner::magazine::{Exclusive, Frozen, Magazine, Slot};
use crate::PoolError;

impl Ledger {
    /// [`Self::charge`] counting no refusal: from this thread's stocks if they cover it,
    /// else under the lock, granting stock. Also a waiting request's try before it waits
    /// (`PoolRef::charge_now`), so that a thread whose requests all wait gets stock too;
    /// that try passes `reclaim` false: a request that does not fit as usage reads now is
    /// refused without taking every thread's stock back, which the waiting path does next.
    pub(crate) fn charge_uncounted(
        &self,
        magazines: &Magazines,
        mag: Option<&Magazine>,
        tenant: Option<AccountPtr>,
        bytes: u64,
        purpose: Purpose,
        reclaim: bool,
    ) -> Result<Charged, PoolError> {
        if purpose != Purpose::Reservation {
            if let Some(section) = mag.and_then(Magazine::enter) {
                if Self::charge_fast(*section, tenant, bytes, purpose.buffers()) {
                    return Ok(Charged::FROM_STOCK);
                }
            }
        }
        let queue = self.lock.lock();
        // SAFETY: the caller holds a handle or a buffer of the account for the whole call.
        let account = tenant.map(|a| unsafe { a.get() });
        let (charged, pool_grant, tenant_grant) =
            match self.queued_ahead(&queue, account, bytes, purpose) {
                Some(err) => return Err(err),
                None => {
                    if !reclaim {
                        self.check(&queue.share, account, bytes, purpose)?;
                    }
                    let stock = mag.is_some();
                    self.commit(&queue.share, magazines, account, bytes, purpose, stock)?
                }
            };
        self.deposit(mag, tenant, pool_grant, tenant_grant, purpose.buffers());
        drop(queue);
        Ok(charged)
    }

    /// Puts freshly granted stock into this thread's magazine (binding a slot for the
    /// tenant when it has none), and counts the charge's buffers where they belong. If
    /// the magazine is frozen meanwhile, the grants go straight back.
    pub(super) fn deposit(
        &self,
        mag: Option<&Magazine>,
        tenant: Option<AccountPtr>,
        pool_grant: u64,
        tenant_grant: u64,
        buffers: u64,
    ) {
        let section = mag.and_then(Magazine::enter);
        let Some(section) = section else {
            self.usage.fetch_sub(pool_grant, Relaxed);
            if let Some(account) = tenant {
                // SAFETY: the caller holds a handle or a buffer of the account.
                let acc = unsafe { account.get() };
                self.tenant_debit(acc, tenant_grant);
                acc.buffers.fetch_add(buffers, Relaxed);
            }
            return;
        };
        section.set_pool_stock(section.pool_stock() + pool_grant);
        let Some(account) = tenant else { return };
        let slot = match section.find(account.as_ptr()) {
            Some(slot) => Some(slot),
            None if tenant_grant > 0 => {
                let slot = section.victim();
                if !slot.account().is_null() {
                    self.unbind(slot);
                }
                // SAFETY: the caller holds a handle or a buffer of the account.
                unsafe { account.get() }.stock_slots.fetch_add(1, Relaxed);
                slot.bind(account.as_ptr());
                Some(slot)
            }
            None => None,
        };
        match slot {
            Some(slot) => {
                slot.set_stock(slot.stock() + tenant_grant);
                slot.count_buffers(buffers);
            }
            None => {
                // SAFETY: the caller holds a handle or a buffer of the account.
                unsafe { account.get() }.buffers.fetch_add(buffers, Relaxed);
            }
        }
    }

    /// Takes back, from every thread's magazine, the pool stocks (`pool`) and the stocks of
    /// `tenant` (whose slots are unbound). The caller holds the ledger's lock. When the
    /// heavy fence cannot be made, nothing is taken (refusals then stay conservative).
    pub(super) fn take_back(
        &self,
        magazines: &Magazines,
        pool: bool,
        tenant: Option<&TenantAccount>,
    ) {
        let list = magazines.lock();
        // A freeze costs a `membarrier`: skip it when a look at the stocks finds nothing to
        // take (a stream of refusals then costs no freeze each). The look is racy, exact
        // at rest, so nothing that fits is refused at rest; slots are bound only under the
        // lock this caller holds.
        let pool = pool && list.iter().any(|m| m.pool_stock() > 0);
        let tenant = tenant.filter(|acc| acc.stock_slots.load(Relaxed) > 0);
        if pool || tenant.is_some() {
            self.take_from(&list, pool, tenant);
        }
    }

    /// Takes back every thread's pool stock, freezing even when a look finds none: once
    /// `pool_waits` is up, a drop in progress on another thread may be about to stock its
    /// bytes (it read the flag before it went up), and only the freeze waits for it to
    /// finish. The caller holds the ledger's lock.
    pub(super) fn take_back_pool_stocks(&self, magazines: &Magazines) {
        let list = magazines.lock();
        self.take_from(&list, true, None);
    }

    /// Freezes `list` and takes its pool stocks (`pool`) and `tenant`'s stocks back.
    fn take_from(&self, list: &[Arc<Magazine>], pool: bool, tenant: Option<&TenantAccount>) {
        let Some(frozen) = Frozen::freeze(list) else {
            return;
        };
        for mag in frozen.iter() {
            if pool {
                self.usage.fetch_sub(mag.pool_stock(), Relaxed);
                mag.set_pool_stock(0);
            }
            if let Some(acc) = tenant {
                if let Some(slot) = mag.find(acc) {
                    self.unbind(slot);
                }
            }
        }
    }

    /// Gives a magazine's stocks back (its thread exits): the caller holds the ledger's
    /// lock and has the magazine to itself.
    pub(crate) fn retire(&self, mag: Exclusive<'_>) {
        self.usage.fetch_sub(mag.pool_stock(), Relaxed);
        mag.set_pool_stock(0);
        for slot in mag.bound() {
            self.unbind(slot);
        }
    }

    /// Unbinds a stock slot, giving its stock and buffer count back to its account. The
    /// slot's binding kept the account alive; the `Release` of `stock_slots` is the last
    /// access.
    fn unbind(&self, slot: Slot<'_>) {
        // SAFETY: a bound slot keeps its account alive (account.rs) until the decrement
        // of `stock_slots` below.
        let acc = unsafe { &*slot.account() };
        acc.buffers.fetch_add(slot.buffers(), Relaxed);
        self.tenant_debit(acc, slot.stock());
        acc.stock_slots.fetch_sub(1, SeqCst);
        slot.unbind();
    }
}
