//! Leader election with a coordination.k8s.io Lease, so that two replicas
//! are safe: only the holder reconciles. The holder renews every
//! `duration / 3`; a replica takes over when the lease has not been renewed
//! for `duration`. Losing the lease ends the process (the Deployment
//! restarts it as a follower), which is simpler than stopping mid-flight.
//! A leader that stops on SIGTERM (a rollout, a deleted pod) releases the
//! lease first, so a follower takes over at its next attempt instead of
//! after the whole duration.

use std::time::Duration;

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
}

impl Election {
    /// An election for lease `name` in `namespace`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Election {
        Election { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into(), duration }
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
                let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
                let expired = released
                    || spec.renew_time.as_ref().is_none_or(|t| {
                        let age = Timestamp::now().duration_since(t.0);
                        let limit = spec.lease_duration_seconds.unwrap_or(15) as i64;
                        age.as_secs() >= limit
                    });
                if !ours && !expired {
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

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(self.duration / 5).await;
        }
    }

    /// Renews forever; returns when the lease is lost or cannot be renewed
    /// within its duration.
    pub async fn keep(&self) {
        let mut last_ok = std::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = std::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "renewing the leader lease");
                    if last_ok.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}
