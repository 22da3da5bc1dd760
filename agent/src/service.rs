//! The `janus.v1.Janusd` gRPC service over the [`Supervisor`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use janus_engine::audit::AuditRecord;
use janus_proto::v1::{self, janusd_server::Janusd};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use janus_api::Release;

use crate::supervisor::{Supervisor, SupervisorError};

/// Largest GetGuardState page: 500 entries with full specs stay far below
/// [`MAX_MESSAGE`].
pub const MAX_PAGE: u32 = 500;

/// gRPC message size limit, both ways, set explicitly on both sides (tonic's
/// default is 4 MiB for decoding and unlimited for encoding).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The service; cheap to clone.
#[derive(Clone, Debug)]
pub struct Service {
    sup: Arc<Supervisor>,
    watch: Arc<Watchers>,
}

impl Service {
    /// Serves `sup`, with at most `max_watch_streams` WatchEvents streams
    /// open at once.
    pub fn new(sup: Arc<Supervisor>, max_watch_streams: usize) -> Service {
        let watch = Arc::new(Watchers::start(&sup, max_watch_streams));
        Service { sup, watch }
    }
}

/// Records buffered for WatchEvents streams, shared by all of them: a stream
/// whose reader falls further behind loses the oldest (counted in
/// `janus_agent_watch_dropped_total`); enforcement never waits for it.
pub const WATCH_BUFFER: usize = 4096;

/// The WatchEvents fan-out: one engine subscription, one bridge thread, a
/// broadcast buffer of [`WATCH_BUFFER`] records shared by every stream, and
/// a cap on open streams. (Before: an OS thread and two buffers per stream,
/// with no limit.)
#[derive(Debug)]
struct Watchers {
    tx: tokio::sync::broadcast::Sender<Arc<AuditRecord>>,
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Watchers {
    fn start(sup: &Supervisor, max: usize) -> Watchers {
        let (tx, _) = tokio::sync::broadcast::channel(WATCH_BUFFER);
        let records = sup.engine().subscribe(WATCH_BUFFER);
        let bridge = tx.clone();
        // Ends when the engine stops (its sender side goes).
        let dropped = metrics::counter!("janus_agent_watch_dropped_total");
        let spawned = std::thread::Builder::new().name("janus-watch-events".into()).spawn(move || {
            for r in records {
                // A full buffer means the slowest open stream has not taken
                // its oldest record yet: this send overwrites it. (Counted
                // here, where it happens: a stream learns of it only when
                // its reader reads again.) No stream open is not a loss.
                if bridge.len() >= WATCH_BUFFER {
                    dropped.increment(1);
                }
                let _ = bridge.send(r);
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the WatchEvents bridge thread; streams will stay empty");
        }
        Watchers { tx, permits: Arc::new(tokio::sync::Semaphore::new(max)), max }
    }
}

/// Held by an open stream: its place among the allowed streams.
struct StreamSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl StreamSlot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit) -> StreamSlot {
        metrics::gauge!("janus_agent_watch_streams").increment(1.0);
        StreamSlot(permit)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        metrics::gauge!("janus_agent_watch_streams").decrement(1.0);
    }
}

fn to_status(e: SupervisorError) -> Status {
    match e {
        SupervisorError::Invalid(f) => Status::invalid_argument(f.to_string()),
        SupervisorError::State(s) => {
            Status::unavailable(format!("the agent cannot save its state, nothing changed: {s}"))
        }
    }
}

/// Runs blocking supervisor work off the async runtime and records metrics.
async fn blocking<T: Send + 'static>(
    method: &'static str,
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<Response<T>, Status> {
    let start = Instant::now();
    let result = tokio::task::spawn_blocking(f).await.map_err(|e| Status::internal(format!("worker failed: {e}")))?;
    let code = match &result {
        Ok(_) => "OK".to_string(),
        Err(s) => format!("{:?}", s.code()),
    };
    metrics::counter!("janus_agent_requests_total", "method" => method, "code" => code).increment(1);
    metrics::histogram!("janus_agent_request_seconds", "method" => method).record(start.elapsed().as_secs_f64());
    result.map(Response::new)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::AuditEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Janusd for Service {
    async fn create_guard(&self, req: Request<v1::CreateGuardRequest>) -> Result<Response<v1::GuardStatus>, Status> {
        let sup = self.sup.clone();
        let req = req.into_inner();
        blocking("CreateGuard", move || sup.create(&req).map_err(to_status)).await
    }

    async fn destroy_guard(
        &self,
        req: Request<v1::DestroyGuardRequest>,
    ) -> Result<Response<v1::DestroyGuardResponse>, Status> {
        let sup = self.sup.clone();
        let req = req.into_inner();
        blocking("DestroyGuard", move || {
            let r = Release::try_from(&req).map_err(|e| Status::invalid_argument(e.to_string()))?;
            let existed = sup.destroy(&r.guard, &r.pod_uid).map_err(to_status)?;
            Ok(v1::DestroyGuardResponse { existed })
        })
        .await
    }

    async fn get_guard_state(
        &self,
        req: Request<v1::GetGuardStateRequest>,
    ) -> Result<Response<v1::GuardState>, Status> {
        let sup = self.sup.clone();
        let req = req.into_inner();
        if req.page_size > MAX_PAGE {
            return Err(Status::invalid_argument(format!("page_size: at most {MAX_PAGE} (got {})", req.page_size)));
        }
        blocking("GetGuardState", move || Ok(sup.state_page(req.page_size, &req.page_token))).await
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(&self, req: Request<v1::WatchEventsRequest>) -> Result<Response<EventStream>, Status> {
        let filter = req.into_inner();
        if !matches!(filter.decision.as_str(), "" | "allow" | "deny" | "would-deny") {
            return Err(Status::invalid_argument(format!(
                "decision: must be allow, deny or would-deny, got {:?}",
                filter.decision
            )));
        }
        let permit = self.watch.permits.clone().try_acquire_owned().map_err(|_| {
            metrics::counter!("janus_agent_watch_refused_total").increment(1);
            Status::resource_exhausted(format!(
                "at most {} WatchEvents streams at once (janusd --max-watch-streams); close one and retry",
                self.watch.max
            ))
        })?;
        let slot = StreamSlot::new(permit);
        let stream = BroadcastStream::new(self.watch.tx.subscribe()).filter_map(move |r| {
            let _held = &slot; // the stream's place, given back when the client goes
            match r {
                Ok(r) => {
                    let pod = format!("{}/{}", r.namespace, r.pod);
                    let skip = (!filter.guard.is_empty() && filter.guard != r.guard)
                        || (!filter.pod.is_empty() && filter.pod != pod)
                        || (!filter.decision.is_empty() && filter.decision != r.decision);
                    (!skip).then(|| Ok(event_to_wire(&r)))
                }
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    // Already counted by the bridge when they were overwritten.
                    tracing::debug!(lost = n, "a WatchEvents reader fell behind");
                    None
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Audit record -> wire event.
fn event_to_wire(r: &janus_engine::audit::AuditRecord) -> v1::AuditEvent {
    v1::AuditEvent {
        time: r.time.clone(),
        guard: r.guard.clone(),
        namespace: r.namespace.clone(),
        pod: r.pod.clone(),
        container: r.container.clone(),
        node: r.node.clone(),
        pid: r.pid,
        process: r.process.clone().unwrap_or_default(),
        executable: r.executable.clone().unwrap_or_default(),
        uid: r.uid,
        path: r.path.clone(),
        event: r.event.clone(),
        decision: r.decision.clone(),
        mode: r.mode.clone(),
        rule: r.rule.clone().unwrap_or_default(),
        tags: r.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}
