//! Shared by the fuzz targets: an allocator that turns any single allocation larger than
//! [`MAX_ALLOCATION`] into a crash, so a decoder that trusts a length field and reserves room for
//! it is found even without a sanitizer (`--sanitizer none` has no `-malloc_limit_mb`).

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a decoder may make for any input: the request payload cap
/// (4 MiB) with room to spare, far below the 1 GiB a body length can claim.
pub const MAX_ALLOCATION: usize = 64 << 20;

/// The system allocator, aborting on an allocation above [`MAX_ALLOCATION`].
pub struct CappedAlloc;

fn check(size: usize) {
    if size > MAX_ALLOCATION {
        // No allocation may happen here (we are inside the allocator): print with a fixed
        // message and abort, which libFuzzer reports as a crash with the input.
        let msg = b"quarry-fuzz: allocation above MAX_ALLOCATION\n";
        std::io::Write::write_all(&mut std::io::stderr(), msg).ok();
        std::process::abort();
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the only addition is a size check that aborts before allocating.
unsafe impl GlobalAlloc for CappedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}
