//! Where a request is answered in a cluster: data operations by the broker serving their
//! shard (forwarded there in one hop; PutRecords split by owner and put back together in
//! request order), control operations by the coordinator (the one writer of stream
//! descriptions), everything else here.

use super::peers::Relayed;
use crate::broker::Broker;
use crate::catalog::Stream;
use crate::http::Answer;
use crate::shard::Shard;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::Arc;
use streamfabric_api::model::*;
use streamfabric_api::names::{parse_consumer_arn, parse_shard_id, stream_name_from_arn};
use streamfabric_api::put_records_answer::PutRecordsAnswer;
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, ErrorCode, Format};

/// An answer: made here, or relayed as the peer gave it.
pub enum Reply {
    Local(Result<Answer, ApiError>),
    Relayed(Relayed),
}

/// One Kinesis request, as received.
pub struct Request<'a> {
    pub op: Operation,
    pub format: Format,
    pub target: &'a str,
    pub body: Bytes,
    /// Sent by another broker: answered here or refused, never forwarded again.
    pub forwarded: bool,
}

/// The retryable answer for a shard that has no serving owner at this moment.
pub fn moving(stream: &str, shard: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        format!("Shard {shard} of stream {stream} is moving between brokers of the cluster. Retry shortly."),
    )
}

/// Where one shard's requests go.
enum Route {
    Here,
    Peer(String),
    Unavailable(ApiError),
}

fn route(broker: &Broker, stream: &str, shard: &Shard, forwarded: bool) -> Route {
    if shard.is_serving() {
        return Route::Here;
    }
    let fabric = broker.fabric.as_ref().expect("cluster mode");
    match fabric.cluster.owner_of(stream, &shard.id) {
        Some((owner, address)) if !forwarded && owner != fabric.cluster.broker_id() => Route::Peer(address),
        _ => Route::Unavailable(moving(stream, &shard.id)),
    }
}

fn is_control(op: Operation) -> bool {
    use Operation::*;
    matches!(
        op,
        CreateStream
            | DeleteStream
            | IncreaseStreamRetentionPeriod
            | DecreaseStreamRetentionPeriod
            | AddTagsToStream
            | RemoveTagsFromStream
            | SplitShard
            | MergeShards
            | UpdateShardCount
            | UpdateStreamMode
            | RegisterStreamConsumer
            | DeregisterStreamConsumer
            | EnableEnhancedMonitoring
            | DisableEnhancedMonitoring
            | StartStreamEncryption
            | StopStreamEncryption
            | TagResource
            | UntagResource
            | UpdateMaxRecordSize
            | UpdateStreamWarmThroughput
            | PutResourcePolicy
            | DeleteResourcePolicy
    )
}

impl Broker {
    /// Answer one request in cluster mode.
    pub async fn dispatch(self: &Arc<Self>, req: Request<'_>) -> Reply {
        match req.op {
            Operation::PutRecord => self.route_put_record(req).await,
            Operation::PutRecords => self.route_put_records(req).await,
            Operation::GetShardIterator => self.route_get_shard_iterator(req).await,
            Operation::GetRecords => self.route_get_records(req).await,
            op if is_control(op) => self.route_control(req).await,
            _ => self.here(&req).await,
        }
    }

    /// `resolve_serving`, reading the stream's description from the bucket first when this
    /// broker does not know it as serving (yet): it may have been created or turned ACTIVE
    /// at the coordinator since this broker's last sync.
    async fn resolve_fresh(&self, name: &Option<String>, arn: &Option<String>) -> Result<Arc<Stream>, ApiError> {
        let known = self.resolve_serving(name, arn);
        let coordinator = self.fabric.as_ref().is_some_and(|f| f.cluster.is_coordinator());
        if known.is_ok() || coordinator {
            return known;
        }
        let Ok(named) = crate::ops::validate::stream_name(name, arn) else { return known };
        self.sync_stream_now(&named).await;
        self.resolve_serving(name, arn)
    }

