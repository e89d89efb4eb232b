//! Unit tests of the magazine (run natively and under Miri) and the loom models of its
//! section/freeze protocol and stock protocol (`RUSTFLAGS="--cfg axon_loom"`, `.ci/run loom`).

#[cfg(not(axon_loom))]
mod unit {
    use super::super::*;

    #[test]
    fn push_pop_freeze_round_trip() {
        let mags = [Arc::new(Magazine::new())];
        let mag = &mags[0];
        let a = Vec::with_capacity(4096);
        let a_ptr = a.as_ptr();
        {
            let section = mag.enter().unwrap();
            assert!(section.pop(0).is_none());
            section.push(0, 2, a, 0).unwrap();
            let refused = section.push(0, 1, Vec::with_capacity(4096), 0).unwrap_err();
            section.push(0, 2, refused, 0).unwrap();
            let third = section.push(0, 2, Vec::with_capacity(4096), 0).unwrap_err();
            assert_eq!(third.capacity(), 4096);
            let wrong = section.push(0, 2, Vec::with_capacity(8192), 0);
            assert_eq!(wrong.unwrap_err().capacity(), 8192);
            assert_eq!(section.len(0), 2);
            let b = section.pop(0).unwrap();
            assert_eq!((b.len(), b.capacity()), (0, 4096));
            section.push(0, 2, b, 0).unwrap();
            section.set_pool_stock(4096);
        }
        assert_eq!(mag.idle(0), 2);
        let mut stolen = Vec::new();
        {
            let frozen = Frozen::freeze(&mags).unwrap();
            assert!(mag.enter().is_none(), "a frozen magazine refuses sections");
            for m in frozen.iter() {
                while let Some(slab) = m.pop(0) {
                    stolen.push(slab);
                }
                assert_eq!(m.pool_stock(), 4096);
                m.set_pool_stock(0);
            }
        }
        assert_eq!(stolen.len(), 2);
        assert!(stolen.iter().any(|s| s.as_ptr() == a_ptr));
        assert_eq!(mag.idle(0), 0);
        let section = mag.enter().unwrap();
        section.push(0, 8, stolen.pop().unwrap(), 0).unwrap();
        drop(section);
        drop(mags); // frees the slab left in it
    }

    #[test]
    fn the_decay_takes_slabs_by_their_stamps_and_keeps_the_order_of_the_rest() {
        let mag = Magazine::new();
        let section = mag.enter().unwrap();
        let mut ptrs = Vec::new();
        for since in [5, 1, 9, 3] {
            let slab = Vec::with_capacity(4096);
            ptrs.push(slab.as_ptr());
            section.push(0, 8, slab, since).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(section.take_idle_since(0, 4, &mut out), 2);
        let taken: Vec<_> = out.iter().map(|(s, since)| (s.as_ptr(), *since)).collect();
        assert_eq!(taken, [(ptrs[1], 1), (ptrs[3], 3)]);
        assert_eq!(section.len(0), 2);
        let top = section.pop(0).unwrap();
        assert_eq!(top.as_ptr(), ptrs[2], "newest on top still");
        assert_eq!(section.take_idle_since(0, u64::MAX, &mut out), 1);
        assert_eq!(out[2].0.as_ptr(), ptrs[0]);
        assert_eq!(section.len(0), 0);
        let ticks = (0..2 * TICK_EVERY).filter(|_| section.tick()).count();
        assert_eq!(ticks, 2);
    }

    #[test]
    fn slots_bind_find_and_pick_victims() {
        let mag = Magazine::new();
        let accounts: Vec<_> = (0..SLOTS + 1)
            .map(|i| Box::new(TenantAccount::new(&i.to_string(), 0, None, false)))
            .collect();
        let ptr = |i: usize| &*accounts[i] as *const TenantAccount as *mut TenantAccount;
        let section = mag.enter().unwrap();
        for i in 0..SLOTS {
            let slot = section.victim();
            assert!(slot.account().is_null(), "free slots are used first");
            slot.bind(ptr(i));
            slot.set_stock(i as u64);
        }
        assert_eq!(section.find(ptr(2)).unwrap().stock(), 2);
        assert!(section.find(ptr(SLOTS)).is_none());
        let victim = section.victim();
        assert!(
            !victim.account().is_null(),
            "full: a bound slot is given up"
        );
        victim.unbind();
        assert_eq!(section.bound().count(), SLOTS - 1);
        drop(section);
        assert_eq!(mag.stock_of(ptr(3)), 3);
    }

    #[test]
    fn owner_and_freezer_never_share_a_slab() {
        let mags = [Arc::new(Magazine::new())];
        let mag = &mags[0];
        let rounds = if cfg!(miri) { 50 } else { 20_000 };
        let stolen = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                for _ in 0..rounds {
                    if let Some(frozen) = Frozen::freeze(&mags) {
                        for m in frozen.iter() {
                            while m.pop(1).is_some() {
                                stolen.fetch_add(1, Relaxed);
                            }
                        }
                    }
                }
            });
            for _ in 0..rounds {
                if let Some(section) = mag.enter() {
                    let slab = section.pop(1).unwrap_or_else(|| Vec::with_capacity(65536));
                    let _ = section.push(1, 4, slab, 0);
                }
            }
        });
        assert!(mag.idle(1) <= 1);
    }
}

