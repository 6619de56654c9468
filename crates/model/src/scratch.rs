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
    /// What [`Buf::for_overwrite`] fills with in debug builds (the tests' profile), so a
    /// value an operation failed to write shows in its results.
    const POISON: Self;
    fn with_list<R>(f: impl FnOnce(&mut Vec<Vec<Self>>) -> R) -> R;
}

macro_rules! pooled {
    ($($t:ty = $poison:expr),*) => {$(
        impl Pooled for $t {
            const POISON: $t = $poison;
            fn with_list<R>(f: impl FnOnce(&mut Vec<Vec<$t>>) -> R) -> R {
                thread_local! {
                    static LIST: RefCell<Vec<Vec<$t>>> = const { RefCell::new(Vec::new()) };
                }
                LIST.with(|l| f(&mut l.borrow_mut()))
            }
        }
    )*};
}

pooled!(
    f32 = f32::NAN,
    usize = usize::MAX,
    u32 = u32::MAX,
    u16 = u16::MAX,
    (usize, f32) = (usize::MAX, f32::NAN)
);

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

    /// `n` values for an output the next operation writes whole: a recycled vector keeps
    /// its old values (only growth is zeroed). Zeroing a 512-token prefill's buffers
    /// (its latent queries alone are 17 MB a layer) was 4% of its time, on one thread
    /// while the others waited.
    pub fn for_overwrite(n: usize) -> Buf<T> {
        let mut v = take_as_is::<T>(n);
        if cfg!(debug_assertions) {
            v.clear();
            v.resize(n, T::POISON);
        } else {
            v.resize(n, T::default());
        }
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
    let mut v = take_as_is(n);
    v.clear();
    v
}

/// The smallest free vector with capacity `n`, with the values it held; else a new one.
fn take_as_is<T: Pooled>(n: usize) -> Vec<T> {
    T::with_list(|list| {
        let best = list
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= n)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => list.swap_remove(i),
            None => {
                // Nothing fits, so every free vector is smaller: the largest is retired, as
                // the new one takes its place. Forwards whose sizes grow (prefill chunks
                // ever deeper into a long prompt) then keep about one vector per role
                // instead of one per size ever asked for, which resident memory would show.
                if let Some(i) = (0..list.len()).max_by_key(|&i| list[i].capacity()) {
                    list.swap_remove(i);
                }
                Vec::with_capacity(n)
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Free vectors of this thread (tests run on their own threads, so the list is the
    /// test's alone).
    fn free_list() -> (usize, usize) {
        f32::with_list(|l| (l.len(), l.iter().map(|v| v.capacity()).sum()))
    }

    #[test]
    fn growing_requests_keep_one_vector_per_role() {
        // a long prompt in chunks: each chunk holds two buffers that grow with the depth
        // and one that does not
        for chunk in 1..=16usize {
            let _keys = Buf::<f32>::zeros(chunk * 1000);
            let _small = Buf::<f32>::zeros(64);
            let _scores = Buf::<f32>::zeros(chunk * 300);
        }
        let (count, capacity) = free_list();
        assert!(count <= 3, "{count} vectors kept");
        assert!(
            capacity <= 16 * 1300 + 64 + 16 * 300,
            "{capacity} values kept"
        );
        // and once sizes stop growing, a step reuses them all
        let before = free_list();
        {
            let _keys = Buf::<f32>::zeros(16 * 1000);
            let _small = Buf::<f32>::zeros(64);
            let _scores = Buf::<f32>::zeros(16 * 300);
        }
        assert_eq!(free_list(), before);
    }

    #[test]
    fn a_buffer_for_overwrite_has_the_length_asked_for() {
        drop(Buf::<f32>::from_slice(&[1.0; 100]));
        let b = Buf::<f32>::for_overwrite(40);
        assert_eq!(b.len(), 40);
        // (debug builds poison it, so an unwritten value shows)
        if cfg!(debug_assertions) {
            assert!(b.iter().all(|v| v.is_nan()));
        }
        drop(b);
        assert_eq!(Buf::<f32>::for_overwrite(200).len(), 200);
        // and zeros are still zeros after a dirty vector went back
        drop(Buf::<f32>::from_slice(&[1.0; 300]));
        assert!(Buf::<f32>::zeros(300).iter().all(|&v| v == 0.0));
    }
}
