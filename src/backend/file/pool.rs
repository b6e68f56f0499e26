//! The blocking pool's limits: at most `memory::hashing_parallelism()` hashes at a time in
//! the process (`blocking`), and the permit-before-thread rule every blocking call of this
//! backend follows (`limited`), so that what waits for a permit is a future the deadline
//! can drop, not a pool thread.
//!
//! It must not know what the work is: the file-access permit (one per backend) belongs to
//! the `FileBackend` that owns it, and only hashing goes through `blocking`.

use std::sync::{Arc, OnceLock};

use crate::backend::BackendError;

/// Runs CPU-bound work (hashing) on the blocking pool, under the process-wide limit.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    // At most one hash per core at a time: more gains nothing, and each argon2 run holds
    // its memory cost (19 MiB with the defaults) while it lasts, so a piped file of
    // requests must not start dozens at once. Only hashing counts here: file access,
    // which may block for good, has its own limit per backend (`file_io`), so a hung
    // file can neither take these permits nor be queued behind them.
    static HASHING: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    let permits = HASHING.get_or_init(|| {
        Arc::new(tokio::sync::Semaphore::new(
            crate::memory::hashing_parallelism(),
        ))
    });
    limited(permits, f).await
}

/// Runs `f` on the blocking pool once a permit of `permits` is free. The permit is
/// taken before the thread (so what waits is a future, which the deadline drops, not a
/// pool thread) and moves into the worker: a request whose deadline expired stops
/// waiting, but its work still counts until it really ends.
pub(super) async fn limited<T: Send + 'static>(
    permits: &Arc<tokio::sync::Semaphore>,
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|e| BackendError::Internal(format!("worker limit: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let result = f();
        drop(permit);
        result
    })
    .await
    .map_err(|e| BackendError::Internal(format!("worker failed: {e}")))?
}
