//! The sidecar's Prometheus metrics, served on its admin port (`GET /metrics`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    // Producer.
    /// Records accepted from the application and not answered yet, and their bytes.
    pub buffered_records: IntGauge,
    pub buffered_bytes: IntGauge,
    /// Records by final outcome: stored, failed (an error was their answer), refused because
    /// the buffer was full.
    pub records: IntCounterVec,
    /// PutRecords requests sent to the brokers, and the user records in each.
    pub put_requests: IntCounter,
    pub batch_records: Histogram,
    /// Aggregated records sent and the user records they carried (their ratio: records per
    /// aggregate).
    pub aggregates: IntCounter,
    pub aggregated_records: IntCounter,
    /// Records sent again, by reason: throttled, failed (a retryable error or no answer),
    /// wrong_shard (an aggregate after a reshard).
    pub retries: IntCounterVec,
    /// From the application's call to its answer.
    pub put_seconds: Histogram,
    // Consumer.
    pub delivered_records: IntCounter,
    pub delivery_batches: IntCounter,
    pub delivery_retries: IntCounter,
    /// From a record's arrival at the brokers to the application's 2xx for it.
    pub delivery_latency_seconds: Histogram,
    pub millis_behind_latest: IntGaugeVec,
    pub leases_held: IntGauge,
    pub checkpoints: IntCounter,
    /// Sub-records of aggregates outside their shard's range (after a reshard), dropped.
    pub dropped_out_of_range: IntCounter,
    /// Records not delivered by sampling, by reason: uniform, key, filter, not_json.
    pub sampled_out: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
            r.register(Box::new(m.clone())).expect("metric names are unique");
            m
        }
        let name = |n: &str| format!("streamfabric_sidecar_{n}");
        let counter = |n: &str, help: &str| reg(&registry, IntCounter::new(name(n), help).expect("valid metric"));
        let gauge = |n: &str, help: &str| reg(&registry, IntGauge::new(name(n), help).expect("valid metric"));
        let histogram = |n: &str, help: &str, buckets: Vec<f64>| {
            reg(&registry, Histogram::with_opts(HistogramOpts::new(name(n), help).buckets(buckets)).expect("valid"))
        };
        let seconds = prometheus::exponential_buckets(0.0005, 2.0, 16).expect("valid buckets");
        Metrics {
            buffered_records: gauge("buffered_records", "Records accepted and not answered yet"),
            buffered_bytes: gauge("buffered_bytes", "Bytes of the records accepted and not answered yet"),
            records: reg(
                &registry,
                IntCounterVec::new(Opts::new(name("records_total"), "Records by final outcome"), &["outcome"])
                    .expect("valid metric"),
            ),
            put_requests: counter("put_requests_total", "PutRecords requests sent to the brokers"),
            batch_records: histogram(
                "batch_records",
                "User records per PutRecords request",
                prometheus::exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            ),
            aggregates: counter("aggregates_total", "KPL aggregated records sent"),
            aggregated_records: counter("aggregated_records_total", "User records sent inside aggregates"),
            retries: reg(
                &registry,
                IntCounterVec::new(Opts::new(name("retries_total"), "Records sent again, by reason"), &["reason"])
                    .expect("valid metric"),
            ),
            put_seconds: histogram("put_seconds", "From the application's call to its answer", seconds.clone()),
            delivered_records: counter("delivered_records_total", "User records the application took (2xx)"),
            delivery_batches: counter("delivery_batches_total", "Batches the application took (2xx)"),
            delivery_retries: counter("delivery_retries_total", "Deliveries not taken, and retried"),
            delivery_latency_seconds: histogram(
                "delivery_latency_seconds",
                "From a record's arrival at the brokers to the application's 2xx",
                prometheus::exponential_buckets(0.001, 2.0, 16).expect("valid buckets"),
            ),
            millis_behind_latest: reg(
                &registry,
                IntGaugeVec::new(
                    Opts::new(name("millis_behind_latest"), "How far behind the shard's tip the reader is"),
                    &["shard"],
                )
                .expect("valid metric"),
            ),
            leases_held: gauge("leases_held", "Leases this worker holds and reads"),
            checkpoints: counter("checkpoints_total", "Checkpoints written"),
            dropped_out_of_range: counter(
                "dropped_out_of_range_total",
                "Sub-records of aggregates outside their shard's hash key range, dropped",
            ),
            sampled_out: reg(
                &registry,
                IntCounterVec::new(Opts::new(name("sampled_out_total"), "Records sampled out, by reason"), &["reason"])
                    .expect("valid metric"),
            ),
            registry,
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("encodable metrics");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
