//! Keeping the resident set small. A pool of bridge processes sits idle most of the time, so
//! what each one keeps resident between requests is what counts.
//!
//! The big consumer is argon2id: verifying a hash made with the defaults allocates 19 MiB
//! (the hash's own memory cost, chosen by whoever made it) for as long as it runs. The
//! allocator returns it afterwards (`daemon::limit_allocator_retention`); what is bounded here is
//! how many run at once, and how many threads the blocking pool may hold.

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
