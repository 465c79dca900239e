//! A typed async client of the lease operations, over HTTP/1.1 with pooled connections.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamfabric_api::leases::client::ClientError> {
//! use streamfabric_api::leases::client::LeasesClient;
//! let leases = LeasesClient::new("http://127.0.0.1:4567")?;
//! let mine = leases.sync_leases("orders-app", "orders", "worker-1", None).await?;
//! for lease in &mine.leases {
//!     // read the shard from lease.checkpoint, then:
//!     leases.checkpoint("orders-app", "orders", &lease.lease_key, "worker-1", lease.lease_counter, "SHARD_END", 0)
//!         .await?;
//! }
//! # Ok(()) }
//! ```

use super::*;
use crate::codec::JSON_CONTENT_TYPE;
use crate::error::{ApiError, ErrorCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker answered with an error (`LeaseConflictException`, validation, ...).
    #[error("{0}")]
    Api(ApiError),
    /// The request did not get an answer, or the answer was not understood.
    #[error("{0}")]
    Transport(String),
}

impl ClientError {
    /// The error code when the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api(e) => Some(e.code),
            ClientError::Transport(_) => None,
        }
    }

    /// Lost a race or held a stale counter: re-read the lease.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(ErrorCode::LeaseConflict)
    }
}

/// Client of one broker endpoint (`http://host:port`). Cheap to clone.
#[derive(Clone, Debug)]
pub struct LeasesClient {
    endpoint: http::Uri,
    http: Client<HttpConnector, Full<Bytes>>,
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(rename = "__type")]
    r#type: String,
    #[serde(default)]
    message: String,
}

impl LeasesClient {
    pub fn new(endpoint: &str) -> Result<Self, ClientError> {
        let endpoint: http::Uri =
            endpoint.parse().map_err(|e| ClientError::Transport(format!("endpoint {endpoint:?} is not a URI: {e}")))?;
        if endpoint.scheme_str() != Some("http") {
            return Err(ClientError::Transport(format!("endpoint {endpoint} must be http://host:port")));
        }
        Ok(LeasesClient { endpoint, http: Client::builder(TokioExecutor::new()).build_http() })
    }

