//! Enhanced fan-out consumers: registered per stream (at most 20), kept in the stream's
//! description (so cluster-wide, and gone with the stream), CREATING then ACTIVE, DELETING
//! then gone, as in AWS. SubscribeToShard reads for them.

use super::streams::run_after;
use super::validate::{bounded, required};
use crate::broker::Broker;
use crate::catalog::Stream;
use crate::catalog::meta::{ConsumerMeta, ConsumerStatus};
use crate::tokens::PageKind;
use std::sync::Arc;
use streamfabric_api::ApiError;
use streamfabric_api::limits::MAX_CONSUMERS_PER_STREAM;
use streamfabric_api::model::*;
use streamfabric_api::names::{consumer_arn, parse_consumer_arn, stream_name_from_arn, validate_consumer_name};
use streamfabric_api::types::Timestamp;

const MAX_LIST_STREAM_CONSUMERS_RESULTS: i64 = 10_000;

impl Broker {
    pub(crate) async fn register_stream_consumer(
        &self,
        input: RegisterStreamConsumerInput,
    ) -> Result<RegisterStreamConsumerOutput, ApiError> {
        let stream = self.stream_of_arn(&input.stream_arn)?;
        let name = required(&input.consumer_name, "consumerName")?;
        validate_consumer_name("consumerName", name)?;
        for (k, v) in input.tags.iter().flatten() {
            super::validate::tag(k, v)?;
        }
        let created_ms = Timestamp::now().millis();
        stream.update_meta(|m| {
            if m.consumers.iter().any(|c| &c.name == name) {
                return Err(ApiError::in_use(format!(
                    "Consumer {name} under stream {} already exists for account {}.",
                    m.name, self.config.account
                )));
            }
            if m.consumers.len() >= MAX_CONSUMERS_PER_STREAM {
                return Err(ApiError::limit(format!(
                    "Consumer limit of {MAX_CONSUMERS_PER_STREAM} reached for stream {} under account {}.",
                    m.name, self.config.account
                )));
            }
            m.consumers.push(ConsumerMeta {
                name: name.clone(),
                created_ms,
                status: ConsumerStatus::Creating,
                tags: input.tags.clone().unwrap_or_default(),
                resource_policy: None,
            });
            Ok(())
        })?;
        // CREATING for a moment, as in AWS.
        let (ready, ready_name) = (stream.clone(), name.clone());
        run_after(self.config.status_delay, move || {
            let _ = ready.update_meta(|m| {
                for c in m.consumers.iter_mut().filter(|c| c.name == ready_name && c.created_ms == created_ms) {
                    c.status = ConsumerStatus::Active;
                }
                Ok(())
            });
        });
        let consumer = ConsumerMeta {
            name: name.clone(),
            created_ms,
            status: ConsumerStatus::Creating,
            tags: Default::default(),
            resource_policy: None,
        };
        Ok(RegisterStreamConsumerOutput { consumer: self.consumer_model(&stream, &consumer) })
    }

    pub(crate) async fn deregister_stream_consumer(&self, input: ConsumerRef) -> Result<Empty, ApiError> {
        let (stream, consumer) = self.consumer_of(&input)?;
        stream.update_meta(|m| {
            for c in m.consumers.iter_mut().filter(|c| c.name == consumer.name) {
                c.status = ConsumerStatus::Deleting;
            }
            Ok(())
        })?;
        // DELETING for a moment; then it is gone (its subscriptions end).
        run_after(self.config.status_delay, move || {
            let _ = stream.update_meta(|m| {
                m.consumers.retain(|c| !(c.name == consumer.name && c.created_ms == consumer.created_ms));
                Ok(())
            });
        });
        Ok(Empty {})
    }

    pub(crate) async fn describe_stream_consumer(
        &self,
        input: ConsumerRef,
    ) -> Result<DescribeStreamConsumerOutput, ApiError> {
        let (stream, consumer) = self.consumer_of(&input)?;
        let c = self.consumer_model(&stream, &consumer);
        Ok(DescribeStreamConsumerOutput {
            consumer_description: ConsumerDescription {
                consumer_name: c.consumer_name,
                consumer_arn: c.consumer_arn,
                consumer_status: c.consumer_status,
                consumer_creation_timestamp: c.consumer_creation_timestamp,
                stream_arn: self.arn(&stream.name),
            },
        })
    }

