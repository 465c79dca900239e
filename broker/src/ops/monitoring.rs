//! Settings AWS keeps per stream that change nothing in how streamfabric keeps data, so they
//! are recorded and shown as AWS shows them: enhanced (shard-level) monitoring, whose
//! metrics streamfabric's Prometheus endpoint has always; and server-side encryption with a
//! KMS key, where data at rest is the storage's to encrypt (the volume, the bucket).

use super::streams::run_after;
use super::validate::{self, required};
use crate::broker::Broker;
use crate::catalog::meta::StreamStatus;
use std::collections::BTreeSet;
use streamfabric_api::ApiError;
use streamfabric_api::model::*;

const SHARD_LEVEL_METRICS: &[&str] = &[
    "IncomingBytes",
    "IncomingRecords",
    "OutgoingBytes",
    "OutgoingRecords",
    "WriteProvisionedThroughputExceeded",
    "ReadProvisionedThroughputExceeded",
    "IteratorAgeMilliseconds",
];

impl Broker {
    pub(crate) async fn enable_enhanced_monitoring(
        &self,
        input: EnhancedMonitoringInput,
    ) -> Result<EnhancedMonitoringOutput, ApiError> {
        self.change_monitoring(input, |on, asked| on.extend(asked)).await
    }

    pub(crate) async fn disable_enhanced_monitoring(
        &self,
        input: EnhancedMonitoringInput,
    ) -> Result<EnhancedMonitoringOutput, ApiError> {
        self.change_monitoring(input, |on, asked| on.retain(|m| !asked.contains(m))).await
    }

    async fn change_monitoring(
        &self,
        input: EnhancedMonitoringInput,
        change: impl FnOnce(&mut BTreeSet<String>, BTreeSet<String>),
    ) -> Result<EnhancedMonitoringOutput, ApiError> {
        let metrics = required(&input.shard_level_metrics, "shardLevelMetrics")?;
        if metrics.is_empty() || metrics.len() > SHARD_LEVEL_METRICS.len() {
            return Err(ApiError::validation(
                "shardLevelMetrics",
                format!("{metrics:?}"),
                &format!("Member must have length between 1 and {}", SHARD_LEVEL_METRICS.len()),
            ));
        }
        let mut asked = BTreeSet::new();
        for m in metrics {
            if m == "ALL" {
                asked.extend(SHARD_LEVEL_METRICS.iter().map(|m| m.to_string()));
            } else {
                let mut allowed = SHARD_LEVEL_METRICS.to_vec();
                allowed.push("ALL");
                asked.insert(validate::one_of("shardLevelMetrics", m, &allowed)?.to_string());
            }
        }
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        let (current, desired) = stream.update_meta(|m| {
            let current: Vec<String> = m.shard_level_metrics.iter().cloned().collect();
            change(&mut m.shard_level_metrics, asked);
            Ok((current, m.shard_level_metrics.iter().cloned().collect()))
        })?;
        Ok(EnhancedMonitoringOutput {
            stream_arn: self.arn(&stream.name),
            stream_name: stream.name.clone(),
            current_shard_level_metrics: current,
            desired_shard_level_metrics: desired,
        })
    }

    pub(crate) async fn start_stream_encryption(&self, input: StreamEncryptionInput) -> Result<Empty, ApiError> {
        let key = encryption_key(&input)?;
        self.change_encryption(&input, Some(key)).await
    }

    pub(crate) async fn stop_stream_encryption(&self, input: StreamEncryptionInput) -> Result<Empty, ApiError> {
        encryption_key(&input)?;
        self.change_encryption(&input, None).await
    }

    /// UPDATING for a moment, as in AWS; then ACTIVE with the new key (or none).
    async fn change_encryption(&self, input: &StreamEncryptionInput, key: Option<String>) -> Result<Empty, ApiError> {
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        stream.update_meta(|m| {
            super::validate::active(m, "change its encryption")?;
            m.status = StreamStatus::Updating;
            m.kms_key_id = key;
            Ok(())
        })?;
        run_after(self.config.status_delay, move || {
            let _ = stream.update_meta(|m| {
                if m.status == StreamStatus::Updating && m.pending_reshard.is_empty() {
                    m.status = StreamStatus::Active;
                }
                Ok(())
            });
        });
        Ok(Empty {})
    }
}

/// EncryptionType (KMS, the only type AWS accepts here) and KeyId, both required.
fn encryption_key(input: &StreamEncryptionInput) -> Result<String, ApiError> {
    let kind = required(&input.encryption_type, "encryptionType")?;
    validate::one_of("encryptionType", kind, &["NONE", "KMS"])?;
    if kind != "KMS" {
        return Err(ApiError::invalid(format!("EncryptionType {kind} is not supported here; use KMS.")));
    }
    let key = required(&input.key_id, "keyId")?;
    if key.is_empty() || key.len() > 2048 {
        return Err(ApiError::validation("keyId", key, "Member must have length between 1 and 2048"));
    }
    Ok(key.clone())
}
