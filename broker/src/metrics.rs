//! Prometheus metrics of the broker, registered once; per-shard handles are resolved
//! when a shard opens so that the data path never looks labels up.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub append_seconds: Histogram,
    pub fsync_seconds: Histogram,
    pub streams: IntGauge,
    pub segment_uploads: IntCounter,
    pub segment_upload_bytes: IntCounter,
    pub segment_raw_bytes: IntCounter,
    pub segment_stored_bytes: IntCounter,
    pub segment_upload_seconds: Histogram,
    pub object_store_errors: IntCounter,
    pub upload_backlog_bytes: IntGauge,
    pub fenced_shards: IntGauge,
    /// Cluster shard moves by kind: taken (fresh, released by its owner, over from a dead
    /// owner, kept after a restart) and released (handed on).
    pub handoffs: IntCounterVec,
    pub segment_orphans_deleted: IntCounter,
    pub segment_uploads_abandoned: IntCounter,
    /// Lease operations by operation (and SyncLeases' steps) and outcome: won, conflict, error.
    pub lease_operations: IntCounterVec,
    pub object_batch_puts: IntCounter,
    pub object_batch_bytes: IntCounter,
    pub object_batch_failures: IntCounter,
    pub object_batch_put_seconds: Histogram,
    pub object_batch_records: Histogram,
    pub object_wal_deleted: IntCounter,
    /// Remote reads: the frame cache's hits, misses, evictions, fetched bytes and size.
    pub remote_cache: crate::tier::CacheCounters,
    /// Segments (and their bytes) on local disk and in the object store, over this broker's shards.
    pub local_segments: IntGauge,
    pub local_segment_bytes: IntGauge,
    pub remote_segments: IntGauge,
    pub remote_segment_bytes: IntGauge,
    pub segments_evicted: IntCounter,
    pub remote_records: IntCounter,
    incoming_records: IntCounterVec,
    incoming_bytes: IntCounterVec,
    outgoing_records: IntCounterVec,
    outgoing_bytes: IntCounterVec,
    throttled: IntCounterVec,
    millis_behind: IntGaugeVec,
}

