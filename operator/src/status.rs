//! The status a reconcile reports, computed from what it observed (pure).

use crate::conditions::{self, DEGRADED, READY, SCALING};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use streamfabric_api::crd::{DataStream, DataStreamStatus};

/// What the reconcile saw of the children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub desired_brokers: i32,
    pub ready_brokers: i32,
}

pub fn next(ds: &DataStream, seen: Observed, now: Time) -> DataStreamStatus {
    let mut status = ds.status.clone().unwrap_or_default();
    let generation = ds.metadata.generation;
    let Observed { desired_brokers: want, ready_brokers: ready } = seen;
    let all_ready = ready >= want && want > 0;
    let (reason, message) = if ds.spec.paused {
        ("Paused", "spec.paused is set: writes are refused until it is cleared".to_string())
    } else if all_ready {
        ("BrokersReady", format!("{ready}/{want} brokers ready"))
    } else {
        ("BrokersStarting", format!("{ready}/{want} brokers ready"))
    };
    conditions::set(
        &mut status.conditions,
        READY,
        all_ready && !ds.spec.paused,
        reason,
        &message,
        generation,
        now.clone(),
    );
    let scaling = ready != want;
    conditions::set(
        &mut status.conditions,
        SCALING,
        scaling,
        if scaling { "BrokersChanging" } else { "Stable" },
        &format!("{want} brokers wanted for {} shards", ds.spec.shards),
        generation,
        now.clone(),
    );
    // Degraded: it was serving and lost brokers, as opposed to still starting.
    let degraded = ready > 0 && ready < want && status.ready_brokers >= want;
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
    status.observed_generation = generation;
    status.endpoint = Some(crate::manifests::endpoint(ds));
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::DataStreamExt;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn condition<'a>(s: &'a DataStreamStatus, kind: &str) -> &'a str {
        s.conditions.iter().find(|c| c.type_ == kind).map(|c| c.status.as_str()).unwrap()
    }

    #[test]
    fn starting_then_ready_then_degraded_then_recovered() {
        let mut ds = DataStream::test();
        let starting = next(&ds, Observed { desired_brokers: 2, ready_brokers: 0 }, at(1));
        assert_eq!(
            (condition(&starting, READY), condition(&starting, SCALING), condition(&starting, DEGRADED)),
            ("False", "True", "False")
        );
        assert_eq!(starting.observed_generation, Some(1));
        assert_eq!(starting.endpoint.as_deref(), Some("http://orders.streams.svc:4567"));
        ds.status = Some(starting);
        let ready = next(&ds, Observed { desired_brokers: 2, ready_brokers: 2 }, at(2));
        assert_eq!(
            (condition(&ready, READY), condition(&ready, SCALING), condition(&ready, DEGRADED)),
            ("True", "False", "False")
        );
        ds.status = Some(ready);
        let lost = next(&ds, Observed { desired_brokers: 2, ready_brokers: 1 }, at(3));
        assert_eq!((condition(&lost, READY), condition(&lost, DEGRADED)), ("False", "True"));
        ds.status = Some(lost);
        let back = next(&ds, Observed { desired_brokers: 2, ready_brokers: 2 }, at(4));
        assert_eq!((condition(&back, READY), condition(&back, DEGRADED)), ("True", "False"));
    }

    #[test]
    fn paused_is_not_ready() {
        let mut ds = DataStream::test();
        ds.spec.paused = true;
        let s = next(&ds, Observed { desired_brokers: 1, ready_brokers: 1 }, at(1));
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Paused"));
    }
}
