//! The application's side: a local endpoint that speaks PutRecord and PutRecords of the
//! Kinesis API (any AWS SDK, endpoint changed only; every other operation is passed to the
//! brokers unchanged) and a plain `POST /v1/streams/{stream}/records`; with a pulling
//! consumer, `GET /v1/next` and `POST /v1/checkpoint` (`consumer::pull`).

use crate::consumer::pull::PullQueue;
use crate::producer::{Outcome, Producer, Record};
use base64::Engine;
use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use std::sync::Arc;
use streamfabric_api::hashkey::parse_explicit_hash_key;
use streamfabric_api::limits::{
    DEFAULT_MAX_RECORD_BYTES, MAX_PARTITION_KEY_CHARS, MAX_PUT_RECORDS_BYTES, MAX_PUT_RECORDS_ENTRIES,
};
use streamfabric_api::model::{
    PutRecordInput, PutRecordOutput, PutRecordsInput, PutRecordsOutput, PutRecordsResultEntry, TARGET_PREFIX,
};
use streamfabric_api::{ApiError, ErrorCode, Format};

/// The largest request read: 5 MiB of data grows by a third in base64.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

pub async fn handle(
    producer: Arc<Producer>,
    pull: Option<&PullQueue>,
    req: http::Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return plain_error(StatusCode::PAYLOAD_TOO_LARGE, "ValidationException", &format!("request body: {e}"));
        }
    };
    match (parts.method.as_str(), parts.uri.path()) {
        ("GET", "/v1/next") => return pull_next(pull, parts.uri.query()).await,
        ("POST", "/v1/checkpoint") => return pull_checkpoint(pull, &body),
        (_, "/v1/next" | "/v1/checkpoint") => {
            return plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "GET /v1/next, POST /v1/checkpoint",
            );
        }
        _ => {}
    }
    if let Some(stream) = parts.uri.path().strip_prefix("/v1/streams/").and_then(|r| r.strip_suffix("/records")) {
        return if parts.method == http::Method::POST {
            plain_records(&producer, stream, &body).await
        } else {
            plain_error(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "use POST")
        };
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE);
    let format = Format::from_content_type(content_type.and_then(|v| v.to_str().ok()));
    let target = parts.headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let answer = match target.strip_prefix(TARGET_PREFIX) {
        Some("PutRecord") => put_record(&producer, format, &body).await,
        Some("PutRecords") => put_records(&producer, format, &body).await,
        _ => return forward(&producer, &target, content_type, body).await,
    };
    match answer {
        Ok(encoded) => respond(StatusCode::OK, format.content_type(), encoded),
        Err(e) => {
            let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            respond(status, format.content_type(), format.encode_error(&e))
        }
    }
}

