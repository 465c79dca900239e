//! The status a reconcile reports, computed from what it observed (pure).

use crate::conditions::{self, DEGRADED, READY, SCALING};
use crate::kinesis::StreamState;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use streamfabric_api::crd::{DataStream, DataStreamStatus};

/// What the reconcile saw of the children.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub desired_brokers: i32,
    pub ready_brokers: i32,
    /// The stream as its brokers report it; None when they could not be asked.
    pub stream: Option<StreamState>,
    /// Write rate (bytes/s, records/s) between the last two samples of the brokers' stats.
    pub write_rate: Option<(i64, i64)>,
    /// The open shard count a reshard started by this reconcile heads for.
    pub resharding_to: Option<i32>,
    /// Broker volume claims Pending for long, each with why they may be (what blocks the
    /// brokers from starting).
    pub pending_claims: Vec<String>,
}

/// The Ready reason while a broker volume claim stays Pending.
pub const VOLUME_PENDING: &str = "VolumePending";

pub fn next(ds: &DataStream, seen: Observed, now: Time) -> DataStreamStatus {
    let mut status = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;
    let Observed { desired_brokers: want, ready_brokers: ready, stream, write_rate, resharding_to, pending_claims } =
        seen;
    let all_ready = ready >= want && want > 0;
    let active = stream.is_some_and(|s| s.active);
    // UPDATING (a reshard) serves reads and writes, as in AWS.
    let serving = stream.is_some_and(|s| s.active || s.updating);
    let (reason, message) = if ds.spec.paused {
        ("Paused", "spec.paused is set: writes are refused until it is cleared".to_string())
    } else if !all_ready && !pending_claims.is_empty() {
        (VOLUME_PENDING, format!("{ready}/{want} brokers ready; volume claim {} Pending", pending_claims.join(", ")))
    } else if !all_ready {
        ("BrokersStarting", format!("{ready}/{want} brokers ready"))
    } else if stream.is_none() {
        ("BrokersUnreachable", format!("{ready}/{want} brokers ready, but their Kinesis API did not answer"))
    } else if !serving {
        ("StreamCreating", format!("{ready}/{want} brokers ready; the stream is being created"))
    } else if !active {
        ("StreamUpdating", format!("{ready}/{want} brokers ready; the stream is resharding (UPDATING) and serving"))
    } else {
        ("StreamActive", format!("{ready}/{want} brokers ready; the stream is ACTIVE"))
    };
    let is_ready = all_ready && serving && !ds.spec.paused;
    conditions::set(&mut status.conditions, READY, is_ready, reason, &message, generation, now.clone());
    let open = stream.map_or(status.open_shards, |s| s.open_shards);
    let (scaling, reason, message) = match (resharding_to, stream.is_some_and(|s| s.updating)) {
        (Some(to), _) => (true, "Resharding", format!("{open} -> {to} open shards")),
        (None, true) => (true, "Resharding", format!("the stream is UPDATING from {open} open shards")),
        _ if ready != want => (true, "BrokersChanging", format!("{ready}/{want} brokers ready for {open} open shards")),
        _ => (false, "Stable", format!("{want} brokers for {open} open shards")),
    };
    conditions::set(&mut status.conditions, SCALING, scaling, reason, &message, generation, now.clone());
    // Degraded: it was serving and lost brokers (one or all), as opposed to still starting.
    let degraded = ready < want && status.ready_brokers >= want;
    let was_degraded = conditions::is_true(&status.conditions, DEGRADED);
    conditions::set(
        &mut status.conditions,
        DEGRADED,
        degraded || (was_degraded && ready < want),
        if degraded || (was_degraded && ready < want) { "BrokersUnavailable" } else { "AllBrokersReady" },
        &format!("{ready}/{want} brokers ready"),
        generation,
        now,
    );
    status.ready_brokers = ready;
    if let Some(s) = stream {
        status.open_shards = s.open_shards;
        status.closed_shards = s.closed_shards;
    }
    if let Some((bytes, records)) = write_rate {
        status.write_bytes_per_second = bytes;
        status.write_records_per_second = records;
    }
    status.observed_generation = generation;
    status.endpoint = Some(crate::manifests::endpoint(ds));
    status.tls_endpoint = crate::manifests::tls_endpoint(ds);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::DataStreamExt;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    const ACTIVE: StreamState =
        StreamState { created: false, active: true, open_shards: 2, closed_shards: 0, updating: false };

    #[test]
    fn ready_needs_the_stream_active_in_its_brokers() {
        let ds = DataStream::test();
        let seen = |stream| Observed {
            desired_brokers: 1,
            ready_brokers: 1,
            stream,
            write_rate: Some((2048, 2)),
            resharding_to: None,
            pending_claims: vec![],
        };
        let unreachable = next(&ds, seen(None), at(1));
        let creating = next(&ds, seen(Some(StreamState { created: true, ..StreamState::default() })), at(1));
        let active = next(&ds, seen(Some(ACTIVE)), at(1));
        let reason = |s: &DataStreamStatus| s.conditions.iter().find(|c| c.type_ == READY).unwrap().reason.clone();
        assert_eq!(reason(&unreachable), "BrokersUnreachable");
        assert_eq!(reason(&creating), "StreamCreating");
        assert_eq!((reason(&active), condition(&active, READY)), ("StreamActive".to_string(), "True"));
        assert_eq!(active.open_shards, 2);
        assert_eq!((active.write_bytes_per_second, active.write_records_per_second), (2048, 2));
    }

    fn condition<'a>(s: &'a DataStreamStatus, kind: &str) -> &'a str {
        s.conditions.iter().find(|c| c.type_ == kind).map(|c| c.status.as_str()).unwrap()
    }

    #[test]
    fn starting_then_ready_then_degraded_then_recovered() {
        let mut ds = DataStream::test();
        let starting = next(
            &ds,
            Observed {
                desired_brokers: 2,
                ready_brokers: 0,
                stream: None,
                write_rate: None,
                resharding_to: None,
                pending_claims: vec![],
            },
            at(1),
        );
        assert_eq!(
            (condition(&starting, READY), condition(&starting, SCALING), condition(&starting, DEGRADED)),
            ("False", "True", "False")
        );
        assert_eq!(starting.observed_generation, Some(1));
        assert_eq!(starting.endpoint.as_deref(), Some("http://orders.streams.svc:4567"));
        ds.status = Some(starting);
        let ready = next(
            &ds,
            Observed {
                desired_brokers: 2,
                ready_brokers: 2,
                stream: Some(ACTIVE),
                write_rate: None,
                resharding_to: None,
                pending_claims: vec![],
            },
            at(2),
        );
        assert_eq!(
            (condition(&ready, READY), condition(&ready, SCALING), condition(&ready, DEGRADED)),
            ("True", "False", "False")
        );
        ds.status = Some(ready);
        let lost = next(
            &ds,
            Observed {
                desired_brokers: 2,
                ready_brokers: 1,
                stream: Some(ACTIVE),
                write_rate: None,
                resharding_to: None,
                pending_claims: vec![],
            },
            at(3),
        );
        assert_eq!((condition(&lost, READY), condition(&lost, DEGRADED)), ("False", "True"));
        ds.status = Some(lost);
        let back = next(
            &ds,
            Observed {
                desired_brokers: 2,
                ready_brokers: 2,
                stream: Some(ACTIVE),
                write_rate: None,
                resharding_to: None,
                pending_claims: vec![],
            },
            at(4),
        );
        assert_eq!((condition(&back, READY), condition(&back, DEGRADED)), ("True", "False"));
    }

    #[test]
    fn paused_is_not_ready() {
        let mut ds = DataStream::test();
        ds.spec.paused = true;
        let s = next(
            &ds,
            Observed {
                desired_brokers: 1,
                ready_brokers: 1,
                stream: Some(ACTIVE),
                write_rate: None,
                resharding_to: None,
                pending_claims: vec![],
            },
            at(1),
        );
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Paused"));
    }

    #[test]
    fn a_reshard_shows_as_scaling_until_the_stream_is_active_at_its_new_count() {
        let ds = DataStream::test();
        let seen = |stream, resharding_to| Observed {
            desired_brokers: 1,
            ready_brokers: 1,
            stream: Some(stream),
            write_rate: None,
            resharding_to,
            pending_claims: vec![],
        };
        let reason = |s: &DataStreamStatus| s.conditions.iter().find(|c| c.type_ == SCALING).unwrap().reason.clone();
        let started = next(&ds, seen(ACTIVE, Some(4)), at(1));
        assert_eq!((condition(&started, SCALING), reason(&started)), ("True", "Resharding".to_string()));
        let updating = StreamState { active: false, updating: true, ..ACTIVE };
        let during = next(&ds, seen(updating, None), at(2));
        assert_eq!((condition(&during, SCALING), reason(&during)), ("True", "Resharding".to_string()));
        let done = next(&ds, seen(StreamState { open_shards: 4, ..ACTIVE }, None), at(3));
        assert_eq!((condition(&done, SCALING), done.open_shards), ("False", 4));
    }

    #[test]
    fn a_lone_broker_going_down_is_degraded_and_a_reshard_stays_ready() {
        let mut ds = DataStream::test();
        let seen = |ready, stream| Observed { desired_brokers: 1, ready_brokers: ready, stream, ..Observed::default() };
        ds.status = Some(next(&ds, seen(1, Some(ACTIVE)), at(1)));
        let down = next(&ds, seen(0, None), at(2));
        assert_eq!((condition(&down, READY), condition(&down, DEGRADED)), ("False", "True"));
        let updating = StreamState { active: false, updating: true, ..ACTIVE };
        let resharding = next(&ds, seen(1, Some(updating)), at(3));
        let ready = resharding.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "StreamUpdating"));
    }

    #[test]
    fn a_pending_volume_claim_is_named_in_ready() {
        let ds = DataStream::test();
        let seen = Observed {
            desired_brokers: 1,
            pending_claims: vec!["data-orders-broker-0 (no storageClassName)".into()],
            ..Observed::default()
        };
        let s = next(&ds, seen, at(1));
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", VOLUME_PENDING));
        assert!(ready.message.contains("data-orders-broker-0 (no storageClassName) Pending"), "{}", ready.message);
        assert_eq!(condition(&s, DEGRADED), "False", "still starting, not degraded");
    }
}
