//! Turns at the cores for guest code, handed out round-robin by tenant.
//!
//! Guests run on the request tasks and yield every fuel slice. Left to
//! tokio's run queue, a tenant with many slow calls (a Python filter under
//! load) fills the queue with slices, and every other request waits behind
//! all of them at each of its steps: measured on one core, a quiet tenant's
//! p50 went from 8 ms beside a Rust neighbour to 33–38 ms beside a Python
//! one (27–32 ms with turns, 18–20 ms with turns and quarter-millisecond
//! slices: `benches/neighbours.sh`).
//!
//! So a guest runs only while it holds a turn, and there are as many turns
//! as cores. A guest that yields while other guests wait gives its turn
//! up and queues again; the turn goes to the next tenant in round-robin
//! order, whatever the number of calls each has waiting. At most one slice
//! per core of guest code is then in the run queue, and a tenant's call
//! waits for at most one slice of each other tenant with calls waiting.
//! Uncontended, taking and giving back a turn is one lock each.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// The turns of one engine.
pub struct Turns {
    state: Mutex<State>,
    /// Calls waiting for a turn (read without the lock at each yield).
    waiting: AtomicUsize,
}

#[derive(Default)]
struct State {
    free: usize,
    /// Each tenant's waiting calls, in arrival order.
    queues: HashMap<Box<str>, VecDeque<Arc<Waiter>>>,
    /// Tenants with calls waiting, in the order they are served.
    order: VecDeque<Box<str>>,
}

/// A call waiting for a turn.
#[derive(Default)]
struct Waiter {
    granted: Mutex<(bool, Option<Waker>)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Turns {
    pub fn new(turns: usize) -> Arc<Turns> {
        Arc::new(Turns {
            state: Mutex::new(State {
                free: turns.max(1),
                ..State::default()
            }),
            waiting: AtomicUsize::new(0),
        })
    }

    /// A turn now if one is free and no call waits for it (a call that
    /// waits is served first: no overtaking).
    fn try_take(&self) -> bool {
        let mut state = lock(&self.state);
        if state.free > 0 && state.order.is_empty() {
            state.free -= 1;
            return true;
        }
        false
    }

    /// Queues a call of `tenant` for a turn.
    fn enqueue(&self, tenant: &str, waker: &Waker) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter::default());
        lock(&waiter.granted).1 = Some(waker.clone());
        let mut state = lock(&self.state);
        // Asked again under the lock: a turn given back in between.
        if state.free > 0 && state.order.is_empty() {
            state.free -= 1;
            lock(&waiter.granted).0 = true;
            return waiter;
        }
        let queue = state.queues.entry(tenant.into()).or_default();
        queue.push_back(waiter.clone());
        if queue.len() == 1 {
            state.order.push_back(tenant.into());
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        waiter
    }

    /// Gives a turn of `giver`'s back: to the first waiting call of the
    /// next tenant in line other than the giver, if any (that tenant goes
    /// to the back of the line if it has more), or free.
    fn give_back(&self, giver: &str) {
        let mut state = lock(&self.state);
        let state = &mut *state;
        if state.order.len() > 1 && state.order.front().is_some_and(|t| &**t == giver) {
            state.order.rotate_left(1);
        }
        while let Some(tenant) = state.order.pop_front() {
            let Some(queue) = state.queues.get_mut(&tenant) else {
                continue;
            };
            let next = queue.pop_front();
            match queue.is_empty() {
                true => {
                    state.queues.remove(&tenant);
                }
                false => state.order.push_back(tenant),
            }
            if let Some(next) = next {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                let mut granted = lock(&next.granted);
                granted.0 = true;
                if let Some(waker) = granted.1.take() {
                    waker.wake();
                }
                return;
            }
        }
        state.free += 1;
    }

    /// Takes a waiting call out of line (its future was dropped); a turn
    /// it was given meanwhile goes to the next.
    fn leave(&self, tenant: &str, waiter: &Arc<Waiter>) {
        {
            let mut state = lock(&self.state);
            if !lock(&waiter.granted).0 {
                if let Some(queue) = state.queues.get_mut(tenant) {
                    queue.retain(|w| !Arc::ptr_eq(w, waiter));
                    if queue.is_empty() {
                        state.queues.remove(tenant);
                        state.order.retain(|t| &**t != tenant);
                    }
                }
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        }
        self.give_back(tenant);
    }
}

/// Where one call stands with its engine's turns.
pub struct Turn<'a> {
    turns: &'a Turns,
    tenant: &'a str,
    held: Holding,
}

enum Holding {
    Nothing,
    Waiting(Arc<Waiter>),
    Held,
}