/// Issue 19: a thread that only drops adopts the pool's spare magazine on its first drop,
/// allocating nothing; the next acquire's slow path makes a new spare.
#[cfg(not(axon_loom))]
mod adopt {
    use crate::inner::{Caps, Config, PoolRef};
    use crate::PoolClass;

    const SMALL: usize = 4096;

    fn slab(pool: &PoolRef) -> Vec<u8> {
        let (slab, charged) = pool.obtain(None, PoolClass::Small, SMALL).unwrap();
        let _ = charged;
        slab
    }

    fn give(pool: &PoolRef, slab: Vec<u8>) {
        pool.give_back(slab, PoolClass::Small, 0, None, SMALL as u64, Caps::Both);
    }

    #[test]
    fn a_thread_that_only_drops_adopts_the_spare() {
        let pool = PoolRef::new(Config::default());
        let slabs: Vec<_> = (0..4).map(|_| slab(&pool)).collect();
        let (pool, two) = std::thread::scope(|s| {
            s.spawn(|| {
                assert!(pool.magazine().is_none(), "a fresh thread has no magazine");
                let mut slabs = slabs.into_iter();
                give(&pool, slabs.next().unwrap());
                let mag = pool.magazine().expect("the first drop adopted the spare");
                assert_eq!(mag.idle(0), 1, "its slab went into the adopted magazine");
                for slab in slabs {
                    give(&pool, slab);
                }
                assert_eq!(mag.idle(0), 4, "the next drops too");
                assert_eq!(mag.pool_stock(), 4 * SMALL as u64, "and their charges");
            })
            .join()
            .unwrap();
            // A second drop-only thread finds no spare until an acquire makes one.
            let one = slab(&pool);
            let two = slab(&pool);
            s.spawn(|| {
                give(&pool, one);
                assert!(pool.magazine().is_some(), "an acquire made a new spare");
            })
            .join()
            .unwrap();
            (&pool, two)
        });
        assert_eq!(pool.live_bytes(), SMALL as u64);
        give(pool, two);
        assert_eq!(pool.live_bytes(), 0);
    }

    #[test]
    fn without_a_spare_a_drop_takes_the_slow_path() {
        let pool = PoolRef::new(Config::default());
        let slabs: Vec<_> = (0..2).map(|_| slab(&pool)).collect();
        let [a, b] = <[Vec<u8>; 2]>::try_from(slabs).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| give(&pool, a)).join().unwrap(); // adopts, then exits
            s.spawn(|| {
                give(&pool, b); // the spare was taken and no acquire ran since
                assert!(pool.magazine().is_none());
            });
        });
        assert_eq!(pool.live_bytes(), 0);
        let snap = pool.snapshot();
        assert_eq!(snap.idle_slabs[&PoolClass::Small], 2);
    }
}

/// A request that waits but fits at once is charged from this thread's stock when the stock
/// covers it, and granted at most a batch more when not: a thread whose buffers all come
/// from `acquire_wait` (of a class no magazine caches, so its fast path never serves)
/// keeps a bounded stock, not one more batch a call.
#[cfg(not(axon_loom))]
mod waiting_stock {
    use crate::inner::{Caps, Config, PoolRef};
    use crate::PoolClass;

    #[test]
    fn waits_that_fit_at_once_keep_the_stock_bounded() {
        let pool = PoolRef::new(Config::default());
        let large = PoolClass::Large.capacity();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut held = Vec::new();
                let mut most = 0;
                for _ in 0..64 {
                    let wait = pool.obtain_wait(None, PoolClass::Large, large);
                    held.push(futures_executor::block_on(wait).unwrap().0);
                    most = most.max(pool.magazine().unwrap().pool_stock());
                }
                // At most what covers one more request and a batch (256 KiB) beyond it.
                assert!(most <= (large + 256 * 1024) as u64, "stock reached {most}");
                assert_eq!(pool.live_bytes(), 64 * large as u64);
                for slab in held {
                    pool.give_back(slab, PoolClass::Large, 0, None, large as u64, Caps::Both);
                }
            });
        });
        assert_eq!(pool.live_bytes(), 0);
    }
}

