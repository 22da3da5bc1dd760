//! The `janus.v1.Janusd` gRPC service over the [`Supervisor`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use janus_proto::v1::{self, janusd_server::Janusd};
use tokio_stream::Stream;
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
}

impl Service {
    /// Serves `sup`.
    pub fn new(sup: Arc<Supervisor>) -> Service {
        Service { sup }
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
        let records = self.sup.engine().subscribe(4096);
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        // Bridge the engine's channel to the stream; ends when the client goes.
        std::thread::Builder::new()
            .name("janus-watch-events".into())
            .spawn(move || {
                loop {
                    match records.recv_timeout(Duration::from_millis(500)) {
                        Ok(r) => {
                            let pod = format!("{}/{}", r.namespace, r.pod);
                            if (!filter.guard.is_empty() && filter.guard != r.guard)
                                || (!filter.pod.is_empty() && filter.pod != pod)
                                || (!filter.decision.is_empty() && filter.decision != r.decision)
                            {
                                continue;
                            }
                            if tx.blocking_send(Ok(event_to_wire(&r))).is_err() {
                                return;
                            }
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) if tx.is_closed() => return,
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })
            .map_err(|e| Status::internal(format!("spawn stream thread: {e}")))?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
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
