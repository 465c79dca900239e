//! Stream descriptions: `<prefix>/streams/<stream>/meta.json`, holding
//! `{"version": <generation>, "meta": <the broker's stream description>}`. The
//! description is opaque here (`serde_json::Value`); convert with
//! `serde_json::to_value` / `from_value`. Same conditional-update discipline as the
//! manifests.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::versioned::{RetryPolicy, Updated, VersionedDoc, VersionedObject};
use super::{Result, TierError, TierStore, UpdateVersion, join, layout};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMetaDoc {
    /// Generation, bumped on every write (1 after creation).
    pub version: u64,
    pub meta: Value,
}

impl VersionedDoc for StreamMetaDoc {
    fn generation(&self) -> u64 {
        self.version
    }
    fn set_generation(&mut self, generation: u64) {
        self.version = generation;
    }
}

#[derive(Debug, Clone)]
pub struct StreamMetaStore {
    obj: VersionedObject,
    stream: String,
}

impl StreamMetaStore {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &Path, stream: &str, retry: RetryPolicy) -> Result<Self> {
        layout::check_name("stream", stream)?;
        let path = join(prefix, &layout::stream_meta_key(stream));
        Ok(StreamMetaStore { obj: VersionedObject::new(store, path, retry), stream: stream.to_string() })
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    pub fn path(&self) -> &Path {
        self.obj.path()
    }

    /// Conditional writes this handle has lost so far.
    pub fn conflicts(&self) -> u64 {
        self.obj.conflicts()
    }

    pub async fn load(&self) -> Result<Option<(StreamMetaDoc, UpdateVersion)>> {
        self.obj.load().await
    }

    /// Creates `meta.json` (version 1); `Conflict` if the stream already has one.
    pub async fn create(&self, meta: Value) -> Result<UpdateVersion> {
        self.obj.create(StreamMetaDoc { version: 1, meta }).await
    }

    /// Read-modify-write of the description. On a stream without `meta.json` the
    /// closure sees `Value::Null`; leaving it `Null` writes nothing, anything else
    /// creates the object. Errors from `f` are returned without retry.
    pub async fn update<R>(&self, mut f: impl FnMut(&mut Value) -> Result<R>) -> Result<Updated<StreamMetaDoc, R>> {
        self.obj
            .update(|| StreamMetaDoc { version: 0, meta: Value::Null }, |d: &mut StreamMetaDoc| f(&mut d.meta))
            .await
    }

    /// Like [`StreamMetaStore::update`] but refuses (`Conflict`) when the stream has no
    /// `meta.json`.
    pub async fn update_existing<R>(
        &self,
        mut f: impl FnMut(&mut Value) -> Result<R>,
    ) -> Result<Updated<StreamMetaDoc, R>> {
        let path = self.obj.path().to_string();
        self.update(|v| {
            if v.is_null() {
                return Err(TierError::Conflict { path: path.clone(), reason: "stream does not exist".into() });
            }
            f(v)
        })
        .await
    }

    /// Deletes `meta.json` (absent is fine). Shards' manifests and segments are not
    /// touched.
    pub async fn delete(&self) -> Result<()> {
        self.obj.delete().await
    }
}

impl TierStore {
    /// Names of the streams that have any object under `<prefix>/streams/`, sorted.
    pub async fn list_streams(&self) -> Result<Vec<String>> {
        let dir = self.path(layout::streams_dir());
        let listing = match self.store().list_with_delimiter(Some(&dir)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(TierError::store("list", &dir, e)),
        };
        let mut names: Vec<String> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Delete every object of one stream (manifests, segments, then its `meta.json`, so
    /// that a stream is described until its data is gone); returns how many were deleted.
    /// Objects already gone are fine: deletion may be repeated after a crash.
    pub async fn delete_stream_objects(&self, stream: &str) -> Result<usize> {
        layout::check_name("stream", stream)?;
        let dir = self.path(&layout::stream_dir(stream));
        let meta = self.path(&layout::stream_meta_key(stream));
        let listed: Vec<Path> = match self.store().list(Some(&dir)).map_ok(|o| o.location).try_collect().await {
            Ok(paths) => paths,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(TierError::store("list", &dir, e)),
        };
        let (described, data): (Vec<Path>, Vec<Path>) = listed.into_iter().partition(|p| *p == meta);
        let mut deleted = 0;
        for batch in [data, described] {
            let mut results = self.store().delete_stream(futures::stream::iter(batch.into_iter().map(Ok)).boxed());
            while let Some(result) = results.next().await {
                match result {
                    Ok(_) => deleted += 1,
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(TierError::store("delete", &dir, e)),
                }
            }
        }
        Ok(deleted)
    }
}
