//! Stream tags.

use super::validate::{self, bounded, required};
use crate::broker::Broker;
use streamfabric_api::ApiError;
use streamfabric_api::limits::MAX_TAGS_PER_STREAM;
use streamfabric_api::model::*;
use streamfabric_api::names::parse_consumer_arn;

impl Broker {
    pub(crate) async fn add_tags(&self, input: AddTagsToStreamInput) -> Result<Empty, ApiError> {
        let tags = required(&input.tags, "tags")?;
        if tags.is_empty() {
            return Err(ApiError::validation("tags", "{}", "Member must have at least 1 entry"));
        }
        for (k, v) in tags {
            validate::tag(k, v)?;
        }
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        stream.update_meta(|m| {
            let added = tags.keys().filter(|k| !m.tags.contains_key(*k)).count();
            if m.tags.len() + added > MAX_TAGS_PER_STREAM {
                return Err(ApiError::limit(format!(
                    "Failed to add tags to stream {}: a stream can have at most {MAX_TAGS_PER_STREAM} tags; it has {} and {added} new keys were given.",
                    m.name,
                    m.tags.len()
                )));
            }
            m.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub(crate) async fn remove_tags(&self, input: RemoveTagsFromStreamInput) -> Result<Empty, ApiError> {
        let keys = required(&input.tag_keys, "tagKeys")?;
        if keys.is_empty() || keys.len() > MAX_TAGS_PER_STREAM {
            return Err(ApiError::validation(
                "tagKeys",
                keys.len(),
                &format!("Member must have between 1 and {MAX_TAGS_PER_STREAM} entries"),
            ));
        }
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        stream.update_meta(|m| {
            for k in keys {
                m.tags.remove(k);
            }
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub(crate) async fn list_tags(&self, input: ListTagsForStreamInput) -> Result<ListTagsForStreamOutput, ApiError> {
        let limit = bounded("limit", input.limit, 1, MAX_TAGS_PER_STREAM as i64, MAX_TAGS_PER_STREAM as i64)? as usize;
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        let meta = stream.meta();
        let mut tags: Vec<Tag> = meta
            .tags
            .into_iter()
            .filter(|(k, _)| input.exclusive_start_tag_key.as_ref().is_none_or(|after| k > after))
            .map(|(key, value)| Tag { key, value })
            .collect();
        let has_more_tags = tags.len() > limit;
        tags.truncate(limit);
        Ok(ListTagsForStreamOutput { tags, has_more_tags })
    }

    pub(crate) async fn tag_resource(&self, input: TagResourceInput) -> Result<Empty, ApiError> {
        let tags = required(&input.tags, "tags")?;
        match self.resource(&input.resource_arn)? {
            Resource::Stream(arn) => {
                let add = AddTagsToStreamInput { stream_name: None, stream_arn: Some(arn), tags: Some(tags.clone()) };
                self.add_tags(add).await
            }
            Resource::Consumer(arn) => {
                if tags.is_empty() {
                    return Err(ApiError::validation("tags", "{}", "Member must have at least 1 entry"));
                }
                for (k, v) in tags {
                    validate::tag(k, v)?;
                }
                self.change_consumer_tags(&arn, |t| {
                    let added = tags.keys().filter(|k| !t.contains_key(*k)).count();
                    if t.len() + added > MAX_TAGS_PER_STREAM {
                        return Err(ApiError::limit(format!(
                            "A consumer can have at most {MAX_TAGS_PER_STREAM} tags; it has {} and {added} new keys were given.",
                            t.len()
                        )));
                    }
                    t.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Ok(())
                })
            }
        }
    }

    pub(crate) async fn untag_resource(&self, input: UntagResourceInput) -> Result<Empty, ApiError> {
        let keys = required(&input.tag_keys, "tagKeys")?;
        match self.resource(&input.resource_arn)? {
            Resource::Stream(arn) => {
                let remove = RemoveTagsFromStreamInput {
                    stream_name: None,
                    stream_arn: Some(arn),
                    tag_keys: Some(keys.clone()),
                };
                self.remove_tags(remove).await
            }
            Resource::Consumer(arn) => self.change_consumer_tags(&arn, |t| {
                for k in keys {
                    t.remove(k);
                }
                Ok(())
            }),
        }
    }

    pub(crate) async fn list_tags_for_resource(
        &self,
        input: ListTagsForResourceInput,
    ) -> Result<ListTagsForResourceOutput, ApiError> {
        let tags = match self.resource(&input.resource_arn)? {
            Resource::Stream(arn) => self.resolve(&None, &Some(arn))?.meta().tags,
            Resource::Consumer(arn) => {
                let by_arn = ConsumerRef { consumer_arn: Some(arn), ..ConsumerRef::default() };
                self.consumer_of(&by_arn)?.1.tags
            }
        };
        Ok(ListTagsForResourceOutput { tags: tags.into_iter().map(|(key, value)| Tag { key, value }).collect() })
    }

    /// A tagged resource: a stream or a consumer, by its ARN.
    pub(super) fn resource(&self, arn: &Option<String>) -> Result<Resource, ApiError> {
        let arn = required(arn, "resourceARN")?;
        if arn.contains("/consumer/") {
            parse_consumer_arn(arn)?;
            return Ok(Resource::Consumer(arn.clone()));
        }
        streamfabric_api::names::stream_name_from_arn(arn).map_err(|_| {
            ApiError::validation("resourceARN", arn, "Member must be the ARN of a stream or of a consumer")
        })?;
        Ok(Resource::Stream(arn.clone()))
    }

    fn change_consumer_tags(
        &self,
        arn: &str,
        change: impl FnOnce(&mut std::collections::BTreeMap<String, String>) -> Result<(), ApiError>,
    ) -> Result<Empty, ApiError> {
        self.change_consumer(arn, |c| change(&mut c.tags))
    }

    /// Change the registration a consumer ARN names, in the stream's description.
    pub(super) fn change_consumer(
        &self,
        arn: &str,
        change: impl FnOnce(&mut crate::catalog::meta::ConsumerMeta) -> Result<(), ApiError>,
    ) -> Result<Empty, ApiError> {
        let by_arn = ConsumerRef { consumer_arn: Some(arn.to_string()), ..ConsumerRef::default() };
        let (stream, consumer) = self.consumer_of(&by_arn)?;
        stream.update_meta(|m| {
            match m.consumers.iter_mut().find(|c| c.name == consumer.name && c.created_ms == consumer.created_ms) {
                Some(c) => change(c),
                None => Err(ApiError::not_found(format!("Consumer {} was deregistered meanwhile.", consumer.name))),
            }
        })?;
        Ok(Empty {})
    }
}

pub(super) enum Resource {
    Stream(String),
    Consumer(String),
}
