//! How many requests are processed at once: from their body read to
//! Kafka's answer. Past that many, a request waits its turn with its body
//! read instead of joining the work half done: each tenant's requests in
//! the order they came, the tenants waiting served in turn (one place each
//! round), so a quiet tenant's request never waits behind another's
//! backlog.
//!
//! Why: a node's CPU is its limit. With every connection's request taken
//! at once (a thousand connections), each is decoded and handed to
//! librdkafka as soon as it arrives, and then they all wait together:
//! librdkafka's thread, sharing the saturated cores, drains its queue ever
//! later, and every request holds its events and its records meanwhile.
//! Measured (27 KB bodies, one core): 1,000 connections kept ~11,000
//! records queued and 214 ms of wait for Kafka per request, peak RSS 221
//! MB; with 64 taken at a time, 349 records and 16 ms, 128 MB, and more
//! events/s.
//!
//! A fixed number would not do: a Kafka far away needs more requests
//! waiting on it at once (its round trip times the request rate: 4,000
//! requests/s at 150 ms need 600) or the node idles. So the limit adapts,
//! as TCP Vegas does (and Netflix's concurrency-limits after it): from
//! each request's time in processing against the shortest lately seen, it
//! estimates how many requests queue rather than work; a small queue raises
//! the limit, a large one lowers it. Waiting for a far Kafka is not
//! queueing (every request's time is the round trip, so it is also the
//! shortest), so the limit rises until the node is busy; a node at its CPU
//! sees each request's time grow with the limit, and comes back to its
//! floor. The floor (`server.processing_min`) is kept because requests
//! differ in size, which looks like queueing to the estimate.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The adaptive limit, and the requests waiting for a place under it.
pub struct Processing {
    state: Mutex<State>,
}

struct State {
    vegas: Vegas,
    /// Places given out (requests in processing). Below the limit, a
    /// place is given at once; the limit can drop below it for a while.
    taken: usize,
    /// Each tenant's requests waiting, in the order they came.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// The tenants with requests waiting, served in turn: one place each
    /// round, so a tenant with a backlog does not keep a quiet one waiting
    /// behind it.
    rounds: VecDeque<Arc<str>>,
}

impl State {
    /// Gives free places to the next waiters, a tenant at a time.
    fn hand_over(&mut self) {
        while self.taken < self.vegas.limit() {
            let Some(tenant) = self.rounds.pop_front() else {
                return;
            };
            let Some(queue) = self.waiting.get_mut(&tenant) else {
                continue;
            };
            let next = queue.pop_front();
            match queue.is_empty() {
                true => drop(self.waiting.remove(&tenant)),
                false => self.rounds.push_back(tenant),
            }
            // A waiter that left (its request cancelled) is skipped.
            if next.is_some_and(|waiter| waiter.send(()).is_ok()) {
                self.taken += 1;
            }
        }
    }
}

/// One request's place, given back when dropped (with its time as a
/// sample once [`Turn::measured`]).
pub struct Turn {
    processing: Arc<Processing>,
    since: Instant,
    measured: bool,
}

/// A request waiting for its place; if it is dropped (the request was
/// cancelled) after the place was handed to it, the place goes back.
struct Waiting {
    processing: Arc<Processing>,
    place: oneshot::Receiver<()>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.place.close();
        if self.place.try_recv().is_ok() {
            self.processing.give_back(None);
        }
    }
}

