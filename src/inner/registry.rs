//! The tenant registry: a read-mostly map from id to account, bounded to `max_tenants`
//! accounts plus one overflow account, with eviction of departed accounts.
//!
//! A known id is a shared (read) lock and a hash lookup, so a handler may call
//! `pool.tenant(id)` per request. A new id takes the exclusive lock. When the map is full,
//! room comes from the *departure queue*: accounts whose last handle or reservation went
//! away are queued once, and a registration pops a few from the front, evicting the first
//! that holds nothing (no handle, no bytes, no stock slot, limits as default). An account
//! still busy goes to the back; one with handles again leaves the queue until they go. So a
//! flood of hostile ids costs O(1) each, whatever the map holds. Accounts that went idle
//! without a departure (their last buffer dropped after their last handle) are found by a
//! full sweep every `max_tenants / 16` refusals: O(16) amortised.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{fence, Ordering::Acquire, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::account::{TenantAccount, MAX_TENANT_ID_LEN, OVERFLOW_TENANT_ID};

/// Departed accounts examined per registration that finds the map full. A busy one (a
/// buffer or a thread's stock slot still refers to it) goes to the back; a thread binds at
/// most 4 slots, so a few threads' worth of busy accounts in a row still leave room.
const POPS_PER_REGISTRATION: usize = 16;

#[derive(Debug)]
struct Map {
    accounts: HashMap<Arc<str>, Arc<TenantAccount>>,
    overflow: Option<Arc<TenantAccount>>,
    /// Registrations refused for want of room since the last sweep.
    full_since_sweep: usize,
}

#[derive(Debug)]
pub(crate) struct Registry {
    map: RwLock<Map>,
    /// Accounts whose holders all left, each at most once (`TenantAccount::queued`).
    departed: Mutex<VecDeque<Arc<TenantAccount>>>,
    max_tenants: usize,
    default_soft_limit: u64,
    default_hard_limit: Option<u64>,
}

impl Registry {
    pub(crate) fn new(
        max_tenants: usize,
        default_soft_limit: u64,
        default_hard_limit: Option<u64>,
    ) -> Self {
        Registry {
            map: RwLock::new(Map {
                accounts: HashMap::new(),
                overflow: None,
                full_since_sweep: 0,
            }),
            departed: Mutex::new(VecDeque::new()),
            max_tenants,
            default_soft_limit,
            default_hard_limit,
        }
    }

    /// The account for `id`: the fast path for a known id (shared lock), else the slow
    /// path that registers it (or hands out the overflow account).
    pub(crate) fn get(&self, id: &str) -> Arc<TenantAccount> {
        if id.len() <= MAX_TENANT_ID_LEN && id != OVERFLOW_TENANT_ID {
            if let Some(account) = self.map.read().accounts.get(id) {
                return Arc::clone(account);
            }
        }
        self.register(id)
    }

    #[cold]
    fn register(&self, id: &str) -> Arc<TenantAccount> {
        let mut map = self.map.write();
        if id.len() > MAX_TENANT_ID_LEN || id == OVERFLOW_TENANT_ID {
            return self.overflow(&mut map);
        }
        if let Some(account) = map.accounts.get(id) {
            return Arc::clone(account); // registered meanwhile
        }
        if map.accounts.len() >= self.max_tenants && !self.make_room(&mut map) {
            return self.overflow(&mut map);
        }
        let account = Arc::new(self.account(id, false));
        map.accounts.insert(Arc::from(id), Arc::clone(&account));
        account
    }

    /// A handle or reservation let go of `account` and it was the last: queue it once for
    /// eviction.
    pub(crate) fn departed(&self, account: &Arc<TenantAccount>) {
        if !account.is_overflow() && !account.queued.swap(true, Relaxed) {
            self.departed.lock().push_back(Arc::clone(account));
        }
    }

    fn make_room(&self, map: &mut Map) -> bool {
        for _ in 0..POPS_PER_REGISTRATION {
            let Some(account) = self.departed.lock().pop_front() else {
                break;
            };
            let listed = map
                .accounts
                .get(account.id())
                .is_some_and(|a| Arc::ptr_eq(a, &account));
            if !listed {
                continue; // a sweep evicted it meanwhile
            }
            if Self::evictable(&account, 2) {
                map.accounts.remove(account.id());
                return true;
            }
            if account.holders() == 0 {
                self.departed.lock().push_back(account); // busy: look again later
            } else {
                account.queued.store(false, Relaxed); // held again: queued when it departs
            }
        }
        let interval = (self.max_tenants / 16).max(1);
        let sweep = map.full_since_sweep.is_multiple_of(interval);
        map.full_since_sweep += 1;
        if sweep {
            // A queued account is held by the queue too; its entry goes when popped.
            map.accounts.retain(|_, account| {
                let refs = 1 + usize::from(account.queued.load(Relaxed));
                !Self::evictable(account, refs)
            });
            if map.accounts.len() < self.max_tenants {
                map.full_since_sweep = 0;
                return true;
            }
        }
        false
    }

    /// Nothing refers to the account but the map (and the queue's entry, if `refs` is 2),
    /// it has no bytes and no stock slot, and no limit was set by hand. The caller holds
    /// the map's exclusive lock, so no handle can be made meanwhile; the `Acquire` loads
    /// order every earlier holder's accesses before the account is freed (account.rs).
    fn evictable(account: &Arc<TenantAccount>, refs: usize) -> bool {
        if Arc::strong_count(account) != refs {
            return false;
        }
        // Pairs with the `Release` of the last handle's `Arc` drop: whatever it charged
        // before letting go is visible to the loads below.
        fence(Acquire);
        account.usage.load(Acquire) == 0
            && account.stock_slots.load(Acquire) == 0
            && account.has_default_limits()
    }

    fn overflow(&self, map: &mut Map) -> Arc<TenantAccount> {
        let overflow = map
            .overflow
            .get_or_insert_with(|| Arc::new(self.account(OVERFLOW_TENANT_ID, true)));
        Arc::clone(overflow)
    }

    /// A new account with the pool's default limits.
    fn account(&self, id: &str, overflow: bool) -> TenantAccount {
        TenantAccount::new(
            id,
            self.default_soft_limit,
            self.default_hard_limit,
            overflow,
        )
    }

    /// Every account, the overflow one last if it was ever used.
    pub(crate) fn accounts(&self) -> Vec<Arc<TenantAccount>> {
        let map = self.map.read();
        map.accounts
            .values()
            .chain(map.overflow.iter())
            .cloned()
            .collect()
    }
}
