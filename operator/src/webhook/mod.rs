//! The mutating admission webhook that adds the streamfabric sidecar to the pods that ask
//! for it (`inject`), over HTTPS with the operator's certificate (`certs`). Every replica
//! serves it, leader or not. It never refuses a pod: one it cannot serve is admitted as it
//! is, with a warning to the client and an Event saying why; and the configuration says
//! `failurePolicy: Ignore`, so an outage never blocks pods (the pods that miss their
//! sidecar are counted by `audit`).

pub mod certs;
pub mod inject;

use crate::metrics::Metrics;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use inject::{Injection, SidecarTemplate, StreamLookup};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::crd::DataStream;
use tokio::net::TcpListener;
use tokio_rustls::rustls;

pub const PATH: &str = "/mutate-pods";
/// Admission reviews carry one pod; far below this.
const MAX_REVIEW_BYTES: usize = 8 << 20;

pub struct Webhook {
    client: Client,
    template: SidecarTemplate,
    /// Where a DataStream's brokers answer when its status does not say yet.
    endpoint_template: String,
    metrics: Arc<Metrics>,
    recorder: Recorder,
}

impl Webhook {
    pub fn new(client: Client, image: String, endpoint_template: String, metrics: Arc<Metrics>) -> Webhook {
        let reporter =
            Reporter { controller: "streamfabric-sidecar-injector".into(), instance: std::env::var("POD_NAME").ok() };
        Webhook {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            template: SidecarTemplate { image },
            endpoint_template,
            metrics,
        }
    }

    /// Answer one AdmissionReview (the request body) with another.
    pub async fn review(&self, body: &[u8]) -> AdmissionReview<kube::core::DynamicObject> {
        let request: AdmissionRequest<Pod> = match serde_json::from_slice::<AdmissionReview<Pod>>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| r.try_into().map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                self.count("invalid");
                return AdmissionResponse::invalid(format!("not an AdmissionReview of a pod: {e}")).into_review();
            }
        };
        let response = AdmissionResponse::from(&request);
        let Some(pod) = request.object.as_ref().filter(|_| request.operation == Operation::Create) else {
            self.count("untouched");
            return response.into_review();
        };
        let namespace = request.namespace.clone().or_else(|| pod.namespace()).unwrap_or_else(|| "default".into());
        let decision = if !inject::asks_for_sidecar(pod) || inject::has_sidecar(pod) {
            Injection::Untouched
        } else {
            match self.lookup(pod, &namespace).await {
                Ok(stream) => inject::plan(pod, &stream, &self.template),
                Err(e) => Injection::Refused(format!("the DataStream could not be read: {e}")),
            }
        };
        match decision {
            Injection::Untouched => {
                self.count("untouched");
                response.into_review()
            }
            Injection::Inject(patch) => match response.with_patch(patch) {
                Ok(patched) => {
                    self.count("injected");
                    tracing::info!(namespace, pod = %pod_name(pod), "sidecar added");
                    patched.into_review()
                }
                Err(e) => {
                    self.count("invalid");
                    AdmissionResponse::from(&request).deny(format!("the sidecar patch: {e}")).into_review()
                }
            },
            Injection::Refused(reason) => {
                self.count("refused");
                let note = format!("no streamfabric sidecar added: {reason}");
                tracing::warn!(namespace, pod = %pod_name(pod), "{note}");
                if !request.dry_run {
                    self.tell(pod, &namespace, &note).await;
                }
                let mut response = response;
                response.warnings = Some(vec![note]);
                response.into_review()
            }
        }
    }

    async fn lookup(&self, pod: &Pod, namespace: &str) -> Result<StreamLookup, kube::Error> {
        let Some(name) = inject::stream_of(pod) else { return Ok(StreamLookup::Missing) };
        let streams: Api<DataStream> = Api::namespaced(self.client.clone(), namespace);
        Ok(match streams.get_opt(name).await? {
            None => StreamLookup::Missing,
            Some(ds) => StreamLookup::Found {
                endpoint: ds
                    .status
                    .and_then(|s| s.endpoint)
                    .unwrap_or_else(|| crate::kinesis::endpoint_for(&self.endpoint_template, name, namespace)),
            },
        })
    }

    /// An Event about the pod: it has no name or uid before it is created, so the Event is
    /// about its controller (a ReplicaSet, a Job) when it has one, else about its name.
    async fn tell(&self, pod: &Pod, namespace: &str, note: &str) {
        let owner = pod.owner_references().iter().find(|o| o.controller == Some(true));
        let reference = match owner {
            Some(o) => ObjectReference {
                api_version: Some(o.api_version.clone()),
                kind: Some(o.kind.clone()),
                name: Some(o.name.clone()),
                uid: Some(o.uid.clone()),
                namespace: Some(namespace.to_string()),
                ..ObjectReference::default()
            },
            None => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod_name(pod)),
                namespace: Some(namespace.to_string()),
                ..ObjectReference::default()
            },
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "SidecarNotInjected".into(),
            note: Some(note.chars().take(1024).collect()),
            action: "Inject".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            tracing::warn!("publishing the event: {e}");
        }
    }

    fn count(&self, result: &str) {
        self.metrics.webhook_reviews.with_label_values(&[result]).inc();
    }
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().or_else(|| pod.metadata.generate_name.clone()).unwrap_or_default()
}

