//! `/metrics`, `/healthz` and `/readyz` for probes and Prometheus.

use crate::metrics::Metrics;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let (status, body) = match req.uri().path() {
                    "/metrics" => (StatusCode::OK, metrics.render()),
                    "/healthz" => (StatusCode::OK, b"ok\n".to_vec()),
                    // Not ready while the CRD is not served: nothing could be reconciled.
                    "/readyz" if metrics.crd_served.get() == 1 => (StatusCode::OK, b"ok\n".to_vec()),
                    "/readyz" => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        b"the CRD datastreams.streamfabric.io is not served\n".to_vec(),
                    ),
                    _ => (StatusCode::NOT_FOUND, b"not found\n".to_vec()),
                };
                let resp =
                    Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("valid response");
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Check every `every` that the API server still serves the CRD `name` (it can be deleted
/// under a running operator, by `kubectl delete crd` or a chart removal): readiness and
/// `streamfabric_operator_crd_served` follow, and the change is logged.
pub async fn watch_crd(client: kube::Client, metrics: Arc<Metrics>, name: &'static str, every: std::time::Duration) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client);
    loop {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {
                if metrics.crd_served.get() == 0 {
                    tracing::info!(crd = name, "the CRD is served");
                }
                metrics.crd_served.set(1);
            }
            Ok(None) => {
                if metrics.crd_served.get() == 1 {
                    tracing::error!(
                        crd = name,
                        "the CRD was deleted: no DataStream is reconciled until it is installed again \
                         (kubectl apply -f crds/datastream.yaml, or the Helm chart); not ready"
                    );
                }
                metrics.crd_served.set(0);
            }
            Err(e) => tracing::warn!(crd = name, "checking for the CRD: {e}"),
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn readiness_follows_the_crd_and_metrics_have_series_before_any_reconcile() {
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, metrics.clone()));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503") && not_ready.contains("is not served"), "{not_ready}");
        metrics.crd_served.set(1);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let page = get(addr, "/metrics").await;
        for line in [
            "streamfabric_operator_reconciles_total{kind=\"DataStream\"} 0",
            "streamfabric_operator_reconcile_seconds_count{kind=\"DataStream\"} 0",
            "streamfabric_operator_leader 0",
            "streamfabric_operator_crd_served 1",
        ] {
            assert!(page.lines().any(|l| l == line), "{line} missing from:\n{page}");
        }
    }
}
