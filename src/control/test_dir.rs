//! A scratch directory for the control plane's unit tests, removed when dropped.

use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// A directory under the system's temporary directory, unique per process, test name and call
/// (tests of one binary run in parallel), removed with its contents when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// A fresh, absent directory `doxm-<prefix>-<pid>-<name>-<n>`.
    pub(crate) fn new(prefix: &str, name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("doxm-{prefix}-{}-{name}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
