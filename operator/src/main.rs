use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use streamfabric_operator::{admin, controller, metrics::Metrics};

/// streamfabric's operator: reconciles DataStream resources into broker StatefulSets.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_METRICS_LISTEN", default_value = "127.0.0.1:8080")]
    metrics_listen: SocketAddr,

    /// Where a DataStream's brokers serve the Kinesis API; `{name}` and `{namespace}` are
    /// replaced (the client Service by default).
    #[arg(long, env = "STREAMFABRIC_OPERATOR_BROKER_ENDPOINT", default_value = streamfabric_operator::kinesis::DEFAULT_ENDPOINT_TEMPLATE)]
    broker_endpoint_template: String,

    /// Where their admin port (`/stats`, for write rates and the autoscaler) answers.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_BROKER_ADMIN", default_value = streamfabric_operator::kinesis::DEFAULT_ADMIN_TEMPLATE)]
    broker_admin_template: String,
}

const CRD_NAME: &str = "datastreams.streamfabric.io";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STREAMFABRIC_LOG").unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let client = match Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamfabric-operator: no Kubernetes API to talk to ({e}); set KUBECONFIG or run in a pod");
            return std::process::ExitCode::FAILURE;
        }
    };
    match Api::<CustomResourceDefinition>::all(client.clone()).get_opt(CRD_NAME).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            eprintln!(
                "streamfabric-operator: the CRD {CRD_NAME} is not installed. Install it with \
                 `kubectl apply -f crds/datastream.yaml` or the Helm chart charts/streamfabric."
            );
            return std::process::ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("streamfabric-operator: cannot check for the CRD {CRD_NAME}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    let metrics = Arc::new(Metrics::new());
    let listener = match tokio::net::TcpListener::bind(args.metrics_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("streamfabric-operator: cannot listen on {}: {e}", args.metrics_listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::spawn(admin::serve(listener, metrics.clone()));
    tracing::info!(metrics = %args.metrics_listen, "streamfabric operator running");
    let endpoints =
        controller::BrokerEndpoints { api: args.broker_endpoint_template, admin: args.broker_admin_template };
    controller::run(client, metrics, endpoints).await;
    std::process::ExitCode::SUCCESS
}
