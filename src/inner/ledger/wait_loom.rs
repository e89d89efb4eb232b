//! The wait/wake protocol of `wait.rs`, modelled with loom's atomics, mutex and
//! executor: a limit of one buffer, held; waiters that queue and count themselves under
//! the lock, then make their last check (`charge_or_queue`); a debit that frees the room,
//! then looks for waiters and runs a pass (`debit` + `serve`); a waiter that cancels and
//! hands its turn on (`cancel`). Every waiter that is not cancelled must be served:
//! loom fails the model as a deadlock if one sleeps forever.

use std::future::poll_fn;
use std::task::{Poll, Waker};

use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::SeqCst};
use loom::sync::{Arc, Mutex};

const LIMIT: u64 = 1;

#[derive(Default)]
struct Queue {
    /// (id, served, waker), in arrival order.
    waiters: Vec<(u32, bool, Option<Waker>)>,
}

struct Model {
    usage: AtomicU64,
    waiting: AtomicUsize,
    queue: Mutex<Queue>,
    /// The bug of tokio-uring#280: the last check before the waiter counts itself.
    check_before_registering: bool,
}

impl Model {
    fn new(check_before_registering: bool) -> Model {
        Model {
            usage: AtomicU64::new(LIMIT), // one buffer holds all the room
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(Queue::default()),
            check_before_registering,
        }
    }

    /// Serves the head, if it fits.
    fn pass(&self, queue: &mut Queue) {
        if let Some(head) = queue.waiters.iter_mut().find(|w| !w.1) {
            if self.usage.load(SeqCst) < LIMIT {
                self.usage.fetch_add(1, SeqCst);
                self.waiting.fetch_sub(1, SeqCst);
                head.1 = true;
                if let Some(waker) = head.2.take() {
                    waker.wake();
                }
            }
        }
    }

    /// A buffer drops: its room back, then a pass if anyone waits. (The code makes the
    /// decrement and the load `SeqCst`, which orders them against the waiter's fence in
    /// C++20's model; loom treats `SeqCst` accesses as `AcqRel`, so the model spells
    /// that order out with the fence loom does check.)
    fn debit(&self) {
        self.usage.fetch_sub(1, SeqCst);
        fence(SeqCst);
        if self.waiting.load(SeqCst) > 0 {
            let mut queue = self.queue.lock().unwrap();
            self.pass(&mut queue);
        }
    }

    /// The first poll: queue and count, then the last check. `true`: served at once.
    fn register(&self, id: u32, waker: &Waker) -> bool {
        let mut queue = self.queue.lock().unwrap();
        let ahead = queue.waiters.iter().any(|w| !w.1);
        if self.check_before_registering && !ahead && self.usage.load(SeqCst) < LIMIT {
            self.usage.fetch_add(1, SeqCst);
            return true;
        }
        queue.waiters.push((id, false, Some(waker.clone())));
        if self.check_before_registering {
            // Counted only now: a debit between the check above and this count saw
            // nobody waiting, and this waiter sleeps forever.
            self.waiting.fetch_add(1, SeqCst);
            return false;
        }
        self.waiting.fetch_add(1, SeqCst);
        fence(SeqCst);
        self.pass(&mut queue);
        Self::take(&mut queue, id)
    }

    /// A later poll: served yet? (Updates the waker otherwise.)
    fn poll(&self, id: u32, waker: &Waker) -> bool {
        let mut queue = self.queue.lock().unwrap();
        if Self::take(&mut queue, id) {
            return true;
        }
        if let Some(w) = queue.waiters.iter_mut().find(|w| w.0 == id) {
            w.2 = Some(waker.clone());
        }
        false
    }

    fn take(queue: &mut Queue, id: u32) -> bool {
        match queue.waiters.iter().position(|w| w.0 == id && w.1) {
            Some(at) => {
                queue.waiters.remove(at);
                true
            }
            None => false,
        }
    }

