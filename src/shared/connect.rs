//! Connecting to NATS with what a deployment uses: a URL (`nats://`, or `tls://` for TLS),
//! user and password, an nkey seed or a `.creds` file, and the certificates TLS needs.

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the NATS server (`--nats` and the flags beside it).
#[derive(Clone, Debug, Args)]
pub struct NatsArgs {
    /// The NATS server with JetStream (`nats-server -js`) whose shared queue jobs go to
    /// (`serve`: instead of running here; `worker`: taken from): nats://host:4222, or
    /// tls://host:4222 for TLS. Several, comma-separated, for a cluster. Queued jobs survive
    /// restarts of servers, workers and the NATS server.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// A credentials file (`.creds`: a user JWT and its nkey seed) for the NATS server.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_creds: Option<PathBuf>,
    /// The NATS user; the password comes from SWAPGRAPH_NATS_PASSWORD, so it stays out of
    /// process listings.
    #[arg(long, value_name = "USER", requires = "nats")]
    pub nats_user: Option<String>,
    /// A file holding an nkey seed (SU...) to sign in with.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_nkey: Option<PathBuf>,
    /// The certificate authority (PEM) that signed the NATS server's TLS certificate, when it is
    /// not in the system's store; implies TLS.
    #[arg(long, value_name = "FILE", requires = "nats")]
    pub nats_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients:
    /// --nats-cert cert.pem --nats-key key.pem.
    #[arg(long, value_name = "FILE", requires = "nats_key")]
    pub nats_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", requires = "nats_cert")]
    pub nats_key: Option<PathBuf>,
    /// Seconds a job's worker may stay silent before the job goes to another worker; set when
    /// the queue is first created (workers report every third of it while a job runs).
    #[arg(long, default_value_t = 30, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub ack_wait: u64,
}

/// The environment variable the NATS password is read from.
pub const PASSWORD_VARIABLE: &str = "SWAPGRAPH_NATS_PASSWORD";

/// How long a first connection may take before it is reported as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl NatsArgs {
    /// Connects to `url` with the credentials and certificates given.
    ///
    /// # Errors
    /// A message naming the flag or the server and the reason, for the user.
    pub async fn connect(&self, url: &str) -> Result<async_nats::Client, String> {
        let mut options = async_nats::ConnectOptions::new()
            .name(concat!("swapgraph ", env!("CARGO_PKG_VERSION")))
            .connection_timeout(CONNECT_TIMEOUT)
            // A restarted NATS server must not stop a worker or a server.
            .max_reconnects(None);
        let signed_in_ways = [
            self.nats_creds.is_some(),
            self.nats_user.is_some(),
            self.nats_nkey.is_some(),
        ];
        if signed_in_ways.iter().filter(|given| **given).count() > 1 {
            return Err("give one of --nats-creds, --nats-user and --nats-nkey".into());
        }
        if let Some(creds) = &self.nats_creds {
            options = options
                .credentials_file(creds)
                .await
                .map_err(|e| format!("--nats-creds {}: {e}", creds.display()))?;
        }
        if let Some(user) = &self.nats_user {
            let password = std::env::var(PASSWORD_VARIABLE)
                .map_err(|_| format!("--nats-user {user}: set the password in {PASSWORD_VARIABLE}"))?;
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(seed_file) = &self.nats_nkey {
            let seed =
                std::fs::read_to_string(seed_file).map_err(|e| format!("--nats-nkey {}: {e}", seed_file.display()))?;
            options = options.nkey(seed.trim().to_string());
        }
        if let Some(ca) = &self.nats_ca {
            if !ca.is_file() {
                return Err(format!("--nats-ca {}: no such file", ca.display()));
            }
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.nats_cert, &self.nats_key) {
            for (flag, file) in [("--nats-cert", cert), ("--nats-key", key)] {
                if !file.is_file() {
                    return Err(format!("{flag} {}: no such file", file.display()));
                }
            }
            options = options
                .add_client_certificate(cert.clone(), key.clone())
                .require_tls(true);
        }
        // The first connection fails at once with the reason (refused, unauthorized); once
        // connected, the client reconnects on its own for as long as the process lives.
        options.connect(url).await.map_err(|e| format!("--nats {url}: {e}"))
    }
}
