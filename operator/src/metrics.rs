//! The operator's Prometheus metrics.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub struct Metrics {
    pub registry: Registry,
    pub reconciles: IntCounterVec,
    pub failures: IntCounterVec,
    pub reconcile_seconds: HistogramVec,
    pub decisions: IntCounterVec,
    /// 1 while this replica holds the leader Lease (or runs without election).
    pub leader: IntGauge,
    /// 1 while the API server serves the DataStream CRD; /readyz follows it.
    pub crd_served: IntGauge,
    /// Admission reviews the sidecar webhook answered, by result (injected, untouched,
    /// refused: admitted without a sidecar, invalid).
    pub webhook_reviews: IntCounterVec,
    /// Pods labelled for a sidecar that run without one (the webhook was down, or refused).
    pub pods_without_sidecar: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reconciles =
            IntCounterVec::new(Opts::new("streamfabric_operator_reconciles_total", "Reconciles run"), &["kind"])
                .unwrap();
        let failures = IntCounterVec::new(
            Opts::new("streamfabric_operator_reconcile_failures_total", "Reconciles that failed, by error"),
            &["kind", "error"],
        )
        .unwrap();
        let reconcile_seconds = HistogramVec::new(
            HistogramOpts::new("streamfabric_operator_reconcile_seconds", "Reconcile duration")
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["kind"],
        )
        .unwrap();
        let decisions = IntCounterVec::new(
            Opts::new("streamfabric_operator_decisions_total", "Decisions taken (each also an Event), by reason"),
            &["reason"],
        )
        .unwrap();
        let leader = IntGauge::new("streamfabric_operator_leader", "1 while this replica leads").unwrap();
        let crd_served =
            IntGauge::new("streamfabric_operator_crd_served", "1 while the API server serves the DataStream CRD")
                .unwrap();
        let webhook_reviews = IntCounterVec::new(
            Opts::new("streamfabric_operator_webhook_reviews_total", "Admission reviews of pods, by result"),
            &["result"],
        )
        .unwrap();
        let pods_without_sidecar = IntGauge::new(
            "streamfabric_operator_pods_without_sidecar",
            "Pods labelled streamfabric.io/inject=true that run without the sidecar",
        )
        .unwrap();
        registry.register(Box::new(pods_without_sidecar.clone())).unwrap();
        for result in ["injected", "untouched", "refused", "invalid"] {
            webhook_reviews.with_label_values(&[result]);
        }
        for m in [&reconciles, &failures, &decisions, &webhook_reviews] {
            registry.register(Box::new(m.clone())).unwrap();
        }
        registry.register(Box::new(reconcile_seconds.clone())).unwrap();
        registry.register(Box::new(leader.clone())).unwrap();
        registry.register(Box::new(crd_served.clone())).unwrap();
        // Series present from the start (at zero), not only after the first reconcile.
        reconciles.with_label_values(&["DataStream"]);
        reconcile_seconds.with_label_values(&["DataStream"]);
        Metrics {
            registry,
            reconciles,
            failures,
            reconcile_seconds,
            decisions,
            leader,
            crd_served,
            webhook_reviews,
            pods_without_sidecar,
        }
    }

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
