//! A timer finer than tokio's, whose wheel ticks in milliseconds: about as long as the wait
//! a mock exchange must imitate. One thread sleeps until the earliest deadline (the kernel's
//! high-resolution timers) and wakes each waiter through a oneshot channel.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::oneshot;

/// Most waits queued at once; beyond, tokio's timer serves.
const MAX_QUEUED: usize = 100_000;

/// Waits until `deadline`.
pub(super) async fn sleep_until(deadline: Instant) {
    if deadline <= Instant::now() {
        return;
    }
    let (tx, rx) = oneshot::channel();
    match timer() {
        Some(timer) if timer.add(deadline, tx) => {
            let _ = rx.await;
        }
        _ => tokio::time::sleep_until(deadline.into()).await,
    }
}

struct Entry {
    deadline: Instant,
    seq: u64,
    wake: oneshot::Sender<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    entries: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

#[derive(Default)]
struct Timer {
    queue: Mutex<Queue>,
    changed: Condvar,
}

impl Timer {
    /// Queues a wake-up; false when the queue is full.
    fn add(&self, deadline: Instant, wake: oneshot::Sender<()>) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.entries.len() >= MAX_QUEUED {
            return false;
        }
        q.seq = q.seq.wrapping_add(1);
        let seq = q.seq;
        let earliest = q.entries.peek().is_none_or(|e| deadline < e.0.deadline);
        q.entries.push(Reverse(Entry {
            deadline,
            seq,
            wake,
        }));
        if earliest {
            self.changed.notify_one();
        }
        true
    }

    fn run(&self) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let now = Instant::now();
            while q.entries.peek().is_some_and(|e| e.0.deadline <= now) {
                if let Some(Reverse(e)) = q.entries.pop() {
                    let _ = e.wake.send(());
                }
            }
            q = match q.entries.peek().map(|e| e.0.deadline - now) {
                Some(wait) => {
                    self.changed
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
                None => self.changed.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
    }
}

/// The timer and its thread, started at first use; `None` if the thread cannot start.
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("pgt-mock-timer".into())
            .spawn(move || timer.run())
            .ok()
            .map(|_| timer)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Never early, and always woken (bounded, so a lost wake-up fails instead of hanging).
    /// How late it wakes is a speed figure: bench/scram-timing.sh measures it, not a test.
    #[tokio::test]
    async fn wakes_after_the_deadline_never_before() {
        for _ in 0..20 {
            let deadline = Instant::now() + Duration::from_micros(300);
            tokio::time::timeout(Duration::from_secs(5), sleep_until(deadline))
                .await
                .expect("the timer never woke");
            assert!(Instant::now() >= deadline);
        }
    }
}