impl<'a> Turn<'a> {
    pub fn new(turns: &'a Turns, tenant: &'a str) -> Turn<'a> {
        Turn {
            turns,
            tenant,
            held: Holding::Nothing,
        }
    }

    /// Ready once the call holds a turn.
    pub fn poll_take(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.held {
            Holding::Held => return Poll::Ready(()),
            Holding::Nothing if self.turns.try_take() => {}
            Holding::Nothing => {
                let waiter = self.turns.enqueue(self.tenant, cx.waker());
                let granted = lock(&waiter.granted).0;
                self.held = Holding::Waiting(waiter);
                if !granted {
                    return Poll::Pending;
                }
            }
            Holding::Waiting(waiter) => {
                let mut granted = lock(&waiter.granted);
                if !granted.0 {
                    granted.1 = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
        self.held = Holding::Held;
        Poll::Ready(())
    }

    /// At a guest's yield: gives the turn up if another call waits.
    pub fn yielded(&mut self) {
        if matches!(self.held, Holding::Held) && self.turns.waiting.load(Ordering::Relaxed) > 0 {
            self.held = Holding::Nothing;
            self.turns.give_back(self.tenant);
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        match std::mem::replace(&mut self.held, Holding::Nothing) {
            Holding::Nothing => {}
            Holding::Held => self.turns.give_back(self.tenant),
            Holding::Waiting(waiter) => self.turns.leave(self.tenant, &waiter),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Woken(AtomicUsize);
    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn context() -> (Arc<Woken>, Waker) {
        let woken = Arc::new(Woken::default());
        (woken.clone(), Waker::from(woken))
    }

    /// Which of `turns` hold a turn after polling each.
    fn holding(turns: &mut [Turn<'_>], waker: &Waker) -> Vec<bool> {
        let mut cx = Context::from_waker(waker);
        turns
            .iter_mut()
            .map(|t| t.poll_take(&mut cx).is_ready())
            .collect()
    }

    /// A tenant with many calls waiting does not go before a tenant with
    /// one: turns alternate between tenants, not between calls.
    #[test]
    fn turns_go_round_the_tenants_not_the_calls() {
        let turns = Turns::new(1);
        let (_, waker) = context();
        let mut busy: Vec<Turn<'_>> = (0..4).map(|_| Turn::new(&turns, "busy")).collect();
        assert_eq!(holding(&mut busy, &waker), [true, false, false, false]);
        let mut quiet = [Turn::new(&turns, "quiet")];
        assert_eq!(holding(&mut quiet, &waker), [false]);

        // The running busy call yields: the quiet call is next, though
        // three busy calls were in line before it.
        busy[0].yielded();
        assert_eq!(holding(&mut quiet, &waker), [true]);
        assert_eq!(holding(&mut busy[1..], &waker), [false, false, false]);
        // The one that yielded queues again, behind its own tenant's calls.
        assert_eq!(holding(&mut busy[..1], &waker), [false]);

        // The quiet call ends: the busy calls go in their order.
        drop(quiet);
        assert_eq!(holding(&mut busy, &waker), [false, true, false, false]);
        busy[1].yielded();
        assert_eq!(holding(&mut busy, &waker), [false, false, true, false]);
    }

    /// A yield with nobody waiting keeps the turn (no lock); a call that
    /// waits is woken when it gets one.
    #[test]
    fn a_waiting_call_is_woken_with_its_turn_and_an_alone_one_keeps_it() {
        let turns = Turns::new(2);
        let (_, waker) = context();
        let mut first = [Turn::new(&turns, "a"), Turn::new(&turns, "b")];
        assert_eq!(holding(&mut first, &waker), [true, true]);
        first[0].yielded();
        assert_eq!(holding(&mut first, &waker), [true, true], "nobody waits");

        let (woken, third_waker) = context();
        let mut third = [Turn::new(&turns, "c")];
        assert_eq!(holding(&mut third, &third_waker), [false]);
        assert_eq!(woken.0.load(Ordering::Relaxed), 0);
        first[1].yielded();
        assert_eq!(woken.0.load(Ordering::Relaxed), 1);
        assert_eq!(holding(&mut third, &third_waker), [true]);
    }

    /// A call dropped while it waits leaves the line, and one dropped
    /// after it was given a turn hands the turn on: no turn is lost.
    #[test]
    fn a_dropped_call_loses_no_turn() {
        let turns = Turns::new(1);
        let (_, waker) = context();
        let mut running = [Turn::new(&turns, "a")];
        assert_eq!(holding(&mut running, &waker), [true]);
        let mut gone = [Turn::new(&turns, "b")];
        assert_eq!(holding(&mut gone, &waker), [false]);
        let mut granted_then_gone = [Turn::new(&turns, "c")];
        assert_eq!(holding(&mut granted_then_gone, &waker), [false]);
        let mut last = [Turn::new(&turns, "d")];
        assert_eq!(holding(&mut last, &waker), [false]);

        drop(gone);
        // "c" is given the turn, and dropped before it runs.
        drop(running);
        drop(granted_then_gone);
        assert_eq!(holding(&mut last, &waker), [true]);
        drop(last);
        assert_eq!(lock(&turns.state).free, 1);
        assert_eq!(turns.waiting.load(Ordering::Relaxed), 0);
        assert!(lock(&turns.state).queues.is_empty());
    }
}
