//! What a guard says about itself: its status (`observablePods`,
//! `guardedPods`, the `Ready` condition), patched only when it changed, and
//! Kubernetes Events.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use crate::crd::{JanusGuard, JanusGuardStatus};
use crate::diff::Summary;

/// Patches `g`'s status to say `s`, unless it already does.
pub async fn write_status(client: &Client, g: &JanusGuard, s: &Summary) -> Result<(), kube::Error> {
    let Some(new) = next_status(g, s, Time(k8s_openapi::jiff::Timestamp::now())) else { return Ok(()) };
    let api: Api<JanusGuard> = Api::namespaced(client.clone(), &g.namespace().unwrap_or_default());
    api.patch_status(&g.name_any(), &PatchParams::default(), &Patch::Merge(serde_json::json!({ "status": new })))
        .await?;
    Ok(())
}

/// The status that says `s` for `g`'s generation, or None when `g`'s status
/// already says it. The Ready condition's transition time stays while its
/// status does, else it is `now`.
pub fn next_status(g: &JanusGuard, s: &Summary, now: Time) -> Option<JanusGuardStatus> {
    let old = g.status.clone().unwrap_or_default();
    let old_ready = old.conditions.iter().find(|c| c.type_ == "Ready");
    let status = if s.ready { "True" } else { "False" };
    let unchanged = old.observed_generation == g.metadata.generation
        && old.observable_pods == s.observable
        && old.guarded_pods == s.guarded
        && old_ready.is_some_and(|c| c.status == status && c.reason == s.reason && c.message == s.message);
    if unchanged {
        return None;
    }
    let transition = match old_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now,
    };
    Some(JanusGuardStatus {
        observed_generation: g.metadata.generation,
        observable_pods: s.observable,
        guarded_pods: s.guarded,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: status.into(),
            reason: s.reason.into(),
            message: s.message.clone(),
            last_transition_time: transition,
            observed_generation: g.metadata.generation,
        }],
    })
}

/// Records an Event on `g` (action `Push`; the note is cut to 1000
/// characters). A failure is only logged.
pub async fn publish(recorder: &Recorder, g: &JanusGuard, type_: EventType, reason: &str, note: &str) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Push".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &g.object_ref(&())).await {
        tracing::debug!(error = %e, "cannot publish event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(generation: i64) -> JanusGuard {
        serde_norway::from_str(&format!(
            "apiVersion: januscontroller.clustergarage.io/v1alpha1\nkind: JanusGuard\nmetadata: {{name: g, namespace: web, generation: {generation}}}\nspec:\n  selector: {{matchLabels: {{run: nginx}}}}\n  subjects:\n  - deny: [/etc/x]\n",
        ))
        .unwrap()
    }

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn summary(ready: bool, guarded: i32, message: &str) -> Summary {
        Summary {
            observable: 2,
            guarded,
            ready,
            reason: if ready { "AllPodsGuarded" } else { "PodsNotGuarded" },
            message: message.into(),
            retry_soon: !ready,
        }
    }

    #[test]
    fn status_is_written_only_when_it_changes() {
        let mut g = guard(3);
        let not_ready = summary(false, 1, "1 of 2 guarded; not guarded: b on n (not pushed)");
        let first = next_status(&g, &not_ready, time(100)).expect("no status yet");
        assert_eq!((first.observed_generation, first.observable_pods, first.guarded_pods), (Some(3), 2, 1));
        let c = &first.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str(), c.reason.as_str()), ("Ready", "False", "PodsNotGuarded"));
        assert_eq!((c.message.as_str(), &c.last_transition_time), (not_ready.message.as_str(), &time(100)));
        g.status = Some(first);
        assert_eq!(next_status(&g, &not_ready, time(200)), None, "unchanged");

        // Another message, same condition status: the transition time stays.
        let other = summary(false, 0, "0 of 2 guarded; not guarded: a on n (not pushed); b on n (not pushed)");
        let second = next_status(&g, &other, time(200)).expect("message changed");
        assert_eq!(second.conditions[0].last_transition_time, time(100));
        assert_eq!(second.guarded_pods, 0);
        g.status = Some(second);

        // Ready: a transition.
        let ready = summary(true, 2, "2 of 2 selected running pods guarded");
        let third = next_status(&g, &ready, time(300)).expect("became ready");
        assert_eq!(third.conditions[0].status, "True");
        assert_eq!(third.conditions[0].last_transition_time, time(300));
        g.status = Some(third);
        assert_eq!(next_status(&g, &ready, time(400)), None);

        // A new generation is written even if nothing else changed.
        g.metadata.generation = Some(4);
        let fourth = next_status(&g, &ready, time(500)).expect("new generation");
        assert_eq!((fourth.observed_generation, fourth.conditions[0].observed_generation), (Some(4), Some(4)));
        assert_eq!(fourth.conditions[0].last_transition_time, time(300));
    }
}
