//! Stream lifecycle: create, delete, list, describe, retention, account limits.

use super::settings::{max_record_size, warm_throughput};
use super::validate::{self, bounded, required};
use crate::broker::Broker;
use crate::catalog::Stream;
use crate::catalog::meta::{ShardMeta, StreamMeta, StreamMode, StreamStatus};
use crate::tokens::PageKind;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::hashkey::HashRange;
use streamfabric_api::limits::*;
use streamfabric_api::model::*;
use streamfabric_api::names::validate_stream_name;
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, Violations};

fn mode_details(mode: StreamMode) -> StreamModeDetails {
    StreamModeDetails { stream_mode: Some(mode.as_str().to_string()) }
}

fn enhanced_monitoring(m: &StreamMeta) -> Vec<EnhancedMetrics> {
    vec![EnhancedMetrics { shard_level_metrics: m.shard_level_metrics.iter().cloned().collect() }]
}

fn encryption_type(m: &StreamMeta) -> String {
    if m.kms_key_id.is_some() { "KMS" } else { "NONE" }.into()
}

impl Broker {
    pub(crate) async fn create_stream(&self, input: CreateStreamInput) -> Result<Empty, ApiError> {
        let mut checks = Violations::default();
        let name = checks.check(required(&input.stream_name, "streamName"));
        if let Some(name) = name {
            checks.check(validate_stream_name("streamName", name));
        }
        let mode = match input.stream_mode_details.as_ref().and_then(|d| d.stream_mode.as_deref()) {
            None => StreamMode::Provisioned,
            Some(m) => {
                match checks.check(validate::one_of("streamModeDetails.streamMode", m, &["PROVISIONED", "ON_DEMAND"])) {
                    Some("ON_DEMAND") => StreamMode::OnDemand,
                    _ => StreamMode::Provisioned,
                }
            }
        };
        let shard_count = match (mode, input.shard_count) {
            (StreamMode::OnDemand, None) => Some(DEFAULT_ON_DEMAND_SHARDS as i64),
            (StreamMode::Provisioned, None) => checks.check(Err(ApiError::missing("shardCount"))),
            (_, Some(n)) => checks.check(bounded("shardCount", Some(n), 1, self.config.shard_limit, 1)),
        };
        let tags = input.tags.unwrap_or_default();
        if tags.len() > MAX_TAGS_PER_STREAM {
            checks.check::<()>(Err(ApiError::validation(
                "tags",
                tags.len(),
                &format!("Member must have at most {MAX_TAGS_PER_STREAM} entries"),
            )));
        }
        for (k, v) in &tags {
            checks.check(validate::tag(k, v));
        }
        let max_record_size_kib = input.max_record_size_in_kib.map(|kib| checks.check(max_record_size(kib)));
        let warm_throughput_mibps = input.warm_throughput_mibps.map(|w| checks.check(warm_throughput(w, mode)));
        checks.finish()?;
        let (Some(name), Some(shard_count)) = (name, shard_count) else {
            unreachable!("a missing name or shard count is a violation")
        };
        let now = Timestamp::now().millis();
        let meta = StreamMeta {
            name: name.clone(),
            incarnation: rand::random(),
            created_ms: now,
            status: StreamStatus::Creating,
            mode,
            retention_hours: DEFAULT_RETENTION_HOURS,
            tags,
            pending_reshard: Vec::new(),
            consumers: Vec::new(),
            shard_level_metrics: Default::default(),
            kms_key_id: None,
            max_record_size_kib: max_record_size_kib.flatten(),
            warm_throughput_mibps: warm_throughput_mibps.flatten(),
            resource_policy: None,
            shards: HashRange::uniform(shard_count as u32)
                .into_iter()
                .enumerate()
                .map(|(i, range)| ShardMeta {
                    index: i as u64,
                    parent: None,
                    adjacent_parent: None,
                    range,
                    created_ms: now,
                    closed: None,
                })
                .collect(),
        };
        let stream = self.catalog.create(meta, self.config.shard_limit)?;
        if let Some(fabric) = &self.fabric {
            // In a cluster ACTIVE also means every shard has a broker serving it.
            fabric.cluster.nudge();
            let (tier, delay) = (self.archive.tier().clone(), self.config.status_delay);
            let limit = fabric.cluster.settings().member_timeout;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let shards: Vec<String> = stream.shards().iter().map(|s| s.id.clone()).collect();
                crate::fabric::wait_until_owned(&tier, &stream.name, &shards, limit).await;
                let _ = stream.update_meta(|m| {
                    if m.status == StreamStatus::Creating {
                        m.status = StreamStatus::Active;
                    }
                    Ok(())
                });
            });
            return Ok(Empty {});
        }
        // CREATING for a moment, as in AWS, so that clients that wait for ACTIVE are exercised.
        run_after(self.config.status_delay, move || {
            let _ = stream.update_meta(|m| {
                if m.status == StreamStatus::Creating {
                    m.status = StreamStatus::Active;
                }
                Ok(())
            });
        });
        Ok(Empty {})
    }

    pub(crate) async fn delete_stream(&self, input: DeleteStreamInput) -> Result<Empty, ApiError> {
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        stream.update_meta(|m| {
            super::validate::active(m, "delete it")?;
            if !m.consumers.is_empty() && input.enforce_consumer_deletion != Some(true) {
                return Err(ApiError::in_use(format!(
                    "Stream {} has {} registered consumers; deregister them or set EnforceConsumerDeletion.",
                    m.name,
                    m.consumers.len()
                )));
            }
            m.status = StreamStatus::Deleting;
            Ok(())
        })?;
        // DELETING for a moment, as in AWS; then the objects and the files go.
        let (deletions, name, incarnation) = (self.deletions.clone(), stream.name.clone(), stream.incarnation);
        let delay = self.config.status_delay;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            deletions.finish(&name, incarnation);
        });
        Ok(Empty {})
    }

    pub(crate) async fn list_streams(&self, input: ListStreamsInput) -> Result<ListStreamsOutput, ApiError> {
        let limit = bounded("limit", input.limit, 1, MAX_LIST_STREAMS_LIMIT, 100)? as usize;
        let after = match (&input.next_token, &input.exclusive_start_stream_name) {
            (Some(token), _) => Some(self.signer.parse_page(token, PageKind::Streams)?.after),
            (None, Some(name)) => Some(name.clone()),
            (None, None) => None,
        };
        let streams: Vec<Arc<Stream>> = self
            .catalog
            .all()
            .into_iter()
            .filter(|s| after.as_ref().is_none_or(|a| s.name.as_str() > a.as_str()))
            .collect();
        let has_more = streams.len() > limit;
        let page = &streams[..streams.len().min(limit)];
        let summaries: Vec<StreamSummary> = page
            .iter()
            .map(|s| {
                let m = s.meta();
                StreamSummary {
                    stream_arn: self.arn(&m.name),
                    stream_status: m.status.as_str().to_string(),
                    stream_mode_details: mode_details(m.mode),
                    stream_creation_timestamp: Timestamp(m.created_ms),
                    stream_name: m.name,
                }
            })
            .collect();
        let next_token = has_more.then(|| self.signer.page(PageKind::Streams, "", &page.last().unwrap().name));
        Ok(ListStreamsOutput {
            stream_names: summaries.iter().map(|s| s.stream_name.clone()).collect(),
            has_more_streams: has_more,
            next_token,
            stream_summaries: summaries,
        })
    }

    pub(crate) async fn describe_stream(&self, input: DescribeStreamInput) -> Result<DescribeStreamOutput, ApiError> {
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        let limit = bounded("limit", input.limit, 1, MAX_DESCRIBE_STREAM_LIMIT, 100)? as usize;
        let after = match &input.exclusive_start_shard_id {
            Some(id) => Some(super::shards::shard_index_arg("exclusiveStartShardId", id)?),
            None => None,
        };
        let m = stream.meta();
        let mut shards: Vec<&ShardMeta> = m.shards.iter().filter(|s| after.is_none_or(|a| s.index > a)).collect();
        let has_more = shards.len() > limit;
        shards.truncate(limit);
        Ok(DescribeStreamOutput {
            stream_description: StreamDescription {
                stream_arn: self.arn(&m.name),
                stream_status: m.status.as_str().to_string(),
                stream_mode_details: mode_details(m.mode),
                shards: shards.into_iter().map(super::shards::shard_model).collect(),
                has_more_shards: has_more,
                retention_period_hours: m.retention_hours,
                stream_creation_timestamp: Timestamp(m.created_ms),
                enhanced_monitoring: enhanced_monitoring(&m),
                encryption_type: encryption_type(&m),
                key_id: m.kms_key_id.clone(),
                stream_name: m.name,
            },
        })
    }

    pub(crate) async fn describe_stream_summary(
        &self,
        input: StreamRef,
    ) -> Result<DescribeStreamSummaryOutput, ApiError> {
        let m = self.resolve(&input.stream_name, &input.stream_arn)?.meta();
        Ok(DescribeStreamSummaryOutput {
            stream_description_summary: StreamDescriptionSummary {
                stream_arn: self.arn(&m.name),
                stream_status: m.status.as_str().to_string(),
                stream_mode_details: mode_details(m.mode),
                retention_period_hours: m.retention_hours,
                stream_creation_timestamp: Timestamp(m.created_ms),
                enhanced_monitoring: enhanced_monitoring(&m),
                encryption_type: encryption_type(&m),
                key_id: m.kms_key_id.clone(),
                open_shard_count: m.open_shard_count() as i64,
                consumer_count: m.consumers.len() as i64,
                warm_throughput: self.warm_throughput_of(&m),
                max_record_size_in_kib: Some(self.max_record_size_kib_of(&m)),
                stream_name: m.name,
            },
        })
    }

    pub(crate) async fn increase_retention(&self, input: RetentionPeriodInput) -> Result<Empty, ApiError> {
        self.change_retention(input, true)
    }

    pub(crate) async fn decrease_retention(&self, input: RetentionPeriodInput) -> Result<Empty, ApiError> {
        self.change_retention(input, false)
    }

    fn change_retention(&self, input: RetentionPeriodInput, increase: bool) -> Result<Empty, ApiError> {
        let hours = validate::retention_hours(input.retention_period_hours)?;
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        stream.update_meta(|m| {
            if m.status != StreamStatus::Active {
                return Err(ApiError::in_use(format!("Stream {} is {}, not ACTIVE.", m.name, m.status.as_str())));
            }
            if increase && hours < m.retention_hours {
                return Err(ApiError::invalid(format!(
                    "Requested retention period ({hours} hours) for stream {} can not be shorter than existing retention period ({} hours). Use DecreaseRetentionPeriod API.",
                    m.name, m.retention_hours
                )));
            }
            if !increase && hours > m.retention_hours {
                return Err(ApiError::invalid(format!(
                    "Requested retention period ({hours} hours) for stream {} can not be longer than existing retention period ({} hours). Use IncreaseRetentionPeriod API.",
                    m.name, m.retention_hours
                )));
            }
            m.retention_hours = hours;
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub(crate) async fn describe_limits(&self, _input: Empty) -> Result<DescribeLimitsOutput, ApiError> {
        let streams = self.catalog.all();
        Ok(DescribeLimitsOutput {
            shard_limit: self.config.shard_limit,
            open_shard_count: self.catalog.open_shard_count() as i64,
            on_demand_stream_count: streams.iter().filter(|s| s.meta().mode == StreamMode::OnDemand).count() as i64,
            on_demand_stream_count_limit: ON_DEMAND_STREAM_LIMIT,
        })
    }
}

/// Run `f` on the blocking pool after `delay`.
pub(super) fn run_after(delay: Duration, f: impl FnOnce() + Send + 'static) {
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = tokio::task::spawn_blocking(f).await;
    });
}
