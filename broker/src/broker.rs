//! The broker: the catalog of streams, the token signer and the metrics, and the
//! dispatch of each Kinesis operation to its handler in `ops`.

use crate::archive::Archive;
use crate::catalog::meta::StreamStatus;
use crate::catalog::{Catalog, Stream};
use crate::config::{BrokerConfig, FlushSetting};
use crate::log::{FlushPolicy, LogConfig, SyncObserver};
use crate::metrics::Metrics;
use crate::throttle::ShardLimits;
use crate::tier::{StoreOptions, TierStore};
use crate::tiered::Tiers;
use crate::tokens::TokenSigner;
use std::io;
use std::path::Path;
use std::sync::Arc;
use streamfabric_api::model::Operation;
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, Format};

pub struct Broker {
    pub config: BrokerConfig,
    pub catalog: Arc<Catalog>,
    pub signer: TokenSigner,
    pub metrics: Arc<Metrics>,
    pub archive: Archive,
    /// Reads from the object store below the local data; local retention.
    pub tiers: Arc<Tiers>,
    /// GetRecords that may read and encode at once: each holds up to 10 MiB of records and
    /// their encoding, so this bounds the broker's memory whatever the number of readers.
    read_slots: tokio::sync::Semaphore,
}

const CONCURRENT_READS: usize = 2;

/// The object store from the configuration; by default a directory beside the data.
fn open_archive(config: &BrokerConfig, metrics: &Arc<Metrics>) -> io::Result<Archive> {
    let url = match &config.object_store {
        Some(url) => url.clone(),
        None => {
            let dir = std::fs::canonicalize(&config.data_dir)?.join("objects");
            format!("file://{}", dir.display())
        }
    };
    let options = StoreOptions {
        endpoint: config.object_store_endpoint.clone(),
        region: config.object_store_region.clone(),
        ..StoreOptions::default()
    };
    let tier = TierStore::open(&url, &options).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(Archive::start(tier, config.segment_compression, metrics.clone()))
}

