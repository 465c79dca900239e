//! The broker: the catalog of streams, the token signer and the metrics, and the
//! dispatch of each Kinesis operation to its handler in `ops`.

use crate::archive::Archive;
use crate::catalog::meta::StreamStatus;
use crate::catalog::{Catalog, Stream};
use crate::config::{BrokerConfig, Durability, FlushSetting};
use crate::http::Answer;
use crate::leases::Leases;
use crate::log::{FlushPolicy, LogConfig, SyncObserver};
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::throttle::ShardLimits;
use crate::tier::{StoreOptions, TierError, TierStore};
use crate::tiered::Tiers;
use crate::tokens::TokenSigner;
use crate::write_ahead::{BatchSettings, WalBatcher};
use bytes::Bytes;
use futures::StreamExt;
use std::io;
use std::path::Path;
use std::sync::Arc;
use streamfabric_api::model::{Empty, Operation};
use streamfabric_api::records_answer::RecordsAnswer;
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, Format};

pub struct Broker {
    pub config: BrokerConfig,
    pub catalog: Arc<Catalog>,
    pub signer: TokenSigner,
    /// SigV4 checks (with `--credentials`).
    pub auth: Arc<crate::auth::Auth>,
    pub access: Arc<crate::access::Access>,
    pub metrics: Arc<Metrics>,
    pub archive: Archive,
    /// Consumer leases and checkpoints (in the object store).
    pub leases: Leases,
    /// Durability `object`: writes wait for a write-ahead object holding their records.
    pub wal: WalBatcher,
    /// Reads from the object store below the local data; local retention.
    pub tiers: Arc<Tiers>,
    /// With `--advertise`: this broker's part in the cluster of its object-store prefix.
    pub fabric: Option<crate::fabric::Fabric>,
    /// DeleteStream's second half: the stream's objects, then the stream itself.
    pub deletions: Arc<crate::deletion::Deletions>,
    /// GetRecords that may read at once: each holds up to 10 MiB of records, so this bounds
    /// the memory of reads in progress whatever the number of readers. (Their answers are
    /// encoded piece by piece as they are sent, freeing the records as they go.)
    pub(crate) read_slots: tokio::sync::Semaphore,
    /// SubscribeToShard streams served here.
    pub subscriptions: crate::fanout::Subscriptions,
    /// The DynamoDB-compatible tables (the KCL's leases), in the object store.
    pub tables: crate::dynamo::Tables,
}

const CONCURRENT_READS: usize = 2;

/// Object-store requests in flight at start (shard claims, upload catch-up): a broker with
/// many shards starts in seconds, not one round trip per shard after another.
const STARTUP_REQUESTS: usize = 32;

/// What a pass of `Broker::clean_write_ahead` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanReport {
    pub deleted: usize,
    /// Objects still holding records not in uploaded segments.
    pub kept: usize,
}

