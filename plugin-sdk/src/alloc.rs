//! The allocator [`export_detector!`](crate::export_detector) and
//! [`export_hook!`](crate::export_hook) install in a plugin: a bump arena
//! for what one call (a detector's) or one session (a hook's: the proxy runs
//! one at a time in an instance) allocates, in front of the standard
//! allocator.
//!
//! A detector call allocates a handful of small blocks (the bytes the proxy
//! passes in, the strings of its verdict) and frees every one of them by
//! the end of the call, when the proxy has read the verdict. The standard
//! allocator of `wasm32-wasip2` (dlmalloc) spends 250–400 instructions on
//! each of those mallocs and frees; the arena hands out the next aligned
//! bytes of one 64 KiB block and starts over from its beginning once
//! nothing in it is live. A call then reuses the same few cache lines as the
//! last one, instead of walking the allocator's bins, which matters most to
//! a proxy whose plugin runs cold between connections.
//!
//! Nothing depends on calls behaving that way. A block that stays live (a
//! cache filled during a call) only stops the arena from starting over: it
//! fills up, and everything after that is served by the standard allocator,
//! as without the arena. Blocks too large for what is left of it go there
//! at once, and while [`bypass`] runs (the plugin's `init`, whose state lives
//! as long as the instance) the arena is not used at all.
//!
//! This module is the SDK's only `unsafe` code: a global allocator is an
//! `unsafe` trait, and its state is plain cells because a Wasm plugin
//! instance runs on one thread.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// Bytes of the arena; larger blocks and overflow go to the standard allocator.
pub const ARENA_BYTES: usize = 64 * 1024;

/// The allocator. One instance is installed per plugin by the export macro.
pub struct CallArena {
    /// Start of the arena, taken from [`System`] at the first allocation
    /// (null until then, or if that failed).
    base: Cell<*mut u8>,
    /// Bytes handed out from `base`.
    top: Cell<usize>,
    /// Arena blocks not yet freed; at 0 the arena starts over.
    live: Cell<usize>,
    /// While set, every allocation goes to [`System`].
    bypass: Cell<bool>,
}

// SAFETY: a plugin instance is single-threaded (`wasm32-wasip2` has no
// threads), so the cells are never reached from two threads. Natively (the
// SDK's own tests) the allocator is only used from one thread at a time.
unsafe impl Sync for CallArena {}

impl CallArena {
    pub const fn new() -> Self {
        CallArena { base: Cell::new(ptr::null_mut()), top: Cell::new(0), live: Cell::new(0), bypass: Cell::new(false) }
    }

    /// The arena's start, taken from [`System`] on first use (null if that
    /// failed). A raw pointer rather than an `Option`: returned in a
    /// register, it spares every allocation a frame on the shadow stack.
    #[cold]
    #[inline(never)]
    fn take_base(&self) -> *mut u8 {
        // SAFETY: the layout has a non-zero size.
        let base = unsafe { System.alloc(ARENA_LAYOUT) };
        self.base.set(base);
        base
    }

    fn owns(&self, p: *mut u8) -> bool {
        let base = self.base.get() as usize;
        !self.base.get().is_null() && (p as usize) >= base && (p as usize) < base + ARENA_BYTES
    }

    /// The next `layout` bytes of the arena, if they fit.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        if self.bypass.get() || layout.size() > ARENA_BYTES || layout.align() > ARENA_BYTES {
            return None;
        }
        let mut base = self.base.get();
        if base.is_null() {
            base = self.take_base();
            if base.is_null() {
                return None;
            }
        }
        // Alignments are powers of two. `top` and `mask` are at most 64 KiB
        // here, `start` and `end` below at most twice that.
        let mask = layout.align() - 1;
        let start = ((base as usize).checked_add(self.top.get() + mask)? & !mask) - base as usize;
        let end = start + layout.size();
        if end > ARENA_BYTES {
            return None;
        }
        self.top.set(end);
        self.live.set(self.live.get() + 1);
        // `start` is within the arena (end <= ARENA_BYTES).
        Some(base.wrapping_add(start))
    }
}

impl Default for CallArena {
    fn default() -> Self {
        Self::new()
    }
}

/// The arena's block: 64 KiB aligned to 16, checked when compiling.
const ARENA_LAYOUT: Layout = match Layout::from_size_align(ARENA_BYTES, 16) {
    Ok(layout) => layout,
    Err(_) => panic!("invalid arena layout"),
};

// SAFETY: blocks from the arena never overlap while live (the bump pointer
// only moves back to the start when no arena block is live), are aligned as
// asked, and lie within the arena's own `System` block, which is never
// freed. Other blocks are `System`'s, and go back to it.
unsafe impl GlobalAlloc for CallArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.bump(layout) {
            Some(p) => p,
            // SAFETY: the caller's layout, passed on.
            None => unsafe { system_alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if self.owns(p) {
            let live = self.live.get().saturating_sub(1);
            self.live.set(live);
            if live == 0 {
                self.top.set(0);
            }
        } else {
            // SAFETY: not the arena's, so `System` allocated it with `layout`.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.owns(p) {
            let base = self.base.get() as usize;
            let start = p as usize - base;
            // The last block handed out grows or shrinks in place.
            if start + layout.size() == self.top.get()
                && let Some(end) = start.checked_add(new_size).filter(|&end| end <= ARENA_BYTES)
            {
                self.top.set(end);
                return p;
            }
            if new_size <= layout.size() {
                return p;
            }
            // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: a valid non-zero layout (new_size > old size).
            let q = unsafe { self.alloc(new_layout) };
            if !q.is_null() {
                // SAFETY: both blocks are at least `layout.size()` long and do not overlap.
                unsafe {
                    ptr::copy_nonoverlapping(p, q, layout.size());
                    self.dealloc(p, layout);
                }
            }
            q
        } else {
            // SAFETY: a `System` block with its layout, passed on.
            unsafe { System.realloc(p, layout, new_size) }
        }
    }
}