/// The metric children of one shard.
pub struct ShardMetrics {
    pub incoming_records: IntCounter,
    pub incoming_bytes: IntCounter,
    pub outgoing_records: IntCounter,
    pub outgoing_bytes: IntCounter,
    pub write_throttled: IntCounter,
    pub read_throttled: IntCounter,
    pub millis_behind: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(c.clone())).expect("metric registered once");
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let shard = &["stream", "shard"];
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("streamfabric_request_seconds", "API request latency by operation").buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["operation"],
        )
        .expect("valid metric");
        registry.register(Box::new(request_seconds.clone())).expect("metric registered once");
        let append_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "streamfabric_append_seconds",
                "Time for a batch to become durable in a shard log (write + group-committed sync)",
            )
            .buckets(vec![0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(append_seconds.clone())).expect("metric registered once");
        let fsync_seconds = Histogram::with_opts(
            HistogramOpts::new("streamfabric_fsync_seconds", "Duration of each group commit's fdatasync")
                .buckets(vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5]),
        )
        .expect("valid metric");
        registry.register(Box::new(fsync_seconds.clone())).expect("metric registered once");
        let streams = IntGauge::new("streamfabric_streams", "Streams served").expect("valid metric");
        registry.register(Box::new(streams.clone())).expect("metric registered once");
        let plain = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("metric registered once");
            c
        };
        let segment_uploads =
            plain("streamfabric_segment_uploads_total", "Sealed segments uploaded to the object store");
        let segment_upload_bytes =
            plain("streamfabric_segment_upload_bytes_total", "Bytes sent to the object store for sealed segments");
        let segment_raw_bytes = plain(
            "streamfabric_segment_raw_bytes_total",
            "Uncompressed size of uploaded segments (raw/stored is the compression ratio)",
        );
        let segment_stored_bytes = plain(
            "streamfabric_segment_stored_bytes_total",
            "Compressed size of uploaded segments in the object store",
        );
        let upload_backlog_bytes = IntGauge::new(
            "streamfabric_upload_backlog_bytes",
            "Bytes of sealed segments waiting for the object store (writes are refused above --upload-backlog-limit)",
        )
        .expect("valid metric");
        registry.register(Box::new(upload_backlog_bytes.clone())).expect("metric registered once");
        let fenced_shards = IntGauge::new(
            "streamfabric_fenced_shards",
            "Shards another broker has taken in the object store: this broker no longer writes them",
        )
        .expect("valid metric");
        registry.register(Box::new(fenced_shards.clone())).expect("metric registered once");
        let object_store_errors = plain("streamfabric_object_store_errors_total", "Failed object-store operations");
        let segment_upload_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "streamfabric_segment_upload_seconds",
                "Time to compress, upload and list a sealed segment",
            )
            .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(segment_upload_seconds.clone())).expect("metric registered once");
        let object_batch_puts =
            plain("streamfabric_object_batch_puts_total", "Write-ahead batch objects written (durability object)");
        let object_batch_bytes =
            plain("streamfabric_object_batch_bytes_total", "Bytes of write-ahead batch objects written");
        let object_batch_failures = plain(
            "streamfabric_object_batch_failures_total",
            "Write-ahead batch PUTs that failed or timed out (their writes were answered ServiceUnavailable)",
        );
        let object_wal_deleted = plain(
            "streamfabric_object_wal_deleted_total",
            "Write-ahead objects deleted once uploaded segments covered their records",
        );
        let object_batch_put_seconds = Histogram::with_opts(
            HistogramOpts::new("streamfabric_object_batch_put_seconds", "Duration of each write-ahead batch PUT")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(object_batch_put_seconds.clone())).expect("metric registered once");
        let object_batch_records = Histogram::with_opts(
            HistogramOpts::new("streamfabric_object_batch_records", "Records per write-ahead batch object")
                .buckets(vec![1.0, 10.0, 100.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0]),
        )
        .expect("valid metric");
        registry.register(Box::new(object_batch_records.clone())).expect("metric registered once");
        let millis_behind = IntGaugeVec::new(
            Opts::new("streamfabric_iterator_age_millis", "MillisBehindLatest of the latest GetRecords per shard"),
            shard,
        )
        .expect("valid metric");
        registry.register(Box::new(millis_behind.clone())).expect("metric registered once");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("metric registered once");
            g
        };
        let remote_cache = crate::tier::CacheCounters {
            hits: plain("streamfabric_remote_cache_hits_total", "Remote reads answered by the frame cache"),
            misses: plain("streamfabric_remote_cache_misses_total", "Remote reads that fetched from the object store"),
            evictions: plain(
                "streamfabric_remote_cache_evictions_total",
                "Frames evicted from the cache to stay within --remote-cache-bytes",
            ),
            fetched_bytes: plain(
                "streamfabric_remote_fetch_bytes_total",
                "Bytes fetched from the object store by remote reads (ranged GETs)",
            ),
            bytes: gauge("streamfabric_remote_cache_bytes", "Bytes held by the remote-read frame cache"),
        };
        let local_segments = gauge("streamfabric_local_segments", "Segments of this broker's shards on local disk");
        let local_segment_bytes =
            gauge("streamfabric_local_segment_bytes", "Bytes of this broker's shard segments on local disk");
        let remote_segments =
            gauge("streamfabric_remote_segments", "Segments of this broker's shards listed in the object store");
        let remote_segment_bytes = gauge(
            "streamfabric_remote_segment_bytes",
            "Stored bytes of this broker's shard segments in the object store",
        );
        let segments_evicted = plain(
            "streamfabric_segments_evicted_total",
            "Uploaded segments deleted from local disk by --local-retention-bytes",
        );
        let remote_records =
            plain("streamfabric_remote_records_total", "Records GetRecords read from the object store");
        Metrics {
            remote_cache,
            local_segments,
            local_segment_bytes,
            remote_segments,
            remote_segment_bytes,
            segments_evicted,
            remote_records,
            requests: counter(
                &registry,
                "streamfabric_requests_total",
                "API requests by operation and result code",
                &["operation", "code"],
            ),
            request_seconds,
            append_seconds,
            fsync_seconds,
            streams,
            segment_uploads,
            segment_upload_bytes,
            segment_raw_bytes,
            segment_stored_bytes,
            segment_upload_seconds,
            object_store_errors,
            upload_backlog_bytes,
            fenced_shards,
            handoffs: counter(
                &registry,
                "streamfabric_shard_handoffs_total",
                "Cluster shard moves: taken fresh, taken released, taken over from a dead broker, kept, released",
                &["kind"],
            ),
            segment_uploads_abandoned: plain(
                "streamfabric_segment_uploads_abandoned_total",
                "Sealed segments the object store kept refusing (a conflict, not an outage), left on local disk",
            ),
            segment_orphans_deleted: plain(
                "streamfabric_segment_orphans_deleted_total",
                "Segment objects no manifest listed, deleted by the orphan sweep",
            ),
            lease_operations: counter(
                &registry,
                "streamfabric_lease_operations_total",
                "Lease operations by operation (SyncLeases' steps as SyncLeases.<step>) and outcome (won, conflict, error)",
                &["operation", "outcome"],
            ),
            object_batch_puts,
            object_batch_bytes,
            object_batch_failures,
            object_batch_put_seconds,
            object_batch_records,
            object_wal_deleted,
            incoming_records: counter(&registry, "streamfabric_incoming_records_total", "Records written", shard),
            incoming_bytes: counter(
                &registry,
                "streamfabric_incoming_bytes_total",
                "Record bytes written (data and partition key)",
                shard,
            ),
            outgoing_records: counter(
                &registry,
                "streamfabric_outgoing_records_total",
                "Records returned by GetRecords",
                shard,
            ),
            outgoing_bytes: counter(
                &registry,
                "streamfabric_outgoing_bytes_total",
                "Record bytes returned by GetRecords",
                shard,
            ),
            throttled: counter(
                &registry,
                "streamfabric_throttled_total",
                "Requests or records refused by a shard limit",
                &["stream", "shard", "direction"],
            ),
            millis_behind,
            registry,
        }
    }

    pub fn shard(&self, stream: &str, shard: &str) -> ShardMetrics {
        let l = &[stream, shard];
        ShardMetrics {
            incoming_records: self.incoming_records.with_label_values(l),
            incoming_bytes: self.incoming_bytes.with_label_values(l),
            outgoing_records: self.outgoing_records.with_label_values(l),
            outgoing_bytes: self.outgoing_bytes.with_label_values(l),
            write_throttled: self.throttled.with_label_values(&[stream, shard, "write"]),
            read_throttled: self.throttled.with_label_values(&[stream, shard, "read"]),
            millis_behind: self.millis_behind.with_label_values(l),
        }
    }

    /// Drop a deleted shard's series so that they stop being exported.
    pub fn forget_shard(&self, stream: &str, shard: &str) {
        let l = &[stream, shard];
        for vec in [&self.incoming_records, &self.incoming_bytes, &self.outgoing_records, &self.outgoing_bytes] {
            let _ = vec.remove_label_values(l);
        }
        let _ = self.throttled.remove_label_values(&[stream, shard, "write"]);
        let _ = self.throttled.remove_label_values(&[stream, shard, "read"]);
        let _ = self.millis_behind.remove_label_values(l);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding to memory");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
