//! The operator's actions on a stream go through the Kinesis API of its brokers, as any
//! client's would: create the stream, match its retention, read its shard counts.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::model::{
    AddTagsToStreamInput, CreateStreamInput, DeleteStreamInput, DescribeStreamSummaryOutput, ListShardsInput,
    ListShardsOutput, ListTagsForStreamInput, ListTagsForStreamOutput, RemoveTagsFromStreamInput, RetentionPeriodInput,
    ShardFilter, SplitShardInput, StreamModeDetails, StreamRef, UpdateShardCountInput, UpdateShardCountOutput,
    UpdateStreamModeInput,
};
use streamfabric_api::names::PAUSED_TAG;
use streamfabric_api::sigv4::Signer;
use streamfabric_api::{ApiError, ErrorCode, Format};

/// Where the brokers of a DataStream answer, from `{name}` and `{namespace}`: the Kinesis
/// API, and the admin port with `/stats`.
pub const DEFAULT_ENDPOINT_TEMPLATE: &str = "http://{name}.{namespace}.svc:4567";
pub const DEFAULT_ADMIN_TEMPLATE: &str = "http://{name}.{namespace}.svc:4568";

pub fn endpoint_for(template: &str, name: &str, namespace: &str) -> String {
    template.replace("{name}", name).replace("{namespace}", namespace)
}

/// One broker pod's admin port, through the headless Service.
pub const DEFAULT_POD_ADMIN_TEMPLATE: &str = "http://{pod}.{headless}.{namespace}.svc:4568";

/// `{ordinal}` is the pod's index in its StatefulSet (tests map it onto loopback addresses).
pub fn pod_endpoint_for(template: &str, pod: &str, headless: &str, namespace: &str) -> String {
    let ordinal = pod.rsplit_once('-').map_or("0", |(_, n)| n);
    template
        .replace("{pod}", pod)
        .replace("{ordinal}", ordinal)
        .replace("{headless}", headless)
        .replace("{namespace}", namespace)
}

/// What the brokers say of the stream.
/// What the DataStream asks of its stream in the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WantedStream {
    /// Open shards at creation.
    pub shards: i32,
    pub retention_hours: i32,
    pub on_demand: bool,
}

impl WantedStream {
    pub fn of(ds: &streamfabric_api::crd::DataStream) -> WantedStream {
        WantedStream {
            shards: ds.spec.shards,
            retention_hours: ds.spec.retention_hours,
            on_demand: ds.spec.mode == streamfabric_api::crd::StreamMode::OnDemand,
        }
    }

    /// The Kinesis stream mode.
    fn mode(&self) -> &'static str {
        if self.on_demand { "ON_DEMAND" } else { "PROVISIONED" }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamState {
    /// This call created it.
    pub created: bool,
    pub active: bool,
    pub open_shards: i32,
    pub closed_shards: i32,
    /// A reshard is under way (the stream is UPDATING).
    pub updating: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KinesisError {
    #[error("brokers unreachable at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{0}")]
    Api(ApiError),
}

#[derive(Clone)]
pub struct KinesisAdmin {
    http: Client<HttpConnector, Full<Bytes>>,
    /// Signs the calls (SigV4) for brokers that require it.
    signer: Option<Arc<Signer>>,
}

impl Default for KinesisAdmin {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        KinesisAdmin { http: Client::builder(TokioExecutor::new()).build(connector), signer: None }
    }
}

impl KinesisAdmin {
    /// The same client, its calls signed with `signer`'s key.
    pub fn signed_by(&self, signer: Signer) -> KinesisAdmin {
        KinesisAdmin { http: self.http.clone(), signer: Some(Arc::new(signer)) }
    }

