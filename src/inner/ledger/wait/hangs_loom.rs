//! Loom models of the hangs that waiting must never have: a drop into a thread's stock
//! racing the pass that first blocks on the pool's limit, and a limit lowered under a
//! queued waiter. Each model's second test runs the order before the fix and expects
//! loom to find the waiter asleep for good.

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
