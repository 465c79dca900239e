//! Coordinator election: one lease object `cluster/coordinator.json`
//! `{version, holder, generation, renewed}`.
//!
//! * Taking it: create-if-absent when there is none; otherwise an ETag-conditional write
//!   of `generation + 1` once the lease is free (`holder: null`, released cleanly), names
//!   this broker (an earlier run of it), or has stood still (same holder, generation and
//!   `renewed`) for `member_timeout` as this contender watched it on its own monotonic
//!   clock. Of contenders racing on one version exactly one write succeeds.
//! * Holding it: the holder bumps `renewed` every heartbeat, conditional on the ETag it
//!   wrote last. Losing that condition means someone took over: it steps down at once.
//! * Its own view: the lease counts as held while the last successful renewal was issued
//!   less than `member_timeout` minus a tenth ago. A contender can take over only
//!   `member_timeout` after it *saw* that renewal, which is later than it was issued, so
//!   the two never both believe they hold it.
//!
//! The generation only grows: it is the fencing token of the coordinator's writes (see
//! [`super::assignment`]).

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::observe::ChangeClock;
use super::{BrokerId, layout};
use crate::tier::versioned::{VersionedDoc, VersionedObject};
use crate::tier::{Result, TierError, TierStore, UpdateVersion};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinatorLease {
    /// Bumped by every write.
    pub version: u64,
    /// None: released, free to take at once.
    pub holder: Option<BrokerId>,
    /// Bumped by every change of holder; only grows.
    pub generation: u64,
    /// Bumped by every renewal; what contenders watch.
    pub renewed: u64,
}

// The document's write counter is `version`; the lease's own `generation` is its epoch.
#[allow(clippy::misnamed_getters)]
impl VersionedDoc for CoordinatorLease {
    fn generation(&self) -> u64 {
        self.version
    }
    fn set_generation(&mut self, generation: u64) {
        self.version = generation;
    }
}

/// What a contender should do about the lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contend {
    /// No lease object: create one.
    Create,
    /// Free, ours from an earlier run, or expired: take it with the next generation.
    TakeOver,
    /// Someone else holds it and renewed within `member_timeout`.
    Wait,
}

/// The contender's decision (pure). `watched` is how long this contender has seen the
/// lease stand still.
pub fn contend(me: &str, lease: Option<&CoordinatorLease>, watched: Duration, member_timeout: Duration) -> Contend {
    match lease {
        None => Contend::Create,
        Some(l) if l.holder.is_none() || l.holder.as_deref() == Some(me) => Contend::TakeOver,
        Some(_) if watched >= member_timeout => Contend::TakeOver,
        Some(_) => Contend::Wait,
    }
}

type Watched = (Option<BrokerId>, u64, u64);

#[derive(Debug)]
struct Held {
    lease: CoordinatorLease,
    version: UpdateVersion,
    /// When the last successful write of the lease was issued.
    renewed_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    held: Option<Held>,
    watched: Option<ChangeClock<Watched>>,
    last_read: Option<CoordinatorLease>,
}

/// One broker's part in the election. `tick` is meant to be called from one task, every
/// heartbeat.
#[derive(Debug)]
pub struct Election {
    obj: VersionedObject,
    me: BrokerId,
    member_timeout: Duration,
    state: Mutex<State>,
}

impl Election {
    pub fn new(tier: &TierStore, me: &str, member_timeout: Duration) -> Result<Self> {
        layout::check_broker_id(me)?;
        Ok(Election {
            obj: VersionedObject::new(
                tier.store().clone(),
                tier.path(layout::coordinator_key()),
                tier.options().retry.clone(),
            ),
            me: me.to_string(),
            member_timeout,
            state: Mutex::new(State::default()),
        })
    }

    /// One round: renew the lease if held, else read it and contend. `floor`: the highest
    /// coordinator generation seen elsewhere (the assignment's), so that a lease object
    /// lost or reset never restarts below it.
    pub async fn tick(&self, floor: u64) -> Result<()> {
        let held = self.state.lock().unwrap().held.as_ref().map(|h| (h.lease.clone(), h.version.clone()));
        match held {
            Some((lease, version)) => self.renew(lease, version).await,
            None => self.contend(floor).await,
        }
    }

    async fn renew(&self, mut lease: CoordinatorLease, version: UpdateVersion) -> Result<()> {
        lease.version += 1;
        lease.renewed += 1;
        let issued = Instant::now();
        match self.obj.replace(&lease, &version).await {
            Ok(version) => {
                let mut state = self.state.lock().unwrap();
                state.last_read = Some(lease.clone());
                state.held = Some(Held { lease, version, renewed_at: issued });
                Ok(())
            }
            Err(TierError::Conflict { .. }) => {
                tracing::warn!(broker = %self.me, generation = lease.generation, "coordinator lease lost to another broker; stepping down");
                self.state.lock().unwrap().held = None;
                Ok(())
            }
            // Unknown outcome: keep trying with the same version; the lease runs out on
            // its own if this goes on.
            Err(e) => Err(e),
        }
    }

