//! Read-modify-write of a small JSON object under optimistic concurrency.
//!
//! A document is created with `PutMode::Create` (create-if-absent) and changed with
//! `PutMode::Update(version)` (ETag match). A write that loses (`Precondition`,
//! `AlreadyExists`, or `NotFound` when the object vanished) re-reads the object, runs
//! the caller's closure again on the fresh copy and retries, at most
//! [`RetryPolicy::max_attempts`] times with jittered exponential backoff. An error
//! returned by the closure stops at once and is passed through.
//!
//! Closures should be idempotent with respect to the document: a conditional PUT whose
//! response was lost may be retried by the client and then reported as a conflict
//! although it was applied; the closure then runs on top of its own earlier result.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload, UpdateVersion};
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Result, TierError};

/// Bounds on conditional-update retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (default 10).
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles per attempt (default 5 ms).
    pub base_delay: Duration,
    /// Upper bound of one backoff (default 200 ms). Each delay is drawn uniformly
    /// from [delay/2, delay].
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(200) }
    }
}

impl RetryPolicy {
    pub(crate) fn delay(&self, failed_attempts: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << failed_attempts.saturating_sub(1).min(16));
        let d = exp.min(self.max_delay);
        let nanos = d.as_nanos() as u64;
        if nanos < 2 {
            return d;
        }
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }
}

/// A JSON document with a generation counter bumped on every successful write.
pub trait VersionedDoc: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync {
    fn generation(&self) -> u64;
    fn set_generation(&mut self, generation: u64);
}

/// Result of a successful [`VersionedObject::update`].
#[derive(Debug, Clone)]
pub struct Updated<D, R> {
    /// What the closure returned on the attempt that won.
    pub value: R,
    /// The document as stored now.
    pub doc: D,
    /// Its object version (ETag); `None` only when the object does not exist and the
    /// closure left the initial document unchanged (nothing was written).
    pub version: Option<UpdateVersion>,
    /// False when the closure changed nothing, so nothing was written.
    pub written: bool,
    /// Conditional writes lost to other writers before this one won.
    pub conflicts: u32,
}

/// One mutable JSON object at `path`.
#[derive(Debug, Clone)]
pub struct VersionedObject {
    store: Arc<dyn ObjectStore>,
    path: Path,
    retry: RetryPolicy,
    conflicts: Arc<AtomicU64>,
}

pub(crate) fn is_conflict(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotFound { .. }
    )
}

impl VersionedObject {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, retry: RetryPolicy) -> Self {
        VersionedObject { store, path, retry, conflicts: Arc::new(AtomicU64::new(0)) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Conditional writes this handle has lost so far (a test and metrics hook).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Reads the document and its version; `None` if absent.
    pub async fn load<D: DeserializeOwned>(&self) -> Result<Option<(D, UpdateVersion)>> {
        let got = match self.store.get(&self.path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(TierError::store("get", &self.path, e)),
        };
        let version = UpdateVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
        let bytes = got.bytes().await.map_err(|e| TierError::store("get", &self.path, e))?;
        let doc = serde_json::from_slice(&bytes)
            .map_err(|e| TierError::Corrupt { path: self.path.to_string(), reason: format!("invalid JSON: {e}") })?;
        Ok(Some((doc, version)))
    }

    /// Creates the object; fails with `Conflict` if it exists.
    pub async fn create<D: VersionedDoc>(&self, mut doc: D) -> Result<UpdateVersion> {
        doc.set_generation(doc.generation().max(1));
        let body = serde_json::to_vec_pretty(&doc).expect("documents serialise");
        match self.store.put_opts(&self.path, PutPayload::from(body), PutMode::Create.into()).await {
            Ok(r) => Ok(r.into()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                Err(TierError::Conflict { path: self.path.to_string(), reason: "already exists".into() })
            }
            Err(e) => Err(TierError::store("put (create)", &self.path, e)),
        }
    }

    /// Writes `doc` as given (the caller sets its generation) if the object is still at
    /// `expected`; `Conflict` if it changed or vanished. No retry: for a lease whose
    /// holder must step down the moment another writer wins.
    pub async fn replace<D: VersionedDoc>(&self, doc: &D, expected: &UpdateVersion) -> Result<UpdateVersion> {
        let body = serde_json::to_vec_pretty(doc).expect("documents serialise");
        match self.store.put_opts(&self.path, PutPayload::from(body), PutMode::Update(expected.clone()).into()).await {
            Ok(r) => Ok(r.into()),
            Err(e) if is_conflict(&e) => {
                self.conflicts.fetch_add(1, Ordering::Relaxed);
                Err(TierError::Conflict { path: self.path.to_string(), reason: format!("changed since read: {e}") })
            }
            Err(e) => Err(TierError::store("put (conditional)", &self.path, e)),
        }
    }

    /// Read-modify-write: `f` runs on the current document (or `init()` when the
    /// object does not exist) and the result is written conditionally. See the module
    /// documentation for the retry rules.
    pub async fn update<D, R, F>(&self, init: impl Fn() -> D, mut f: F) -> Result<Updated<D, R>>
    where
        D: VersionedDoc,
        F: FnMut(&mut D) -> Result<R>,
    {
        let mut conflicts = 0u32;
        for attempt in 1..=self.retry.max_attempts.max(1) {
            let (mut doc, version) = match self.load::<D>().await? {
                Some((d, v)) => (d, Some(v)),
                None => (init(), None),
            };
            let before = doc.clone();
            let value = f(&mut doc)?;
            if doc == before {
                return Ok(Updated { value, doc, version, written: false, conflicts });
            }
            doc.set_generation(before.generation() + 1);
            let body = serde_json::to_vec_pretty(&doc).expect("documents serialise");
            let mode = match &version {
                None => PutMode::Create,
                Some(v) => PutMode::Update(v.clone()),
            };
            match self.store.put_opts(&self.path, PutPayload::from(body), mode.into()).await {
                Ok(r) => {
                    return Ok(Updated { value, doc, version: Some(r.into()), written: true, conflicts });
                }
                Err(e) if is_conflict(&e) => {
                    conflicts += 1;
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(path = %self.path, attempt, "conditional update lost, retrying: {e}");
                    if attempt < self.retry.max_attempts {
                        tokio::time::sleep(self.retry.delay(attempt)).await;
                    }
                }
                Err(e) => return Err(TierError::store("put (conditional)", &self.path, e)),
            }
        }
        Err(TierError::TooManyConflicts { path: self.path.to_string(), attempts: self.retry.max_attempts.max(1) })
    }

    /// Deletes the object (absent is fine). Unconditional.
    pub async fn delete(&self) -> Result<()> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(TierError::store("delete", &self.path, e)),
        }
    }
}
