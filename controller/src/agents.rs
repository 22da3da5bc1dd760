//! The node agents: where each node's agent listens (from the agent
//! Service's EndpointSlices) and a gRPC client per agent. Every call has a
//! timeout, so one slow or dead agent never stalls the others; at most a
//! few calls run at once per agent; and an agent that did not answer is
//! marked unreachable: pushes to it fail at once instead of each waiting out
//! the timeout, until a drift check (`GetGuardState`, always attempted)
//! finds it answering again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use janus_proto::v1::{self, janusd_client::JanusdClient};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Label EndpointSlices carry to name their Service.
pub const SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Agent calls fail with this.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No agent endpoint is published for the node.
    #[error("no janusd agent is known on node {0}")]
    NoAgent(String),
    /// The call failed or timed out.
    #[error("agent on node {node} ({addr}): {status}")]
    Call {
        /// Node.
        node: String,
        /// Address called.
        addr: String,
        /// gRPC status.
        status: Box<tonic::Status>,
    },
    /// The agent did not answer a recent call; not called again until a
    /// drift check reaches it.
    #[error("agent on node {node} ({addr}) unreachable for {for_secs} s; waiting for a drift check to reach it")]
    Unreachable {
        /// Node.
        node: String,
        /// Address.
        addr: String,
        /// Seconds since it was marked.
        for_secs: u64,
    },
}

/// node -> `https://ip:port`, from EndpointSlices of the agent Service.
pub fn addresses(slices: &[Arc<EndpointSlice>], tls: bool) -> BTreeMap<String, String> {
    let scheme = if tls { "https" } else { "http" };
    let mut out = BTreeMap::new();
    for s in slices {
        let port = s
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("grpc"))
            .or_else(|| s.ports.iter().flatten().next())
            .and_then(|p| p.port);
        let Some(port) = port else { continue };
        for e in s.endpoints.iter().flatten() {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let (Some(node), Some(addr)) = (e.node_name.clone(), e.addresses.first()) else { continue };
            let host = if addr.contains(':') {
                format!("[{addr}]")
            } else if addr == "localhost" || addr.ends_with(".localhost") {
                // RFC 6761: names under .localhost are the loopback host. The
                // API server refuses loopback IPs in EndpointSlices, so an
                // FQDN slice is how agents on loopback (tests, a one-node
                // lab) are published.
                "127.0.0.1".to_string()
            } else {
                addr.clone()
            };
            out.insert(node, format!("{scheme}://{host}:{port}"));
        }
    }
    out
}

/// gRPC clients to the agents, one channel per address.
#[derive(Clone, Debug)]
pub struct Agents {
    tls: Option<ClientTlsConfig>,
    timeout: Duration,
    channels: Arc<Mutex<BTreeMap<String, Channel>>>,
    /// Calls in flight per agent address, bounded.
    gates: Arc<Mutex<BTreeMap<String, Arc<tokio::sync::Semaphore>>>>,
    per_agent: usize,
    /// Addresses that did not answer, since when.
    down: Arc<Mutex<BTreeMap<String, Instant>>>,
}

/// Calls at once to one agent, at most.
pub const CALLS_PER_AGENT: usize = 8;

/// GetGuardState page size asked of the agents.
pub const STATE_PAGE: u32 = 100;

/// gRPC message size limit, both ways (as the agent's).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

impl Agents {
    /// Clients with `tls` (None: plaintext) and a per-call `timeout`.
    pub fn new(tls: Option<ClientTlsConfig>, timeout: Duration) -> Agents {
        Agents {
            tls,
            timeout,
            channels: Arc::default(),
            gates: Arc::default(),
            per_agent: CALLS_PER_AGENT,
            down: Arc::default(),
        }
    }