async fn forward(
    producer: &Producer,
    target: &str,
    content_type: Option<&http::HeaderValue>,
    body: Bytes,
) -> Response<Full<Bytes>> {
    match producer.brokers().forward(target, content_type, body).await {
        Ok(answer) => {
            let mut response = Response::builder().status(answer.status);
            if let Some(ct) = answer.content_type {
                response = response.header(header::CONTENT_TYPE, ct);
            }
            response.body(Full::new(answer.body)).expect("valid response")
        }
        Err(e) => {
            let e = ApiError::internal(format!("the sidecar could not reach the brokers: {e:?}"));
            respond(StatusCode::INTERNAL_SERVER_ERROR, Format::Json.content_type(), Format::Json.encode_error(&e))
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

/// The stream a request names, by name or ARN.
fn stream_of(name: &Option<String>, arn: &Option<String>) -> Result<String, ApiError> {
    match (name, arn) {
        (Some(name), _) => Ok(name.clone()),
        (None, Some(arn)) => arn
            .rsplit_once(":stream/")
            .map(|(_, name)| name.to_string())
            .ok_or_else(|| ApiError::validation("streamARN", arn, "Member must be a Kinesis stream ARN")),
        (None, None) => Err(ApiError::missing("streamName")),
    }
}

/// The checks the brokers make, made before buffering, so that a bad record is refused at
/// once (as the brokers would refuse it) and never waits in a batch.
fn record(
    field: &str,
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    data: Option<Bytes>,
) -> Result<Record, ApiError> {
    let partition_key = partition_key.ok_or_else(|| ApiError::missing(&format!("{field}partitionKey")))?;
    let chars = partition_key.chars().count();
    if chars == 0 || chars > MAX_PARTITION_KEY_CHARS {
        return Err(ApiError::validation(
            format_args!("{field}partitionKey"),
            &partition_key,
            &format!("Member must have length between 1 and {MAX_PARTITION_KEY_CHARS}"),
        ));
    }
    let data = data.ok_or_else(|| ApiError::missing(&format!("{field}data")))?;
    if data.len() > DEFAULT_MAX_RECORD_BYTES {
        return Err(ApiError::validation(
            format_args!("{field}data"),
            format!("{} bytes", data.len()),
            &format!("Member must have length less than or equal to {DEFAULT_MAX_RECORD_BYTES}"),
        ));
    }
    if let Some(key) = &explicit_hash_key {
        parse_explicit_hash_key(format_args!("{field}explicitHashKey"), key)?;
    }
    Ok(Record { partition_key, explicit_hash_key, data })
}

fn check_request_size(records: &[Record]) -> Result<(), ApiError> {
    if records.is_empty() || records.len() > MAX_PUT_RECORDS_ENTRIES {
        return Err(ApiError::validation(
            "records",
            format!("{} records", records.len()),
            &format!("Member must have length between 1 and {MAX_PUT_RECORDS_ENTRIES}"),
        ));
    }
    let bytes: usize = records.iter().map(|r| r.data.len() + r.partition_key.len()).sum();
    if bytes > MAX_PUT_RECORDS_BYTES {
        return Err(ApiError::invalid(format!(
            "Records size exceeds {MAX_PUT_RECORDS_BYTES} bytes (data and partition keys): {bytes} bytes"
        )));
    }
    Ok(())
}

async fn put_record(producer: &Producer, format: Format, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let input: PutRecordInput = format.decode(body)?;
    let stream = stream_of(&input.stream_name, &input.stream_arn)?;
    let one = record("", input.partition_key, input.explicit_hash_key, input.data.map(|b| b.0))?;
    let outcome = producer.put(&stream, vec![one]).await.pop().expect("one outcome per record")?;
    Ok(format.encode(&PutRecordOutput {
        shard_id: outcome.shard_id,
        sequence_number: outcome.sequence_number,
        encryption_type: "NONE".into(),
    }))
}

async fn put_records(producer: &Producer, format: Format, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let input: PutRecordsInput = format.decode(body)?;
    let stream = stream_of(&input.stream_name, &input.stream_arn)?;
    let entries = input.records.ok_or_else(|| ApiError::missing("records"))?;
    let records = entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            record(&format!("records.{}.member.", i + 1), e.partition_key, e.explicit_hash_key, e.data.map(|b| b.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    check_request_size(&records)?;
    let outcomes = producer.put(&stream, records).await;
    if let Some(e) = request_error(&outcomes) {
        return Err(e);
    }
    let failed = outcomes.iter().filter(|o| o.is_err()).count() as i64;
    Ok(format.encode(&PutRecordsOutput {
        failed_record_count: failed,
        records: outcomes.into_iter().map(result_entry).collect(),
        encryption_type: "NONE".into(),
    }))
}

/// The brokers refused the whole request (no such stream, paused, ...): so is the
/// application's, as the brokers would answer it, rather than each entry failing alike.
fn request_error(outcomes: &[Outcome]) -> Option<ApiError> {
    let first = outcomes.first()?.as_ref().err()?;
    let per_entry = matches!(first.code, ErrorCode::ProvisionedThroughputExceeded | ErrorCode::InternalFailure);
    let all_alike = outcomes.iter().all(|o| o.as_ref().err().is_some_and(|e| e.code == first.code));
    (!per_entry && all_alike).then(|| first.clone())
}

fn result_entry(outcome: Outcome) -> PutRecordsResultEntry {
    match outcome {
        Ok(p) => PutRecordsResultEntry {
            shard_id: Some(p.shard_id),
            sequence_number: Some(p.sequence_number),
            ..PutRecordsResultEntry::default()
        },
        Err(e) => PutRecordsResultEntry {
            error_code: Some(e.code.as_str().to_string()),
            error_message: Some(e.message),
            ..PutRecordsResultEntry::default()
        },
    }
}

/// One record of the plain API: data as UTF-8 text (`data`) or base64 (`dataBase64`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PlainRecord {
    partition_key: Option<String>,
    explicit_hash_key: Option<String>,
    data: Option<String>,
    data_base64: Option<String>,
}

/// `POST /v1/streams/{stream}/records`: a JSON array of records, or JSON lines.
async fn plain_records(producer: &Producer, stream: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let parsed: Result<Vec<PlainRecord>, String> = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).map_err(|e| format!("the JSON array of records: {e}")),
        _ => body
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
            .map(|(n, line)| serde_json::from_slice(line).map_err(|e| format!("line {}: {e}", n + 1)))
            .collect(),
    };
    let records = parsed.map_err(ApiError::invalid).and_then(|plain| {
        let records = plain
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let field = format!("records.{}.", i + 1);
                let data = match (r.data, r.data_base64) {
                    (Some(text), None) => Some(Bytes::from(text)),
                    (None, Some(b64)) => Some(Bytes::from(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64.as_bytes())
                            .map_err(|e| ApiError::invalid(format!("{field}dataBase64 is not base64: {e}")))?,
                    )),
                    (Some(_), Some(_)) => {
                        return Err(ApiError::invalid(format!("{field}: give data or dataBase64, not both")));
                    }
                    (None, None) => None,
                };
                record(&field, r.partition_key, r.explicit_hash_key, data)
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_request_size(&records)?;
        Ok(records)
    });
    let records = match records {
        Ok(r) => r,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, e.code.as_str(), &e.message),
    };
    let outcomes = producer.put(stream, records).await;
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    let answers: Vec<serde_json::Value> = outcomes
        .into_iter()
        .map(|o| match o {
            Ok(p) => serde_json::json!({"shardId": p.shard_id, "sequenceNumber": p.sequence_number}),
            Err(e) => serde_json::json!({"errorCode": e.code.as_str(), "errorMessage": e.message}),
        })
        .collect();
    let body = serde_json::json!({"failedRecordCount": failed, "records": answers});
    respond(StatusCode::OK, "application/json", serde_json::to_vec(&body).expect("JSON"))
}

