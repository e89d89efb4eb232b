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
