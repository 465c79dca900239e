//! The HTTP front: `POST /` with `X-Amz-Target: Kinesis_20131202.<Operation>` (or
//! `StreamfabricLeases_20261129.<Operation>` for the lease operations), bodies in JSON 1.1
//! or CBOR 1.1, answers in the request's encoding; and the admin endpoints.

use crate::auth::{PEER_PROOF_HEADER, Principal, Signed};
use crate::broker::Broker;
use crate::fabric::peers::Relayed;
use crate::fabric::routes::{Reply, Request};
use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use streamfabric_api::leases::{LEASES_TARGET_PREFIX, LeaseOperation};
use streamfabric_api::model::{Operation, TARGET_PREFIX};
use streamfabric_api::owners::{CLUSTER_TARGET_PREFIX, DESCRIBE_SHARD_OWNERS};
use streamfabric_api::records_answer::RecordsAnswer;
use streamfabric_api::{ApiError, ErrorCode, Format};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Answers: whole (every operation but one), or streamed (SubscribeToShard's events).
pub type Body = UnsyncBoxBody<Bytes, BoxError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A whole answer.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

/// An operation's answer: encoded, or (GetRecords) encoded piece by piece as it is sent.
pub enum Answer {
    Whole(Vec<u8>),
    Records(RecordsAnswer),
}

impl From<Vec<u8>> for Answer {
    fn from(whole: Vec<u8>) -> Answer {
        Answer::Whole(whole)
    }
}

impl Answer {
    pub fn into_whole(self) -> Vec<u8> {
        match self {
            Answer::Whole(whole) => whole,
            Answer::Records(pieces) => pieces.into_whole(),
        }
    }

    fn into_body(self) -> Body {
        match self {
            Answer::Whole(whole) => full(whole),
            Answer::Records(pieces) => Pieces(pieces).boxed_unsync(),
        }
    }
}

/// A body sent in pieces (chunked), each encoded when hyper asks for it.
struct Pieces(RecordsAnswer);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::task::Poll::Ready(self.0.next().map(|piece| Ok(hyper::body::Frame::data(piece.into()))))
    }
}

