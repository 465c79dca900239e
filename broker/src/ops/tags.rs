//! Stream tags.

use super::validate::{self, bounded, required};
use crate::broker::Broker;
use streamfabric_api::ApiError;
use streamfabric_api::limits::MAX_TAGS_PER_STREAM;
use streamfabric_api::model::*;

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
}
