//! Stream and account settings of the current API model: UpdateMaxRecordSize,
//! UpdateStreamWarmThroughput, DescribeAccountSettings and UpdateAccountSettings.

use super::validate::{self, bounded, required};
use crate::broker::Broker;
use crate::catalog::meta::{StreamMeta, StreamMode};
use streamfabric_api::ApiError;
use streamfabric_api::model::*;

/// AWS's range for MaxRecordSizeInKiB: 1 MiB (the default) to 10 MiB.
pub(super) fn max_record_size(kib: i64) -> Result<i64, ApiError> {
    bounded("maxRecordSizeInKiB", Some(kib), 1024, 10240, 1024)
}

/// Warm throughput applies to on-demand streams, whose capacity follows their traffic.
pub(super) fn warm_throughput(mibps: i64, mode: StreamMode) -> Result<i64, ApiError> {
    let mibps = bounded("warmThroughputMiBps", Some(mibps), 0, i32::MAX as i64, 0)?;
    if mode != StreamMode::OnDemand {
        return Err(ApiError::invalid(
            "WarmThroughputMiBps applies to ON_DEMAND streams only; a PROVISIONED stream has its shards' throughput.",
        ));
    }
    Ok(mibps)
}

impl Broker {
    /// The warm throughput DescribeStreamSummary shows: the target asked for, and what the
    /// open shards take now at the per-shard write limit.
    pub(crate) fn warm_throughput_of(&self, m: &StreamMeta) -> Option<WarmThroughput> {
        (m.mode == StreamMode::OnDemand).then(|| WarmThroughput {
            target_mibps: m.warm_throughput_mibps,
            current_mibps: (m.open_shard_count() as u64 * self.config.shard_write_bytes_per_sec / (1024 * 1024)) as i64,
        })
    }

    /// The record size limit DescribeStreamSummary shows, in KiB.
    pub(crate) fn max_record_size_kib_of(&self, m: &StreamMeta) -> i64 {
        m.max_record_size_kib.unwrap_or((self.config.max_record_bytes / 1024) as i64)
    }

    pub(crate) async fn update_max_record_size(&self, input: UpdateMaxRecordSizeInput) -> Result<Empty, ApiError> {
        let kib = max_record_size(*required(&input.max_record_size_in_kib, "maxRecordSizeInKiB")?)?;
        let stream = self.resolve(&None, &input.stream_arn)?;
        stream.update_meta(|m| {
            validate::active(m, "change its maximum record size")?;
            m.max_record_size_kib = Some(kib);
            Ok(())
        })?;
        Ok(Empty {})
    }

    pub(crate) async fn update_stream_warm_throughput(
        &self,
        input: UpdateStreamWarmThroughputInput,
    ) -> Result<UpdateStreamWarmThroughputOutput, ApiError> {
        let asked = *required(&input.warm_throughput_mibps, "warmThroughputMiBps")?;
        let stream = self.resolve(&input.stream_name, &input.stream_arn)?;
        let meta = stream.update_meta(|m| {
            validate::active(m, "change its warm throughput")?;
            m.warm_throughput_mibps = Some(warm_throughput(asked, m.mode)?);
            Ok(m.clone())
        })?;
        Ok(UpdateStreamWarmThroughputOutput {
            stream_arn: self.arn(&meta.name),
            warm_throughput: self.warm_throughput_of(&meta).expect("an on-demand stream"),
            stream_name: meta.name,
        })
    }

    /// No billing here, so no minimum throughput billing commitment: always DISABLED.
    pub(crate) async fn describe_account_settings(&self, _input: Empty) -> Result<AccountSettings, ApiError> {
        Ok(billing_commitment_disabled())
    }

    pub(crate) async fn update_account_settings(&self, input: AccountSettings) -> Result<AccountSettings, ApiError> {
        let commitment = required(&input.minimum_throughput_billing_commitment, "minimumThroughputBillingCommitment")?;
        let status = required(&commitment.status, "minimumThroughputBillingCommitment.status")?;
        if validate::one_of("minimumThroughputBillingCommitment.status", status, &["ENABLED", "DISABLED"])? == "ENABLED"
        {
            return Err(ApiError::invalid(
                "MinimumThroughputBillingCommitment cannot be ENABLED: streamfabric bills nothing, so there is no commitment to make.",
            ));
        }
        Ok(billing_commitment_disabled())
    }
}

fn billing_commitment_disabled() -> AccountSettings {
    AccountSettings {
        minimum_throughput_billing_commitment: Some(BillingCommitment { status: Some("DISABLED".into()) }),
    }
}