    /// One operation: POST its JSON body and decode the answer or the error.
    pub async fn call<I: Serialize, O: DeserializeOwned>(
        &self,
        op: LeaseOperation,
        input: &I,
    ) -> Result<O, ClientError> {
        let body = serde_json::to_vec(input).expect("inputs serialise");
        let req = http::Request::post(self.endpoint.clone())
            .header("x-amz-target", format!("{LEASES_TARGET_PREFIX}{}", op.name()))
            .header("content-type", JSON_CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        let resp = self.http.request(req).await.map_err(|e| ClientError::Transport(format!("{}: {e}", op.name())))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport(format!("{}: reading the answer: {e}", op.name())))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ClientError::Transport(format!("{}: unreadable answer: {e}", op.name())));
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(err) => {
                let code = ErrorCode::parse(&err.r#type).unwrap_or(if status.is_server_error() {
                    ErrorCode::InternalFailure
                } else {
                    ErrorCode::Validation
                });
                Err(ClientError::Api(ApiError::new(code, err.message)))
            }
            Err(_) => Err(ClientError::Transport(format!("{}: HTTP {status} without an error body", op.name()))),
        }
    }

    pub async fn list_leases(&self, application: &str, stream: &str) -> Result<Vec<Lease>, ClientError> {
        let input = ListLeasesInput { application_name: Some(application.into()), stream_name: Some(stream.into()) };
        let out: ListLeasesOutput = self.call(LeaseOperation::ListLeases, &input).await?;
        Ok(out.leases)
    }

    pub async fn create_leases(
        &self,
        application: &str,
        stream: &str,
        initial_position: Option<&str>,
    ) -> Result<CreateLeasesOutput, ClientError> {
        let input = CreateLeasesInput {
            application_name: Some(application.into()),
            stream_name: Some(stream.into()),
            initial_position: initial_position.map(str::to_string),
        };
        self.call(LeaseOperation::CreateLeases, &input).await
    }

    /// Runs the KCL's rules for `worker`; `failover_time_millis` defaults to 10 s.
    pub async fn sync_leases(
        &self,
        application: &str,
        stream: &str,
        worker: &str,
        failover_time_millis: Option<u64>,
    ) -> Result<SyncLeasesOutput, ClientError> {
        let input = SyncLeasesInput {
            application_name: Some(application.into()),
            stream_name: Some(stream.into()),
            worker_id: Some(worker.into()),
            failover_time_millis: failover_time_millis.map(|m| m.min(i64::MAX as u64) as i64),
            initial_position: None,
        };
        self.call(LeaseOperation::SyncLeases, &input).await
    }

    pub async fn take_lease(
        &self,
        application: &str,
        stream: &str,
        shard: &str,
        worker: &str,
        expected_lease_counter: u64,
    ) -> Result<Lease, ClientError> {
        let input = TakeLeaseInput {
            application_name: Some(application.into()),
            stream_name: Some(stream.into()),
            shard_id: Some(shard.into()),
            worker_id: Some(worker.into()),
            expected_lease_counter: Some(expected_lease_counter as i64),
        };
        let out: LeaseOutput = self.call(LeaseOperation::TakeLease, &input).await?;
        Ok(out.lease)
    }

    fn owned(application: &str, stream: &str, shard: &str, worker: &str, counter: u64) -> OwnedLeaseInput {
        OwnedLeaseInput {
            application_name: Some(application.into()),
            stream_name: Some(stream.into()),
            shard_id: Some(shard.into()),
            worker_id: Some(worker.into()),
            lease_counter: Some(counter as i64),
        }
    }

    pub async fn renew_lease(
        &self,
        application: &str,
        stream: &str,
        shard: &str,
        worker: &str,
        lease_counter: u64,
    ) -> Result<Lease, ClientError> {
        let input = Self::owned(application, stream, shard, worker, lease_counter);
        let out: LeaseOutput = self.call(LeaseOperation::RenewLease, &input).await?;
        Ok(out.lease)
    }

    pub async fn release_lease(
        &self,
        application: &str,
        stream: &str,
        shard: &str,
        worker: &str,
        lease_counter: u64,
    ) -> Result<Lease, ClientError> {
        let input = Self::owned(application, stream, shard, worker, lease_counter);
        let out: LeaseOutput = self.call(LeaseOperation::ReleaseLease, &input).await?;
        Ok(out.lease)
    }

    /// Checkpoints `sequence_number` (or `SHARD_END`); the answer carries the new counter.
    #[allow(clippy::too_many_arguments)]
    pub async fn checkpoint(
        &self,
        application: &str,
        stream: &str,
        shard: &str,
        worker: &str,
        lease_counter: u64,
        sequence_number: &str,
        sub_sequence_number: u64,
    ) -> Result<Lease, ClientError> {
        let input = CheckpointInput {
            application_name: Some(application.into()),
            stream_name: Some(stream.into()),
            shard_id: Some(shard.into()),
            worker_id: Some(worker.into()),
            lease_counter: Some(lease_counter as i64),
            sequence_number: Some(sequence_number.into()),
            sub_sequence_number: Some(sub_sequence_number as i64),
            prepare: None,
        };
        let out: LeaseOutput = self.call(LeaseOperation::Checkpoint, &input).await?;
        Ok(out.lease)
    }

    pub async fn delete_lease(
        &self,
        application: &str,
        stream: &str,
        shard: &str,
        expected_lease_counter: u64,
    ) -> Result<(), ClientError> {
        let input = DeleteLeaseInput {
            application_name: Some(application.into()),
            stream_name: Some(stream.into()),
            shard_id: Some(shard.into()),
            expected_lease_counter: Some(expected_lease_counter as i64),
        };
        let _: DeleteLeaseOutput = self.call(LeaseOperation::DeleteLease, &input).await?;
        Ok(())
    }
}
