//! The bounded queue of requests waiting for one receiver, sent strictly in order.
//!
//! Remote write appends samples (unlike a Pushgateway PUT, which replaces the group), so
//! a request that could not be sent yet is kept, not superseded. The queue is bounded:
//! when a receiver stays down, the oldest request is dropped (load shedding, counted) so
//! memory stays flat and the newest data, which dashboards want first, survives. Order
//! is never changed: dropping from the front keeps every later request's samples newer
//! than anything sent before them.

use std::collections::VecDeque;

use bytes::Bytes;

/// One request waiting to be sent.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Increases by one per request: lets the sender see that the request it is
    /// retrying was dropped meanwhile.
    pub seq: u64,
    pub body: Bytes,
    pub samples: usize,
    pub stale_markers: usize,
}

#[derive(Debug)]
pub struct Queue {
    items: VecDeque<Pending>,
    capacity: usize,
    next_seq: u64,
    /// Requests pushed out of a full queue since the start.
    dropped_full: u64,
}

impl Queue {
    /// A queue of at most `capacity` requests (at least one).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            dropped_full: 0,
        }
    }

    /// Appends a request; when full, drops the oldest and returns it.
    pub fn push(&mut self, body: Bytes, samples: usize, stale_markers: usize) -> Option<Pending> {
        let dropped = if self.items.len() >= self.capacity {
            self.dropped_full += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(Pending {
            seq: self.next_seq,
            body,
            samples,
            stale_markers,
        });
        self.next_seq += 1;
        dropped
    }

    /// The next request to send (cheap: the body is shared).
    pub fn front(&self) -> Option<Pending> {
        self.items.front().cloned()
    }

    /// Removes the front request if it is still `seq` (it may have been dropped while
    /// it was being sent); true when it was removed.
    pub fn done(&mut self, seq: u64) -> bool {
        if self.items.front().is_some_and(|p| p.seq == seq) {
            self.items.pop_front();
            true
        } else {
            false
        }
    }

    /// Drops every request but the newest; returns how many were dropped. At job end
    /// the newest is the one with the staleness markers, which must not wait behind a
    /// backlog the shutdown deadline cannot clear.
    pub fn keep_newest_only(&mut self) -> usize {
        let n = self.items.len().saturating_sub(1);
        self.items.drain(..n);
        n
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn dropped_full(&self) -> u64 {
        self.dropped_full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: u8) -> Bytes {
        Bytes::from(vec![n])
    }

    #[test]
    fn fifo_order() {
        let mut q = Queue::new(10);
        for i in 0..5 {
            assert!(q.push(body(i), 1, 0).is_none());
        }
        let mut got = Vec::new();
        while let Some(p) = q.front() {
            assert!(q.done(p.seq));
            got.push(p.body[0]);
        }
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let mut q = Queue::new(3);
        for i in 0..3 {
            q.push(body(i), 1, 0);
        }
        let dropped = q.push(body(3), 1, 0).expect("one dropped");
        assert_eq!(dropped.body[0], 0);
        q.push(body(4), 1, 0);
        assert_eq!(q.dropped_full(), 2);
        assert_eq!(q.len(), 3);
        let order: Vec<u8> = std::iter::from_fn(|| {
            let p = q.front()?;
            q.done(p.seq);
            Some(p.body[0])
        })
        .collect();
        assert_eq!(order, vec![2, 3, 4], "newest kept, order unchanged");
    }

    #[test]
    fn done_ignores_a_request_dropped_while_in_flight() {
        let mut q = Queue::new(2);
        q.push(body(0), 1, 0);
        let in_flight = q.front().unwrap();
        q.push(body(1), 1, 0);
        q.push(body(2), 1, 0); // pushes out the one in flight
        assert!(!q.done(in_flight.seq), "must not remove request 1 instead");
        assert_eq!(q.front().unwrap().body[0], 1);
        // Sequence numbers keep increasing.
        assert!(q.front().unwrap().seq > in_flight.seq);
    }

    #[test]
    fn keep_newest_only() {
        let mut q = Queue::new(5);
        for i in 0..4 {
            q.push(body(i), 1, 0);
        }
        assert_eq!(q.keep_newest_only(), 3);
        assert_eq!(q.front().unwrap().body[0], 3);
        assert_eq!(q.len(), 1);
        assert_eq!(Queue::new(0).keep_newest_only(), 0);
        assert_eq!(Queue::new(0).capacity, 1);
    }
}