#[cfg(axon_loom)]
mod loom_tests {
    use super::super::*;
    use loom::sync::Arc;

    /// The owner pops and pushes in a section while another thread freezes and takes the
    /// slabs: every slab is owned by exactly one side at the end (never both: a double
    /// free; never neither: a leak), and loom's cells report any access the protocol lets
    /// overlap.
    #[test]
    fn owner_section_against_freeze() {
        loom::model(|| {
            let mags = Arc::new([std::sync::Arc::new(Magazine::new())]);
            mags[0]
                .enter()
                .unwrap()
                .push(0, 2, Vec::with_capacity(4096), 0)
                .unwrap_or_else(|_| unreachable!("wrong capacity"));
            let stealer = {
                let mags = Arc::clone(&mags);
                loom::thread::spawn(move || {
                    let frozen = Frozen::freeze(&mags[..]).unwrap();
                    let mut n = 0;
                    for m in frozen.iter() {
                        while m.pop(0).is_some() {
                            n += 1;
                        }
                    }
                    n
                })
            };
            let mut popped = 0;
            if let Some(section) = mags[0].enter() {
                if let Some(slab) = section.pop(0) {
                    popped = 1;
                    section.push(0, 2, slab, 0).unwrap();
                }
            }
            let stolen = stealer.join().unwrap();
            let left = mags[0].idle(0);
            assert_eq!(stolen + left, 1, "popped {popped}");
        });
    }

    #[test]
    fn owner_push_against_freeze() {
        loom::model(|| {
            let mags = Arc::new([std::sync::Arc::new(Magazine::new())]);
            let stealer = {
                let mags = Arc::clone(&mags);
                loom::thread::spawn(move || {
                    let frozen = Frozen::freeze(&mags[..]).unwrap();
                    let mut n = 0;
                    for m in frozen.iter() {
                        while m.pop(0).is_some() {
                            n += 1;
                        }
                    }
                    n
                })
            };
            let pushed = match mags[0].enter() {
                Some(section) => section.push(0, 1, Vec::with_capacity(4096), 0).is_ok(),
                None => false,
            };
            let stolen = stealer.join().unwrap();
            assert_eq!(stolen + mags[0].idle(0), usize::from(pushed));
        });
    }

    /// The stock protocol: the owner charges from its stock and takes a debit back into it
    /// (plain loads and stores in a section) while the ledger, frozen, takes the whole stock
    /// back to the usage word. Whatever the interleaving, usage always equals what the
    /// owner's buffers hold plus what is left in the stock: nothing prepaid is lost or
    /// counted twice.
    #[test]
    fn stock_taken_back_while_its_owner_charges() {
        loom::model(|| {
            let mags = Arc::new([std::sync::Arc::new(Magazine::new())]);
            let usage = Arc::new(AtomicU64::new(0));
            // Prepaid: 3 units of stock, charged to usage.
            usage.fetch_add(3, Relaxed);
            mags[0].enter().unwrap().set_pool_stock(3);
            let ledger = {
                let (mags, usage) = (Arc::clone(&mags), Arc::clone(&usage));
                loom::thread::spawn(move || {
                    let frozen = Frozen::freeze(&mags[..]).unwrap();
                    for m in frozen.iter() {
                        usage.fetch_sub(m.pool_stock(), Relaxed);
                        m.set_pool_stock(0);
                    }
                })
            };
            // The owner: a charge of 2 from the stock, then a debit of 1 back into it.
            let mut live = 0;
            for (charge, debit) in [(2, 0), (0, 1)] {
                if let Some(section) = mags[0].enter() {
                    let stock = section.pool_stock();
                    if stock >= charge {
                        section.set_pool_stock(stock - charge + debit);
                        live += charge;
                        live -= debit;
                        continue;
                    }
                }
                // Slow path: straight to the usage word.
                if charge > 0 {
                    usage.fetch_add(charge, Relaxed);
                }
                usage.fetch_sub(debit, Relaxed);
                live += charge;
                live -= debit;
            }
            ledger.join().unwrap();
            let stock = mags[0].pool_stock();
            assert_eq!(usage.load(Relaxed), live + stock);
        });
    }
}
