//! A binary min-heap with Python `heapq` semantics.
//!
//! ComfyUI keeps its pending prompts in a plain list managed by `heapq`, and `/queue` prints that
//! list as is. To print the same unsorted order, this heap performs exactly the same element
//! moves as CPython's `heappush`, `heappop` and `heapify` (including `_siftup`'s descent to a leaf
//! followed by `_siftdown`), rather than using `std::collections::BinaryHeap`.

/// Min-heap over `T` ordered by `less`.
#[derive(Debug, Clone)]
pub struct PyHeap<T> {
    items: Vec<T>,
    less: fn(&T, &T) -> bool,
}

impl<T> PyHeap<T> {
    /// An empty heap ordered by `less`.
    pub fn new(less: fn(&T, &T) -> bool) -> Self {
        PyHeap {
            items: Vec::new(),
            less,
        }
    }

    /// The raw heap array, in the order Python would print it.
    pub fn as_slice(&self) -> &[T] {
        &self.items
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the heap is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `heapq.heappush`.
    pub fn push(&mut self, item: T) {
        self.items.push(item);
        let last = self.items.len() - 1;
        self.sift_down(0, last);
    }

    /// `heapq.heappop`.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.items.pop()?;
        if self.items.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.items[0], last);
        self.sift_up(0);
        Some(top)
    }

    /// Removes the item at `index` (Python `list.pop(index)`) and re-heapifies.
    pub fn remove_at(&mut self, index: usize) -> T {
        let item = self.items.remove(index);
        self.heapify();
        item
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// `heapq.heapify`.
    pub fn heapify(&mut self) {
        let n = self.items.len();
        for i in (0..n / 2).rev() {
            self.sift_up(i);
        }
    }

    // CPython's `_siftdown`: move the item at `pos` up towards `start` while smaller than its parent.
    fn sift_down(&mut self, start: usize, mut pos: usize) {
        while pos > start {
            let parent = (pos - 1) >> 1;
            if (self.less)(&self.items[pos], &self.items[parent]) {
                self.items.swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
    }

    // CPython's `_siftup`: walk the smaller child down to a leaf, then sift the item back up.
    fn sift_up(&mut self, mut pos: usize) {
        let end = self.items.len();
        let start = pos;
        let mut child = 2 * pos + 1;
        while child < end {
            let right = child + 1;
            if right < end && !(self.less)(&self.items[child], &self.items[right]) {
                child = right;
            }
            self.items.swap(pos, child);
            pos = child;
            child = 2 * pos + 1;
        }
        self.sift_down(start, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lt(a: &f64, b: &f64) -> bool {
        a < b
    }

    #[test]
    fn push_order_matches_captured_queue() {
        // Captured /queue: pushes 46, 47, -48, 0.5, -100 left [-100, -48, 46, 47, 0.5].
        let mut h = PyHeap::new(lt);
        for n in [46.0, 47.0, -48.0, 0.5, -100.0] {
            h.push(n);
        }
        assert_eq!(h.as_slice(), &[-100.0, -48.0, 46.0, 47.0, 0.5]);
        let order: Vec<f64> = std::iter::from_fn(|| h.pop()).collect();
        assert_eq!(order, vec![-100.0, -48.0, 0.5, 46.0, 47.0]);
    }

    #[test]
    fn pop_matches_cpython_layout() {
        // heapq after pushes of 5,3,8,1,9,2 then one pop: CPython leaves [2, 3, 8, 5, 9].
        let mut h = PyHeap::new(lt);
        for n in [5.0, 3.0, 8.0, 1.0, 9.0, 2.0] {
            h.push(n);
        }
        assert_eq!(h.pop(), Some(1.0));
        assert_eq!(h.as_slice(), &[2.0, 3.0, 8.0, 5.0, 9.0]);
    }
}
