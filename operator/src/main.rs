use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use streamfabric_operator::{admin, controller, leader, metrics::Metrics, webhook};

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

    /// Where one broker pod's admin port answers (brokers sharing a stream each report the
    /// shards they serve), over `{pod}`, `{headless}` and `{namespace}`.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_BROKER_POD_ADMIN", default_value = streamfabric_operator::kinesis::DEFAULT_POD_ADMIN_TEMPLATE)]
    broker_pod_admin_template: String,

    /// Elect one leader among the operator's replicas through a Lease (false: reconcile
    /// right away, for a single replica).
    #[arg(long, env = "STREAMFABRIC_OPERATOR_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the Lease (default: this pod's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,

    /// This replica's name in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME")]
    leader_election_identity: Option<String>,

    /// Serve the sidecar injection webhook (HTTPS, path /mutate-pods) here; unset: not served.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_WEBHOOK_LISTEN")]
    webhook_listen: Option<SocketAddr>,

    /// Who writes the webhook's certificate Secret: `managed` (the operator: its own CA,
    /// renewed, trusted by the webhook configuration) or `external` (cert-manager, which
    /// also injects the CA bundle).
    #[arg(long, env = "STREAMFABRIC_OPERATOR_WEBHOOK_CERTS", default_value = "managed", value_parser = ["managed", "external"])]
    webhook_certs: String,

    /// The Secret (in the operator's namespace) with the webhook's certificate.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_WEBHOOK_SECRET", default_value = "streamfabric-webhook-tls")]
    webhook_secret: String,

    /// The Service the API server calls the webhook through (the certificate's names).
    #[arg(long, env = "STREAMFABRIC_OPERATOR_WEBHOOK_SERVICE", default_value = "streamfabric-webhook")]
    webhook_service: String,

    /// The MutatingWebhookConfiguration whose CA bundle a managed certificate keeps.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_WEBHOOK_CONFIGURATION", default_value = "streamfabric-sidecar-injector")]
    webhook_configuration: String,

    /// How long the webhook certificates the operator issues are valid (renewed with a
    /// third left).
    #[arg(long, env = "STREAMFABRIC_OPERATOR_WEBHOOK_CERT_VALIDITY", default_value = "2160h", value_parser = streamfabric_api::settings::parse_duration)]
    webhook_cert_validity: std::time::Duration,

    /// The Secret (in the operator's namespace, created when absent) holding the operator's
    /// own key, from which it derives its access key at the brokers of each DataStream
    /// with spec.authentication.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_KEY_SECRET", default_value = "streamfabric-operator-key")]
    operator_key_secret: String,

    /// The image of the sidecar the webhook adds.
    #[arg(long, env = "STREAMFABRIC_OPERATOR_SIDECAR_IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    sidecar_image: String,
}

const DEFAULT_SIDECAR_IMAGE: &str = concat!("ghcr.io/streamfabric/sidecar:", env!("CARGO_PKG_VERSION"));

const LEASE_NAME: &str = "streamfabric-operator";

/// The operator's own key: created (random) when its Secret is absent, then read by name.
/// None (logged) when it can be neither: DataStreams with authentication then wait.
async fn operator_key(client: &Client, namespace: &str, name: &str) -> Option<Vec<u8>> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::PostParams;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let key: [u8; 32] = rand::random();
    let secret = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        type_: Some("Opaque".into()),
        data: Some([("key".to_string(), k8s_openapi::ByteString(key.to_vec()))].into()),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => tracing::info!(secret = name, "created the operator's key"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(secret = name, "cannot create the operator's key: {e}"),
    }
    match api.get(name).await.map(|s| s.data.and_then(|mut d| d.remove("key"))) {
        Ok(Some(key)) if key.0.len() >= 32 => Some(key.0),
        Ok(_) => {
            tracing::warn!(
                secret = name,
                "the operator's key Secret has no 32-byte `key`; DataStreams with authentication wait"
            );
            None
        }
        Err(e) => {
            tracing::warn!(secret = name, "cannot read the operator's key ({e}); DataStreams with authentication wait");
            None
        }
    }
}

/// The namespace a pod runs in, from its service account, else `default`.
fn own_namespace() -> String {
    std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
        .map(|ns| ns.trim().to_string())
        .unwrap_or_else(|_| "default".into())
}

const CRD_NAME: &str = "datastreams.streamfabric.io";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        // `kubectl logs` shows escape codes as they are: colour only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
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
    metrics.crd_served.set(1);
    tokio::spawn(admin::serve(listener, metrics.clone()));
    tokio::spawn(admin::watch_crd(client.clone(), metrics.clone(), CRD_NAME, std::time::Duration::from_secs(10)));
    let namespace = args.leader_election_namespace.clone().unwrap_or_else(own_namespace);
    // Every replica serves the webhook, leader or not.
    if let Some(addr) = args.webhook_listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("streamfabric-operator: cannot listen on {addr} for the webhook: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        let settings = webhook::WebhookSettings {
            certs: webhook::certs::CertSettings {
                namespace: namespace.clone(),
                secret: args.webhook_secret.clone(),
                service: args.webhook_service.clone(),
                webhook_configuration: args.webhook_configuration.clone(),
                managed: args.webhook_certs == "managed",
                validity: args.webhook_cert_validity,
            },
            sidecar_image: args.sidecar_image.clone(),
            endpoint_template: args.broker_endpoint_template.clone(),
            check_every: std::time::Duration::from_secs(60),
        };
        webhook::spawn(client.clone(), listener, settings, metrics.clone());
        tracing::info!(webhook = %addr, sidecar = %args.sidecar_image, "sidecar injection webhook serving");
    }
    tracing::info!(metrics = %args.metrics_listen, "streamfabric operator running");
    let endpoints = controller::BrokerEndpoints {
        api: args.broker_endpoint_template,
        admin: args.broker_admin_template,
        pod_admin: args.broker_pod_admin_template,
    };
    let key = operator_key(&client, &namespace, &args.operator_key_secret).await;
    if !args.leader_election {
        metrics.leader.set(1);
        controller::run(client, metrics, endpoints, key).await;
        return std::process::ExitCode::SUCCESS;
    }
    let election = leader::Election {
        namespace,
        name: LEASE_NAME.into(),
        identity: args.leader_election_identity.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname").map_or("operator".into(), |h| h.trim().to_string())
        }),
        lease_duration: std::time::Duration::from_secs(15),
        renew_every: std::time::Duration::from_secs(5),
    };
    tracing::info!(lease = %election.name, namespace = %election.namespace, identity = %election.identity, "waiting to lead");
    election.acquire(&client).await;
    metrics.leader.set(1);
    tokio::select! {
        _ = controller::run(client.clone(), metrics, endpoints, key) => {
            election.release(&client).await;
            std::process::ExitCode::SUCCESS
        }
        _ = election.hold(&client) => {
            eprintln!("streamfabric-operator: lost the leader lease; exiting so that one leader reconciles");
            std::process::ExitCode::FAILURE
        }
    }
}
