//! Opening the object store from a URL, and conditional updates on the local filesystem.
//!
//! * `s3://bucket[/prefix]` — `AmazonS3Builder`: settings from the standard `AWS_*`
//!   environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT`, ...)
//!   overridden by [`StoreOptions`]; path-style requests (MinIO) unless
//!   `virtual_hosted_style`; `allow_http` when the endpoint is `http://`; conditional
//!   put through ETags (`If-None-Match: *` for create, `If-Match` for update).
//! * `file:///abs/dir` — `LocalFileSystem` rooted at the directory (created if
//!   missing), wrapped in [`LocalConditionalStore`] so that `PutMode::Update` works.
//! * `memory://` — a fresh `InMemory` store (tests).

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UpdateVersion,
};

use super::{Result, TierError};

/// Settings of the object store beyond its URL (all optional).
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// S3 endpoint, e.g. `http://minio:9000`. Default: AWS (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    /// Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Default: true when the endpoint is `http://`.
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`); default false (path-style, as
    /// MinIO needs).
    pub virtual_hosted_style: bool,
}

/// Opens the store named by `url` and returns it with the key prefix inside it
/// (the path of an `s3://` URL; empty for `file://` and `memory://`).
pub fn open_store(url: &str, options: &StoreOptions) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let bad = |reason: String| TierError::Config { url: url.to_string(), reason };
    let parsed = url::Url::parse(url).map_err(|e| bad(format!("not a URL: {e}")))?;
    match parsed.scheme() {
        "memory" => Ok((Arc::new(InMemory::new()), Path::default())),
        "file" => {
            if parsed.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
                return Err(bad("a file URL must not name a host: use file:///absolute/dir".into()));
            }
            let dir = parsed
                .to_file_path()
                .map_err(|()| bad("a file URL needs an absolute directory path: file:///absolute/dir".into()))?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| bad(format!("cannot create directory {}: {e}", dir.display())))?;
            if !dir.is_dir() {
                return Err(bad(format!("{} is not a directory", dir.display())));
            }
            let store = LocalConditionalStore::new(&dir).map_err(|e| bad(e.to_string()))?;
            Ok((Arc::new(store), Path::default()))
        }
        "s3" | "s3a" => {
            let bucket = parsed
                .host_str()
                .filter(|b| !b.is_empty())
                .ok_or_else(|| bad("no bucket: use s3://bucket/optional/prefix".into()))?;
            let prefix = parsed.path().trim_matches('/');
            let prefix = Path::parse(prefix).map_err(|e| bad(format!("invalid key prefix {prefix:?}: {e}")))?;
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                // Fail within seconds when the store is down: callers retry on their own
                // schedule (uploads back off and resume), and start-up must not hang.
                .with_retry(object_store::RetryConfig {
                    max_retries: 3,
                    retry_timeout: std::time::Duration::from_secs(10),
                    ..Default::default()
                })
                .with_virtual_hosted_style_request(options.virtual_hosted_style);
            if let Some(endpoint) = &options.endpoint {
                let ep =
                    url::Url::parse(endpoint).map_err(|e| bad(format!("endpoint {endpoint:?} is not a URL: {e}")))?;
                if !matches!(ep.scheme(), "http" | "https") {
                    return Err(bad(format!("endpoint {endpoint:?} must be http:// or https://")));
                }
                b = b.with_endpoint(endpoint.trim_end_matches('/'));
                b = b.with_allow_http(options.allow_http.unwrap_or(ep.scheme() == "http"));
            } else if let Some(allow) = options.allow_http {
                b = b.with_allow_http(allow);
            }
            let region = options
                .region
                .clone()
                .or_else(|| std::env::var("AWS_REGION").ok())
                .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
                .unwrap_or_else(|| "us-east-1".to_string());
            b = b.with_region(region);
            match (&options.access_key_id, &options.secret_access_key) {
                (Some(k), Some(s)) => b = b.with_access_key_id(k).with_secret_access_key(s),
                (None, None) => {}
                _ => return Err(bad("access_key_id and secret_access_key must be given together".into())),
            }
            if let Some(t) = &options.session_token {
                b = b.with_token(t);
            }
            let s3 = b.build().map_err(|e| bad(format!("S3 configuration: {e}")))?;
            Ok((Arc::new(s3), prefix))
        }
        other => Err(bad(format!("unsupported scheme {other:?} (expected s3://, file:// or memory://)"))),
    }
}

