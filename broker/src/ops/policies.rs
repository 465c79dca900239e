//! Resource policies: PutResourcePolicy, GetResourcePolicy and DeleteResourcePolicy keep a
//! policy document with a stream or a consumer, in the stream's description, so that every
//! broker of a cluster applies it (`access`).

use super::tags::Resource;
use super::validate::required;
use crate::broker::Broker;
use streamfabric_api::ApiError;
use streamfabric_api::model::*;
use streamfabric_api::policy::{MAX_RESOURCE_POLICY_CHARS, Policy};

impl Broker {
    pub(crate) async fn put_resource_policy(&self, input: PutResourcePolicyInput) -> Result<Empty, ApiError> {
        let text = required(&input.policy, "policy")?;
        if text.chars().count() > MAX_RESOURCE_POLICY_CHARS {
            return Err(ApiError::validation(
                "policy",
                format!("<{} characters>", text.chars().count()),
                &format!("Member must have length less than or equal to {MAX_RESOURCE_POLICY_CHARS}"),
            ));
        }
        Policy::parse(text).map_err(|e| ApiError::invalid(format!("Policy: {e}.")))?;
        let policy = Some(text.clone());
        self.set_resource_policy(&input.resource_arn, policy)
    }

    pub(crate) async fn get_resource_policy(
        &self,
        input: ResourcePolicyInput,
    ) -> Result<GetResourcePolicyOutput, ApiError> {
        // A resource without a policy answers with an empty document, as AWS does.
        let policy = self.resource_policy(&input.resource_arn)?.unwrap_or_else(|| "{}".to_string());
        Ok(GetResourcePolicyOutput { policy })
    }

    pub(crate) async fn delete_resource_policy(&self, input: ResourcePolicyInput) -> Result<Empty, ApiError> {
        if self.resource_policy(&input.resource_arn)?.is_none() {
            let arn = input.resource_arn.as_deref().unwrap_or_default();
            return Err(ApiError::not_found(format!("No resource policy is attached to {arn}.")));
        }
        self.set_resource_policy(&input.resource_arn, None)
    }

    /// The policy document kept with the stream or consumer an ARN names.
    pub(crate) fn resource_policy(&self, arn: &Option<String>) -> Result<Option<String>, ApiError> {
        Ok(match self.resource(arn)? {
            Resource::Stream(arn) => self.resolve(&None, &Some(arn))?.meta().resource_policy,
            Resource::Consumer(arn) => {
                let by_arn = ConsumerRef { consumer_arn: Some(arn), ..ConsumerRef::default() };
                self.consumer_of(&by_arn)?.1.resource_policy
            }
        })
    }

    fn set_resource_policy(&self, arn: &Option<String>, policy: Option<String>) -> Result<Empty, ApiError> {
        match self.resource(arn)? {
            Resource::Stream(arn) => {
                self.resolve(&None, &Some(arn))?.update_meta(|m| {
                    m.resource_policy = policy;
                    Ok(())
                })?;
                Ok(Empty {})
            }
            Resource::Consumer(arn) => self.change_consumer(&arn, |c| {
                c.resource_policy = policy;
                Ok(())
            }),
        }
    }
}