    async fn here(&self, req: &Request<'_>) -> Reply {
        Reply::Local(self.answer(req.op, req.format, &req.body).await)
    }

    async fn relay(&self, req: &Request<'_>, address: &str) -> Reply {
        let fabric = self.fabric.as_ref().expect("cluster mode");
        match fabric.peers.forward(address, req.target, req.format, req.body.clone()).await {
            Ok(relayed) => Reply::Relayed(relayed),
            Err(e) => Reply::Local(Err(e)),
        }
    }

    /// A request for one shard: where it is served.
    async fn to_shard(&self, req: Request<'_>, stream: &str, shard: &Shard) -> Reply {
        match route(self, stream, shard, req.forwarded) {
            Route::Here => self.here(&req).await,
            Route::Peer(address) => self.relay(&req, &address).await,
            Route::Unavailable(e) => Reply::Local(Err(e)),
        }
    }

    /// Where a request for `shard` goes: None to answer it here, else the owner's address.
    pub(crate) fn shard_owner_elsewhere(
        &self,
        stream: &str,
        shard: &Shard,
        forwarded: bool,
    ) -> Result<Option<String>, ApiError> {
        if self.fabric.is_none() {
            return Ok(None);
        }
        match route(self, stream, shard, forwarded) {
            Route::Here => Ok(None),
            Route::Peer(address) => Ok(Some(address)),
            Route::Unavailable(e) => Err(e),
        }
    }

    /// Read a stream's description from the bucket now (a change made at the coordinator
    /// since this broker's last sync); a failure leaves what this broker knew.
    pub(crate) async fn sync_stream_now(&self, name: &str) {
        if let Err(e) = super::sync::sync_stream(self, name).await {
            tracing::debug!(stream = %name, "reading the stream's description: {e}");
        }
    }

    async fn route_put_record(&self, req: Request<'_>) -> Reply {
        // Anything malformed is refused here, with the same answer a broker alone gives.
        let Ok(input) = req.format.decode_shared::<PutRecordInput>(&req.body) else { return self.here(&req).await };
        let limit = self.record_limit(&input.stream_name, &input.stream_arn);
        let Ok(hash) = self.check_put_record(&input, limit) else { return self.here(&req).await };
        let Ok(stream) = self.resolve_fresh(&input.stream_name, &input.stream_arn).await else {
            return self.here(&req).await;
        };
        let shard = stream.topology().route(hash).clone();
        match route(self, &stream.name, &shard, req.forwarded) {
            // Decoded once: the broker alone's path from here.
            Route::Here => Reply::Local(self.put_record(input).await.map(|out| req.format.encode(&out).into())),
            Route::Peer(address) => self.relay(&req, &address).await,
            Route::Unavailable(e) => Reply::Local(Err(e)),
        }
    }

    async fn route_get_shard_iterator(&self, req: Request<'_>) -> Reply {
        let Ok(input) = req.format.decode::<GetShardIteratorInput>(&req.body) else { return self.here(&req).await };
        let Ok(stream) = self.resolve_fresh(&input.stream_name, &input.stream_arn).await else {
            return self.here(&req).await;
        };
        let Some(shard) = input.shard_id.as_deref().and_then(parse_shard_id).and_then(|i| stream.shard(i)) else {
            return self.here(&req).await;
        };
        self.to_shard(req, &stream.name, &shard).await
    }

    async fn route_get_records(&self, req: Request<'_>) -> Reply {
        let Ok(input) = req.format.decode::<GetRecordsInput>(&req.body) else { return self.here(&req).await };
        let token = input.shard_iterator.as_deref().map(|it| self.signer.parse_iterator(it, Timestamp::now().millis()));
        let Some(Ok(token)) = token else { return self.here(&req).await };
        let shard = self.catalog.get(&token.stream).filter(|s| s.incarnation == token.incarnation);
        let Some(shard) = shard.as_ref().and_then(|s| s.shard(token.shard_index)) else {
            return self.here(&req).await;
        };
        self.to_shard(req, &token.stream, &shard).await
    }

