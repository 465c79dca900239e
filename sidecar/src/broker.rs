//! The sidecar's calls to its brokers: Kinesis JSON 1.1 over pooled keep-alive connections.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::model::TARGET_PREFIX;
use streamfabric_api::sigv4::Signer;
use streamfabric_api::{ApiError, ErrorCode, Format};

/// How a call to the brokers failed.
#[derive(Debug)]
pub enum CallError {
    /// No answer (refused, reset, timed out): the request may or may not have been applied.
    Transport(String),
    /// The brokers answered with an error.
    Api(ApiError),
}

impl CallError {
    /// Worth sending again: the brokers were unreachable, busy or failing for a moment.
    pub fn is_retriable(&self) -> bool {
        match self {
            CallError::Transport(_) => true,
            CallError::Api(e) => retriable_code(e.code),
        }
    }
}

/// Error codes a producer retries (as the KPL does): throttling and internal failures.
pub fn retriable_code(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::ProvisionedThroughputExceeded | ErrorCode::InternalFailure | ErrorCode::LimitExceeded)
}

/// A raw answer, passed through to the application unchanged.
pub struct RawAnswer {
    pub status: u16,
    pub content_type: Option<http::HeaderValue>,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct Brokers {
    endpoint: String,
    http: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// Signs every call (SigV4) when the brokers require it.
    signer: Option<Arc<Signer>>,
}

impl Brokers {
    pub fn new(endpoint: &str, timeout: Duration) -> Brokers {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Brokers { endpoint: endpoint.trim_end_matches('/').to_string(), http, timeout, signer: None }
    }

    /// These brokers, every call signed with `signer`'s key.
    pub fn signed_by(self, signer: Option<Signer>) -> Brokers {
        Brokers { signer: signer.map(Arc::new), ..self }
    }

    /// The same pool of connections, for one broker at `address` (`host:port`).
    pub fn at(&self, address: &str) -> Brokers {
        Brokers { endpoint: format!("http://{address}"), ..self.clone() }
    }

    /// One request as it came (target, content type and body), its answer as it went.
    pub async fn forward(
        &self,
        target: &str,
        content_type: Option<&http::HeaderValue>,
        body: Bytes,
    ) -> Result<RawAnswer, CallError> {
        let mut request = http::Request::post(format!("{}/", self.endpoint)).header("x-amz-target", target);
        if let Some(ct) = content_type {
            request = request.header(http::header::CONTENT_TYPE, ct);
        }
        if let Some(signer) = &self.signer {
            let host = self.endpoint.split_once("://").map_or(self.endpoint.as_str(), |(_, h)| h);
            let mut signed = vec![("x-amz-target", target)];
            let ct = content_type.and_then(|v| v.to_str().ok());
            if let Some(ct) = ct {
                signed.push(("content-type", ct));
            }
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let (date, authorization) = signer.sign_post(host, &signed, &body, now as i64);
            request = request
                .header(http::header::HOST, host)
                .header("x-amz-date", date)
                .header("authorization", authorization);
        }
        let request = request.body(Full::new(body)).map_err(|e| CallError::Transport(e.to_string()))?;
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| CallError::Transport(format!("no answer from {} within {:?}", self.endpoint, self.timeout)))?
            .map_err(|e| CallError::Transport(format!("{}: {e}", self.endpoint)))?;
        let status = response.status().as_u16();
        let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
        let body = tokio::time::timeout(self.timeout, response.into_body().collect())
            .await
            .map_err(|_| CallError::Transport("answer cut short".into()))?
            .map_err(|e| CallError::Transport(e.to_string()))?
            .to_bytes();
        Ok(RawAnswer { status, content_type, body })
    }

    /// One Kinesis operation in JSON.
    pub async fn call<I: Serialize, O: DeserializeOwned>(&self, op: &str, input: &I) -> Result<O, CallError> {
        self.call_target(&format!("{TARGET_PREFIX}{op}"), input).await
    }

    /// One operation named by its whole `X-Amz-Target`, in JSON.
    pub async fn call_target<I: Serialize, O: DeserializeOwned>(
        &self,
        target: &str,
        input: &I,
    ) -> Result<O, CallError> {
        let json = http::HeaderValue::from_static(streamfabric_api::codec::JSON_CONTENT_TYPE);
        let body = Bytes::from(Format::Json.encode(input));
        let answer = self.forward(target, Some(&json), body).await?;
        if (200..300).contains(&answer.status) {
            return Format::Json.decode(&answer.body).map_err(CallError::Api);
        }
        Err(CallError::Api(Format::Json.decode_error(&answer.body)))
    }
}