/// [`System`]'s allocation, out of line: inlined, its aligned path's
/// out-parameter gave every arena allocation a shadow-stack frame.
///
/// # Safety
/// As [`GlobalAlloc::alloc`].
#[cold]
#[inline(never)]
unsafe fn system_alloc(layout: Layout) -> *mut u8 {
    // SAFETY: the caller's layout, passed on.
    unsafe { System.alloc(layout) }
}

/// Run `f` with every allocation going to the standard allocator: for what
/// outlives a call, such as the detector built by `init`.
pub fn bypass<R>(arena: &CallArena, f: impl FnOnce() -> R) -> R {
    let before = arena.bypass.replace(true);
    let r = f();
    arena.bypass.set(before);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused_once_all_are_freed() {
        let a = CallArena::new();
        unsafe {
            let p = a.alloc(layout(3, 1));
            let q = a.alloc(layout(8, 8));
            let r = a.alloc(layout(32, 16));
            assert!(a.owns(p) && a.owns(q) && a.owns(r));
            assert_eq!(q as usize % 8, 0);
            assert_eq!(r as usize % 16, 0);
            assert!(p as usize + 3 <= q as usize && q as usize + 8 <= r as usize);
            p.write_bytes(1, 3);
            q.write_bytes(2, 8);
            r.write_bytes(3, 32);
            assert_eq!(*p.add(2), 1);
            assert_eq!(*q.add(7), 2);
            a.dealloc(q, layout(8, 8));
            // Still live blocks: no start over.
            assert_ne!(a.alloc(layout(3, 1)), p);
            a.dealloc(p, layout(3, 1));
            a.dealloc(r, layout(32, 16));
            assert_eq!(a.live.get(), 1);
        }
    }

    #[test]
    fn the_arena_starts_over_when_nothing_is_live() {
        let a = CallArena::new();
        unsafe {
            let p = a.alloc(layout(100, 4));
            a.dealloc(p, layout(100, 4));
            let q = a.alloc(layout(100, 4));
            assert_eq!(p, q, "the next call's block is the last call's");
            a.dealloc(q, layout(100, 4));
            assert_eq!(a.top.get(), 0);
        }
    }

    #[test]
    fn large_blocks_overflow_and_bypass_go_to_the_system_allocator() {
        let a = CallArena::new();
        unsafe {
            let big = a.alloc(layout(ARENA_BYTES + 1, 8));
            assert!(!big.is_null() && !a.owns(big));
            big.add(ARENA_BYTES).write(7);
            a.dealloc(big, layout(ARENA_BYTES + 1, 8));
            let most = a.alloc(layout(ARENA_BYTES - 16, 8));
            assert!(a.owns(most));
            let over = a.alloc(layout(64, 8));
            assert!(!over.is_null() && !a.owns(over), "what does not fit goes to the system");
            a.dealloc(over, layout(64, 8));
            a.dealloc(most, layout(ARENA_BYTES - 16, 8));
            let kept = bypass(&a, || a.alloc(layout(16, 8)));
            assert!(!a.owns(kept));
            assert!(!a.bypass.get());
            a.dealloc(kept, layout(16, 8));
        }
    }

    #[test]
    fn realloc_grows_in_place_at_the_top_and_copies_elsewhere() {
        let a = CallArena::new();
        unsafe {
            let p = a.alloc(layout(4, 1));
            p.copy_from_nonoverlapping(b"abcd".as_ptr(), 4);
            let p2 = a.realloc(p, layout(4, 1), 64);
            assert_eq!(p, p2, "the top block grows in place");
            let q = a.alloc(layout(8, 1));
            let p3 = a.realloc(p2, layout(64, 1), 128);
            assert_ne!(p3, p2, "a block below the top moves");
            assert_eq!(std::slice::from_raw_parts(p3, 4), b"abcd");
            // Growing past the arena moves the block to the system
            // allocator, where it stays.
            let p4 = a.realloc(p3, layout(128, 1), ARENA_BYTES * 2);
            assert!(!a.owns(p4));
            assert_eq!(std::slice::from_raw_parts(p4, 4), b"abcd");
            let p5 = a.realloc(p4, layout(ARENA_BYTES * 2, 1), 16);
            assert!(!a.owns(p5));
            assert_eq!(std::slice::from_raw_parts(p5, 4), b"abcd");
            a.dealloc(p5, layout(16, 1));
            a.dealloc(q, layout(8, 1));
            assert_eq!((a.live.get(), a.top.get()), (0, 0));
        }
    }
}
