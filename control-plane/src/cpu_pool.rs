//! The bounded pool CPU-heavy request work runs on: opening uploaded key stores (their key
//! derivations), the P12 tester.
//!
//! why: that work takes up to a second of a core per request. Run inline it blocks an async
//! worker thread, and the API, ADS and the snapshot feed share those threads; run on
//! `spawn_blocking` alone it is unbounded (Tokio's blocking pool grows to 512 threads). Here
//! at most `slots` jobs run at once; a request that finds them all busy waits a little, then
//! is answered 503 with `Retry-After` instead of queueing without end.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// A bounded set of blocking threads. Cheap to clone; clones share the slots.
#[derive(Clone, Debug)]
pub struct CpuPool {
    slots: Arc<Semaphore>,
    /// How long a job waits for a free slot before [`PoolError::Busy`].
    wait: Duration,
}

/// Why a job did not run to its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("every slot stayed busy")]
    Busy,
    #[error("the job panicked")]
    Panicked,
}

impl CpuPool {
    /// `slots` jobs at once (at least one).
    pub fn new(slots: usize, wait: Duration) -> Self {
        CpuPool {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            wait,
        }
    }

    /// One slot per core the process may use: the work is CPU-bound.
    pub fn per_core(wait: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::new(cores, wait)
    }

    /// Runs `job` on a blocking thread once a slot is free. The slot is held by the thread
    /// until the job ends, even if the caller stops waiting (a dropped request): the bound
    /// is on CPU actually in use.
    pub async fn run<T, F>(&self, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy)?
            .map_err(|_| PoolError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _slot = permit;
            job()
        })
        .await
        .map_err(|_| PoolError::Panicked)
    }

    /// Takes every free slot (tests saturate the pool with it); the slots come back when
    /// the permit is dropped.
    #[cfg(test)]
    pub fn hold_all(&self) -> impl std::future::Future<Output = tokio::sync::OwnedSemaphorePermit> {
        let slots = self.slots.clone();
        async move {
            let n = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
            slots.acquire_many_owned(n).await.unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_slots_jobs_run_at_once_and_a_full_pool_answers_busy() {
        let pool = CpuPool::new(2, Duration::from_millis(50));
        let held = pool.hold_all().await;
        assert_eq!(pool.run(|| 1).await, Err(PoolError::Busy));
        drop(held);
        assert_eq!(pool.run(|| 2).await, Ok(2));
        assert_eq!(
            pool.run(|| -> u8 { panic!("boom") }).await,
            Err(PoolError::Panicked)
        );
        // The slot of a panicked job is given back.
        assert_eq!(pool.slots.available_permits(), 2);
    }
}
