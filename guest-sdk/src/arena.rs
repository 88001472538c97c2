//! The guest's allocator: a bump arena in the module's zero-initialised data,
//! then the standard allocator once the arena is full.
//!
//! Why: the host makes a fresh instance for every batch, and what the host
//! hands over (the batch's buffer, the event list) is written through this
//! allocator. With the standard one, the heap starts at the end of the
//! module's initial memory, so every call grew the memory (`memory.grow`),
//! and every next instance shrank it back: two `mprotect`s and a TLB flush
//! per batch. The arena lies inside the initial memory (it is `.bss`: no
//! bytes in the module, no copy at instantiation), so a batch that fits it
//! never grows the memory, and bumping a pointer is cheaper than a free list.
//!
//! Nothing is given back to the arena but the latest allocation (and a
//! latest allocation grows in place): an instance lives for one batch, so
//! the whole arena goes when it ends. Past the arena, allocations go to
//! the standard allocator, which reuses freed memory as usual, so a filter
//! that churns through memory wastes at most the arena's size.
//!
//! Turn it off (`default-features = false`) to bring your own
//! `#[global_allocator]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Bytes of the arena: a 50-event batch of 400-byte events needs ~30 KiB,
/// 500 of them ~250 KiB. Not more: after every call the host scans the
/// whole initial memory for the pages the call wrote, so each unused MiB
/// here costs every call (criterion, with a 128 KiB stack, against 1 MiB
/// and Rust's default 1 MiB stack: pass-through of 1 event 6.65 → 5.87 µs,
/// of 50 10.3 → 9.76 µs, of 500 unchanged).
const SIZE: usize = 512 << 10;

/// `next` comes first: it is the one word `init` always leaves non-zero, so
/// the snapshot's memory image ends where `init`'s allocations end instead
/// of stretching over the whole arena (criterion, pass-through of 50
/// events: −2%).
#[repr(C, align(16))]
struct Arena {
    /// Offset of the first free byte.
    next: UnsafeCell<usize>,
    bytes: UnsafeCell<[u8; SIZE]>,
}

// SAFETY: a wasm32 guest without the threads proposal has one thread.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    next: UnsafeCell::new(0),
    bytes: UnsafeCell::new([0; SIZE]),
};

/// Arena first, then [`System`].
pub struct ArenaFirst;

impl ArenaFirst {
    fn base() -> usize {
        ARENA.bytes.get() as usize
    }

    fn contains(ptr: *mut u8) -> bool {
        (Self::base()..Self::base() + SIZE).contains(&(ptr as usize))
    }

    /// Whether `ptr` with `size` bytes is the arena's latest allocation.
    ///
    /// # Safety
    /// Single-threaded use only (see `Sync` above).
    unsafe fn is_latest(ptr: *mut u8, size: usize) -> bool {
        ptr as usize + size == Self::base() + *ARENA.next.get()
    }
}

unsafe impl GlobalAlloc for ArenaFirst {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::base();
        let next = *ARENA.next.get();
        // `align` is a power of two: round the address up to it.
        let start = (base + next + layout.align() - 1) & !(layout.align() - 1);
        let end = start - base + layout.size();
        if end <= SIZE {
            *ARENA.next.get() = end;
            return start as *mut u8;
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::contains(ptr) {
            return System.dealloc(ptr, layout);
        }
        if Self::is_latest(ptr, layout.size()) {
            *ARENA.next.get() = ptr as usize - Self::base();
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::contains(ptr) && Self::is_latest(ptr, layout.size()) {
            let end = ptr as usize - Self::base() + new_size;
            if end <= SIZE {
                *ARENA.next.get() = end;
                return ptr;
            }
        }
        if !Self::contains(ptr) {
            return System.realloc(ptr, layout, new_size);
        }
        // SAFETY (of the layout): `new_size` with the old alignment is valid
        // per `GlobalAlloc::realloc`'s contract.
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: ArenaFirst = ArenaFirst;
