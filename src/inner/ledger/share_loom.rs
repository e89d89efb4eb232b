//! A loom model of the serving order (`share.rs`).

/// The serving order of `share.rs`: a quiet tenant's waiter and a flooding tenant's, both
/// for the pool's room, queued while releases free it, in any interleaving. Whenever a pass
/// serves while both wait, it serves the one that holds less (the quiet one); every waiter
/// is served in the end (no lost wakeup with the order either). The flood queued first,
/// so the old rule, one arrival order across tenants, fails the model.
mod serving_order {
    use std::collections::BTreeSet;
    use std::future::{poll_fn, Future};
    use std::task::{Poll, Waker};

    use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::SeqCst};
    use loom::sync::{Arc, Mutex};

    const LIMIT: u64 = 3;
    const QUIET: usize = 0;
    const FLOOD: usize = 1;

    #[derive(Default)]
    struct Queue {
        /// (rank, arrival, tenant) of each waiting tenant's head.
        order: BTreeSet<(u64, u64, usize)>,
        arrivals: u64,
        served: [bool; 2],
        wakers: [Option<Waker>; 2],
    }

    struct Model {
        usage: AtomicU64,
        /// What each tenant holds: its rank.
        holds: [AtomicU64; 2],
        waiting: AtomicUsize,
        queue: Mutex<Queue>,
        /// The old rule: arrival order across tenants.
        fifo: bool,
    }

    impl Model {
        fn pass(&self, queue: &mut Queue) {
            while let Some(&(rank, arrival, who)) = queue.order.first() {
                if self.usage.load(SeqCst) >= LIMIT {
                    return;
                }
                let both = queue.order.len() == 2;
                queue.order.remove(&(rank, arrival, who));
                assert!(
                    !(both && who == FLOOD),
                    "the quiet tenant waited behind the flood"
                );
                self.usage.fetch_add(1, SeqCst);
                self.holds[who].fetch_add(1, SeqCst);
                self.waiting.fetch_sub(1, SeqCst);
                queue.served[who] = true;
                if let Some(waker) = queue.wakers[who].take() {
                    waker.wake();
                }
            }
        }

        fn release(&self, who: Option<usize>) {
            if let Some(who) = who {
                self.holds[who].fetch_sub(1, SeqCst);
            }
            self.usage.fetch_sub(1, SeqCst);
            fence(SeqCst);
            if self.waiting.load(SeqCst) > 0 {
                let mut queue = self.queue.lock().unwrap();
                self.pass(&mut queue);
            }
        }

        async fn acquire(&self, who: usize) {
            let mut queued = false;
            poll_fn(|cx| {
                let mut queue = self.queue.lock().unwrap();
                if !queued {
                    queued = true;
                    queue.arrivals += 1;
                    let rank = match self.fifo {
                        true => 0,
                        false => self.holds[who].load(SeqCst),
                    };
                    let arrival = queue.arrivals;
                    queue.order.insert((rank, arrival, who));
                    self.waiting.fetch_add(1, SeqCst);
                    fence(SeqCst);
                    self.pass(&mut queue);
                }
                if queue.served[who] {
                    return Poll::Ready(());
                }
                queue.wakers[who] = Some(cx.waker().clone());
                Poll::Pending
            })
            .await
        }
    }

    fn quiet_and_flood(fifo: bool) {
        loom::model(move || {
            let model = Arc::new(Model {
                // The flood holds 2, an untenanted buffer 1: the pool is full.
                usage: AtomicU64::new(LIMIT),
                holds: [AtomicU64::new(0), AtomicU64::new(2)],
                waiting: AtomicUsize::new(0),
                queue: Mutex::new(Queue::default()),
                fifo,
            });
            // The flood's waiter is queued first (its future polled once).
            let mut flood = Box::pin(model.acquire(FLOOD));
            let noop = Waker::noop();
            let first = flood
                .as_mut()
                .poll(&mut std::task::Context::from_waker(noop));
            assert!(first.is_pending());
            let releases = {
                let model = Arc::clone(&model);
                loom::thread::spawn(move || {
                    model.release(None);
                    model.release(Some(FLOOD));
                })
            };
            loom::future::block_on(model.acquire(QUIET));
            releases.join().unwrap();
            let last = flood
                .as_mut()
                .poll(&mut std::task::Context::from_waker(noop));
            assert!(
                last.is_ready(),
                "both releases are over: the flood is served"
            );
            assert_eq!(model.usage.load(SeqCst), LIMIT, "both served, one freed");
            assert_eq!(model.waiting.load(SeqCst), 0);
        });
    }

    #[test]
    fn the_quiet_waiter_is_served_before_the_flood() {
        quiet_and_flood(false);
    }

    #[test]
    #[should_panic(expected = "the quiet tenant waited behind the flood")]
    fn one_arrival_order_across_tenants_serves_the_flood_first() {
        quiet_and_flood(true);
    }
}