fn plain_error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"errorCode": code, "message": message});
    respond(status, "application/json", serde_json::to_vec(&body).expect("JSON"))
}

fn no_pull() -> Response<Full<Bytes>> {
    plain_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFoundException",
        "this sidecar has no pulling consumer: start it with --consumer-application and --consumer-stream, without --deliver-to",
    )
}

/// `GET /v1/next?max=N&waitMs=W`.
async fn pull_next(pull: Option<&PullQueue>, query: Option<&str>) -> Response<Full<Bytes>> {
    let Some(pull) = pull else { return no_pull() };
    let (mut max, mut wait_ms) = (100usize, 1_000u64);
    for (key, value) in query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
        let parsed = match key {
            "max" => value.parse().ok().filter(|m| (1..=10_000).contains(m)).map(|m| max = m),
            "waitMs" => value.parse().ok().filter(|w| *w <= 20_000).map(|w| wait_ms = w),
            _ => Some(()),
        };
        if parsed.is_none() {
            let limit = if key == "max" { "between 1 and 10000" } else { "between 0 and 20000" };
            return plain_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                &format!("{key}={value}: must be {limit}"),
            );
        }
    }
    let records = pull.next(max, std::time::Duration::from_millis(wait_ms)).await;
    let body = serde_json::json!({ "records": records });
    respond(StatusCode::OK, "application/json", serde_json::to_vec(&body).expect("JSON"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PullCheckpoint {
    shard_id: String,
    sequence_number: String,
    #[serde(default)]
    sub_sequence_number: u64,
}

/// `POST /v1/checkpoint`.
fn pull_checkpoint(pull: Option<&PullQueue>, body: &[u8]) -> Response<Full<Bytes>> {
    let Some(pull) = pull else { return no_pull() };
    let input: PullCheckpoint = match serde_json::from_slice(body) {
        Ok(c) => c,
        Err(e) => {
            let message = format!("the checkpoint (shardId, sequenceNumber, subSequenceNumber): {e}");
            return plain_error(StatusCode::BAD_REQUEST, "ValidationException", &message);
        }
    };
    match pull.checkpoint(&input.shard_id, &input.sequence_number, input.sub_sequence_number) {
        Ok(()) => respond(StatusCode::OK, "application/json", b"{}".to_vec()),
        Err(why) => plain_error(StatusCode::CONFLICT, "InvalidArgumentException", &why),
    }
}
