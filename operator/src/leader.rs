//! Leader election through a `coordination.k8s.io/v1` Lease, so that several operator
//! replicas can run and exactly one reconciles. A replica takes the Lease when it is free
//! or its holder has not renewed it for `leaseDurationSeconds`; every write is a create or
//! an update at the read `resourceVersion`, so of replicas racing for it one wins. The
//! leader renews it every `renew_every` and stops (the process exits, and Kubernetes
//! restarts it as a candidate) when it cannot renew within the lease duration.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    pub name: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// What a candidate may do with the Lease as it reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// There is none yet: create it.
    Create,
    /// It is this replica's: renew it.
    Renew,
    /// Free, or its holder stopped renewing: take it.
    Take,
    /// Another replica holds it: wait.
    Wait,
}

pub fn step(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Step {
    let Some(spec) = lease else { return Step::Create };
    match spec.holder_identity.as_deref() {
        None | Some("") => Step::Take,
        Some(holder) if holder == identity => Step::Renew,
        Some(_) => {
            let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            match &spec.renew_time {
                Some(MicroTime(renewed)) if now < *renewed + duration => Step::Wait,
                _ => Step::Take,
            }
        }
    }
}

impl Election {
    fn spec(&self, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
        let kept = previous.filter(|p| p.holder_identity.as_deref() == Some(&self.identity));
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs().max(1) as i32),
            acquire_time: kept.and_then(|p| p.acquire_time.clone()).or(Some(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if kept.is_some() || previous.is_none() { transitions } else { transitions + 1 }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: Ok(true) if this replica holds the Lease afterwards.
    pub async fn try_acquire(&self, client: &Client) -> Result<bool, kube::Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let now = Timestamp::now();
        let current = api.get_opt(&self.name).await?;
        let written = match step(current.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now) {
            Step::Wait => return Ok(false),
            Step::Create => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                    spec: Some(self.spec(now, None)),
                };
                api.create(&PostParams::default(), &lease).await
            }
            Step::Renew | Step::Take => {
                let mut lease = current.expect("a Lease was read");
                lease.spec = Some(self.spec(now, lease.spec.as_ref()));
                // Carries the read resourceVersion: a concurrent write makes this one fail.
                api.replace(&self.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait until this replica leads.
    pub async fn acquire(&self, client: &Client) {
        loop {
            match self.try_acquire(client).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, "leader election: {e}"),
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// On shutdown: give the Lease up if this replica holds it (its holder cleared, as
    /// client-go's ReleaseOnCancel does), so that a standby leads at once instead of after
    /// the lease duration. The chart owns the Lease object itself (`helm uninstall` removes
    /// it). A Lease another replica took meanwhile is left alone: the write carries the
    /// version read.
    pub async fn release(&self, client: &Client) {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let Ok(Some(mut lease)) = api.get_opt(&self.name).await else { return };
        let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(&self.identity)) else {
            return;
        };
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "released the leader lease"),
            Err(e) => tracing::warn!(lease = %self.name, "releasing the leader lease: {e}"),
        }
    }

    /// Renew while leading; returns once leadership is lost (another replica holds the
    /// Lease, or no renewal succeeded for a whole lease duration).
    pub async fn hold(&self, client: &Client) {
        let mut renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.renew_every).await;
            match self.try_acquire(client).await {
                Ok(true) => renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => tracing::warn!(lease = %self.name, "renewing the leader lease: {e}"),
            }
            if renewed.elapsed() >= self.lease_duration {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed_secs: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed_secs).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn who_may_take_the_lease_and_when() {
        let at = |secs| Timestamp::from_second(secs).unwrap();
        let table = [
            (None, Step::Create),
            (Some(held("me", 100)), Step::Renew),
            (Some(held("other", 100)), Step::Wait),
            (Some(LeaseSpec { holder_identity: None, ..held("x", 100) }), Step::Take),
            (Some(LeaseSpec { holder_identity: Some(String::new()), ..held("x", 100) }), Step::Take),
            (Some(LeaseSpec { renew_time: None, ..held("other", 100) }), Step::Take),
        ];
        for (lease, expected) in table {
            assert_eq!(step(lease.as_ref(), "me", at(110)), expected, "{lease:?}");
        }
        assert_eq!(step(Some(&held("other", 100)), "me", at(114)), Step::Wait, "14 s after its renewal");
        assert_eq!(step(Some(&held("other", 100)), "me", at(115)), Step::Take, "15 s after: expired");
    }

    #[test]
    fn taking_counts_a_transition_and_renewing_keeps_the_acquire_time() {
        let e = Election {
            namespace: "ns".into(),
            name: "lease".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        };
        let now = Timestamp::from_second(200).unwrap();
        let mut other = held("other", 100);
        other.lease_transitions = Some(3);
        let taken = e.spec(now, Some(&other));
        assert_eq!((taken.holder_identity.as_deref(), taken.lease_transitions), (Some("me"), Some(4)));
        let mut mine = taken.clone();
        mine.acquire_time = Some(MicroTime(Timestamp::from_second(150).unwrap()));
        let renewed = e.spec(Timestamp::from_second(205).unwrap(), Some(&mine));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, mine.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(Timestamp::from_second(205).unwrap())));
        assert_eq!(e.spec(now, None).lease_transitions, Some(0));
    }
}
