//! Requests to other brokers of the cluster: one kept-alive HTTP/2 (cleartext) connection
//! per peer, multiplexing every forwarded request.

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;
use streamfabric_api::{ApiError, ErrorCode, Format};

/// Marks a request one broker forwarded to another: the receiver answers it itself or
/// refuses it, never forwards it again (one hop, no loops while the assignment moves).
pub const FORWARDED_HEADER: &str = "x-streamfabric-forwarded-by";

/// Longer than any request takes at its owner (a GetRecords of 10 MiB from the bucket, a
/// durability `object` write retried within its put timeout).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// An answer relayed from a peer as it came: status and encoded body.
pub struct Relayed {
    pub status: StatusCode,
    pub body: Bytes,
}

pub struct Peers {
    client: Client<HttpConnector, Full<Bytes>>,
    /// This broker's id, sent in `FORWARDED_HEADER`.
    me: String,
}

impl Peers {
    pub fn new(me: &str) -> Peers {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Peers { client, me: me.to_string() }
    }

    /// Send one Kinesis request (its `X-Amz-Target` and body in `format`) to the broker at
    /// `address`. An unreachable peer is a retryable ServiceUnavailable.
    pub async fn forward(&self, address: &str, target: &str, format: Format, body: Bytes) -> Result<Relayed, ApiError> {
        let request = Request::post(format!("http://{address}/"))
            .header(header::CONTENT_TYPE, format.content_type())
            .header("x-amz-target", target)
            .header(FORWARDED_HEADER, &self.me)
            .body(Full::new(body))
            .map_err(|e| ApiError::internal(format!("forwarding to {address}: {e}")))?;
        let unreachable = |e: String| {
            ApiError::new(
                ErrorCode::ServiceUnavailable,
                format!("The broker owning this shard ({address}) could not be reached: {e}. Retry later."),
            )
        };
        let response = tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(format!("no answer within {FORWARD_TIMEOUT:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        Ok(Relayed { status, body })
    }
}
