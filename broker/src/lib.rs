//! streamfabric's broker: the Kinesis Data Streams API on durable shard logs.

pub mod archive;
pub mod broker;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod http;
pub mod leases;
pub mod log;
pub mod metrics;
mod ops;
pub mod ownership;
pub mod stats;
pub mod throttle;
pub mod tier;
pub mod tiered;
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
}

/// Open the data directory and start serving (on the current tokio runtime).
pub async fn start(config: BrokerConfig) -> std::io::Result<Running> {
    let api = TcpListener::bind(config.listen).await?;
    let admin = TcpListener::bind(config.admin_listen).await?;
    let broker = Broker::open(config).await?;
    broker.spawn_background();
    let running = Running { api_addr: api.local_addr()?, admin_addr: admin.local_addr()?, broker: broker.clone() };
    let b = broker.clone();
    tokio::spawn(http::serve(api, move |req| http::handle_api(b.clone(), req)));
    tokio::spawn(http::serve(admin, move |req| http::handle_admin(broker.clone(), req)));
    Ok(running)
}