    /// Split by the broker serving each record's shard; put the answers back in request order.
    async fn route_put_records(&self, req: Request<'_>) -> Reply {
        let Ok(mut input) = req.format.decode_shared::<PutRecordsInput>(&req.body) else {
            return self.here(&req).await;
        };
        let Some(entries) = input.records.as_deref() else { return self.here(&req).await };
        let limit = self.record_limit(&input.stream_name, &input.stream_arn);
        let Ok(hashes) = self.check_put_records(entries, limit) else { return self.here(&req).await };
        let Ok(stream) = self.resolve_fresh(&input.stream_name, &input.stream_arn).await else {
            return self.here(&req).await;
        };
        let topology = stream.topology();
        // Per destination (None: here), the positions of its entries.
        let mut groups: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        let mut refused: Vec<(usize, ApiError)> = Vec::new();
        for (i, hash) in hashes.iter().enumerate() {
            match route(self, &stream.name, topology.route(*hash), req.forwarded) {
                Route::Here => groups.entry(None).or_default().push(i),
                Route::Peer(address) => groups.entry(Some(address)).or_default().push(i),
                Route::Unavailable(e) => refused.push((i, e)),
            }
        }
        if refused.is_empty() && groups.len() == 1 {
            return match groups.into_keys().next().expect("one group") {
                // Decoded and checked once: the broker alone's path from here.
                None => {
                    let entries = input.records.take().unwrap_or_default();
                    let put = self.put_checked_records(input, entries, hashes).await;
                    Reply::Local(put.map(|answer| answer.encode(req.format).into()))
                }
                Some(address) => self.relay(&req, &address).await,
            };
        }
        let mut results = vec![PutRecordsResultEntry::default(); entries.len()];
        let fail = |results: &mut Vec<PutRecordsResultEntry>, positions: &[usize], code: ErrorCode, message: &str| {
            for &p in positions {
                results[p].error_code = Some(code.as_entry_code().as_str().to_string());
                results[p].error_message = Some(message.to_string());
            }
        };
        for (i, e) in &refused {
            fail(&mut results, &[*i], e.code, &e.message);
        }
        let req = &req;
        let parts = groups.into_iter().map(|(destination, positions)| {
            let part = PutRecordsInput {
                stream_name: input.stream_name.clone(),
                stream_arn: input.stream_arn.clone(),
                records: Some(positions.iter().map(|&p| entries[p].clone()).collect()),
            };
            async move { (positions, self.put_part(req, destination, part).await) }
        });
        for (positions, answer) in futures::future::join_all(parts).await {
            match answer {
                Ok(out) if out.records.len() == positions.len() => {
                    for (&p, r) in positions.iter().zip(out.records) {
                        results[p] = r;
                    }
                }
                Ok(out) => {
                    let message =
                        format!("a broker answered {} results for {} records", out.records.len(), positions.len());
                    fail(&mut results, &positions, ErrorCode::InternalFailure, &message);
                }
                Err(e) => fail(&mut results, &positions, e.code, &e.message),
            }
        }
        let failed = results.iter().filter(|r| r.error_code.is_some()).count() as i64;
        let out = PutRecordsOutput {
            failed_record_count: failed,
            records: results,
            encryption_type: stream.encryption_type().into(),
        };
        Reply::Local(Ok(req.format.encode(&out).into()))
    }

    /// One part of a split PutRecords, here or at a peer.
    async fn put_part(
        &self,
        req: &Request<'_>,
        destination: Option<String>,
        part: PutRecordsInput,
    ) -> Result<PutRecordsOutput, ApiError> {
        let Some(address) = destination else { return self.put_records(part).await.map(PutRecordsAnswer::into_output) };
        let fabric = self.fabric.as_ref().expect("cluster mode");
        let relayed = fabric.peers.forward(&address, req.target, req.format, req.format.encode(&part).into()).await?;
        if relayed.status.is_success() {
            return req.format.decode(&relayed.body);
        }
        Err(relayed_error(req.format, &relayed))
    }

