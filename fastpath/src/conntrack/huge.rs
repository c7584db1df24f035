//! Memory for the connection table, in transparent huge pages where the kernel offers them.
//!
//! The table is megabytes read at random places (one line per packet, prefetched a burst
//! ahead). With 4 KiB pages nearly every one of those reads also misses the TLB, and a page
//! walk in a virtual machine is nested: on the 2-core VM the prefetch instruction itself was
//! where the worker's time went, stalled on the walk. 2 MiB pages cover a default table with a
//! handful of TLB entries. The buffer is mapped on a 2 MiB boundary and advised
//! `MADV_HUGEPAGE` before it is first written, so the kernel can back it with huge pages from
//! the first fault when transparent huge pages are in `madvise` or `always` mode; where they
//! are off, it is ordinary memory and everything works the same.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The huge page size the buffer is aligned to.
const HUGE_PAGE: usize = 2 << 20;

/// A fixed-length array of `T` in its own anonymous mapping, aligned to a huge page.
pub(super) struct HugeArray<T: Copy + Default> {
    start: NonNull<T>,
    len: usize,
    /// Bytes mapped from `start` (the length rounded up to whole huge pages).
    mapped: usize,
}

// SAFETY: the array owns its mapping exclusively; sending or sharing it is sending or sharing
// `[T]`.
unsafe impl<T: Copy + Default + Send> Send for HugeArray<T> {}
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Copy + Default + Sync> Sync for HugeArray<T> {}

impl<T: Copy + Default> HugeArray<T> {
    /// `len` default values. Aborts like `Vec` when the memory cannot be mapped.
    pub(super) fn new(len: usize) -> Self {
        let bytes = len
            .checked_mul(size_of::<T>())
            .expect("connection table size overflows usize")
            .max(1);
        let mapped = bytes.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        let layout = std::alloc::Layout::from_size_align(mapped, HUGE_PAGE)
            .expect("connection table layout");
        // Map one huge page more than needed, then cut the mapping down to an aligned run.
        let reserve = mapped + HUGE_PAGE;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing has no
        // preconditions.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(layout);
        }
        let base = base as usize;
        let aligned = base.next_multiple_of(HUGE_PAGE);
        let head = aligned - base;
        let tail = reserve - head - mapped;
        // SAFETY: both ranges lie inside the mapping just made and outside the part kept.
        // A failed trim only leaves unused address space mapped (never touched, no memory).
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((aligned + mapped) as *mut libc::c_void, tail);
            }
            // Advice, not a requirement: EINVAL where huge pages are compiled out.
            libc::madvise(aligned as *mut libc::c_void, mapped, libc::MADV_HUGEPAGE);
        }
        let start = NonNull::new(aligned as *mut T).expect("mmap returned a null mapping");
        for i in 0..len {
            // SAFETY: `i < len` and the mapping holds `len` values of `T`, aligned (a huge
            // page boundary satisfies any alignment `T` has).
            unsafe { start.add(i).write(T::default()) };
        }
        HugeArray { start, len, mapped }
    }
}

impl<T: Copy + Default> Deref for HugeArray<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialised values live at `start` for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl<T: Copy + Default> DerefMut for HugeArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl<T: Copy + Default> Drop for HugeArray<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` and is unmapped once; `T: Copy` has no drop.
        unsafe { libc::munmap(self.start.as_ptr().cast(), self.mapped) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_defaults_aligned_to_a_huge_page_and_keeps_writes() {
        let mut a: HugeArray<u64> = HugeArray::new(300_000);
        assert_eq!(a.len(), 300_000);
        assert_eq!(a.as_ptr() as usize % HUGE_PAGE, 0);
        assert!(a.iter().all(|&x| x == 0));
        a[0] = 7;
        a[299_999] = 9;
        assert_eq!((a[0], a[299_999]), (7, 9));
        let empty: HugeArray<u64> = HugeArray::new(0);
        assert!(empty.is_empty());
    }
}