    pub(crate) async fn list_stream_consumers(
        &self,
        input: ListStreamConsumersInput,
    ) -> Result<ListStreamConsumersOutput, ApiError> {
        let max = bounded("maxResults", input.max_results, 1, MAX_LIST_STREAM_CONSUMERS_RESULTS, 100)? as usize;
        let stream = self.stream_of_arn(&input.stream_arn)?;
        let scope = format!("{}/{}", stream.name, stream.incarnation);
        let after = match &input.next_token {
            Some(token) => {
                let page = self.signer.parse_page(token, PageKind::Consumers)?;
                if page.scope != scope {
                    return Err(ApiError::invalid("Invalid NextToken: it belongs to another stream."));
                }
                Some(page.after)
            }
            None => None,
        };
        let meta = stream.meta();
        if let Some(at) = input.stream_creation_timestamp
            && at.millis() / 1000 != meta.created_ms / 1000
        {
            return Err(self.not_found(&stream.name));
        }
        // In registration order; a page ends after a consumer's name.
        let start = match &after {
            Some(name) => meta.consumers.iter().position(|c| &c.name == name).map_or(meta.consumers.len(), |i| i + 1),
            None => 0,
        };
        let page: Vec<&ConsumerMeta> = meta.consumers[start..].iter().take(max).collect();
        let next_token = (start + page.len() < meta.consumers.len())
            .then(|| self.signer.page(PageKind::Consumers, &scope, &page.last().expect("a full page").name));
        let consumers = page.into_iter().map(|c| self.consumer_model(&stream, c)).collect();
        Ok(ListStreamConsumersOutput { consumers, next_token })
    }

    /// Finish the status changes a restart (or a coordinator that stopped) cut short: a
    /// consumer CREATING for longer than the status delay is ACTIVE, a DELETING one goes.
    pub fn settle_consumers(&self) {
        let ready_before = Timestamp::now().millis() - self.config.status_delay.as_millis() as i64;
        for stream in self.catalog.all() {
            let unsettled = stream.with_meta(|m| {
                m.consumers.iter().any(|c| {
                    c.status == ConsumerStatus::Deleting
                        || (c.status == ConsumerStatus::Creating && c.created_ms < ready_before)
                })
            });
            if !unsettled {
                continue;
            }
            let settled = stream.update_meta(|m| {
                m.consumers.retain(|c| c.status != ConsumerStatus::Deleting);
                for c in m.consumers.iter_mut().filter(|c| c.created_ms < ready_before) {
                    c.status = ConsumerStatus::Active;
                }
                Ok(())
            });
            if let Err(e) = settled {
                tracing::warn!(stream = %stream.name, "settling consumers: {}", e.message);
            }
        }
    }

    /// The stream of a required StreamARN.
    fn stream_of_arn(&self, arn: &Option<String>) -> Result<Arc<Stream>, ApiError> {
        let arn = required(arn, "streamARN")?;
        let name = stream_name_from_arn(arn)?;
        self.catalog.get(name).ok_or_else(|| self.not_found(name))
    }

    /// The consumer named by its ARN, or by its stream's ARN and its name.
    pub(crate) fn consumer_of(&self, input: &ConsumerRef) -> Result<(Arc<Stream>, ConsumerMeta), ApiError> {
        let (stream, name, seconds) = match (&input.consumer_arn, &input.stream_arn, &input.consumer_name) {
            (Some(arn), _, _) => {
                let (stream, name, seconds) = parse_consumer_arn(arn)?;
                let stream = self.catalog.get(stream).ok_or_else(|| self.not_found(stream))?;
                (stream, name.to_string(), Some(seconds))
            }
            (None, Some(_), Some(name)) => {
                validate_consumer_name("consumerName", name)?;
                (self.stream_of_arn(&input.stream_arn)?, name.clone(), None)
            }
            _ => {
                return Err(ApiError::invalid("Either ConsumerARN, or StreamARN and ConsumerName, must be provided."));
            }
        };
        let meta = stream.meta();
        // A consumer ARN names one registration: not a later one of the same name.
        let found =
            meta.consumers.iter().find(|c| c.name == name && seconds.is_none_or(|s| s == c.created_ms / 1000)).cloned();
        match found {
            Some(c) => Ok((stream, c)),
            None => Err(ApiError::not_found(format!(
                "Consumer {name} under stream {} not found for account {}.",
                stream.name, self.config.account
            ))),
        }
    }

    fn consumer_model(&self, stream: &Stream, c: &ConsumerMeta) -> Consumer {
        Consumer {
            consumer_name: c.name.clone(),
            consumer_arn: consumer_arn(&self.arn(&stream.name), &c.name, c.created_ms),
            consumer_status: c.status.as_str().to_string(),
            consumer_creation_timestamp: Timestamp(c.created_ms),
        }
    }
}