/// Accept connections on `listener` (TLS first, with `tls`), answering each request with
/// `handler`, until `stop` turns true; then stop accepting, let every request in flight
/// finish (idle kept-alive connections are closed), and return.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: H,
    mut stop: watch::Receiver<bool>,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let connections = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // A dropped sender never stops the server.
            Ok(_) = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        let (builder, watcher, tls) = (auto::Builder::new(TokioExecutor::new()), connections.watcher(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => {
                    let _ = watcher.watch(builder.serve_connection(TokioIo::new(stream), service).into_owned()).await;
                }
                Some(acceptor) => {
                    // A client that never finishes its handshake does not hold a task forever.
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ =
                                watcher.watch(builder.serve_connection(TokioIo::new(tls), service).into_owned()).await;
                        }
                        Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                        Err(_) => tracing::debug!("TLS handshake not finished in {TLS_HANDSHAKE_TIMEOUT:?}"),
                    }
                }
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The largest request body read: a PutRecords of 10 MiB (a stream with records above
/// 1 MiB, UpdateMaxRecordSize) grows by a third in base64, and `--max-record-bytes` may be
/// set higher still.
fn body_limit(broker: &Broker) -> usize {
    4 * 1024 * 1024 + broker.config.max_record_bytes.max(streamfabric_api::limits::MAX_LARGE_RECORD_BYTES) * 2
}

pub async fn handle_api(broker: Arc<Broker>, req: http::Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let content_type =
        req.headers().get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let declared = Format::of_request(content_type.as_deref());
    let format = declared.unwrap_or(Format::Json);
    let target = req.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let forwarded = req.headers().contains_key(crate::fabric::FORWARDED_HEADER);
    if let Some(op) = target.strip_prefix(crate::dynamo::TARGET_PREFIX) {
        return dynamo_response(&broker, op, req, started).await;
    }
    let operation = Target::parse(&target);
    let op_label = operation.map_or("unknown", Target::name);
    let (head, body) = req.into_parts();

    let outcome = match operation {
        _ if head.method != Method::POST => {
            Err(ApiError::new(ErrorCode::UnknownOperation, "Only POST / is served; see X-Amz-Target."))
        }
        _ if declared.is_none() => Err(ApiError::new(
            ErrorCode::UnknownOperation,
            format!(
                "Content-Type {content_type:?} is not served: send {} (JSON) or {} (CBOR).",
                Format::Json.content_type(),
                Format::Cbor.content_type()
            ),
        )),
        None => Err(ApiError::new(
            ErrorCode::UnknownOperation,
            format!(
                "Unknown operation {target:?}: X-Amz-Target must be {TARGET_PREFIX}<Operation>, {LEASES_TARGET_PREFIX}<Operation> or {CLUSTER_TARGET_PREFIX}{DESCRIBE_SHARD_OWNERS} for a supported operation."
            ),
        )),
        Some(op) => {
            let limit = body_limit(&broker);
            let subscribe = matches!(op, Target::Kinesis(Operation::SubscribeToShard));
            match Limited::new(body, limit).collect().await.map(|b| b.to_bytes()) {
                Ok(body) => {
                    let allowed = authenticate(&broker, &head, &target, &body, "kinesis", subscribe)
                        .and_then(|who| broker.authorize(&who, &op.action(), format, &body));
                    match (allowed, op) {
                        (Err(refused), _) => Err(refused),
                        (Ok(_), Target::Kinesis(Operation::SubscribeToShard)) => {
                            match crate::fanout::subscribe(&broker, format, &target, body, forwarded).await {
                                Ok(subscribed) => return subscription_response(&broker, started, subscribed),
                                Err(e) => Err(e),
                            }
                        }
                        (Ok(_), Target::Kinesis(op)) if broker.fabric.is_some() => {
                            let request = Request { op, format, target: &target, body, forwarded };
                            match broker.dispatch(request).await {
                                Reply::Local(answer) => answer,
                                Reply::Relayed(relayed) => {
                                    return relayed_response(&broker, op_label, started, format, relayed);
                                }
                            }
                        }
                        (Ok(_), Target::Kinesis(op)) => broker.answer(op, format, &body).await,
                        (Ok(_), Target::Leases(op)) => broker.call_leases(op, format, &body).await.map(Answer::Whole),
                        (Ok(_), Target::ShardOwners) => format
                            .decode(&body)
                            .and_then(|input| broker.describe_shard_owners(input))
                            .map(|out| Answer::Whole(format.encode(&out))),
                    }
                }
                Err(_) => Err(ApiError::new(
                    ErrorCode::Serialization,
                    format!("The request body could not be read in full or exceeds {limit} bytes."),
                )),
            }
        }
    };

    let (status, code, body) = match outcome {
        Ok(body) => (StatusCode::OK, "OK", body),
        Err(e) => {
            if e.code == ErrorCode::InternalFailure {
                tracing::error!(operation = op_label, "{}", e.message);
            }
            // AWS answers a request of no or another content type with a 404.
            let status = if declared.is_none() {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::from_u16(e.code.http_status()).unwrap()
            };
            (status, e.code.as_str(), Answer::Whole(format.encode_error(&e)))
        }
    };
    broker.metrics.requests.with_label_values(&[op_label, code]).inc();
    broker.metrics.request_seconds.with_label_values(&[op_label]).observe(started.elapsed().as_secs_f64());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, format.content_type())
        .header("x-amzn-RequestId", request_id())
        .body(body.into_body())
        .expect("valid response")
}

/// A subscription's event stream, made here or relayed from the shard's owner.
fn subscription_response(broker: &Broker, started: Instant, subscribed: crate::fanout::Subscribed) -> Response<Body> {
    let op_label = Operation::SubscribeToShard.name();
    broker.metrics.request_seconds.with_label_values(&[op_label]).observe(started.elapsed().as_secs_f64());
    match subscribed {
        crate::fanout::Subscribed::Here(events) => {
            broker.metrics.requests.with_label_values(&[op_label, "OK"]).inc();
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, crate::fanout::events::CONTENT_TYPE)
                .header("x-amzn-RequestId", request_id())
                .body(events)
                .expect("valid response")
        }
        // Passed on as the owner gave it (its content type, event stream or error).
        crate::fanout::Subscribed::Relayed(mut answer) => {
            let code = if answer.status().is_success() { "OK" } else { "relayed_error" };
            broker.metrics.requests.with_label_values(&[op_label, code]).inc();
            let id = header::HeaderValue::from_str(&request_id()).expect("hex digits and dashes");
            answer.headers_mut().insert("x-amzn-requestid", id);
            answer
        }
    }
}

