//! Status conditions (Ready, Scaling, Degraded) with Kubernetes' rules: one entry per type,
//! `lastTransitionTime` moves only when the status flips, `observedGeneration` is set.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const SCALING: &str = "Scaling";
pub const DEGRADED: &str = "Degraded";

pub fn set(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status;
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

pub fn is_true(conditions: &[Condition], kind: &str) -> bool {
    conditions.iter().any(|c| c.type_ == kind && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let mut c = Vec::new();
        set(&mut c, READY, false, "BrokersStarting", "0/1 brokers ready", Some(1), at(100));
        set(&mut c, READY, false, "BrokersStarting", "0/1 brokers ready", Some(2), at(200));
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, at(100));
        assert_eq!(c[0].observed_generation, Some(2));
        set(&mut c, READY, true, "BrokersReady", "1/1 brokers ready", Some(2), at(300));
        assert_eq!(c[0].last_transition_time, at(300));
        assert!(is_true(&c, READY));
        set(&mut c, DEGRADED, false, "AllBrokersReady", "", Some(2), at(300));
        assert_eq!(c.len(), 2);
    }
}