    /// Whether `addr` is marked unreachable, and since how long.
    pub fn unreachable_for(&self, addr: &str) -> Option<Duration> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).get(addr).map(Instant::elapsed)
    }

    /// Fails at once for an agent marked unreachable.
    fn check_up(&self, node: &str, addr: &str) -> Result<(), AgentError> {
        match self.unreachable_for(addr) {
            Some(d) => {
                metrics::counter!("janus_controller_push_skipped_total").increment(1);
                Err(AgentError::Unreachable { node: node.into(), addr: addr.into(), for_secs: d.as_secs() })
            }
            None => Ok(()),
        }
    }

    /// Runs `call` under the agent's concurrency bound and marks the agent
    /// up or down by its outcome: down when it did not answer (timeout,
    /// connection refused or reset), up on any answer.
    async fn call<T, F>(&self, addr: &str, call: F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let gate = self
            .gates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_agent)))
            .clone();
        let _permit = gate.acquire_owned().await.map_err(|_| tonic::Status::cancelled("shutting down"))?;
        // The channel's own timeout does not cover every stage (a TLS
        // handshake with a peer that accepted the connection and then went
        // silent was seen to hang for ever): bound the whole call here.
        let r = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer within {:?}", self.timeout))),
        };
        let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
        match &r {
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                ) =>
            {
                if !down.contains_key(addr) {
                    tracing::warn!(%addr, error = %s, "agent unreachable: pushes to it fail at once until a drift check reaches it");
                    down.insert(addr.to_string(), Instant::now());
                }
            }
            _ => {
                if down.remove(addr).is_some() {
                    tracing::info!(%addr, "agent reachable again");
                }
            }
        }
        r
    }

    /// Whether calls use TLS.
    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    fn client(&self, addr: &str) -> Result<JanusdClient<Channel>, tonic::Status> {
        let limits =
            |c: JanusdClient<Channel>| c.max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(limits(JanusdClient::new(ch.clone())));
        }
        let mut ep = Endpoint::from_shared(addr.to_string())
            .map_err(|e| tonic::Status::invalid_argument(format!("agent address {addr}: {e}")))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.clone()).map_err(|e| tonic::Status::internal(format!("TLS: {e}")))?;
        }
        let ch = ep.connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(limits(JanusdClient::new(ch)))
    }

    fn err(node: &str, addr: &str, status: tonic::Status) -> AgentError {
        AgentError::Call { node: node.to_string(), addr: addr.to_string(), status: Box::new(status) }
    }

    /// CreateGuard on `node`'s agent at `addr`.
    pub async fn create(
        &self,
        node: &str,
        addr: &str,
        req: v1::CreateGuardRequest,
    ) -> Result<v1::GuardStatus, AgentError> {
        self.check_up(node, addr)?;
        let start = Instant::now();
        let mut c = self.client(addr).map_err(|s| Self::err(node, addr, s))?;
        let r =
            self.call(addr, c.create_guard(req)).await.map(|r| r.into_inner()).map_err(|s| Self::err(node, addr, s));
        record("CreateGuard", start, r.is_ok());
        r
    }

    /// DestroyGuard on `node`'s agent.
    pub async fn destroy(&self, node: &str, addr: &str, req: v1::DestroyGuardRequest) -> Result<bool, AgentError> {
        self.check_up(node, addr)?;
        let start = Instant::now();
        let mut c = self.client(addr).map_err(|s| Self::err(node, addr, s))?;
        let r = self
            .call(addr, c.destroy_guard(req))
            .await
            .map(|r| r.into_inner().existed)
            .map_err(|s| Self::err(node, addr, s));
        record("DestroyGuard", start, r.is_ok());
        r
    }

    /// GetGuardState of `node`'s agent (drift repair's check).
    pub async fn state(&self, node: &str, addr: &str) -> Result<v1::GuardState, AgentError> {
        let start = Instant::now();
        let mut c = self.client(addr).map_err(|s| Self::err(node, addr, s))?;
        // Always attempted, marked or not: this is what finds an
        // unreachable agent back. Paged (an agent answering 0.1-style, all
        // at once, sends no token and ends the loop).
        let mut all = v1::GuardState::default();
        let mut token = String::new();
        let r = loop {
            let req = v1::GetGuardStateRequest { page_size: STATE_PAGE, page_token: token.clone() };
            match self.call(addr, c.get_guard_state(req)).await {
                Ok(page) => {
                    let page = page.into_inner();
                    all.node = page.node;
                    all.guards.extend(page.guards);
                    if page.next_page_token.is_empty() || page.next_page_token == token {
                        break Ok(all);
                    }
                    token = page.next_page_token;
                }
                Err(s) => break Err(Self::err(node, addr, s)),
            }
        };
        record("GetGuardState", start, r.is_ok());
        r
    }
}

fn record(method: &'static str, start: Instant, ok: bool) {
    metrics::histogram!("janus_controller_push_seconds", "method" => method).record(start.elapsed().as_secs_f64());
    if !ok {
        metrics::counter!("janus_controller_push_errors_total", "method" => method).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_from_slices() {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a", "labels": {SERVICE_LABEL: "janusd"}},
            "addressType": "IPv4",
            "ports": [{"name": "metrics", "port": 9441}, {"name": "grpc", "port": 9440}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "nodeName": "n2", "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]}
            ]
        }))
        .unwrap();
        let a = addresses(&[Arc::new(slice)], true);
        assert_eq!(a.into_iter().collect::<Vec<_>>(), [("n1".to_string(), "https://10.0.0.1:9440".to_string())]);
        let fqdn: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b"}, "addressType": "FQDN", "ports": [{"port": 1}],
            "endpoints": [{"addresses": ["node-a.localhost"], "nodeName": "n3"}]
        }))
        .unwrap();
        assert_eq!(addresses(&[Arc::new(fqdn)], false)["n3"], "http://127.0.0.1:1");
    }
}
