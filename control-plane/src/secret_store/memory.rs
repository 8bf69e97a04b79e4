//! A [`SecretStore`] in this process's memory, for tests: KV version 2 semantics (numbered
//! versions, reads of old versions, destroy), plus a switch that makes every call fail as
//! an unreachable store does, so handlers' failure paths can be driven in-process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{JsonMap, SecretStore, SecretStoreError};

#[derive(Default)]
struct Entry {
    /// Version `i + 1` is `versions[i]`.
    versions: Vec<JsonMap>,
}

/// Entries by path, in memory.
#[derive(Default)]
pub(crate) struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    down: AtomicBool,
}

impl MemoryStore {
    pub(crate) fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// While down, every call answers [`SecretStoreError::Unavailable`] and changes nothing.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// The paths that hold an entry, sorted (what a test checks was left behind).
    #[allow(dead_code)] // used by the handler tests
    pub(crate) fn paths(&self) -> Vec<String> {
        let mut p: Vec<String> = self.lock().keys().cloned().collect();
        p.sort();
        p
    }

    fn up(&self) -> Result<(), SecretStoreError> {
        if self.down.load(Ordering::SeqCst) {
            Err(SecretStoreError::Unavailable("connection failed".into()))
        } else {
            Ok(())
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl SecretStore for MemoryStore {
    async fn write(&self, path: &str, value: &JsonMap) -> Result<u64, SecretStoreError> {
        self.up()?;
        let mut entries = self.lock();
        let e = entries.entry(path.to_owned()).or_default();
        e.versions.push(value.clone());
        Ok(e.versions.len() as u64)
    }

    async fn read(
        &self,
        path: &str,
        version: Option<u64>,
    ) -> Result<Option<JsonMap>, SecretStoreError> {
        self.up()?;
        let entries = self.lock();
        let Some(e) = entries.get(path) else {
            return Ok(None);
        };
        let index = match version {
            Some(v) => usize::try_from(v).ok().and_then(|v| v.checked_sub(1)),
            None => e.versions.len().checked_sub(1),
        };
        Ok(index.and_then(|i| e.versions.get(i)).cloned())
    }

    async fn current_version(&self, path: &str) -> Result<Option<u64>, SecretStoreError> {
        self.up()?;
        Ok(self
            .lock()
            .get(path)
            .map(|e| e.versions.len() as u64)
            .filter(|v| *v > 0))
    }

    async fn destroy(&self, path: &str) -> Result<(), SecretStoreError> {
        self.up()?;
        self.lock().remove(path);
        Ok(())
    }

    async fn check(&self) -> Result<(), SecretStoreError> {
        self.up()
    }
}
