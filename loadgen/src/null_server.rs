//! A Kinesis endpoint that stores nothing, to measure the generator's own ceiling. Puts are
//! parsed into the API model with serde_json and answered with fake sequence numbers, so its
//! per-request cost is HTTP plus JSON parsing, as a fair lower bound for any real server.

use crate::cli::NullServerArgs;
use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use streamfabric_api::hashkey::HashRange;
use streamfabric_api::model::*;
use streamfabric_api::names::{shard_id, stream_arn};
use streamfabric_api::sequence::SequenceNumber;
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, ErrorCode, Format};
use tokio::net::TcpListener;

struct State {
    shards: u32,
    /// Source of the fake sequence numbers.
    next_offset: AtomicU64,
    /// Injected fault probabilities in [0, 1] (0 unless asked for).
    entry_failure: f64,
    request_failure: f64,
}

pub async fn serve(args: NullServerArgs) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen).await.map_err(|e| format!("binding {}: {e}", args.listen))?;
    println!("null-server listening on http://{} (stores nothing)", args.listen);
    let state = Arc::new(State {
        shards: args.shards,
        next_offset: AtomicU64::new(0),
        entry_failure: (args.entry_failure_percent / 100.0).clamp(0.0, 1.0),
        request_failure: (args.request_failure_percent / 100.0).clamp(0.0, 1.0),
    });
    let accept = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE; keep serving the connections already open.
                    eprintln!("null-server: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(state.clone(), req));
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    };
    let limit = async {
        match args.exit_after_secs {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = accept => {}
        () = limit => println!("null-server: --exit-after-secs reached"),
        _ = shutdown_signal() => println!("null-server: shutting down"),
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Answers in the request's encoding, as a broker does.
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let format = Format::of_request(content_type).unwrap_or(Format::Json);
    let op = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
        .and_then(Operation::from_name);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(error(format, ApiError::new(ErrorCode::Serialization, format!("reading body: {e}"))));
        }
    };
    let answer = match op {
        Some(op) => answer(&state, op, format, &body),
        None => Err(ApiError::new(ErrorCode::UnknownOperation, "missing or unknown X-Amz-Target")),
    };
    Ok(match answer {
        Ok(body) => respond(StatusCode::OK, format, body),
        Err(e) => error(format, e),
    })
}

fn answer(state: &State, op: Operation, format: Format, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let is_put = matches!(op, Operation::PutRecords | Operation::PutRecord);
    if is_put && state.request_failure > 0.0 && rand::random_bool(state.request_failure) {
        return Err(ApiError::new(ErrorCode::ServiceUnavailable, "injected failure"));
    }
    match op {
        Operation::PutRecords => {
            let input: PutRecordsInput = parse(format, body)?;
            let n = input.records.map_or(0, |r| r.len());
            let first = state.next_offset.fetch_add(n as u64, Ordering::Relaxed);
            let mut failed = 0;
            let records = (0..n as u64)
                .map(|i| {
                    if state.entry_failure > 0.0 && rand::random_bool(state.entry_failure) {
                        failed += 1;
                        return PutRecordsResultEntry {
                            error_code: Some(ErrorCode::ProvisionedThroughputExceeded.as_str().into()),
                            error_message: Some("injected failure".into()),
                            ..Default::default()
                        };
                    }
                    PutRecordsResultEntry {
                        sequence_number: Some(SequenceNumber::new(0, first + i).to_string()),
                        shard_id: Some(shard_id(0)),
                        ..Default::default()
                    }
                })
                .collect();
            Ok(format.encode(&PutRecordsOutput {
                failed_record_count: failed,
                records,
                encryption_type: "NONE".into(),
            }))
        }
        Operation::PutRecord => {
            let _: PutRecordInput = parse(format, body)?;
            let offset = state.next_offset.fetch_add(1, Ordering::Relaxed);
            Ok(format.encode(&PutRecordOutput {
                shard_id: shard_id(0),
                sequence_number: SequenceNumber::new(0, offset).to_string(),
                encryption_type: "NONE".into(),
            }))
        }
        Operation::CreateStream | Operation::DeleteStream => Ok(format.encode(&Empty {})),
        Operation::DescribeStreamSummary => {
            let input: StreamRef = parse(format, body)?;
            let name = input.stream_name.unwrap_or_else(|| "null".into());
            Ok(format.encode(&DescribeStreamSummaryOutput {
                stream_description_summary: StreamDescriptionSummary {
                    stream_arn: stream_arn("us-east-1", "000000000000", &name),
                    stream_name: name,
                    stream_status: "ACTIVE".into(),
                    stream_mode_details: StreamModeDetails { stream_mode: Some("PROVISIONED".into()) },
                    retention_period_hours: 24,
                    stream_creation_timestamp: Timestamp(0),
                    enhanced_monitoring: vec![],
                    encryption_type: "NONE".into(),
                    key_id: None,
                    open_shard_count: i64::from(state.shards),
                    consumer_count: 0,
                    warm_throughput: None,
                    max_record_size_in_kib: Some(1024),
                },
            }))
        }
        Operation::ListShards => {
            let shards = HashRange::uniform(state.shards)
                .into_iter()
                .enumerate()
                .map(|(i, range)| Shard {
                    shard_id: shard_id(i as u64),
                    parent_shard_id: None,
                    adjacent_parent_shard_id: None,
                    hash_key_range: HashKeyRange {
                        starting_hash_key: range.start.to_string(),
                        ending_hash_key: range.end.to_string(),
                    },
                    sequence_number_range: SequenceNumberRange {
                        starting_sequence_number: SequenceNumber::new(i as u64, 0).to_string(),
                        ending_sequence_number: None,
                    },
                })
                .collect();
            Ok(format.encode(&ListShardsOutput { shards, next_token: None }))
        }
        other => Err(ApiError::invalid(format!(
            "null-server stores nothing and does not serve {}; run without --drain/--verify",
            other.name()
        ))),
    }
}