/// A DynamoDB operation (the lease store the KCL uses), in AWS JSON 1.0.
async fn dynamo_response(broker: &Broker, op: &str, req: http::Request<Incoming>, started: Instant) -> Response<Body> {
    const LIMIT: usize = 16 << 20;
    let (head, body) = req.into_parts();
    let target = format!("{}{op}", crate::dynamo::TARGET_PREFIX);
    let answer = match Limited::new(body, LIMIT).collect().await.map(|b| b.to_bytes()) {
        // An operation not served is refused below, whoever asks (and its name, which the
        // client chose, never becomes a metric label).
        Ok(body) => match authenticate(broker, &head, &target, &body, "dynamodb", false).and_then(|who| {
            if crate::dynamo::ops::serves(op) {
                broker.authorize(&who, &format!("dynamodb:{op}"), Format::Json, &body)
            } else {
                Ok(())
            }
        }) {
            Err(refused) => Err(crate::dynamo::DynamoError::new(refused.code.as_str(), refused.message)),
            Ok(_) => {
                let account =
                    crate::dynamo::ops::Account { region: &broker.config.region, account: &broker.config.account };
                crate::dynamo::call(&broker.tables, &account, op, &body).await
            }
        },
        Err(_) => Err(crate::dynamo::DynamoError::serialization(format!(
            "The request body could not be read in full or exceeds {LIMIT} bytes."
        ))),
    };
    let (status, code, body) = match answer {
        Ok(body) => (StatusCode::OK, "OK", body),
        Err(e) => (StatusCode::from_u16(e.http_status()).expect("4xx or 5xx"), e.code, e.body()),
    };
    // An operation not served is one label, whatever its name (bounded cardinality).
    let label =
        if code == "UnknownOperationException" { "DynamoDB.unknown".to_string() } else { format!("DynamoDB.{op}") };
    broker.metrics.requests.with_label_values(&[&label, code]).inc();
    broker.metrics.request_seconds.with_label_values(&[&label]).observe(started.elapsed().as_secs_f64());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, crate::dynamo::CONTENT_TYPE)
        .header("x-amzn-RequestId", request_id())
        .body(full(body))
        .expect("valid response")
}

/// Who sent a request (`auth`): a forwarded one by its peer's proof, any other by its SigV4
/// signature for `service`. Everyone while no credentials are configured.
fn authenticate(
    broker: &Broker,
    head: &http::request::Parts,
    target: &str,
    body: &[u8],
    service: &str,
    unsigned_payload_allowed: bool,
) -> Result<Principal, ApiError> {
    let auth = &broker.auth;
    if !auth.required() {
        return Ok(Principal::Anonymous);
    }
    let now = crate::fabric::peers::unix_seconds();
    if let Some(from) = head.headers.get(crate::fabric::FORWARDED_HEADER) {
        let from = String::from_utf8_lossy(from.as_bytes());
        let proof = head.headers.get(PEER_PROOF_HEADER).and_then(|v| v.to_str().ok());
        let peers = broker.fabric.as_ref().and_then(|f| f.peers.proof());
        if let (Some(peers), Some(proof)) = (peers, proof)
            && peers.holds(proof, &from, target, body, now)
        {
            return Ok(Principal::Peer);
        }
        auth.refused_peer();
        return Err(ApiError::new(
            ErrorCode::MissingAuthenticationToken,
            "A request forwarded by a broker must carry that broker's proof (x-streamfabric-peer-proof).",
        ));
    }
    let request = Signed {
        method: head.method.as_str(),
        path: head.uri.path(),
        query: head.uri.query().unwrap_or(""),
        headers: &head.headers,
        authority: head.uri.authority().map(|a| a.as_str()),
        body,
        service,
        unsigned_payload_allowed,
    };
    auth.verify(&request, now)
}

/// A peer's answer to a forwarded request, passed on as it came.
fn relayed_response(
    broker: &Broker,
    op_label: &str,
    started: Instant,
    format: Format,
    relayed: Relayed,
) -> Response<Body> {
    let code = if relayed.status.is_success() { "OK" } else { "relayed_error" };
    broker.metrics.requests.with_label_values(&[op_label, code]).inc();
    broker.metrics.request_seconds.with_label_values(&[op_label]).observe(started.elapsed().as_secs_f64());
    Response::builder()
        .status(relayed.status)
        .header(header::CONTENT_TYPE, format.content_type())
        .header("x-amzn-RequestId", request_id())
        .body(full(relayed.body))
        .expect("valid response")
}

/// The operation an `X-Amz-Target` names: Kinesis, streamfabric's lease operations, or
/// where shards are served.
#[derive(Debug, Clone, Copy)]
enum Target {
    Kinesis(Operation),
    Leases(LeaseOperation),
    ShardOwners,
}