/// `LocalFileSystem` with an honest `PutMode::Update`.
///
/// `LocalFileSystem` supports `PutMode::Create` (hard link, atomic) but answers
/// `PutMode::Update` with `NotImplemented`. This wrapper implements it as
/// compare-and-swap on the filesystem ETag (`inode-mtime-size`, as LocalFileSystem
/// reports it):
///
/// 1. take an exclusive `flock` on the object's parent directory (serialises
///    conditional updates of objects in that directory, between tasks of this
///    process and between processes on this machine);
/// 2. HEAD the object; a missing object or a different ETag is `Precondition`;
/// 3. write a staged file beside it with mtime `max(now, previous mtime + 1 µs)`,
///    fsync it and rename it over the object (atomic). The strictly increasing
///    mtime means successive versions of one object never share an ETag, even where
///    coarse kernel timestamps and inode reuse would otherwise repeat one (ABA).
///
/// Scope: processes on one machine sharing a local filesystem with working `flock`
/// (not NFS). Unconditional writes (`Overwrite`), `Create` and deletes do not take the
/// lock; a delete followed by a create may repeat an old ETag. Everything else is
/// passed to `LocalFileSystem` unchanged.
#[derive(Debug)]
pub struct LocalConditionalStore {
    inner: LocalFileSystem,
    root: std::path::PathBuf,
}

impl LocalConditionalStore {
    /// Roots the store at `dir`, which must exist.
    pub fn new(dir: &std::path::Path) -> object_store::Result<Self> {
        Ok(LocalConditionalStore { inner: LocalFileSystem::new_with_prefix(dir)?, root: dir.to_path_buf() })
    }

    fn generic(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> object_store::Error {
        object_store::Error::Generic { store: "LocalConditionalStore", source: e.into() }
    }

    async fn conditional_update(
        &self,
        location: &Path,
        payload: PutPayload,
        expected: UpdateVersion,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let expected = expected.e_tag.ok_or_else(|| Self::generic("ETag required for conditional put"))?;
        let precondition =
            |reason: String| object_store::Error::Precondition { path: location.to_string(), source: reason.into() };
        let fs_path = self.inner.path_to_filesystem(location)?;
        let dir =
            fs_path.parent().map(|p| p.to_path_buf()).ok_or_else(|| Self::generic("object path has no parent"))?;
        // 1. lock the directory (blocking: off the async workers).
        let dir_lock = tokio::task::spawn_blocking(move || -> std::io::Result<Option<File>> {
            match File::open(&dir) {
                Ok(f) => {
                    f.lock()?;
                    Ok(Some(f))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await?
        .map_err(Self::generic)?;
        let Some(dir_lock) = dir_lock else {
            return Err(precondition("object does not exist".into()));
        };
        // 2. compare.
        let current = match self.inner.head(location).await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => return Err(precondition("object does not exist".into())),
            Err(e) => return Err(e),
        };
        if current.e_tag.as_deref() != Some(expected.as_str()) {
            return Err(precondition(format!(
                "ETag mismatch: expected {expected}, found {}",
                current.e_tag.as_deref().unwrap_or("none")
            )));
        }
        // 3. swap: stage beside the object (a `name#<digits>` file, which
        // LocalFileSystem skips when listing), give it a strictly increasing mtime,
        // make it durable, rename it over the object.
        if !opts.attributes.is_empty() {
            return Err(object_store::Error::NotImplemented {
                operation: "`put_opts` with `opts.attributes` specified".into(),
                implementer: self.to_string(),
            });
        }
        let previous: SystemTime = current.last_modified.into();
        let mtime = SystemTime::now().max(previous + Duration::from_micros(1));
        let target = fs_path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let staged = target.with_file_name(format!("{name}#{}", 1_000_000_000u64 + rand::random::<u32>() as u64));
            let result = (|| {
                let mut f = File::options().write(true).create_new(true).open(&staged)?;
                for chunk in payload.iter() {
                    f.write_all(chunk)?;
                }
                f.set_modified(mtime)?;
                f.sync_all()?;
                drop(f);
                std::fs::rename(&staged, &target)
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&staged);
            }
            result
        })
        .await?
        .map_err(Self::generic)?;
        let meta = self.inner.head(location).await?;
        drop(dir_lock);
        Ok(PutResult { e_tag: meta.e_tag, version: meta.version })
    }
}

impl fmt::Display for LocalConditionalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalConditionalStore({})", self.root.display())
    }
}

#[async_trait]
impl ObjectStore for LocalConditionalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if let PutMode::Update(v) = &opts.mode {
            let v = v.clone();
            return self.conditional_update(location, payload, v, opts).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}
