//! Requests to other brokers of the cluster: one kept-alive HTTP/2 (cleartext) connection
//! per peer, multiplexing every forwarded request.

use crate::auth::{PEER_PROOF_HEADER, PeerProof};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;
use streamfabric_api::{ApiError, ErrorCode, Format};

/// Marks a request one broker forwarded to another: the receiver answers it itself or
/// refuses it, never forwards it again (one hop, no loops while the assignment moves).
pub const FORWARDED_HEADER: &str = "x-streamfabric-forwarded-by";

/// Longer than any request takes at its owner (a GetRecords of 10 MiB from the bucket, a
/// durability `object` write retried within its put timeout).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// An answer relayed from a peer as it came: status and encoded body.
pub struct Relayed {
    pub status: StatusCode,
    pub body: Bytes,
}

pub struct Peers {
    client: Client<HttpConnector, Full<Bytes>>,
    /// This broker's id, sent in `FORWARDED_HEADER`.
    me: String,
    /// With authentication on: what proves a forwarded request came from a peer.
    proof: Option<PeerProof>,
}

impl Peers {
    pub fn new(me: &str, proof: Option<PeerProof>) -> Peers {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(30)));
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // A peer that vanished without closing its connections (a deleted pod: its address
        // is gone, nothing answers, nothing resets) is noticed by a missed ping within a few
        // seconds, and the requests waiting on it fail as retryable instead of hanging.
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .http2_keep_alive_while_idle(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Peers { client, me: me.to_string(), proof }
    }

    /// How forwarded requests are proven, when authentication is on.
    pub fn proof(&self) -> Option<&PeerProof> {
        self.proof.as_ref()
    }

    /// Send one Kinesis request (its `X-Amz-Target` and body in `format`) to the broker at
    /// `address`. An unreachable peer is a retryable ServiceUnavailable.
    pub async fn forward(&self, address: &str, target: &str, format: Format, body: Bytes) -> Result<Relayed, ApiError> {
        let response = self.forward_streaming(address, target, format, body).await?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| unreachable(address, e.to_string()))?.to_bytes();
        Ok(Relayed { status, body })
    }

    /// Like `forward`, for an answer that streams (SubscribeToShard): its head within
    /// `FORWARD_TIMEOUT`, its body as it comes, for as long as the peer sends it.
    pub async fn forward_streaming(
        &self,
        address: &str,
        target: &str,
        format: Format,
        body: Bytes,
    ) -> Result<http::Response<Incoming>, ApiError> {
        let mut request = Request::post(format!("http://{address}/"))
            .header(header::CONTENT_TYPE, format.content_type())
            .header("x-amz-target", target)
            .header(FORWARDED_HEADER, &self.me);
        if let Some(proof) = &self.proof {
            request = request.header(PEER_PROOF_HEADER, proof.make(&self.me, target, &body, unix_seconds()));
        }
        let request =
            request.body(Full::new(body)).map_err(|e| ApiError::internal(format!("forwarding to {address}: {e}")))?;
        tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(address, format!("no answer within {FORWARD_TIMEOUT:?}")))?
            .map_err(|e| unreachable(address, e.to_string()))
    }
}

pub(crate) fn unix_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn unreachable(address: &str, e: String) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("The broker owning this shard ({address}) could not be reached: {e}. Retry later."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// Copies `from` to `to` until `silent` is set; then drops every byte and keeps both
    /// open, as a vanished peer's address does: nothing answers, nothing resets.
    async fn pump(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin, silent: Arc<AtomicBool>) {
        let mut buf = vec![0u8; 16384];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if !silent.load(Ordering::Acquire) && to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    }

    /// An HTTP/2 server answering `{}`, behind a proxy that black-holes once `silent` is set.
    async fn peer_behind_a_black_hole(silent: Arc<AtomicBool>) -> String {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = server.accept().await {
                tokio::spawn(async move {
                    let answer = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"{}"))))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), answer)
                        .await;
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((client, _)) = proxy.accept().await {
                let upstream = TcpStream::connect(server_addr).await.unwrap();
                let (cr, cw) = client.into_split();
                let (ur, uw) = upstream.into_split();
                tokio::spawn(pump(cr, uw, silent.clone()));
                tokio::spawn(pump(ur, cw, silent.clone()));
            }
        });
        proxy_addr.to_string()
    }

    #[tokio::test]
    async fn a_peer_gone_silent_fails_forwards_as_retryable_within_seconds_not_the_forward_timeout() {
        let silent = Arc::new(AtomicBool::new(false));
        let address = peer_behind_a_black_hole(silent.clone()).await;
        let peers = Peers::new("b-0", None);
        let target = "Kinesis_20131202.ListStreams";
        let ok = peers.forward(&address, target, Format::Json, Bytes::from_static(b"{}")).await.unwrap();
        assert_eq!((ok.status, &ok.body[..]), (StatusCode::OK, &b"{}"[..]), "the connection works, and is kept");
        silent.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        let err = peers.forward(&address, target, Format::Json, Bytes::from_static(b"{}")).await.err().unwrap();
        let took = started.elapsed();
        assert_eq!(err.code, ErrorCode::ServiceUnavailable, "{err:?}");
        assert!(took < FORWARD_TIMEOUT / 2, "a missed ping ends the wait, not the forward timeout: {took:?}");
    }
}
