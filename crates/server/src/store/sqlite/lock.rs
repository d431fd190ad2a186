//! `natter.lock`: one process per store directory. Only this process writes the files, which is
//! what lets the store keep its counters in memory ([`super::tail`]).

use std::{
    fs::File,
    path::Path,
    time::{Duration, Instant},
};

use crate::store::StoreError;

/// How long `open` waits for another process (or a store being dropped) to let go of the files.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(10);

/// Takes `natter.lock` in `dir`, waiting up to `wait` for another holder to let go.
pub(super) async fn take(dir: &str, wait: Duration) -> Result<File, StoreError> {
    let path = Path::new(dir).join("natter.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Path(dir.to_owned(), e))?;
    let deadline = Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_owned()));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StoreError::Path(dir.to_owned(), e));
            }
        }
    }
}
