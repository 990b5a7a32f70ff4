//! Store and forward: the newest `N` readings wait here while Wi-Fi or MQTT is down and
//! leave oldest first once it is back.
//!
//! `N` must be at least 1 (checked at compile time). When full, a new reading pushes out the oldest one and the drop is counted. The count
//! is cumulative (since boot, saturating) so it can be published as is; a reading leaves
//! only when [`Outbox::pop_oldest`] is called after it was handed over, so a failed
//! publish loses nothing.

use heapless::Deque;

#[derive(Debug)]
pub struct Outbox<T, const N: usize> {
    queue: Deque<T, N>,
    dropped: u32,
}

impl<T, const N: usize> Default for Outbox<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> Outbox<T, N> {
    pub const fn new() -> Self {
        Self { queue: Deque::new(), dropped: 0 }
    }

    /// Stores `item`; when full, the oldest item makes room and is returned.
    pub fn push(&mut self, item: T) -> Option<T> {
        let evicted = if self.queue.is_full() {
            self.dropped = self.dropped.saturating_add(1);
            self.queue.pop_front()
        } else {
            None
        };
        // Room was made above; heapless refuses N = 0 at compile time.
        let pushed = self.queue.push_back(item);
        debug_assert!(pushed.is_ok());
        evicted
    }

    /// The next item to send.
    pub fn oldest(&self) -> Option<&T> {
        self.queue.front()
    }

    /// Removes the oldest item, once it has been handed over.
    pub fn pop_oldest(&mut self) -> Option<T> {
        self.queue.pop_front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub const fn capacity(&self) -> usize {
        N
    }

    /// Items dropped for lack of room since this outbox was made.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.queue.iter()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_the_drops() {
        let mut outbox: Outbox<u32, 3> = Outbox::new();
        for i in 0..3 {
            assert_eq!(outbox.push(i), None);
        }
        assert_eq!(outbox.dropped(), 0);
        assert_eq!(outbox.push(3), Some(0));
        assert_eq!(outbox.push(4), Some(1));
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(outbox.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
    }

    #[test]
    fn drains_oldest_first_and_only_on_pop() {
        let mut outbox: Outbox<u32, 4> = Outbox::new();
        outbox.push(10);
        outbox.push(11);
        assert_eq!(outbox.oldest(), Some(&10));
        // A failed send leaves the item where it was.
        assert_eq!(outbox.oldest(), Some(&10));
        assert_eq!(outbox.pop_oldest(), Some(10));
        assert_eq!(outbox.pop_oldest(), Some(11));
        assert_eq!(outbox.pop_oldest(), None);
        assert!(outbox.is_empty());
    }

    proptest! {
        #[test]
        fn holds_the_last_n_in_order(count in 0u32..200) {
            let mut outbox: Outbox<u32, 16> = Outbox::new();
            for i in 0..count {
                outbox.push(i);
            }
            let kept: Vec<u32> = outbox.iter().copied().collect();
            let expected: Vec<u32> = (count.saturating_sub(16)..count).collect();
            prop_assert_eq!(kept, expected);
            prop_assert_eq!(outbox.dropped(), count.saturating_sub(16));
        }
    }
}
