//! Buffers for the forward pass, reused from step to step.
//!
//! Every intermediate of a forward is a [`Buf`]: it takes a vector from a per-thread free
//! list (the smallest one large enough) and gives it back when dropped. A decode step asks
//! for the same sizes in the same order as the step before, so once the first steps have
//! filled the lists, the steady-state decode loop allocates nothing (checked by
//! `tests/alloc.rs` with a counting allocator) and never re-faults fresh zeroed pages.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Element types with a free list.
pub trait Pooled: Copy + Default + 'static {
    fn with_list<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn with_list<R>(f: impl FnOnce(&mut Vec<Vec<$t>>) -> R) -> R {
                thread_local! {
                    static LIST: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
                }
                LIST.with(|l| f(&mut l.borrow_mut()))
            }
        }
    )*};
}

pooled!(f32, usize, u32, (usize, f32));

/// Most vectors one thread keeps (a forward holds a few dozen at once).
const KEEP: usize = 256;

/// A vector from the free list, returned to it on drop.
pub struct Buf<T: Pooled> {
    v: Vec<T>,
}

impl<T: Pooled> Buf<T> {
    /// `n` default values (zeros).
    pub fn zeros(n: usize) -> Buf<T> {
        let mut v = take::<T>(n);
        v.resize(n, T::default());
        Buf { v }
    }

    /// Empty, with room for `n` pushes without reallocating.
    pub fn with_capacity(n: usize) -> Buf<T> {
        Buf { v: take::<T>(n) }
    }

    /// A copy of `s`.
    pub fn from_slice(s: &[T]) -> Buf<T> {
        let mut v = take::<T>(s.len());
        v.extend_from_slice(s);
        Buf { v }
    }

    pub fn vec(&mut self) -> &mut Vec<T> {
        &mut self.v
    }
}

/// The smallest free vector with capacity `n`, cleared; else a new one.
fn take<T: Pooled>(n: usize) -> Vec<T> {
    T::with_list(|list| {
        let best = list
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= n)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                let mut v = list.swap_remove(i);
                v.clear();
                v
            }
            None => Vec::with_capacity(n),
        }
    })
}

impl<T: Pooled> Drop for Buf<T> {
    fn drop(&mut self) {
        if self.v.capacity() == 0 {
            return;
        }
        let v = std::mem::take(&mut self.v);
        T::with_list(|list| {
            if list.len() < KEEP {
                list.push(v);
            }
        });
    }
}

impl<T: Pooled> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.v
    }
}

impl<T: Pooled> DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.v
    }
}

impl<T: Pooled + std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.v.fmt(f)
    }
}

impl<'a, T: Pooled> IntoIterator for &'a Buf<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.v.iter()
    }
}