    async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        endpoint: &str,
        op: &str,
        input: &I,
    ) -> Result<O, KinesisError> {
        let unreachable = |reason: String| KinesisError::Unreachable { endpoint: endpoint.to_string(), reason };
        let body = Format::Json.encode(input);
        let target = format!("Kinesis_20131202.{op}");
        let mut request = http::Request::post(endpoint)
            .header("content-type", Format::Json.content_type())
            .header("x-amz-target", &target);
        if let Some(signer) = &self.signer {
            let uri: http::Uri = endpoint.parse().map_err(|e: http::uri::InvalidUri| unreachable(e.to_string()))?;
            let host = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
            let signed = [("content-type", Format::Json.content_type()), ("x-amz-target", target.as_str())];
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            let (date, authorization) = signer.sign_post(&host, &signed, &body, now as i64);
            request = request.header("host", host).header("x-amz-date", date).header("authorization", authorization);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        if status.is_success() {
            return Format::Json.decode(&body).map_err(KinesisError::Api);
        }
        Err(KinesisError::Api(Format::Json.decode_error(&body)))
    }

    /// The brokers' `/stats` document at an admin endpoint.
    pub async fn stats(&self, admin: &str) -> Result<streamfabric_api::stats::BrokerStats, KinesisError> {
        let unreachable = |reason: String| KinesisError::Unreachable { endpoint: admin.to_string(), reason };
        let request = http::Request::get(format!("{}/stats", admin.trim_end_matches('/')))
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(request))
            .await
            .map_err(|_| unreachable("no answer within 10 s".into()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let body = response.into_body().collect().await.map_err(|e| unreachable(e.to_string()))?.to_bytes();
        serde_json::from_slice(&body).map_err(|e| unreachable(format!("unreadable /stats: {e}")))
    }

    /// Create the stream if the brokers lack it, bring its retention to `retention_hours`,
    /// and report its state.
    pub async fn ensure_stream(
        &self,
        endpoint: &str,
        name: &str,
        wanted: &WantedStream,
    ) -> Result<StreamState, KinesisError> {
        let by_name = StreamRef { stream_name: Some(name.to_string()), stream_arn: None };
        let mode = StreamModeDetails { stream_mode: Some(wanted.mode().into()) };
        let summary: DescribeStreamSummaryOutput = match self.call(endpoint, "DescribeStreamSummary", &by_name).await {
            Err(KinesisError::Api(e)) if e.code == ErrorCode::ResourceNotFound => {
                let create = CreateStreamInput {
                    stream_name: Some(name.to_string()),
                    shard_count: Some(wanted.shards as i64),
                    stream_mode_details: Some(mode),
                    ..CreateStreamInput::default()
                };
                let _: streamfabric_api::model::Empty = self.call(endpoint, "CreateStream", &create).await?;
                return Ok(StreamState { created: true, ..StreamState::default() });
            }
            other => other?,
        };
        let s = summary.stream_description_summary;
        let active = s.stream_status == "ACTIVE";
        let wanted_hours = wanted.retention_hours as i64;
        if active && s.retention_period_hours != wanted_hours {
            let op = if wanted_hours > s.retention_period_hours {
                "IncreaseStreamRetentionPeriod"
            } else {
                "DecreaseStreamRetentionPeriod"
            };
            let input = RetentionPeriodInput {
                stream_name: Some(name.to_string()),
                stream_arn: None,
                retention_period_hours: Some(wanted_hours),
            };
            let _: streamfabric_api::model::Empty = self.call(endpoint, op, &input).await?;
        }
        if active && s.stream_mode_details.stream_mode.as_deref() != Some(wanted.mode()) {
            let input =
                UpdateStreamModeInput { stream_arn: Some(s.stream_arn.clone()), stream_mode_details: Some(mode) };
            let _: streamfabric_api::model::Empty = self.call(endpoint, "UpdateStreamMode", &input).await?;
        }
        let shards: ListShardsOutput = self
            .call(
                endpoint,
                "ListShards",
                &ListShardsInput {
                    stream_name: Some(name.to_string()),
                    max_results: Some(streamfabric_api::limits::MAX_LIST_SHARDS_RESULTS),
                    ..ListShardsInput::default()
                },
            )
            .await?;
        let closed = shards.shards.iter().filter(|s| s.sequence_number_range.ending_sequence_number.is_some()).count();
        Ok(StreamState {
            created: false,
            active,
            open_shards: s.open_shard_count as i32,
            closed_shards: closed as i32,
            updating: s.stream_status == "UPDATING",
        })
    }

    /// Tag the stream paused (its brokers then refuse writes) or untag it, as `paused` says;
    /// returns whether anything changed.
    pub async fn ensure_paused(&self, endpoint: &str, name: &str, paused: bool) -> Result<bool, KinesisError> {
        let list = ListTagsForStreamInput { stream_name: Some(name.to_string()), ..ListTagsForStreamInput::default() };
        let tags: ListTagsForStreamOutput = self.call(endpoint, "ListTagsForStream", &list).await?;
        let tagged = tags.tags.iter().any(|t| t.key == PAUSED_TAG && t.value == "true");
        if tagged == paused {
            return Ok(false);
        }
        if paused {
            let input = AddTagsToStreamInput {
                stream_name: Some(name.to_string()),
                tags: Some([(PAUSED_TAG.to_string(), "true".to_string())].into()),
                ..AddTagsToStreamInput::default()
            };
            let _: streamfabric_api::model::Empty = self.call(endpoint, "AddTagsToStream", &input).await?;
        } else {
            let input = RemoveTagsFromStreamInput {
                stream_name: Some(name.to_string()),
                tag_keys: Some(vec![PAUSED_TAG.to_string()]),
                ..RemoveTagsFromStreamInput::default()
            };
            let _: streamfabric_api::model::Empty = self.call(endpoint, "RemoveTagsFromStream", &input).await?;
        }
        Ok(true)
    }

    /// Delete the stream (its brokers delete its objects in the object store, then forget
    /// it); true once it is gone. A stream still CREATING or UPDATING is deleted once ACTIVE.
    pub async fn delete_stream(&self, endpoint: &str, name: &str) -> Result<bool, KinesisError> {
        let by_name = StreamRef { stream_name: Some(name.to_string()), stream_arn: None };
        let summary: DescribeStreamSummaryOutput = match self.call(endpoint, "DescribeStreamSummary", &by_name).await {
            Err(KinesisError::Api(e)) if e.code == ErrorCode::ResourceNotFound => return Ok(true),
            other => other?,
        };
        if summary.stream_description_summary.stream_status == "ACTIVE" {
            let input = DeleteStreamInput { stream_name: Some(name.to_string()), ..DeleteStreamInput::default() };
            let _: streamfabric_api::model::Empty = self.call(endpoint, "DeleteStream", &input).await?;
        }
        Ok(false)
    }

    /// UpdateShardCount (uniform scaling) to `target` open shards.
    pub async fn update_shard_count(&self, endpoint: &str, name: &str, target: i32) -> Result<(), KinesisError> {
        let input = UpdateShardCountInput {
            stream_name: Some(name.to_string()),
            target_shard_count: Some(target as i64),
            scaling_type: Some("UNIFORM_SCALING".into()),
            ..UpdateShardCountInput::default()
        };
        let _: UpdateShardCountOutput = self.call(endpoint, "UpdateShardCount", &input).await?;
        Ok(())
    }

    /// SplitShard of `shard_id` into two halves of its hash key range.
    pub async fn split_in_half(&self, endpoint: &str, name: &str, shard_id: &str) -> Result<(), KinesisError> {
        let listed: ListShardsOutput = self
            .call(
                endpoint,
                "ListShards",
                &ListShardsInput {
                    stream_name: Some(name.to_string()),
                    shard_filter: Some(ShardFilter { r#type: Some("AT_LATEST".into()), ..ShardFilter::default() }),
                    ..ListShardsInput::default()
                },
            )
            .await?;
        let shard = listed.shards.iter().find(|s| s.shard_id == shard_id).ok_or_else(|| {
            KinesisError::Api(ApiError::not_found(format!("open shard {shard_id} of stream {name} not found")))
        })?;
        let parse = |v: &str| v.parse::<u128>().map_err(|e| KinesisError::Api(ApiError::internal(e.to_string())));
        let (start, end) =
            (parse(&shard.hash_key_range.starting_hash_key)?, parse(&shard.hash_key_range.ending_hash_key)?);
        let input = SplitShardInput {
            stream_name: Some(name.to_string()),
            shard_to_split: Some(shard_id.to_string()),
            new_starting_hash_key: Some((start + (end - start) / 2 + 1).to_string()),
            ..SplitShardInput::default()
        };
        let _: streamfabric_api::model::Empty = self.call(endpoint, "SplitShard", &input).await?;
        Ok(())
    }
}
