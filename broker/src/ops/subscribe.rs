//! SubscribeToShard: the request checked and its starting position found here; the stream
//! of events it answers with is `fanout`'s.

use super::reads::{ITERATOR_TYPES, StartingAt};
use super::shards::shard_index_arg;
use super::validate::{one_of, required};
use crate::broker::Broker;
use crate::catalog::meta::ConsumerStatus;
use crate::fanout::Target;
use streamfabric_api::ApiError;
use streamfabric_api::model::{ConsumerRef, SubscribeToShardInput};

impl Broker {
    /// What `input` subscribes to: its consumer (ACTIVE), stream (serving records) and shard;
    /// not yet where it starts (`subscription_start`, at the shard's owner).
    pub(crate) fn subscription_target(&self, input: &SubscribeToShardInput) -> Result<Target, ApiError> {
        let arn = required(&input.consumer_arn, "consumerARN")?;
        let shard_id = required(&input.shard_id, "shardId")?;
        let starting = required(&input.starting_position, "startingPosition")?;
        one_of("startingPosition.type", required(&starting.kind, "startingPosition.type")?, ITERATOR_TYPES)?;
        let index = shard_index_arg("shardId", shard_id)?;
        let (stream, consumer) =
            self.consumer_of(&ConsumerRef { consumer_arn: Some(arn.clone()), ..ConsumerRef::default() })?;
        if consumer.status != ConsumerStatus::Active {
            return Err(ApiError::in_use(format!(
                "Consumer {arn} is {}; it can subscribe once it is ACTIVE.",
                consumer.status.as_str()
            )));
        }
        if !stream.status().serves_data() {
            return Err(ApiError::not_found(format!(
                "Stream {} under account {} is {} and does not serve records now.",
                stream.name,
                self.config.account,
                stream.status().as_str()
            )));
        }
        let shard = self.shard_of(&stream, index)?;
        Ok(Target { stream, shard, consumer_arn: arn.clone(), consumer_name: consumer.name, start: 0 })
    }

    /// The target with where its stream starts (StartingPosition, as GetShardIterator's).
    pub(crate) async fn subscription_start(
        &self,
        input: &SubscribeToShardInput,
        mut target: Target,
    ) -> Result<Target, ApiError> {
        let starting = input.starting_position.as_ref().expect("checked by subscription_target");
        let at = StartingAt {
            operation: "SubscribeToShard",
            kind: starting.kind.as_deref().unwrap_or_default(),
            sequence_number: starting.sequence_number.as_deref(),
            timestamp: starting.timestamp,
        };
        target.start = self.start_offset(&target.stream, &target.shard, at).await?;
        Ok(target)
    }
}