/// Straight into the model types (JSON with serde_json alone): the cost this server exists
/// to measure.
fn parse<T: DeserializeOwned>(format: Format, body: &[u8]) -> Result<T, ApiError> {
    match format {
        Format::Json => serde_json::from_slice(body)
            .map_err(|e| ApiError::new(ErrorCode::Serialization, format!("Request body could not be parsed: {e}"))),
        Format::Cbor => format.decode(body),
    }
}

fn error(format: Format, e: ApiError) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    respond(status, format, format.encode_error(&e))
}

fn respond(status: StatusCode, format: Format, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(format.content_type()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answers::{PutRecordsAnswer, SummaryAnswer};

    fn state() -> State {
        State { shards: 3, next_offset: AtomicU64::new(0), entry_failure: 0.0, request_failure: 0.0 }
    }

    #[test]
    fn injected_failures_are_well_formed() {
        let s = State { entry_failure: 1.0, ..state() };
        let input = PutRecordsInput { records: Some(vec![PutRecordsRequestEntry::default(); 4]), ..Default::default() };
        let out: PutRecordsOutput = serde_json::from_slice(
            &answer(&s, Operation::PutRecords, Format::Json, &Format::Json.encode(&input)).unwrap(),
        )
        .unwrap();
        assert_eq!(out.failed_record_count, 4);
        assert!(out.records.iter().all(|r| r.error_code.is_some() && r.sequence_number.is_none()));
        let s = State { request_failure: 1.0, ..state() };
        assert_eq!(
            answer(&s, Operation::PutRecord, Format::Json, b"{}").unwrap_err().code,
            ErrorCode::ServiceUnavailable
        );
    }

    #[test]
    fn put_records_gets_one_result_per_entry() {
        let input = PutRecordsInput {
            stream_name: Some("s".into()),
            stream_arn: None,
            records: Some(vec![PutRecordsRequestEntry::default(); 5]),
        };
        let out = answer(&state(), Operation::PutRecords, Format::Json, &Format::Json.encode(&input)).unwrap();
        let parsed: PutRecordsOutput = serde_json::from_slice(&out).unwrap();
        assert_eq!((parsed.failed_record_count, parsed.records.len()), (0, 5));
        let lenient: PutRecordsAnswer = serde_json::from_slice(&out).unwrap();
        assert!(lenient.records.iter().all(|r| r.error_code.is_none() && r.sequence_number.is_some()));
        // In CBOR (the Java SDK's encoding), answered in CBOR.
        let out = answer(&state(), Operation::PutRecords, Format::Cbor, &Format::Cbor.encode(&input)).unwrap();
        let lenient: PutRecordsAnswer = Format::Cbor.decode(&out).unwrap();
        assert_eq!(lenient.records.len(), 5);
        assert!(lenient.records.iter().all(|r| r.sequence_number.is_some()));
    }

    #[test]
    fn control_plane_answers_let_run_start() {
        let s = state();
        let summary = answer(&s, Operation::DescribeStreamSummary, Format::Json, br#"{"StreamName":"x"}"#).unwrap();
        let summary: SummaryAnswer = serde_json::from_slice(&summary).unwrap();
        assert_eq!(summary.stream_description_summary.stream_status, "ACTIVE");
        let shards: ListShardsOutput =
            serde_json::from_slice(&answer(&s, Operation::ListShards, Format::Json, b"{}").unwrap()).unwrap();
        assert_eq!(shards.shards.len(), 3);
        assert!(answer(&s, Operation::GetRecords, Format::Json, b"{}").is_err());
        assert_eq!(
            answer(&s, Operation::PutRecords, Format::Json, b"{not json").unwrap_err().code,
            ErrorCode::Serialization
        );
    }
}
