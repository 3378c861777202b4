//! Lookups as units no client can cut off: a lookup for a user joins the one already
//! running for that user, or starts one on a task of its own, which runs to its end even
//! when every client waiting for it has gone (timed out, disconnected, shut down), so no
//! exchange with the server is ever left half read. At most `auth.query_concurrency` run
//! at once; one still waiting for its turn when nobody wants its answer any more is dropped
//! before it starts.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{Semaphore, watch};

/// One running lookup's answer, `None` until it is in.
type Slot<T> = watch::Sender<Option<T>>;

/// The lookups running, by user, and the turns they take.
pub(crate) struct Flights<T> {
    running: Mutex<HashMap<String, Weak<Slot<T>>>>,
    turns: Arc<Semaphore>,
}

/// A wait for one lookup's answer; dropping it gives up waiting, not the lookup.
pub(crate) struct Waiting<T>(watch::Receiver<Option<T>>);

impl<T: Clone> Waiting<T> {
    /// The answer; `None` when the lookup ended without one (its task was stopped).
    pub async fn answer(mut self) -> Option<T> {
        self.0
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|answer| answer.clone())
    }
}

/// Takes a finished (or stopped) lookup off the map, whichever way its task ends.
struct Landing<T> {
    flights: Arc<Flights<T>>,
    user: String,
    slot: Arc<Slot<T>>,
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        let mut running = self.flights.lock();
        let ours = running
            .get(&self.user)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.slot)));
        if ours {
            running.remove(&self.user);
        }
    }
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// At most `concurrency` lookups at once (at least one).
    pub fn new(concurrency: usize) -> Arc<Self> {
        Arc::new(Self {
            running: Mutex::default(),
            turns: Arc::new(Semaphore::new(concurrency.max(1))),
        })
    }

    /// Waits for `user`'s lookup: the running one, else a new one running `work` on its
    /// own task (on the current runtime).
    pub fn join<F, Fut>(self: &Arc<Self>, user: &str, work: F) -> Waiting<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let mut running = self.lock();
        if let Some(slot) = running.get(user).and_then(Weak::upgrade) {
            return Waiting(slot.subscribe());
        }
        let slot = Arc::new(watch::Sender::new(None));
        let waiting = Waiting(slot.subscribe());
        running.insert(user.to_owned(), Arc::downgrade(&slot));
        drop(running);
        let landing = Landing {
            flights: Arc::clone(self),
            user: user.to_owned(),
            slot,
        };
        tokio::spawn(async move {
            let turns = Arc::clone(&landing.flights.turns);
            // A free turn is taken even if the waiter has gone already: only a lookup still
            // queued behind others is given up.
            let turn = tokio::select! {
                biased;
                turn = turns.acquire_owned() => turn.ok(),
                () = landing.unwanted() => None,
            };
            if let Some(_turn) = turn {
                let answer = work().await;
                landing.slot.send_replace(Some(answer));
            }
        });
        waiting
    }

    /// How many lookups are running or waiting for their turn.
    #[cfg(test)]
    pub fn running(&self) -> usize {
        self.lock().len()
    }
}

impl<T> Flights<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Slot<T>>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T> Landing<T> {
    /// Resolves once nobody waits for this lookup, taking it off the map so that nobody
    /// joins it after; a client joining meanwhile keeps it wanted.
    async fn unwanted(&self) {
        loop {
            self.slot.closed().await;
            let mut running = self.flights.lock();
            if self.slot.receiver_count() == 0 {
                running.remove(&self.user);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// A lookup that counts its runs and how many run at once, and ends when told.
    #[derive(Clone, Default)]
    struct Probe {
        runs: Arc<AtomicUsize>,
        now: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        release: Arc<Notify>,
    }

    impl Probe {
        fn work(
            &self,
            answer: u32,
        ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = u32> + Send>> + Send + 'static
        {
            let p = self.clone();
            move || {
                Box::pin(async move {
                    p.runs.fetch_add(1, Ordering::SeqCst);
                    let n = p.now.fetch_add(1, Ordering::SeqCst) + 1;
                    p.most.fetch_max(n, Ordering::SeqCst);
                    p.release.notified().await;
                    p.now.fetch_sub(1, Ordering::SeqCst);
                    answer
                })
            }
        }
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn lookups_for_one_user_share_one_query() {
        let flights = Flights::new(4);
        let probe = Probe::default();
        let waits: Vec<_> = (0..10)
            .map(|i| flights.join("alice", probe.work(i)))
            .collect();
        settle().await;
        assert_eq!(probe.runs.load(Ordering::SeqCst), 1);
        assert_eq!(flights.running(), 1);
        probe.release.notify_waiters();
        for w in waits {
            assert_eq!(w.answer().await, Some(0));
        }
        settle().await;
        assert_eq!(flights.running(), 0);
        // Done: the next lookup is a new query.
        let again = flights.join("alice", probe.work(7));
        settle().await;
        probe.release.notify_waiters();
        assert_eq!(again.answer().await, Some(7));
        assert_eq!(probe.runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn at_most_the_concurrency_run_at_once() {
        let flights = Flights::new(3);
        let probe = Probe::default();
        let waits: Vec<_> = (0..10)
            .map(|i| flights.join(&format!("user{i}"), probe.work(i)))
            .collect();
        settle().await;
        assert_eq!(probe.now.load(Ordering::SeqCst), 3);
        assert_eq!(flights.running(), 10);
        while probe.runs.load(Ordering::SeqCst) < 10 || probe.now.load(Ordering::SeqCst) > 0 {
            assert!(probe.now.load(Ordering::SeqCst) <= 3);
            probe.release.notify_waiters();
            settle().await;
        }
        let mut answers = Vec::new();
        for w in waits {
            answers.push(w.answer().await.unwrap());
        }
        assert_eq!(answers, (0..10).collect::<Vec<_>>());
        assert_eq!(probe.most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_started_lookup_ends_without_anyone_waiting() {
        let flights = Flights::new(1);
        let probe = Probe::default();
        drop(flights.join("alice", probe.work(1)));
        settle().await;
        assert_eq!(probe.runs.load(Ordering::SeqCst), 1, "it started");
        // Someone joining the abandoned lookup gets its answer.
        let late = flights.join("alice", probe.work(2));
        probe.release.notify_waiters();
        assert_eq!(late.answer().await, Some(1));
        assert_eq!(probe.now.load(Ordering::SeqCst), 0, "it ran to its end");
    }

    #[tokio::test]
    async fn a_lookup_nobody_waits_for_is_dropped_before_its_turn() {
        let flights = Flights::new(1);
        let probe = Probe::default();
        let first = flights.join("alice", probe.work(1));
        drop(flights.join("bob", probe.work(2)));
        let carol = flights.join("carol", probe.work(3));
        settle().await;
        assert_eq!(flights.running(), 2, "bob's lookup is off the map");
        probe.release.notify_waiters();
        assert_eq!(first.answer().await, Some(1));
        settle().await;
        probe.release.notify_waiters();
        assert_eq!(carol.answer().await, Some(3));
        assert_eq!(probe.runs.load(Ordering::SeqCst), 2, "bob's never ran");
    }

    #[tokio::test]
    async fn a_lookup_whose_task_fails_answers_none_and_leaves_the_map() {
        let flights: Arc<Flights<u32>> = Flights::new(1);
        let w = flights.join("alice", || async { panic!("a bug in the lookup") });
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), w.answer()).await,
            Ok(None)
        );
        assert_eq!(flights.running(), 0);
    }
}