    /// The future is dropped: out of the queue (giving back a charge made for it),
    /// then a pass.
    fn cancel(&self, id: u32) {
        let mut queue = self.queue.lock().unwrap();
        if let Some(at) = queue.waiters.iter().position(|w| w.0 == id) {
            let (_, served, _) = queue.waiters.remove(at);
            if served {
                self.usage.fetch_sub(1, SeqCst);
            } else {
                self.waiting.fetch_sub(1, SeqCst);
            }
        }
        self.pass(&mut queue);
    }

    /// Waits for room, as `ChargeWait` does.
    async fn acquire(&self, id: u32) {
        let mut queued = false;
        poll_fn(|cx| {
            let served = match queued {
                false => self.register(id, cx.waker()),
                true => self.poll(id, cx.waker()),
            };
            queued = true;
            if served {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// One waiter, one debit.
fn waiter_and_debit(check_before_registering: bool) {
    loom::model(move || {
        let model = Arc::new(Model::new(check_before_registering));
        let debit = {
            let model = Arc::clone(&model);
            loom::thread::spawn(move || model.debit())
        };
        loom::future::block_on(model.acquire(1));
        debit.join().unwrap();
        assert_eq!(model.usage.load(SeqCst), LIMIT, "the waiter holds the room");
        assert_eq!(model.waiting.load(SeqCst), 0);
    });
}

#[test]
fn a_debit_wakes_the_waiter() {
    waiter_and_debit(false);
}

/// The model finds the lost wakeup of a waiter that registers after its last check.
#[test]
#[should_panic(expected = "deadlock")]
fn registering_after_the_last_check_loses_the_wakeup() {
    waiter_and_debit(true);
}

/// A waiter queued first cancels (before or after it was served) while the room frees:
/// the second waiter is served either way, and nothing stays charged for the first.
#[test]
fn a_cancelled_waiter_hands_its_turn_on() {
    loom::model(|| {
        let model = Arc::new(Model::new(false));
        // The first waiter queues (room is held), then gives up.
        let noop = Waker::noop();
        assert!(!model.register(1, noop));
        let canceller = {
            let model = Arc::clone(&model);
            loom::thread::spawn(move || model.cancel(1))
        };
        let debit = {
            let model = Arc::clone(&model);
            loom::thread::spawn(move || model.debit())
        };
        loom::future::block_on(model.acquire(2));
        canceller.join().unwrap();
        debit.join().unwrap();
        assert_eq!(
            model.usage.load(SeqCst),
            LIMIT,
            "only the second waiter holds room"
        );
        assert_eq!(model.waiting.load(SeqCst), 0);
    });
}

/// The pool's waiters against a drop on a thread's fast path (`debit_fast`), which puts its
/// bytes into that thread's stock and looks at `pool_waits` only. The stock is reached
/// through a section; a freeze waits for a section in progress (modelled as a mutex), and
/// a racy look at the stock may skip the freeze, as `take_back` does.
mod stocked_drop {
    use std::future::poll_fn;
    use std::task::{Poll, Waker};

    use loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
    use loom::sync::{Arc, Mutex};

    const LIMIT: u64 = 1;

    struct Model {
        /// The pool's usage word: live bytes plus the stock.
        usage: AtomicU64,
        /// The dropping thread's pool stock.
        stock: AtomicU64,
        /// The dropping thread's section (a freeze holds it too).
        section: Mutex<()>,
        pool_waits: AtomicBool,
        waiting: AtomicUsize,
        /// (served, waker) of the one waiter.
        queue: Mutex<Option<(bool, Option<Waker>)>>,
        /// Today's order before the fix: raise the flag, take back (after a look), done.
        no_second_look: bool,
    }

    impl Model {
        fn new(no_second_look: bool) -> Model {
            Model {
                usage: AtomicU64::new(LIMIT), // a buffer on the dropping thread holds it all
                stock: AtomicU64::new(0),
                section: Mutex::new(()),
                pool_waits: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                queue: Mutex::new(None),
                no_second_look,
            }
        }

        /// `take_back`: a racy look, then the freeze (`forced` skips the look).
        fn take_back(&self, forced: bool) {
            if forced || self.stock.load(SeqCst) > 0 {
                let _frozen = self.section.lock().unwrap();
                let stock = self.stock.load(SeqCst);
                self.usage.fetch_sub(stock, SeqCst);
                self.stock.store(0, SeqCst);
            }
        }

        fn fits(&self) -> bool {
            self.usage.load(SeqCst) < LIMIT
        }

        fn serve(&self, waiter: &mut (bool, Option<Waker>)) -> bool {
            if !waiter.0 && self.fits() {
                self.usage.fetch_add(1, SeqCst);
                self.waiting.fetch_sub(1, SeqCst);
                waiter.0 = true;
                if let Some(waker) = waiter.1.take() {
                    waker.wake();
                }
            }
            waiter.0
        }

        /// `pass` for the one waiter.
        fn pass(&self, queue: &mut Option<(bool, Option<Waker>)>) {
            let Some(waiter) = queue.as_mut() else { return };
            loop {
                if self.serve(waiter) {
                    self.pool_waits.store(false, SeqCst);
                    return;
                }
                self.take_back(false);
                if self.serve(waiter) {
                    self.pool_waits.store(false, SeqCst);
                    return;
                }
                if self.pool_waits.swap(true, SeqCst) {
                    return;
                }
                if self.no_second_look {
                    self.take_back(false);
                    return;
                }
                self.take_back(true);
            }
        }

        /// A drop: the fast path into the stock unless someone waits for the pool, else
        /// the usage word, then a pass if anyone waits (outside the section).
        fn drop_buffer(&self) {
            let slow = {
                let _section = self.section.lock().unwrap();
                if self.pool_waits.load(SeqCst) {
                    self.usage.fetch_sub(1, SeqCst);
                    true
                } else {
                    let stock = self.stock.load(SeqCst);
                    self.stock.store(stock + 1, SeqCst);
                    false
                }
            };
            if slow {
                fence(SeqCst);
                if self.waiting.load(SeqCst) > 0 {
                    let mut queue = self.queue.lock().unwrap();
                    self.pass(&mut queue);
                }
            }
        }

        async fn acquire(&self) {
            let mut queued = false;
            poll_fn(|cx| {
                let mut queue = self.queue.lock().unwrap();
                if !queued {
                    queued = true;
                    *queue = Some((false, Some(cx.waker().clone())));
                    self.waiting.fetch_add(1, SeqCst);
                    fence(SeqCst);
                    self.pass(&mut queue);
                }
                let waiter = queue.as_mut().expect("queued");
                if waiter.0 {
                    return Poll::Ready(());
                }
                waiter.1 = Some(cx.waker().clone());
                Poll::Pending
            })
            .await
        }
    }

    fn stocked_drop_races_the_pass(no_second_look: bool) {
        loom::model(move || {
            let model = Arc::new(Model::new(no_second_look));
            let dropper = {
                let model = Arc::clone(&model);
                loom::thread::spawn(move || model.drop_buffer())
            };
            loom::future::block_on(model.acquire());
            dropper.join().unwrap();
            assert_eq!(model.usage.load(SeqCst) - model.stock.load(SeqCst), LIMIT);
            assert_eq!(model.waiting.load(SeqCst), 0);
        });
    }

    #[test]
    fn a_stocked_drop_racing_the_pass_wakes_the_waiter() {
        stocked_drop_races_the_pass(false);
    }

    /// The order before the fix: the take-back after the flag went up (behind a racy
    /// look) moves a stocked drop's bytes into the usage word, and nobody looks again.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn without_a_second_look_a_stocked_drop_is_lost() {
        stocked_drop_races_the_pass(true);
    }
}

/// A limit lowered under a queued waiter: the pass that the change runs fails the waiter
/// at once if it can never fit, rather than leave it queued forever.
mod lowered_limit {
    use std::future::poll_fn;
    use std::task::{Poll, Waker};

    use loom::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering::SeqCst};
    use loom::sync::{Arc, Mutex};

    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Outcome {
        Waiting,
        Served,
        Failed,
    }

    struct Model {
        usage: AtomicU64,
        limit: AtomicU64,
        waiting: AtomicUsize,
        queue: Mutex<Option<(Outcome, Option<Waker>)>>,
        /// The pass before the fix: it serves what fits and fails nothing.
        never_fails: bool,
    }

    /// The waiter needs this much in all.
    const NEEDED: u64 = 2;

    impl Model {
        fn pass(&self, queue: &mut Option<(Outcome, Option<Waker>)>) {
            let Some(waiter) = queue.as_mut() else { return };
            if waiter.0 != Outcome::Waiting {
                return;
            }
            let limit = self.limit.load(SeqCst);
            let outcome = if !self.never_fails && NEEDED > limit {
                Outcome::Failed
            } else if self.usage.load(SeqCst) + NEEDED <= limit {
                self.usage.fetch_add(NEEDED, SeqCst);
                Outcome::Served
            } else {
                return;
            };
            self.waiting.fetch_sub(1, SeqCst);
            waiter.0 = outcome;
            if let Some(waker) = waiter.1.take() {
                waker.wake();
            }
        }

        fn set_limit(&self, limit: u64) {
            let mut queue = self.queue.lock().unwrap();
            self.limit.store(limit, SeqCst);
            self.pass(&mut queue);
        }

        fn drop_buffer(&self) {
            self.usage.fetch_sub(1, SeqCst);
            fence(SeqCst);
            if self.waiting.load(SeqCst) > 0 {
                let mut queue = self.queue.lock().unwrap();
                self.pass(&mut queue);
            }
        }

        async fn acquire(&self) -> Outcome {
            let mut queued = false;
            poll_fn(|cx| {
                let mut queue = self.queue.lock().unwrap();
                if !queued {
                    queued = true;
                    *queue = Some((Outcome::Waiting, Some(cx.waker().clone())));
                    self.waiting.fetch_add(1, SeqCst);
                    fence(SeqCst);
                    self.pass(&mut queue);
                }
                let waiter = queue.as_mut().expect("queued");
                match waiter.0 {
                    Outcome::Waiting => {
                        waiter.1 = Some(cx.waker().clone());
                        Poll::Pending
                    }
                    done => Poll::Ready(done),
                }
            })
            .await
        }
    }

    fn limit_lowered_under_a_waiter(never_fails: bool) {
        loom::model(move || {
            let model = Arc::new(Model {
                usage: AtomicU64::new(2), // two buffers of 1 hold the limit
                limit: AtomicU64::new(2),
                waiting: AtomicUsize::new(0),
                queue: Mutex::new(None),
                never_fails,
            });
            let other = {
                let model = Arc::clone(&model);
                loom::thread::spawn(move || {
                    model.set_limit(1);
                    model.drop_buffer();
                    model.drop_buffer();
                })
            };
            let outcome = loom::future::block_on(model.acquire());
            other.join().unwrap();
            assert_eq!(outcome, Outcome::Failed, "2 bytes never fit a limit of 1");
            assert_eq!(model.waiting.load(SeqCst), 0);
            assert_eq!(
                model.usage.load(SeqCst),
                0,
                "nothing charged for the failed waiter"
            );
        });
    }

    #[test]
    fn a_lowered_limit_fails_a_waiter_that_can_never_fit() {
        limit_lowered_under_a_waiter(false);
    }

    /// Before the fix the waiter stayed queued for good.
    #[test]
    #[should_panic(expected = "deadlock")]
    fn without_the_check_the_waiter_waits_forever() {
        limit_lowered_under_a_waiter(true);
    }
}

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