    /// Control operations run at the coordinator; once it answered, this broker adopts the
    /// stream's new description before answering (a Describe here sees the change).
    async fn route_control(&self, req: Request<'_>) -> Reply {
        let fabric = self.fabric.as_ref().expect("cluster mode");
        if fabric.cluster.is_coordinator() {
            let answer = self.answer(req.op, req.format, &req.body).await;
            // The description is in the bucket before the answer: every broker can adopt it.
            self.archive.flush_meta().await;
            return Reply::Local(answer);
        }
        let coordinator = fabric.cluster.coordinator().filter(|(id, _)| id != fabric.cluster.broker_id());
        let Some((_, address)) = coordinator.filter(|_| !req.forwarded) else {
            return Reply::Local(Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The cluster has no coordinator at the moment (one is being elected). Retry shortly.",
            )));
        };
        let reply = self.relay(&req, &address).await;
        if let Some(name) = stream_named(req.format, &req.body)
            && let Err(e) = super::sync::sync_stream(self, &name).await
        {
            tracing::warn!(stream = %name, "adopting the stream's new description: {e}");
        }
        reply
    }
}

/// The stream a control request names (StreamName, else the name in StreamARN).
fn stream_named(format: Format, body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Named {
        stream_name: Option<String>,
        #[serde(rename = "StreamARN")]
        stream_arn: Option<String>,
        /// Tags and resource policies name a stream or a consumer by this.
        #[serde(rename = "ResourceARN")]
        resource_arn: Option<String>,
        #[serde(rename = "ConsumerARN")]
        consumer_arn: Option<String>,
    }
    let named: Named = format.decode(body).ok()?;
    let of_arn = |arn: &str| {
        let stream = if arn.contains("/consumer/") {
            parse_consumer_arn(arn).ok().map(|(stream, _, _)| stream)
        } else {
            stream_name_from_arn(arn).ok()
        };
        stream.map(str::to_string)
    };
    named
        .stream_name
        .or_else(|| [named.stream_arn, named.resource_arn, named.consumer_arn].iter().flatten().find_map(|a| of_arn(a)))
}

/// A peer's error answer as an error here (its code and message).
fn relayed_error(format: Format, relayed: &Relayed) -> ApiError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type")]
        kind: Option<String>,
        message: Option<String>,
    }
    let body: Option<ErrorBody> = format.decode(&relayed.body).ok();
    let code = body.as_ref().and_then(|b| b.kind.as_deref()).and_then(ErrorCode::from_name).unwrap_or(
        if relayed.status.is_server_error() { ErrorCode::ServiceUnavailable } else { ErrorCode::InternalFailure },
    );
    let message = body.and_then(|b| b.message).unwrap_or_else(|| format!("a peer answered HTTP {}", relayed.status));
    ApiError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A control operation relayed to the coordinator is adopted here before the answer only
    /// if its stream is known from the request: by name, or by any ARN naming it or one of
    /// its consumers (a resource policy or tags set on a consumer, for one).
    #[test]
    fn the_stream_of_a_control_request_is_found_by_name_or_by_any_arn() {
        let stream = "arn:aws:kinesis:us-east-1:000000000000:stream/shared";
        let consumer = format!("{stream}/consumer/c1:1700000000");
        for body in [
            serde_json::json!({"StreamName": "shared"}),
            serde_json::json!({"StreamARN": stream}),
            serde_json::json!({"ResourceARN": stream, "Policy": "{}"}),
            serde_json::json!({"ResourceARN": consumer}),
            serde_json::json!({"ConsumerARN": consumer}),
        ] {
            for format in [Format::Json, Format::Cbor] {
                let bytes = format.encode(&body);
                assert_eq!(stream_named(format, &bytes).as_deref(), Some("shared"), "{body} in {format:?}");
            }
        }
        let none = serde_json::json!({"ResourceARN": "not an arn"});
        assert_eq!(stream_named(Format::Json, &Format::Json.encode(&none)), None);
    }
}
