//! A few slots shared fairly between keys (the namespaces of checkpoint requests): a freed
//! slot goes to the waiter whose key holds the fewest, the earliest of them first. So one
//! namespace queueing many dumps holds at most one slot more than another namespace that is
//! waiting, and that namespace's next job gets the next slot freed: no tenant can keep the
//! node's dump slots to itself.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

#[derive(Clone, Debug)]
pub struct FairSlots(Arc<Mutex<State>>);

#[derive(Debug)]
struct State {
    free: usize,
    /// Slots held, by key (keys holding none are absent).
    held: HashMap<String, usize>,
    queue: VecDeque<Waiter>,
    /// Waiters given a slot that have not taken it yet.
    granted: HashSet<u64>,
    next_id: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    key: String,
    wake: oneshot::Sender<()>,
}

/// A held slot, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: FairSlots,
    key: String,
}

impl FairSlots {
    /// `slots` slots, at least one.
    pub fn new(slots: usize) -> Self {
        Self(Arc::new(Mutex::new(State {
            free: slots.max(1),
            held: HashMap::new(),
            queue: VecDeque::new(),
            granted: HashSet::new(),
            next_id: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for `key`, once the fair share gives it one.
    pub async fn acquire(&self, key: &str) -> Slot {
        let (id, granted) = {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            let (wake, granted) = oneshot::channel();
            state.queue.push_back(Waiter {
                id,
                key: key.to_owned(),
                wake,
            });
            state.grant();
            (id, granted)
        };
        // Cancelled while waiting (the request's task dropped): out of the queue, or the slot
        // it was just given back.
        let mut waiting = Waiting {
            slots: self,
            id,
            key,
            armed: true,
        };
        // The sender goes only with a grant, or with `waiting` itself.
        let _ = granted.await;
        self.lock().granted.remove(&id);
        waiting.armed = false;
        Slot {
            slots: self.clone(),
            key: key.to_owned(),
        }
    }

    /// How many wait for a slot.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.lock().queue.len()
    }
}

impl State {
    /// Gives free slots to waiters: the one whose key holds the fewest, the earliest first.
    fn grant(&mut self) {
        while self.free > 0 {
            let held = |key: &str| self.held.get(key).copied().unwrap_or(0);
            let Some(next) = (0..self.queue.len()).min_by_key(|&i| (held(&self.queue[i].key), i))
            else {
                return;
            };
            let Some(waiter) = self.queue.remove(next) else {
                return;
            };
            self.free -= 1;
            *self.held.entry(waiter.key).or_default() += 1;
            self.granted.insert(waiter.id);
            // A waiter gone meanwhile gives it back through its own drop.
            let _ = waiter.wake.send(());
        }
    }

    fn release(&mut self, key: &str) {
        self.free += 1;
        if let Some(count) = self.held.get_mut(key) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(key);
            }
        }
        self.grant();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().release(&self.key);
    }
}

struct Waiting<'a> {
    slots: &'a FairSlots,
    id: u64,
    key: &'a str,
    armed: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut state = self.slots.lock();
        if let Some(at) = state.queue.iter().position(|w| w.id == self.id) {
            state.queue.remove(at);
        } else if state.granted.remove(&self.id) {
            state.release(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Until `slots` has `n` waiters.
    async fn queued(slots: &FairSlots, n: usize) {
        while slots.waiting() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn one_namespaces_ten_queued_jobs_cannot_starve_anothers_one_job() {
        let slots = FairSlots::new(2);
        let first = slots.acquire("busy").await;
        let second = slots.acquire("busy").await;
        let busy: Vec<_> = (0..8)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.acquire("busy").await })
            })
            .collect();
        queued(&slots, 8).await;
        let quiet = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire("quiet").await })
        };
        queued(&slots, 9).await;

        // The first slot freed goes to the namespace holding none, though it came last.
        drop(first);
        let quiet = tokio::time::timeout(Duration::from_secs(5), quiet)
            .await
            .expect("the quiet namespace's job got the freed slot")
            .unwrap();
        assert!(
            busy.iter().all(|j| !j.is_finished()),
            "no busy job went first"
        );
        assert_eq!(slots.waiting(), 8);

        // Then the busy namespace goes on, one slot at a time beside the quiet one.
        drop(second);
        queued(&slots, 7).await;
        drop(quiet);
        queued(&slots, 6).await;
        for job in busy {
            job.abort();
        }
    }

    #[tokio::test]
    async fn a_namespace_alone_uses_every_slot_and_never_more() {
        let slots = FairSlots::new(2);
        let a = slots.acquire("a").await;
        let _b = slots.acquire("a").await;
        let third = slots.acquire("a");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), third)
                .await
                .is_err()
        );
        drop(a);
        let _c = tokio::time::timeout(Duration::from_secs(5), slots.acquire("a"))
            .await
            .expect("the freed slot");
    }

    #[tokio::test]
    async fn a_cancelled_wait_takes_no_slot_with_it() {
        let slots = FairSlots::new(1);
        let held = slots.acquire("a").await;
        // Queued, then dropped before any slot is free.
        let mut gone = Box::pin(slots.acquire("b"));
        assert!(
            tokio::time::timeout(Duration::from_millis(5), gone.as_mut())
                .await
                .is_err()
        );
        assert_eq!(slots.waiting(), 1);
        drop(gone);
        assert_eq!(slots.waiting(), 0);

        // Given the slot, then dropped before taking it: the slot comes back.
        let mut late = Box::pin(slots.acquire("c"));
        assert!(
            tokio::time::timeout(Duration::from_millis(5), late.as_mut())
                .await
                .is_err()
        );
        drop(held);
        drop(late);
        let again = tokio::time::timeout(Duration::from_secs(5), slots.acquire("d")).await;
        assert!(
            again.is_ok(),
            "the slot given to the cancelled waiter is free again"
        );
    }
}