    async fn contend(&self, floor: u64) -> Result<()> {
        let read = self.obj.load::<CoordinatorLease>().await?;
        let now = Instant::now();
        let decision = {
            let mut state = self.state.lock().unwrap();
            let watched = match &read {
                Some((l, _)) => {
                    let value = (l.holder.clone(), l.generation, l.renewed);
                    match &mut state.watched {
                        Some(clock) => clock.observe(value, now),
                        None => state.watched = Some(ChangeClock::new(value, now)),
                    }
                    state.watched.as_ref().expect("just set").unchanged_for(now)
                }
                None => Duration::ZERO,
            };
            state.last_read = read.as_ref().map(|(l, _)| l.clone());
            contend(&self.me, read.as_ref().map(|(l, _)| l), watched, self.member_timeout)
        };
        let issued = Instant::now();
        let taken = match (decision, read) {
            (Contend::Wait, _) => return Ok(()),
            (Contend::Create, _) => {
                let lease =
                    CoordinatorLease { version: 1, holder: Some(self.me.clone()), generation: floor + 1, renewed: 0 };
                self.obj.create(lease.clone()).await.map(|v| (lease, v))
            }
            (Contend::TakeOver, Some((old, version))) => {
                let lease = CoordinatorLease {
                    version: old.version + 1,
                    holder: Some(self.me.clone()),
                    generation: old.generation.max(floor) + 1,
                    renewed: old.renewed + 1,
                };
                self.obj.replace(&lease, &version).await.map(|v| (lease, v))
            }
            (Contend::TakeOver, None) => unreachable!("take-over decided on a lease that was read"),
        };
        match taken {
            Ok((lease, version)) => {
                tracing::info!(broker = %self.me, generation = lease.generation, "took the coordinator lease");
                let mut state = self.state.lock().unwrap();
                state.last_read = Some(lease.clone());
                state.held = Some(Held { lease, version, renewed_at: issued });
                Ok(())
            }
            // Another contender won this round.
            Err(TierError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The generation this broker coordinates with, while its lease holds.
    pub fn generation_held(&self) -> Option<u64> {
        let margin = self.member_timeout / 10;
        let state = self.state.lock().unwrap();
        let held = state.held.as_ref()?;
        (held.renewed_at.elapsed() < self.member_timeout.saturating_sub(margin)).then_some(held.lease.generation)
    }

    pub fn is_coordinator(&self) -> bool {
        self.generation_held().is_some()
    }

    /// The lease as last read or written by this broker.
    pub fn last_seen(&self) -> Option<CoordinatorLease> {
        self.state.lock().unwrap().last_read.clone()
    }

    /// Stop acting as coordinator (e.g. a later generation wrote the assignment). The
    /// lease object still names this broker, so the next tick retakes it with a higher
    /// generation if nobody else does.
    pub fn step_down(&self) {
        self.state.lock().unwrap().held = None;
    }

    /// Leaves the lease free (`holder: null`, same generation) so that another broker
    /// takes it at its next tick instead of after `member_timeout`.
    pub async fn release(&self) -> Result<()> {
        let Some(held) = self.state.lock().unwrap().held.take() else { return Ok(()) };
        let lease = CoordinatorLease {
            version: held.lease.version + 1,
            holder: None,
            generation: held.lease.generation,
            renewed: held.lease.renewed + 1,
        };
        match self.obj.replace(&lease, &held.version).await {
            Ok(_) | Err(TierError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>) -> CoordinatorLease {
        CoordinatorLease { version: 4, holder: holder.map(str::to_string), generation: 2, renewed: 9 }
    }

    #[test]
    fn contender_waits_for_a_renewing_holder_and_takes_an_expired_or_free_lease() {
        let timeout = Duration::from_millis(500);
        let ms = Duration::from_millis;
        assert_eq!(contend("b", None, ms(0), timeout), Contend::Create);
        assert_eq!(contend("b", Some(&lease(Some("a"))), ms(499), timeout), Contend::Wait);
        assert_eq!(contend("b", Some(&lease(Some("a"))), ms(500), timeout), Contend::TakeOver);
        assert_eq!(contend("b", Some(&lease(None)), ms(0), timeout), Contend::TakeOver);
        assert_eq!(contend("b", Some(&lease(Some("b"))), ms(0), timeout), Contend::TakeOver);
    }
}
