//! streamfabric's broker: the Kinesis Data Streams API on durable shard logs.

pub mod access;
pub mod archive;
pub mod auth;
pub mod broker;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod deletion;
pub mod dynamo;
pub mod fabric;
pub mod fanout;
pub mod http;
pub mod leases;
pub mod log;
pub mod metrics;
mod ops;
pub mod ownership;
pub mod reload;
pub mod shard;
pub mod stats;
pub mod throttle;
pub mod tier;
pub mod tiered;
pub mod tls;
pub mod tokens;
pub mod write_ahead;

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub use broker::Broker;
pub use config::BrokerConfig;

/// A broker serving on its API and admin addresses.
pub struct Running {
    pub broker: Arc<Broker>,
    pub api_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The API over HTTPS, with `--tls-listen`.
    pub tls_addr: Option<SocketAddr>,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

/// Open the data directory and start serving (on the current tokio runtime).
pub async fn start(config: BrokerConfig) -> std::io::Result<Running> {
    let api = TcpListener::bind(config.listen).await?;
    let admin = TcpListener::bind(config.admin_listen).await?;
    let tls = match config.tls_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let broker = Broker::open(config).await?;
    broker.spawn_background();
    fabric::spawn(&broker);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (api_addr, admin_addr) = (api.local_addr()?, admin.local_addr()?);
    let api_handler = {
        let broker = broker.clone();
        move |req| http::handle_api(broker.clone(), req)
    };
    let admin_handler = {
        let broker = broker.clone();
        move |req| http::handle_admin(broker.clone(), req)
    };
    let mut servers = vec![
        tokio::spawn(http::serve(api, None, api_handler.clone(), stopped.clone())),
        tokio::spawn(http::serve(admin, None, admin_handler, stopped.clone())),
    ];
    let tls_addr = match tls {
        Some(listener) => {
            let config = &broker.config;
            let (cert, key) = config.tls_cert.as_deref().zip(config.tls_key.as_deref()).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "--tls-listen needs --tls-cert and --tls-key")
            })?;
            let certs = Arc::new(tls::CertFiles::load(cert, key, &broker.metrics.registry)?);
            reload::every_few_seconds(&certs, tls::CertFiles::reload_if_changed);
            let addr = listener.local_addr()?;
            tracing::info!(%addr, cert = %cert.display(), "Kinesis API over HTTPS");
            servers.push(tokio::spawn(http::serve(listener, Some(certs.acceptor()), api_handler, stopped)));
            Some(addr)
        }
        None => None,
    };
    Ok(Running { api_addr, admin_addr, tls_addr, broker, stop, servers })
}

impl Running {
    /// Stop accepting connections and wait, up to `grace`, for the requests in flight to be
    /// answered; then up to `grace` again for sealed segments to reach the object store
    /// (acknowledged records are durable already; those uploads resume at the next start).
    /// False when something was cut short.
    pub async fn shutdown(self, grace: std::time::Duration) -> bool {
        let _ = self.stop.send(true);
        // Subscriptions would hold their connections for minutes: their consumers go on elsewhere.
        self.broker.subscriptions.close();
        let answered = tokio::time::timeout(grace, futures::future::join_all(self.servers)).await.is_ok();
        if !answered {
            tracing::warn!("requests still in flight after {grace:?}; closing their connections");
        }
        // A cluster member hands its shards on (sealed and uploaded) and leaves.
        let left = tokio::time::timeout(grace, fabric::leave(&self.broker)).await.is_ok();
        if !left {
            tracing::warn!("shards not all handed on after {grace:?}; peers take them after the member timeout");
        }
        // A deletion is finished at the next start if this one is cut short.
        if tokio::time::timeout(grace, self.broker.deletions.stop()).await.is_err() {
            tracing::warn!("a stream deletion still running after {grace:?}; the next start finishes it");
        }
        let uploaded = tokio::time::timeout(grace, self.broker.archive.flush()).await.is_ok();
        if !uploaded {
            tracing::warn!("shutting down with segment uploads still queued; they resume at the next start");
        }
        // Write-ahead objects those uploads (or a deleted stream) made redundant: none is left
        // behind by a broker that does not come back.
        if uploaded && let Ok(Err(e)) = tokio::time::timeout(grace, self.broker.clean_write_ahead()).await {
            tracing::warn!("cleaning write-ahead objects at shutdown: {e}");
        }
        answered && left && uploaded
    }
}