/// Streams with a description in the data directory.
fn local_streams(streams_dir: &Path) -> io::Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(streams_dir) else { return Ok(Vec::new()) };
    let mut names = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.join("meta.json").exists()
            && let Some(name) = path.file_name().and_then(|n| n.to_str())
        {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

impl Broker {
    /// Open the data directory, recover every stream and finish what a crash interrupted;
    /// streams the object store describes but the data directory lacks (a lost disk) are
    /// rebuilt from it first.
    pub async fn open(config: BrokerConfig) -> io::Result<Arc<Broker>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        let archive = open_archive(&config, &metrics)?;
        let streams_dir = config.data_dir.join("streams");
        let local = local_streams(&streams_dir)?;
        match archive.restore_missing(&streams_dir, &local).await {
            Ok(restored) if !restored.is_empty() => tracing::info!(?restored, "streams rebuilt from the object store"),
            Ok(_) => {}
            // With local data the broker serves it and uploads resume when the store returns.
            Err(e) if !local.is_empty() => tracing::warn!("object store unreachable, starting from local data: {e}"),
            // Without, starting empty could fork streams the bucket holds: refuse, plainly.
            Err(e) => {
                return Err(io::Error::other(format!(
                    "the data directory is empty and the object store cannot be read to restore streams from it: {e}"
                )));
            }
        }
        let log_config = LogConfig {
            segment_max_bytes: config.segment_bytes,
            segment_max_age: config.segment_age,
            flush: match config.flush {
                FlushSetting::Always => FlushPolicy::Always,
                FlushSetting::Interval(d) => FlushPolicy::Interval(d),
                FlushSetting::Never => FlushPolicy::Never,
            },
            sync_observer: Some({
                let fsync = metrics.fsync_seconds.clone();
                SyncObserver(Arc::new(move |took| fsync.observe(took.as_secs_f64())))
            }),
            ..LogConfig::default()
        };
        let limits = ShardLimits {
            enforced: config.enforce_shard_limits,
            write_bytes_per_sec: config.shard_write_bytes_per_sec,
            write_records_per_sec: config.shard_write_records_per_sec,
            read_bytes_per_sec: config.shard_read_bytes_per_sec,
            read_calls_per_sec: config.shard_read_calls_per_sec,
        };
        let catalog = {
            let (archive, metrics) = (Some(archive.clone()), metrics.clone());
            tokio::task::spawn_blocking(move || Catalog::open(streams_dir, log_config, archive, limits, metrics))
                .await
                .map_err(io::Error::other)??
        };
        let catalog = Arc::new(catalog);
        let signer = TokenSigner::load_or_create(&config.data_dir.join("token.key"))?;
        let tiers = Arc::new(Tiers::new(
            archive.tier().clone(),
            config.remote_cache_bytes,
            config.local_retention_bytes,
            metrics.clone(),
        ));
        let broker = Arc::new(Broker {
            tiers,
            config,
            catalog,
            signer,
            metrics,
            archive: archive.clone(),
            read_slots: tokio::sync::Semaphore::new(CONCURRENT_READS),
        });
        for stream in broker.catalog.all() {
            match stream.status() {
                StreamStatus::Deleting => broker.catalog.remove(&stream.name)?,
                StreamStatus::Creating | StreamStatus::Updating => {
                    stream
                        .update_meta(|m| {
                            m.status = StreamStatus::Active;
                            Ok(())
                        })
                        .map_err(|e| io::Error::other(e.message))?;
                }
                StreamStatus::Active => {}
            }
        }
        // Segments sealed before a restart whose upload did not finish.
        for stream in broker.catalog.all() {
            for shard in stream.shards() {
                if let Err(e) = archive.catch_up(&stream.name, &shard.id, shard.log.sealed_segments()).await {
                    tracing::warn!(stream = %stream.name, shard = %shard.id, "listing uploaded segments: {e}");
                }
            }
        }
        broker.enforce_retention(Timestamp::now().millis());
        Ok(broker)
    }

    /// Background duties: retention, local retention. Run until the runtime stops.
    pub fn spawn_background(self: &Arc<Self>) {
        let broker = Arc::downgrade(self);
        let every = self.config.local_retention_check;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(broker) = broker.upgrade() else { return };
                broker.tiers.local_retention_pass(&broker.catalog).await;
            }
        });
        let broker = Arc::downgrade(self);
        let every = self.config.retention_check;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(broker) = broker.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || broker.enforce_retention(Timestamp::now().millis())).await;
            }
        });
    }

    /// Make records older than each stream's retention unreadable and delete their segments.
    pub fn enforce_retention(&self, now_ms: i64) {
        for stream in self.catalog.all() {
            let cutoff = now_ms - stream.meta().retention_hours * 3_600_000;
            for shard in stream.shards() {
                if let Err(e) = shard.log.trim_before(cutoff) {
                    tracing::warn!(stream = %stream.name, shard = %shard.id, "retention: {e}");
                }
                self.archive.trim(&stream.name, &shard.id, cutoff);
            }
        }
        self.tiers.invalidate();
    }

    /// Decode, run and encode one operation.
    pub async fn call(&self, op: Operation, format: Format, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        macro_rules! run {
            ($handler:ident) => {
                format.encode(&self.$handler(format.decode(body)?).await?)
            };
        }
        Ok(match op {
            Operation::CreateStream => run!(create_stream),
            Operation::DeleteStream => run!(delete_stream),
            Operation::ListStreams => run!(list_streams),
            Operation::DescribeStream => run!(describe_stream),
            Operation::DescribeStreamSummary => run!(describe_stream_summary),
            Operation::ListShards => run!(list_shards),
            Operation::PutRecord => run!(put_record),
            Operation::PutRecords => run!(put_records),
            Operation::GetShardIterator => run!(get_shard_iterator),
            // The largest answers (up to 10 MiB of data): encoded into a buffer sized up front.
            Operation::GetRecords => {
                let _permit = self.read_slots.acquire().await.expect("the semaphore is never closed");
                let out = self.get_records(format.decode(body)?).await?;
                format.encode_with_capacity(&out, out.encoded_size_hint())
            }
            Operation::IncreaseStreamRetentionPeriod => run!(increase_retention),
            Operation::DecreaseStreamRetentionPeriod => run!(decrease_retention),
            Operation::AddTagsToStream => run!(add_tags),
            Operation::RemoveTagsFromStream => run!(remove_tags),
            Operation::ListTagsForStream => run!(list_tags),
            Operation::DescribeLimits => run!(describe_limits),
        })
    }

    pub fn arn(&self, name: &str) -> String {
        streamfabric_api::names::stream_arn(&self.config.region, &self.config.account, name)
    }

    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!("Stream {name} under account {} not found.", self.config.account))
    }

    /// The stream named by StreamName or StreamARN (the ARN wins; both must agree).
    pub fn resolve(&self, name: &Option<String>, arn: &Option<String>) -> Result<Arc<Stream>, ApiError> {
        let name = crate::ops::validate::stream_name(name, arn)?;
        self.catalog.get(&name).ok_or_else(|| self.not_found(&name))
    }

    /// Like `resolve`, for reads and writes of records: the stream must be ACTIVE or UPDATING.
    pub fn resolve_serving(&self, name: &Option<String>, arn: &Option<String>) -> Result<Arc<Stream>, ApiError> {
        let stream = self.resolve(name, arn)?;
        let status = stream.status();
        if !status.serves_data() {
            return Err(ApiError::not_found(format!(
                "Stream {} under account {} is {} and does not serve records now.",
                stream.name,
                self.config.account,
                status.as_str()
            )));
        }
        Ok(stream)
    }
}
