//! streamfabric's sidecar: beside an application, what the Kinesis Producer Library does
//! (batching, aggregation, retries, per-record answers) behind a local endpoint any AWS SDK
//! can use, and what the Kinesis Client Library does (leases, reading shards in order,
//! de-aggregation, checkpoints) with batches delivered to the application over HTTP.

mod admin;
pub mod broker;
pub mod cli;
pub mod consumer;
pub mod metrics;
pub mod producer;
pub mod server;
pub mod shards;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use consumer::ConsumerSettings;
pub use producer::ProducerSettings;
/// The KPL's aggregated record format (shared with the load generator's verification).
pub use streamfabric_api::aggregation;

#[derive(Debug, Clone)]
pub struct SidecarSettings {
    /// The application's endpoint (loopback: it is the pod's own).
    pub listen: SocketAddr,
    /// The brokers' Kinesis API (a DataStream's client Service).
    pub broker_endpoint: String,
    /// Bound on one call to the brokers.
    pub broker_timeout: Duration,
    /// The access key the brokers' calls are signed with (SigV4), if they require one.
    pub credentials: Option<streamfabric_api::sigv4::Signer>,
    pub producer: ProducerSettings,
    /// The consumer role, for one application and stream (off when None).
    pub consumer: Option<ConsumerSettings>,
    /// Where `/metrics` and `/healthz` are served (off when None).
    pub admin_listen: Option<SocketAddr>,
}

/// A sidecar serving on its address.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub metrics: Arc<metrics::Metrics>,
    pub producer: Arc<producer::Producer>,
    pub consumer: Option<consumer::Consumer>,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop accepting connections and wait, up to `grace`, for the calls in flight to be
    /// answered and every buffered record sent (retried or refused, also fire-and-forget
    /// ones); false if some were cut short.
    /// The consumer, if it runs, finishes the batches it is delivering, checkpoints and
    /// releases its leases.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let _ = self.stop.send(true);
        let consumer = async {
            match self.consumer {
                Some(c) => c.shutdown(grace).await,
                None => true,
            }
        };
        let producer = self.producer.clone();
        let server = async {
            let served = tokio::time::timeout(grace, self.server).await.is_ok();
            served && producer.drain(grace).await
        };
        let (consumed, served) = tokio::join!(consumer, server);
        consumed && served
    }
}

pub async fn start(settings: SidecarSettings) -> std::io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    let metrics = Arc::new(metrics::Metrics::new());
    let admin_addr = match settings.admin_listen {
        Some(at) => Some(admin::serve(at, metrics.clone()).await?),
        None => None,
    };
    let brokers = broker::Brokers::new(&settings.broker_endpoint, settings.broker_timeout)
        .signed_by(settings.credentials.clone());
    let consumer = match settings.consumer {
        Some(c) => Some(consumer::Consumer::start(brokers.clone(), &settings.broker_endpoint, c, metrics.clone())?),
        None => None,
    };
    let producer = producer::Producer::new(brokers, settings.producer, metrics.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let pull = consumer.as_ref().and_then(|c| c.pull.clone());
    let server = tokio::spawn(serve(listener, producer.clone(), pull, stopped));
    Ok(Running { addr, admin_addr, metrics, producer, consumer, stop, server })
}

async fn serve(
    listener: tokio::net::TcpListener,
    producer: Arc<producer::Producer>,
    pull: Option<Arc<consumer::pull::PullQueue>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Ok(_) = stop.wait_for(|stop| *stop) => break,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (producer, pull) = (producer.clone(), pull.clone());
        let service = service_fn(move |req| {
            let (producer, pull) = (producer.clone(), pull.clone());
            async move { Ok::<Response, Infallible>(server::handle(producer, pull.as_deref(), req).await) }
        });
        let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    connections.shutdown().await;
}

type Response = http::Response<Full<Bytes>>;