impl Processing {
    /// `min`: the floor (and the start); `max`: the ceiling (and the floor
    /// when lower: no more requests than the admission's cap come in).
    pub fn new(min: usize, max: usize) -> Arc<Processing> {
        let vegas = Vegas::new(min.min(max), max, Instant::now());
        Arc::new(Processing {
            state: Mutex::new(State {
                vegas,
                taken: 0,
                waiting: HashMap::new(),
                rounds: VecDeque::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The figures stay usable if a holder panicked: take them as they are.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place: at once below the limit, else in the tenant's
    /// line (first come, first served within a tenant; the tenants in turn).
    pub async fn take(self: &Arc<Self>, tenant: &Arc<str>) -> Turn {
        let place = {
            let mut state = self.state();
            if state.rounds.is_empty() && state.taken < state.vegas.limit() {
                state.taken += 1;
                None
            } else {
                let (waiter, place) = oneshot::channel();
                let state = &mut *state;
                let queue = state.waiting.entry(tenant.clone()).or_default();
                if queue.is_empty() {
                    state.rounds.push_back(tenant.clone());
                }
                queue.push_back(waiter);
                Some(place)
            }
        };
        if let Some(place) = place {
            let mut waiting = Waiting {
                processing: self.clone(),
                place,
            };
            // The sender is dropped unsent only with `Processing`, which
            // this holds: never an error. Once received, the guard's drop
            // finds nothing to give back: the place is this turn's.
            let _ = (&mut waiting.place).await;
        }
        Turn {
            processing: self.clone(),
            since: Instant::now(),
            measured: false,
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.state().vegas.limit()
    }

    /// Requests in processing now.
    pub fn taken(&self) -> usize {
        self.state().taken
    }

    /// A place back, with its request's start time as a sample.
    fn give_back(&self, sample: Option<Instant>) {
        let mut state = self.state();
        state.taken -= 1;
        if let Some(started) = sample {
            let taken = state.taken + 1;
            state.vegas.sample(started, Instant::now(), taken);
        }
        state.hand_over();
    }
}

impl Turn {
    /// Counts this request's time in processing as a sample for the limit
    /// (a request refused before Kafka says nothing about it).
    pub fn measured(mut self) -> Turn {
        self.measured = true;
        self
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let sample = self.measured.then_some(self.since);
        self.processing.give_back(sample);
    }
}

/// How often the shortest time is measured again (see [`Probe`]).
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// How soon after the last probe another may start, when the shortest time
/// looks stale.
const PROBE_SOONEST: Duration = Duration::from_secs(1);

/// TCP Vegas' estimate applied to a concurrency limit: `queue = limit × (1 −
/// shortest / rtt)` requests waiting rather than working; below `threshold`
/// the limit grows fast (`beta`), below `alpha` slowly, above `beta` it
/// shrinks; the thresholds grow with log10 of the limit.
#[derive(Debug, Clone)]
struct Vegas {
    limit: f64,
    min: f64,
    max: f64,
    /// The shortest time seen since the last probe.
    shortest: Option<Duration>,
    /// The recent samples' average (exponentially weighted), in seconds.
    average: f64,
    probe: Probe,
}

/// The shortest time must be measured with little queueing, and a node at
/// its CPU never sees that at its limit (each request waits for the others).
/// So every [`PROBE_EVERY`] the limit drops to the floor until as many
/// requests as the floor, all started since, have been measured: their
/// shortest time is the new one, and the limit goes back to where it was
/// (BBR's ProbeRTT does the same for a TCP window). That also follows a
/// Kafka that got slower, or forgets a spuriously short sample; when the
/// average runs at more than twice the shortest, the probe comes sooner.
#[derive(Debug, Clone)]
enum Probe {
    At(Instant),
    Running {
        since: Instant,
        resume: f64,
        seen: usize,
        shortest: Option<Duration>,
    },
}

impl Vegas {
    fn new(min: usize, max: usize, now: Instant) -> Vegas {
        Vegas {
            limit: min as f64,
            min: min as f64,
            max: max as f64,
            shortest: None,
            average: 0.0,
            probe: Probe::At(now + PROBE_EVERY),
        }
    }

    fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Requests take more than twice the shortest time on average.
    fn stale(&self) -> bool {
        self.shortest
            .is_some_and(|shortest| self.average > 2.0 * shortest.as_secs_f64())
    }

    /// One request's time in processing (started at `started`, ended at
    /// `now`), with `taken` places in use when it ended (itself included).
    fn sample(&mut self, started: Instant, now: Instant, taken: usize) {
        let rtt = now
            .saturating_duration_since(started)
            .max(Duration::from_micros(1));
        self.average += (rtt.as_secs_f64() - self.average) / 20.0;
        let stale = self.stale();
        match &mut self.probe {
            // Due; or sooner when requests take more than twice the
            // shortest time on average: the shortest may be stale (Kafka
            // got slower), and the estimate would call it all queueing.
            Probe::At(at) if now >= *at || (stale && now + PROBE_EVERY >= *at + PROBE_SOONEST) => {
                self.probe = Probe::Running {
                    since: now,
                    resume: self.limit,
                    seen: 0,
                    shortest: None,
                };
                self.limit = self.min;
                return;
            }
            Probe::At(_) => {}
            Probe::Running {
                since,
                resume,
                seen,
                shortest,
            } => {
                if started >= *since {
                    *seen += 1;
                    *shortest = Some(shortest.map_or(rtt, |s| s.min(rtt)));
                }
                if *seen >= self.min as usize {
                    self.shortest = *shortest;
                    self.average = shortest.map_or(0.0, |s| s.as_secs_f64());
                    self.limit = *resume;
                    self.probe = Probe::At(now + PROBE_EVERY);
                }
                return;
            }
        }
        let shortest = self.shortest.map_or(rtt, |s| s.min(rtt));
        self.shortest = Some(shortest);
        let queue = self.limit * (1.0 - shortest.as_secs_f64() / rtt.as_secs_f64());
        let log = self.limit.log10().max(1.0);
        let (threshold, alpha, beta) = (log, 3.0 * log, 6.0 * log);
        // A limit far above what is used says nothing: it is not raised.
        let used = taken as f64 * 2.0 >= self.limit;
        let next = if queue <= threshold && used {
            self.limit + beta
        } else if queue < alpha && used {
            self.limit + log
        } else if queue > beta {
            self.limit - log
        } else {
            self.limit
        };
        self.limit = next.clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `seconds` of a saturated node whose requests take `rtt(limit,
    /// elapsed)`: as many requests in processing as the limit, finishing
    /// one after another.
    fn run(vegas: &mut Vegas, seconds: u64, rtt: impl Fn(usize, Duration) -> Duration) {
        let start = Instant::now();
        let mut now = start;
        while now < start + Duration::from_secs(seconds) {
            let limit = vegas.limit();
            let took = rtt(limit, now - start);
            now += took / limit as u32;
            vegas.sample(now - took, now, limit);
        }
    }

    /// A Kafka far away: every request takes the round trip and nothing
    /// queues, so the limit rises to what the load uses.
    #[test]
    fn waiting_on_a_far_kafka_raises_the_limit() {
        let mut vegas = Vegas::new(64, 4096, Instant::now());
        run(&mut vegas, 60, |_, _| Duration::from_millis(150));
        assert_eq!(vegas.limit(), 4096);
    }

    /// A node at its CPU: each request's time grows with the requests
    /// processed at once (they share the cores), so the limit comes down
    /// near its floor and stays there.
    #[test]
    fn queueing_on_the_cpu_brings_the_limit_down() {
        let mut vegas = Vegas::new(64, 4096, Instant::now());
        vegas.limit = 1_000.0;
        // Alone, a request takes 5 ms (Kafka's answer), plus 0.25 ms of CPU
        // for each request processed at once.
        let rtt = |limit: usize, _| Duration::from_micros(5_000 + 250 * limit as u64);
        run(&mut vegas, 60, rtt);
        assert!(vegas.limit() < 100, "{}", vegas.limit());
    }

    /// A limit far above the requests in processing is not raised further.
    #[test]
    fn a_limit_not_used_is_not_raised() {
        let mut vegas = Vegas::new(64, 4096, Instant::now());
        let start = Instant::now();
        for i in 0..2_000 {
            let now = start + Duration::from_millis(i);
            vegas.sample(now - Duration::from_millis(150), now, 10);
        }
        assert_eq!(vegas.limit(), 64);
    }

    /// A Kafka that moves farther away: its longer round trip first looks
    /// like queueing, until a probe measures it again: soon, since the
    /// average runs far above the shortest (3 s here, not the 10 s between
    /// regular probes).
    #[test]
    fn a_probe_follows_a_kafka_that_moved() {
        let mut vegas = Vegas::new(64, 4096, Instant::now());
        let rtt = |_, elapsed: Duration| match elapsed < Duration::from_secs(5) {
            true => Duration::from_millis(5),
            false => Duration::from_millis(150),
        };
        run(&mut vegas, 8, rtt);
        assert_eq!(vegas.shortest, Some(Duration::from_millis(150)));
        assert_eq!(vegas.limit(), 4096);
    }

    #[tokio::test]
    async fn places_follow_the_limit() {
        let processing = Processing::new(2, 8);
        let tenant: Arc<str> = "acme".into();
        let first = processing.take(&tenant).await;
        let second = processing.take(&tenant).await;
        assert_eq!(processing.taken(), 2);
        // At the limit: a third waits until one is given back.
        let third = tokio::spawn({
            let (processing, tenant) = (processing.clone(), tenant.clone());
            async move { processing.take(&tenant).await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        // Samples of no queueing with every place in use raise the limit.
        drop(first.measured());
        let third = third.await.unwrap();
        assert!(processing.limit() > 2, "{}", processing.limit());
        let more: Vec<Turn> = futures::future::join_all(
            (0..processing.limit() - 2).map(|_| processing.take(&tenant)),
        )
        .await;
        assert_eq!(processing.taken(), processing.limit());
        drop((second, third, more));
        assert_eq!(processing.taken(), 0);
    }

    /// The tenants waiting are served in turn: a quiet tenant's request
    /// does not wait behind another tenant's backlog.
    #[tokio::test]
    async fn tenants_waiting_take_places_in_turn() {
        let processing = Processing::new(1, 1);
        let (noisy, quiet): (Arc<str>, Arc<str>) = ("noisy".into(), "quiet".into());
        let held = processing.take(&noisy).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        let lines = [
            (&noisy, "noisy 1"),
            (&noisy, "noisy 2"),
            (&noisy, "noisy 3"),
            (&quiet, "quiet"),
        ];
        for (tenant, name) in lines {
            let (processing, tenant, order) = (processing.clone(), tenant.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let turn = processing.take(&tenant).await;
                order.lock().unwrap().push(name);
                tokio::task::yield_now().await;
                drop(turn);
            }));
            // In line before the next one comes (one thread: it runs now).
            tokio::task::yield_now().await;
        }
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order, ["noisy 1", "quiet", "noisy 2", "noisy 3"]);
    }

    /// A request cancelled while it waits, or just after its place was
    /// handed to it, leaves no place taken.
    #[tokio::test]
    async fn a_cancelled_waiter_keeps_no_place() {
        let processing = Processing::new(1, 1);
        let tenant: Arc<str> = "acme".into();
        let held = processing.take(&tenant).await;
        let mut waiting = Box::pin(processing.take(&tenant));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        // The place is handed to the waiter, which is dropped before it
        // looks.
        drop(held);
        assert_eq!(processing.taken(), 1);
        drop(waiting);
        assert_eq!(processing.taken(), 0);
        // A waiter dropped before any place came is skipped.
        let held = processing.take(&tenant).await;
        let mut gone = Box::pin(processing.take(&tenant));
        assert!(futures::poll!(gone.as_mut()).is_pending());
        drop(gone);
        drop(held);
        assert_eq!(processing.taken(), 0);
        let _again = processing.take(&tenant).await;
        assert_eq!(processing.taken(), 1);
    }
}