/// Serve the webhook over HTTPS on `listener` with the certificate `resolver` holds.
pub async fn serve(listener: TcpListener, webhook: Arc<Webhook>, resolver: Arc<certs::CertResolver>) {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (acceptor, webhook) = (acceptor.clone(), webhook.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!("webhook TLS handshake: {e}"),
                Err(_) => return,
            };
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let webhook = webhook.clone();
                async move { Ok::<_, Infallible>(answer(&webhook, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

async fn answer(webhook: &Webhook, req: http::Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid response")
    };
    if req.method() != Method::POST || req.uri().path() != PATH {
        return reply(StatusCode::NOT_FOUND, br#"{"message":"POST an AdmissionReview to /mutate-pods"}"#.to_vec());
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return reply(StatusCode::BAD_REQUEST, format!(r#"{{"message":"reading the body: {e}"}}"#).into_bytes());
        }
    };
    let review = webhook.review(&body).await;
    reply(StatusCode::OK, serde_json::to_vec(&review).expect("serializable"))
}

/// Count, every `every`, the pods that asked for a sidecar and run without one (created
/// while the webhook could not be reached, or refused): what `failurePolicy: Ignore` hides.
pub async fn audit(client: Client, metrics: Arc<Metrics>, every: Duration) {
    let pods: Api<Pod> = Api::all(client);
    let selector = ListParams::default().labels(&format!("{}=true", inject::INJECT_LABEL));
    let mut last = None;
    loop {
        match pods.list(&selector).await {
            Ok(list) => {
                let without: Vec<String> = list
                    .items
                    .iter()
                    .filter(|p| !inject::has_sidecar(p) && p.metadata.deletion_timestamp.is_none())
                    .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                    .collect();
                metrics.pods_without_sidecar.set(without.len() as i64);
                if !without.is_empty() && last.as_ref() != Some(&without) {
                    tracing::warn!(pods = ?without, "pods asked for a streamfabric sidecar and run without one (recreate them)");
                }
                last = Some(without);
            }
            Err(e) => tracing::debug!("listing the pods that ask for a sidecar: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Everything the webhook needs to run.
pub struct WebhookSettings {
    pub certs: certs::CertSettings,
    pub sidecar_image: String,
    pub endpoint_template: String,
    /// How often the certificate is checked and the pods without a sidecar counted.
    pub check_every: Duration,
}

/// Serve the webhook on `listener` and keep its certificate, in the background.
pub fn spawn(client: Client, listener: TcpListener, settings: WebhookSettings, metrics: Arc<Metrics>) {
    let resolver = Arc::new(certs::CertResolver::default());
    let webhook =
        Arc::new(Webhook::new(client.clone(), settings.sidecar_image, settings.endpoint_template, metrics.clone()));
    tokio::spawn(certs::keep(client.clone(), settings.certs, resolver.clone(), settings.check_every));
    tokio::spawn(audit(client, metrics, settings.check_every));
    tokio::spawn(serve(listener, webhook, resolver));
}
