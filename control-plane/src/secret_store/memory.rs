//! A [`SecretStore`] in this process's memory, for tests: KV version 2 semantics (numbered
//! versions, reads of old versions, destroy), plus a switch that makes every call fail as
//! an unreachable store does, so handlers' failure paths can be driven in-process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::{JsonMap, SecretStore, SecretStoreError};

#[derive(Default)]
struct Entry {
    /// Version `i + 1` is `versions[i]`; `None` once destroyed.
    versions: Vec<Option<JsonMap>>,
}

/// Holds writes back until released: a test's way to stop a handler in the middle of its
/// write (between the secret store and the database) and drop the request there.
#[derive(Default)]
struct Gate {
    held: AtomicBool,
    /// Signalled when a write reaches the gate.
    arrived: tokio::sync::Notify,
    /// Signalled when the gate opens.
    opened: tokio::sync::Notify,
}

/// Entries by path, in memory.
#[derive(Default)]
pub(crate) struct MemoryStore {
    entries: Mutex<HashMap<String, Entry>>,
    down: AtomicBool,
    gate: Gate,
}

impl MemoryStore {
    pub(crate) fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// While down, every call answers [`SecretStoreError::Unavailable`] and changes nothing.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// From now on every write waits at a gate until [`MemoryStore::open_gate`]; answers
    /// once a write has arrived there.
    #[allow(dead_code)] // used by the handler tests
    pub(crate) async fn hold_writes_until_one_arrives(&self) {
        let arrived = self.gate.arrived.notified();
        self.gate.held.store(true, Ordering::SeqCst);
        arrived.await;
    }

    /// Lets held writes (and every later one) through.
    #[allow(dead_code)] // used by the handler tests
    pub(crate) fn open_gate(&self) {
        self.gate.held.store(false, Ordering::SeqCst);
        self.gate.opened.notify_waiters();
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
        if self.gate.held.load(Ordering::SeqCst) {
            let opened = self.gate.opened.notified();
            tokio::pin!(opened);
            opened.as_mut().enable();
            self.gate.arrived.notify_waiters();
            if self.gate.held.load(Ordering::SeqCst) {
                opened.await;
            }
        }
        self.up()?;
        let mut entries = self.lock();
        let e = entries.entry(path.to_owned()).or_default();
        e.versions.push(Some(value.clone()));
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
        Ok(index.and_then(|i| e.versions.get(i)).cloned().flatten())
    }

    async fn current_version(&self, path: &str) -> Result<Option<u64>, SecretStoreError> {
        self.up()?;
        Ok(self.lock().get(path).and_then(|e| {
            e.versions
                .iter()
                .rposition(Option::is_some)
                .map(|i| i as u64 + 1)
        }))
    }

    async fn destroy_versions(&self, path: &str, versions: &[u64]) -> Result<(), SecretStoreError> {
        self.up()?;
        if let Some(e) = self.lock().get_mut(path) {
            for v in versions {
                let slot = usize::try_from(*v)
                    .ok()
                    .and_then(|v| v.checked_sub(1))
                    .and_then(|i| e.versions.get_mut(i));
                if let Some(slot) = slot {
                    *slot = None;
                }
            }
        }
        Ok(())
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
