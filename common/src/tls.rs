//! mTLS settings shared by `janusd serve` and `janusctl`.

use std::path::PathBuf;

use anyhow::{Context, bail};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// TLS flags. Either all three files, or `--insecure`.
#[derive(Clone, Debug, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate of this side.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of this side.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle the peer's certificate must be signed by.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Plaintext, no authentication. Only for tests and local experiments.
    #[arg(long)]
    pub insecure: bool,
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("--{what} {}", path.display()))
}

/// PEM contents of certificate, key and CA.
struct Pem {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl TlsArgs {
    fn files(&self) -> anyhow::Result<Option<Pem>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca, self.insecure) {
            (Some(c), Some(k), Some(a), false) => {
                Ok(Some(Pem { cert: read(c, "tls-cert")?, key: read(k, "tls-key")?, ca: read(a, "tls-ca")? }))
            }
            (None, None, None, true) => Ok(None),
            (_, _, _, true) => bail!("--insecure cannot be combined with --tls-cert/--tls-key/--tls-ca"),
            _ => bail!("give --tls-cert, --tls-key and --tls-ca (mutual TLS), or --insecure for plaintext"),
        }
    }

    /// Server config: clients must present a certificate signed by the CA.
    pub fn server(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        Ok(self.files()?.map(|p| {
            ServerTlsConfig::new()
                .identity(Identity::from_pem(p.cert, p.key))
                .client_ca_root(Certificate::from_pem(p.ca))
        }))
    }

    /// Client config presenting our certificate, trusting the CA.
    pub fn client(&self, domain: &str) -> anyhow::Result<Option<ClientTlsConfig>> {
        Ok(self.files()?.map(|p| {
            ClientTlsConfig::new()
                .domain_name(domain)
                .identity(Identity::from_pem(p.cert, p.key))
                .ca_certificate(Certificate::from_pem(p.ca))
        }))
    }
}