/// How often write-ahead objects whose records are all in uploaded segments are deleted.
const WAL_CLEAN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The object store from the configuration; by default a directory beside the data.
pub fn open_tier(config: &BrokerConfig) -> io::Result<TierStore> {
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
    TierStore::open(&url, &options).map_err(|e| io::Error::other(e.to_string()))
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

/// The token signer with the cluster's key (`tier::cluster_key`: one per store prefix, so an
/// iterator from any broker of the prefix verifies here), cached in the data directory: a
/// broker that starts while the store is unreachable signs with the key it had.
async fn cluster_signer(data_dir: &Path, tier: &TierStore) -> io::Result<TokenSigner> {
    let cached = data_dir.join("token.key");
    let local = TokenSigner::read_key(&cached);
    // A broker that had a key offers it: iterators it issued before the upgrade stay valid.
    match tier.cluster_token_key(local.unwrap_or_else(rand::random)).await {
        Ok(key) => {
            if local != Some(key) {
                TokenSigner::write_key(&cached, &key)?;
            }
            Ok(TokenSigner::new(key))
        }
        Err(e) => {
            tracing::warn!("the cluster's token key cannot be read from the object store, using the local one: {e}");
            let key = local.unwrap_or_else(rand::random);
            TokenSigner::write_key(&cached, &key)?;
            Ok(TokenSigner::new(key))
        }
    }
}

/// The token signer with the key of `--cluster-key-file`; tokens signed with the object
/// store's key (before the cluster had a key file) still verify.
async fn signer_of_key_file(file: &Path, tier: &TierStore) -> io::Result<TokenSigner> {
    let key = TokenSigner::read_key_file(file)
        .map_err(|e| io::Error::other(format!("--cluster-key-file {}: {e}", file.display())))?;
    let previous = tier.stored_token_key().await.unwrap_or_else(|e| {
        tracing::warn!("the object store's token key cannot be read; tokens it signed will not verify here: {e}");
        None
    });
    tracing::info!(file = %file.display(), "signing shard iterators and paging tokens with the cluster key file");
    Ok(TokenSigner::with_previous(key, previous))
}

impl Broker {
    /// Open the data directory, recover every stream and finish what a crash interrupted;
    /// streams the object store describes but the data directory lacks (a lost disk) are
    /// rebuilt from it first.
    pub async fn open(config: BrokerConfig) -> io::Result<Arc<Broker>> {
        std::fs::create_dir_all(&config.data_dir)?;
        let tier = open_tier(&config)?;
        Broker::open_with_tier(config, tier).await
    }

    /// `open` on a given object store (tests wrap one to make it fail on demand).
    pub async fn open_with_tier(config: BrokerConfig, tier: TierStore) -> io::Result<Arc<Broker>> {
        if config.durability == Durability::Object && config.flush != FlushSetting::Always {
            // Acknowledged records could vanish from a disk that survives a machine crash and
            // their numbers be given out again: the log must hold everything acknowledged.
            return Err(io::Error::other("--durability object needs --flush always"));
        }
        std::fs::create_dir_all(&config.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        let wal = WalBatcher::start(
            tier.clone(),
            BatchSettings {
                linger: config.object_batch_linger,
                max_bytes: config.object_batch_bytes,
                inflight: config.object_batch_inflight,
                put_timeout: config.object_put_timeout,
            },
            metrics.clone(),
        );
        let id = crate::ownership::broker_id(config.broker_id.as_deref(), &config.data_dir)?;
        // In a cluster the streams are the bucket's (adopted by `fabric::sync`) and shards are
        // taken by the handoff, not at start.
        // Peers share streams only through a shared store, not the default one inside the data directory.
        let clustered = config.advertise.is_some() && config.object_store.is_some();
        if config.advertise.is_some() && !clustered {
            tracing::warn!(
                "--advertise without --object-store: the store is a directory inside this broker's data directory, \
                 so no other broker can share its streams; serving alone"
            );
        }
        let ownership = Arc::new(Ownership::new(id.clone(), !clustered));
        let archive = Archive::start(tier, config.segment_compression, ownership, metrics.clone());
        let streams_dir = config.data_dir.join("streams");
        let local = local_streams(&streams_dir)?;
        let restored = if clustered { Ok(Vec::new()) } else { archive.restore_missing(&streams_dir, &local).await };
        match restored {
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
            let (archive, metrics) = (archive.clone(), metrics.clone());
            tokio::task::spawn_blocking(move || {
                Catalog::open(streams_dir, log_config, archive, limits, metrics, !clustered)
            })
            .await
            .map_err(io::Error::other)??
        };
        let catalog = Arc::new(catalog);
        let signer = match &config.cluster_key_file {
            Some(file) => signer_of_key_file(file, archive.tier()).await?,
            None => cluster_signer(&config.data_dir, archive.tier()).await?,
        };
        let tiers = Arc::new(Tiers::new(
            archive.tier().clone(),
            config.remote_cache_bytes,
            config.local_retention_bytes,
            metrics.clone(),
        ));
        let auth = Arc::new(crate::auth::Auth::new(config.credentials.as_deref(), &config.region, &metrics.registry)?);
        let access = Arc::new(crate::access::Access::new(config.access_policy.as_deref(), &metrics.registry)?);
        let proof = auth.required().then(|| crate::auth::PeerProof::new(signer.clone()));
        let fabric = match &config.advertise {
            Some(advertise) if clustered => {
                let settings = crate::cluster::ClusterSettings {
                    heartbeat_interval: config.heartbeat_interval,
                    suspect_after: (config.heartbeat_interval * 3).min(config.member_timeout),
                    member_timeout: config.member_timeout,
                };
                Some(crate::fabric::Fabric::join(archive.tier(), &id, advertise, settings, &catalog, proof).await?)
            }
            _ => None,
        };
        let subscriptions = crate::fanout::Subscriptions::new(&metrics.registry, config.subscription_lifetime);
        let broker = Arc::new(Broker {
            fabric,
            tiers,
            config,
            deletions: crate::deletion::Deletions::new(catalog.clone(), archive.clone()),
            catalog,
            signer,
            metrics,
            archive: archive.clone(),
            leases: Leases::new(archive.tier().clone()),
            wal,
            read_slots: tokio::sync::Semaphore::new(CONCURRENT_READS),
            subscriptions,
            tables: crate::dynamo::Tables::new(archive.tier()),
            auth,
            access,
        });
        broker.auth.watch();
        broker.access.watch();
        if clustered {
            // Shards are taken by the handoff, not here.
            crate::fabric::sync::initial(&broker).await;
            broker.enforce_retention(Timestamp::now().millis());
            return Ok(broker);
        }
        for stream in broker.catalog.all() {
            match stream.status() {
                // Deleted before the restart: finished now, before its shards are claimed.
                StreamStatus::Deleting => broker.deletions.delete(&stream.name, stream.incarnation).await,
                // A reshard accepted before the restart: apply it now (nothing is appending yet).
                StreamStatus::Updating if !stream.meta().pending_reshard.is_empty() => {
                    if let Err(e) = broker.catalog.apply_pending_reshard(&stream, Timestamp::now().millis()) {
                        tracing::error!(stream = %stream.name, "pending reshard dropped: {}", e.message);
                    }
                }
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
        broker.settle_consumers();
        // Take the shards in the object store: a broker that served them before (this one
        // on another disk, or another one) is fenced from now on. Losing a race for a shard to
        // a broker starting at the same moment means two brokers were given the same streams
        // and prefix: refuse to start. With the store down, shards are claimed on first upload.
        let shards: Vec<(String, Arc<crate::shard::Shard>)> = broker
            .catalog
            .all()
            .into_iter()
            .filter(|stream| stream.status() != StreamStatus::Deleting)
            .flat_map(|stream| stream.shards().into_iter().map(move |shard| (stream.name.clone(), shard)))
            .collect();
        let archive = &archive;
        let claims = futures::stream::iter(
            shards.iter().map(|(stream, shard)| async move { (stream, shard, archive.claim(&shard.bucket).await) }),
        );
        for (stream, shard, claimed) in claims.buffer_unordered(STARTUP_REQUESTS).collect::<Vec<_>>().await {
            match claimed {
                Ok(_) => {}
                Err(TierError::Conflict { reason, .. }) => {
                    return Err(io::Error::other(format!(
                        "shard {} of stream {stream} in the object store: {reason}; is another broker using the same bucket and prefix?",
                        shard.id
                    )));
                }
                Err(e) => tracing::warn!(%stream, shard = %shard.id, "claiming the shard: {e}"),
            }
        }
        // Segments sealed before a restart whose upload did not finish.
        let catch_ups = futures::stream::iter(shards.iter().map(|(stream, shard)| async move {
            (stream, shard, archive.catch_up(&shard.bucket, shard.log.sealed_segments()).await)
        }));
        for (stream, shard, queued) in catch_ups.buffer_unordered(STARTUP_REQUESTS).collect::<Vec<_>>().await {
            if let Err(e) = queued {
                tracing::warn!(%stream, shard = %shard.id, "listing uploaded segments: {e}");
            }
        }
        broker.enforce_retention(Timestamp::now().millis());
        Ok(broker)
    }

    /// Background duties: retention, local retention, the orphan sweep, and the deletion of
    /// write-ahead objects that uploaded segments have made redundant. Run until the runtime stops.
    pub fn spawn_background(self: &Arc<Self>) {
        self.every(WAL_CLEAN_INTERVAL, false, |broker| async move {
            match broker.clean_write_ahead().await {
                // Durability local writes none: once those of an earlier run are gone, stop.
                Ok(report) => !(report.kept == 0 && broker.config.durability == Durability::Local),
                Err(e) => {
                    tracing::debug!("cleaning write-ahead objects: {e}");
                    true
                }
            }
        });
        // Not at start: the uploads of a restart come first.
        self.every(self.config.orphan_sweep, true, |broker| async move {
            broker.sweep_orphans();
            true
        });
        self.every(self.config.local_retention_check, false, |broker| async move {
            broker.tiers.local_retention_pass(&broker.catalog).await;
            true
        });
        // Not at start either: `open` enforced retention and finished the deletions it found.
        self.every(self.config.retention_check, true, |broker| async move {
            if broker.writes_catalog() {
                broker.deletions.finish_all();
                broker.settle_consumers();
            }
            let _ = tokio::task::spawn_blocking(move || broker.enforce_retention(Timestamp::now().millis())).await;
            true
        });
    }

    /// Run `job` every `period` (the first time at once, or after a period) while the broker
    /// lives and `job` says to go on.
    fn every<F, Fut>(self: &Arc<Self>, period: std::time::Duration, first_after_period: bool, job: F)
    where
        F: Fn(Arc<Broker>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let broker = Arc::downgrade(self);
        let start = tokio::time::Instant::now() + if first_after_period { period } else { std::time::Duration::ZERO };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(start, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(broker) = broker.upgrade() else { return };
                if !job(broker).await {
                    return;
                }
            }
        });
    }

    /// Queue a sweep of every shard's orphaned segment objects in the object store.
    pub fn sweep_orphans(&self) {
        for stream in self.catalog.all() {
            for shard in stream.shards() {
                self.archive.sweep(&shard.bucket);
            }
        }
    }

    /// Delete the write-ahead objects whose every record is in a segment listed in its
    /// shard's manifest (or belongs to a stream deleted since).
    ///
    /// Comparing with the end of the last uploaded segment is enough: a shard's segments are
    /// uploaded one after another in offset order, each retried in place until it is listed,
    /// so the manifest has no hole below its end (but the gap a restore leaves, where no
    /// acknowledged record is).
    pub async fn clean_write_ahead(&self) -> Result<CleanReport, crate::tier::TierError> {
        let tier = self.archive.tier();
        let mut report = CleanReport::default();
        'objects: for path in tier.list_wal().await? {
            let reach = match self.wal.known_reach(&path) {
                Some(reach) => reach,
                None => match tier.read_wal(&path).await {
                    Ok(chunks) => {
                        let reach = crate::tier::wal::reach_of(&chunks);
                        self.wal.remember(path.clone(), reach.clone());
                        reach
                    }
                    // Deleted meanwhile (by another broker of the cluster).
                    Err(TierError::Store { source: object_store::Error::NotFound { .. }, .. }) => continue,
                    Err(e) => {
                        tracing::warn!(%path, "write-ahead object unreadable, kept: {e}");
                        report.kept += 1;
                        continue;
                    }
                },
            };
            for r in &reach {
                let covered = match self.catalog.get(&r.stream) {
                    Some(stream) if stream.incarnation == r.incarnation => match stream.shard_named(&r.shard) {
                        Some(shard) => self.archive.uploaded_end(&shard.bucket).await? >= r.end_offset,
                        // Not opened here (yet): as far as the bucket lists it.
                        None => self.archive.listed_end(&r.stream, &r.shard).await? >= r.end_offset,
                    },
                    Some(_) => true, // an earlier incarnation, deleted
                    // Not served here: redundant only if the bucket no longer describes it.
                    None => tier.stream_meta(&r.stream)?.load().await?.is_none(),
                };
                if !covered {
                    report.kept += 1;
                    continue 'objects;
                }
            }
            tier.delete_wal(&path).await?;
            self.wal.forget(&path);
            self.metrics.object_wal_deleted.inc();
            report.deleted += 1;
        }
        Ok(report)
    }

    /// The write-ahead chunks that may hold records of one shard at or past `from`: objects
    /// known (written here, or read by the cleaner) not to reach that far into the shard are
    /// not read again, so a takeover reads what concerns its shard, not every object.
    pub async fn write_ahead_of(
        &self,
        stream: &str,
        incarnation: u64,
        shard: &str,
        from: u64,
    ) -> Result<Vec<crate::tier::wal::WalChunk>, crate::tier::TierError> {
        let tier = self.archive.tier();
        let concerns =
            |r: &crate::tier::wal::WalReach| r.stream == stream && r.incarnation == incarnation && r.shard == shard;
        let paths: Vec<_> = tier
            .list_wal()
            .await?
            .into_iter()
            .filter(|path| {
                self.wal.known_reach(path).is_none_or(|reach| reach.iter().any(|r| concerns(r) && r.end_offset > from))
            })
            .collect();
        let mut chunks = Vec::new();
        for (path, read) in tier.read_wal_objects(paths).await? {
            self.wal.remember(path, crate::tier::wal::reach_of(&read));
            chunks.extend(
                read.into_iter().filter(|c| c.stream == stream && c.incarnation == incarnation && c.shard == shard),
            );
        }
        Ok(chunks)
    }

    /// Make records older than each stream's retention unreadable and delete their segments.
    pub fn enforce_retention(&self, now_ms: i64) {
        for stream in self.catalog.all() {
            let cutoff = now_ms - stream.meta().retention_hours * 3_600_000;
            for shard in stream.shards() {
                if let Err(e) = shard.log.trim_before(cutoff) {
                    tracing::warn!(stream = %stream.name, shard = %shard.id, "retention: {e}");
                }
                self.archive.trim(&shard.bucket, cutoff);
            }
            if !self.writes_catalog() {
                continue;
            }
            match self.catalog.drop_expired_closed_shards(&stream, now_ms) {
                Ok(dropped) if !dropped.is_empty() => {
                    tracing::info!(stream = %stream.name, ?dropped, "closed shards past retention removed")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(stream = %stream.name, "removing expired closed shards: {}", e.message),
            }
        }
        self.tiers.invalidate();
    }

    /// Decode, run and encode one operation, its answer in one buffer.
    pub async fn call(&self, op: Operation, format: Format, body: &[u8]) -> Result<Vec<u8>, ApiError> {
        self.answer(op, format, &Bytes::copy_from_slice(body)).await.map(Answer::into_whole)
    }

    /// Decode and run one operation; its answer encoded, or to encode while it is sent. Record
    /// data decoded from `body` shares its memory (`Format::decode_shared`).
    pub async fn answer(&self, op: Operation, format: Format, body: &Bytes) -> Result<Answer, ApiError> {
        macro_rules! run {
            ($handler:ident) => {
                format.encode(&self.$handler(format.decode_shared(body)?).await?).into()
            };
        }
        // Operations without output answer with an empty body, as AWS's do.
        macro_rules! run_without_output {
            ($handler:ident) => {{
                let _: Empty = self.$handler(format.decode_shared(body)?).await?;
                Vec::new().into()
            }};
        }
        Ok(match op {
            Operation::CreateStream => run_without_output!(create_stream),
            Operation::DeleteStream => run_without_output!(delete_stream),
            Operation::ListStreams => run!(list_streams),
            Operation::DescribeStream => run!(describe_stream),
            Operation::DescribeStreamSummary => run!(describe_stream_summary),
            Operation::ListShards => run!(list_shards),
            Operation::PutRecord => run!(put_record),
            Operation::PutRecords => self.put_records(format.decode_shared(body)?).await?.encode(format).into(),
            Operation::GetShardIterator => run!(get_shard_iterator),
            // The largest answers (up to 10 MiB of data): encoded piece by piece as they are sent.
            Operation::GetRecords => {
                let _permit = self.read_slots.acquire().await.expect("the semaphore is never closed");
                Answer::Records(RecordsAnswer::new(format, self.get_records(format.decode_shared(body)?).await?))
            }
            Operation::IncreaseStreamRetentionPeriod => run_without_output!(increase_retention),
            Operation::DecreaseStreamRetentionPeriod => run_without_output!(decrease_retention),
            Operation::AddTagsToStream => run_without_output!(add_tags),
            Operation::RemoveTagsFromStream => run_without_output!(remove_tags),
            Operation::ListTagsForStream => run!(list_tags),
            Operation::DescribeLimits => run!(describe_limits),
            Operation::SplitShard => run_without_output!(split_shard),
            Operation::MergeShards => run_without_output!(merge_shards),
            Operation::UpdateShardCount => run!(update_shard_count),
            Operation::UpdateStreamMode => run_without_output!(update_stream_mode),
            Operation::RegisterStreamConsumer => run!(register_stream_consumer),
            Operation::DeregisterStreamConsumer => run_without_output!(deregister_stream_consumer),
            Operation::DescribeStreamConsumer => run!(describe_stream_consumer),
            Operation::ListStreamConsumers => run!(list_stream_consumers),
            Operation::EnableEnhancedMonitoring => run!(enable_enhanced_monitoring),
            Operation::DisableEnhancedMonitoring => run!(disable_enhanced_monitoring),
            Operation::StartStreamEncryption => run_without_output!(start_stream_encryption),
            Operation::StopStreamEncryption => run_without_output!(stop_stream_encryption),
            Operation::TagResource => run_without_output!(tag_resource),
            Operation::UntagResource => run_without_output!(untag_resource),
            Operation::ListTagsForResource => run!(list_tags_for_resource),
            Operation::UpdateMaxRecordSize => run_without_output!(update_max_record_size),
            Operation::UpdateStreamWarmThroughput => run!(update_stream_warm_throughput),
            Operation::DescribeAccountSettings => run!(describe_account_settings),
            Operation::UpdateAccountSettings => run!(update_account_settings),
            Operation::PutResourcePolicy => run_without_output!(put_resource_policy),
            Operation::GetResourcePolicy => run!(get_resource_policy),
            Operation::DeleteResourcePolicy => run_without_output!(delete_resource_policy),
            // Answered with an event stream by the HTTP front (`fanout::subscribe`).
            Operation::SubscribeToShard => {
                return Err(ApiError::internal("SubscribeToShard is answered as an event stream, not as one body."));
            }
        })
    }

    /// Whether this broker writes stream descriptions: alone, or as the cluster's coordinator.
    pub fn writes_catalog(&self) -> bool {
        self.fabric.as_ref().is_none_or(|f| f.cluster.is_coordinator())
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
