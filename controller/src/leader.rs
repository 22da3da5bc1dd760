//! Leader election with a coordination.k8s.io Lease, so that two replicas
//! are safe: only the holder reconciles.
//!
//! Timing, for a lease `duration` D (15 s by default), as client-go does it:
//! - every attempt (read + write) has a deadline of D/5: kube's client has no
//!   read timeout, and a renew that never returns must not keep a leader;
//! - the holder renews every D/3 and, when renewing fails, retries every D/5;
//!   it steps down (the process exits; the Deployment restarts it as a
//!   follower) once 2D/3 have passed since it *sent* its last successful
//!   renew, so it has stopped before any follower can count the lease as
//!   expired;
//! - a follower judges expiry by its own clock: the lease is free once the
//!   record it reads (holder, renew time, duration) has not changed for D
//!   since it first saw it, whatever the timestamps in it say (clocks differ
//!   between nodes), or at once when it has no holder;
//! - a leader stopped by SIGTERM (a rollout, a deleted pod) releases the
//!   lease first, so a follower takes over at its next attempt instead of
//!   after D.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// A lease to hold.
#[derive(Clone, Debug)]
pub struct Election {
    /// Lease API in the controller's namespace.
    pub api: Api<Lease>,
    /// Lease name.
    pub name: String,
    /// This replica.
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
    /// The other holder's record as last read, and when it was first seen
    /// like that (by this replica's clock).
    observed: Arc<Mutex<Option<(String, Instant)>>>,
}

/// Why an attempt did not get the lease.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    /// The API server refused or failed the request.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// No answer within the attempt's deadline.
    #[error("no answer from the API server within {0:?}")]
    Timeout(Duration),
}

impl Election {
    /// An election for lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Election {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: Default::default(),
        }
    }

    /// Deadline of one attempt.
    fn attempt_deadline(&self) -> Duration {
        self.duration / 5
    }

    /// How long after sending its last successful renew the holder steps down.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// One attempt within its deadline (or `limit`, if sooner).
    async fn attempt(&self, limit: Duration) -> Result<bool, ElectionError> {
        let limit = limit.min(self.attempt_deadline());
        match tokio::time::timeout(limit, self.try_acquire()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(ElectionError::Timeout(limit)),
        }
    }

    /// Whether another holder's `spec` counts as expired, by this replica's
    /// clock: unchanged for its duration since first seen.
    fn expired_locally(&self, spec: &LeaseSpec) -> bool {
        if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
            return true; // released
        }
        let key = format!(
            "{:?}/{:?}/{:?}/{:?}",
            spec.holder_identity, spec.renew_time, spec.lease_duration_seconds, spec.lease_transitions
        );
        let limit = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(15).max(1) as u64);
        let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
        match observed.as_ref() {
            Some((k, since)) if *k == key => since.elapsed() >= limit,
            _ => {
                *observed = Some((key, Instant::now()));
                false
            }
        }
    }

    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt to take or renew the lease; `Ok(true)` if we hold it now.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                    spec: Some(self.spec(0, None)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
                if !ours && !self.expired_locally(&spec) {
                    return Ok(false);
                }
                let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!ours);
                let acquire = if ours { spec.acquire_time.clone() } else { None };
                lease.spec = Some(self.spec(transitions, acquire));
                // `replace` carries the resourceVersion we read: if another
                // replica wrote in between, this fails with 409.
                match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Gives the lease up if this replica holds it (no holder, as
    /// client-go's ReleaseOnCancel leaves it); `Ok(false)` when it did not.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the lease; returns when the winning
    /// attempt was sent (what [`Election::keep`] counts from).
    pub async fn acquire(&self) -> Instant {
        loop {
            let sent = Instant::now();
            match self.attempt(self.attempt_deadline()).await {
                Ok(true) => return sent,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.duration / 5).await;
        }
    }

    /// Renews until the lease is lost, or until it could not be renewed for
    /// [`Election::renew_deadline`] since the last success was sent
    /// (`last_ok`, from [`Election::acquire`]); then returns, and the caller
    /// must stop acting as leader at once.
    pub async fn keep(&self, mut last_ok: Instant) {
        let mut failing = false;
        loop {
            let deadline = last_ok + self.renew_deadline();
            let next = if failing { Instant::now() + self.duration / 5 } else { last_ok + self.duration / 3 };
            tokio::time::sleep_until(next.min(deadline).into()).await;
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(since_last_renew = ?last_ok.elapsed(), "could not renew the leader lease in time; stepping down");
                return;
            }
            match self.attempt(deadline - now).await {
                Ok(true) => {
                    last_ok = now;
                    failing = false;
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease");
                    failing = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn election() -> Election {
        // A client that is never used: these tests only exercise the clock.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        Election::new(client, "ns", "lease", "me", Duration::from_secs(15))
    }

    fn spec(holder: Option<&str>, renew_secs: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(1),
            renew_time: Some(MicroTime(Timestamp::from_second(renew_secs).unwrap())),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn expiry_is_judged_by_the_local_clock_not_the_timestamps() {
        let e = election();
        // A renew time far in the past (another node's clock, or an old
        // record) is not expired when first seen...
        assert!(!e.expired_locally(&spec(Some("other"), 1)));
        // ...only once unchanged for the lease duration here.
        std::thread::sleep(Duration::from_millis(1100));
        assert!(e.expired_locally(&spec(Some("other"), 1)));
        // A change (a renew) starts the count again.
        assert!(!e.expired_locally(&spec(Some("other"), 2)));
        // A released lease is free at once.
        assert!(e.expired_locally(&spec(None, 2)));
        assert!(e.expired_locally(&spec(Some(""), 2)));
    }

    #[tokio::test]
    async fn the_holder_steps_down_before_a_follower_can_take_over() {
        // Step-down (counted from the send of the last renew) comes before
        // the earliest local expiry at a follower (counted from its first
        // sight of that renew, which is later), a third of the duration apart.
        let e = election();
        assert!(e.renew_deadline() + e.duration / 3 <= e.duration);
        assert!(e.attempt_deadline() < e.renew_deadline());
    }
}
