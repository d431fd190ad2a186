//! The allocator's configuration, so that memory comes back after a load: when the connections
//! and reads of a burst end, the node's RSS returns to about its size before (docs/operations.md,
//! "Memory"). The allocator is glibc's malloc (Debian's, and a Rust binary's default), set up at
//! start and trimmed from a background thread:
//!
//! - at most two arenas (`M_ARENA_MAX`): each thread that allocates (two runtime workers, one
//!   thread per SQLite connection) would otherwise get arenas of its own, up to eight per core,
//!   each holding freed memory apart;
//! - every few seconds, when the allocator holds much freed memory that it did not hold at the
//!   last trim, `malloc_trim` gives its pages back (free pages inside the heap too, which
//!   glibc otherwise keeps until the top of the heap is free).
//!
//! Not a lower `M_MMAP_THRESHOLD`: mapping every block of 32 KiB and more returned memory
//! as well, but cost each large message several `mmap`/`munmap` pairs and page faults (the
//! noisy neighbour's flood of 60 KB messages lost a quarter of its throughput).
//!
//! Elsewhere than glibc this does nothing.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
use std::time::Duration;

/// How often the trimmer looks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// Freed memory the allocator may hold, or gain since the last trim, before it is trimmed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_FREE: usize = 1024 * 1024;

/// Configures the allocator and starts the trimmer; call once, first thing in `main`.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
        let started = std::thread::Builder::new()
            .name("natter-trim".into())
            .spawn(trim_loop);
        if let Err(e) = started {
            tracing::warn!(error = %e, "the memory trimmer did not start");
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_loop() {
    let mut after_last = 0usize;
    loop {
        std::thread::sleep(TRIM_EVERY);
        // SAFETY: both only read and adjust malloc's own state, under its locks.
        let free = unsafe { libc::mallinfo2() }.fordblks;
        if free > TRIM_FREE && free.abs_diff(after_last) > TRIM_FREE / 2 {
            unsafe { libc::malloc_trim(0) };
            after_last = unsafe { libc::mallinfo2() }.fordblks;
        }
    }
}