impl Target {
    fn parse(target: &str) -> Option<Target> {
        if let Some(name) = target.strip_prefix(TARGET_PREFIX) {
            return Operation::from_name(name).map(Target::Kinesis);
        }
        if target.strip_prefix(CLUSTER_TARGET_PREFIX) == Some(DESCRIBE_SHARD_OWNERS) {
            return Some(Target::ShardOwners);
        }
        target.strip_prefix(LEASES_TARGET_PREFIX).and_then(LeaseOperation::from_name).map(Target::Leases)
    }

    /// The action policies name: `kinesis:<Operation>`, or `streamfabric:<Operation>` for
    /// the lease store and the cluster's routing.
    fn action(self) -> String {
        match self {
            Target::Kinesis(op) => format!("kinesis:{}", op.name()),
            other => format!("streamfabric:{}", other.name()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Target::Kinesis(op) => op.name(),
            Target::Leases(op) => op.name(),
            Target::ShardOwners => DESCRIBE_SHARD_OWNERS,
        }
    }
}

fn request_id() -> String {
    let r: u128 = rand::random();
    let h = format!("{r:032x}");
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// `/metrics`, `/healthz`, `/readyz`, `/stats`, `/config` (the settings this process runs with).
/// `POST /shards/take` with `{"stream", "shard", "fromEpoch"}`: take the shard's ownership in
/// the object store from that epoch. 200 with the new epoch; 409 if another broker took it first.
async fn take_shard(broker: &Broker, req: http::Request<Incoming>) -> (StatusCode, &'static str, Vec<u8>) {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Take {
        stream: String,
        shard: String,
        from_epoch: u64,
    }
    let json = |status, value: serde_json::Value| (status, "application/json", value.to_string().into_bytes());
    let body = match Limited::new(req.into_body(), 64 << 10).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return json(StatusCode::BAD_REQUEST, serde_json::json!({"message": e.to_string()})),
    };
    let take: Take = match serde_json::from_slice(&body) {
        Ok(take) => take,
        Err(e) => {
            let message = format!("expected {{\"stream\", \"shard\", \"fromEpoch\"}}: {e}");
            return json(StatusCode::BAD_REQUEST, serde_json::json!({ "message": message }));
        }
    };
    let held = broker.catalog.get(&take.stream).and_then(|s| s.shard_named(&take.shard));
    let held = held.as_ref().map(|s| s.bucket.as_ref());
    match broker.archive.take(&take.stream, &take.shard, take.from_epoch, held).await {
        Ok(epoch) => {
            let owner = broker.archive.ownership.broker_id();
            json(
                StatusCode::OK,
                serde_json::json!({"stream": take.stream, "shard": take.shard, "owner": owner, "epoch": epoch}),
            )
        }
        Err(crate::tier::TierError::Conflict { reason, .. }) => {
            json(StatusCode::CONFLICT, serde_json::json!({ "message": reason }))
        }
        Err(e) => json(StatusCode::SERVICE_UNAVAILABLE, serde_json::json!({"message": e.to_string()})),
    }
}

pub async fn handle_admin(broker: Arc<Broker>, req: http::Request<Incoming>) -> Response<Body> {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let (status, content_type, body) = match (method, path.as_str()) {
        (Method::POST, "/shards/take") => take_shard(&broker, req).await,
        (_, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4", broker.metrics.render()),
        (_, "/readyz") => match broker.fabric.as_ref().map(|f| f.readiness(&broker)) {
            Some(Err(why)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {why}\n").into_bytes())
            }
            _ => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        },
        (_, "/healthz") => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
        (_, "/stats") => {
            (StatusCode::OK, "application/json", serde_json::to_vec_pretty(&crate::stats::collect(&broker)).unwrap())
        }
        (_, "/cluster") => match &broker.fabric {
            Some(fabric) => {
                (StatusCode::OK, "application/json", serde_json::to_vec_pretty(&fabric.admin_view(&broker)).unwrap())
            }
            None => (StatusCode::NOT_FOUND, "text/plain", b"not in a cluster: start with --advertise\n".to_vec()),
        },
        (_, "/config") => {
            (StatusCode::OK, "application/json", serde_json::to_vec_pretty(&broker.config.shown()).unwrap())
        }
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            b"not found: try /metrics, /healthz, /readyz, /stats, /config, /cluster or POST /shards/take\n".to_vec(),
        ),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(full(body))
        .expect("valid response")
}
