//! A page of a listing: the first `limit` names of a directory in their
//! order, past a point, without holding the rest. A queue run hands its
//! work out a page at a time (S8), so its memory is bounded by the page,
//! not by the queue: at a hundred thousand queued messages a whole
//! listing held as work is megabytes, several times over.

use std::collections::BinaryHeap;

/// Up to `limit` keys, smallest first, and whether more were left out.
#[derive(Debug)]
pub struct Page<K> {
    /// The keys, in ascending order.
    pub keys: Vec<K>,
    /// Some keys past the last one were left out: the listing goes on
    /// from it.
    pub more: bool,
}

/// Keeps the `limit` smallest keys it is fed (a max-heap of at most
/// `limit`: each further key costs a comparison, memory stays at the
/// page's size whatever the directory's).
pub struct Smallest<K: Ord> {
    heap: BinaryHeap<K>,
    limit: usize,
    more: bool,
}

impl<K: Ord> Smallest<K> {
    pub fn new(limit: usize) -> Smallest<K> {
        Smallest {
            heap: BinaryHeap::new(),
            limit: limit.max(1),
            more: false,
        }
    }

    /// Whether the page is full: any key fed from now on must be smaller
    /// than the largest kept to change it.
    pub fn full(&self) -> bool {
        self.heap.len() >= self.limit
    }

    pub fn push(&mut self, key: K) {
        if self.full() {
            self.more = true;
            match self.heap.peek() {
                Some(largest) if key < *largest => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(key);
    }

    /// Notes that keys exist past the page's end without feeding them.
    pub fn more_beyond(&mut self) {
        self.more = true;
    }

    pub fn into_page(self) -> Page<K> {
        Page {
            keys: self.heap.into_sorted_vec(),
            more: self.more,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_smallest_in_order_and_says_more_were_left() {
        let mut s = Smallest::new(3);
        for k in [9, 4, 7, 1, 8, 3, 5] {
            s.push(k);
        }
        let page = s.into_page();
        assert_eq!(page.keys, vec![1, 3, 4]);
        assert!(page.more);
        let mut s = Smallest::new(3);
        for k in [2, 1] {
            s.push(k);
        }
        let page = s.into_page();
        assert_eq!(page.keys, vec![1, 2]);
        assert!(!page.more, "nothing was left out");
    }

    #[test]
    fn paging_from_each_last_key_visits_everything_once() {
        let all: Vec<u32> = (0..1000).map(|i| (i * 7919) % 1000).collect();
        let mut seen: Vec<u32> = Vec::new();
        let mut after: Option<u32> = None;
        loop {
            let mut s = Smallest::new(64);
            for &k in all.iter().filter(|&&k| after.is_none_or(|a| k > a)) {
                s.push(k);
            }
            let page = s.into_page();
            seen.extend(&page.keys);
            if !page.more {
                break;
            }
            after = page.keys.last().copied();
        }
        assert_eq!(seen, (0..1000).collect::<Vec<u32>>());
    }
}
