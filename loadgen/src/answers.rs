//! Lenient read-side views of the few answers whose `streamfabric_api::model` types require
//! members that real-world servers omit (kinesalite sends no EncryptionType with puts and no
//! StreamModeDetails in summaries). Requests, and every other answer, use the model types.

use serde::Deserialize;
use streamfabric_api::model::PutRecordsResultEntry;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordsAnswer {
    pub failed_record_count: Option<i64>,
    pub records: Vec<PutRecordsResultEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutRecordAnswer {
    #[allow(dead_code)] // decoded to check the answer is well formed
    pub shard_id: String,
    #[allow(dead_code)]
    pub sequence_number: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SummaryAnswer {
    pub stream_description_summary: StreamSummaryView,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamSummaryView {
    pub stream_status: String,
    pub open_shard_count: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesalite_shaped_answers_decode() {
        let put: PutRecordsAnswer = serde_json::from_str(
            r#"{"FailedRecordCount":1,"Records":[{"ShardId":"shardId-000000000000","SequenceNumber":"49"},
                {"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(put.failed_record_count, Some(1));
        assert!(put.records[1].error_code.is_some());
        let s: SummaryAnswer = serde_json::from_str(
            r#"{"StreamDescriptionSummary":{"StreamName":"s","StreamStatus":"ACTIVE","OpenShardCount":2}}"#,
        )
        .unwrap();
        assert_eq!(s.stream_description_summary.stream_status, "ACTIVE");
    }
}
