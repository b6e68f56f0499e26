//! Keeping the resident set small. A pool of bridge processes sits idle most of the time, so
//! what each one keeps resident between requests is what counts.
//!
//! The big consumer is argon2id: verifying a hash made with the defaults allocates 19 MiB
//! (the hash's own memory cost, chosen by whoever made it). glibc's malloc would keep that:
//! its mmap threshold grows to the size of the last large block freed, so from the second
//! hash on the 19 MiB comes from, and stays in, a heap arena, one per thread that hashed.
//! A fixed threshold makes every large block an `mmap` returned to the kernel on `free`, and
//! few arenas stop worker threads from each holding their own.

/// Concurrent CPU-bound work (password hashing) gains nothing beyond the cores there are,
/// and each argon2 verification holds its memory cost while it runs.
pub fn hashing_parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Most threads in the runtime's blocking pool (hashing, file access). Above the hashing
/// limit so that a file operation is not queued behind hashes.
pub fn max_blocking_threads() -> usize {
    hashing_parallelism() * 2 + 2
}

/// Tunes the allocator once, at start-up, before any thread exists.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called before other threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
