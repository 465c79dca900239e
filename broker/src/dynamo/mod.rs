//! A DynamoDB-compatible lease store: the subset of `DynamoDB_20120810.*` (AWS JSON 1.0)
//! that the Kinesis Client Library uses for its lease, coordinator-state and worker-metrics
//! tables, kept in the object store beside the streams (`store`), so that a KCL application
//! needs only the broker's endpoint. Tables, items with conditional writes, Scan and Query
//! (also on global secondary indexes); not a general database: what it does not serve is
//! refused with an error that names it.

pub mod expr;
pub mod ops;
pub mod store;
pub mod value;

pub use ops::call;
pub use store::Tables;

/// The `X-Amz-Target` prefix of DynamoDB's operations.
pub const TARGET_PREFIX: &str = "DynamoDB_20120810.";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";

/// An error as DynamoDB answers it: `{"__type": "com.amazonaws.dynamodb.v20120810#<Code>",
/// "message": ...}`, HTTP 400 (500 for an internal error).
#[derive(Debug, Clone)]
pub struct DynamoError {
    pub code: &'static str,
    pub message: String,
    /// ConditionalCheckFailedException with ReturnValuesOnConditionCheckFailure ALL_OLD.
    pub item: Option<value::Item>,
    /// TransactionCanceledException: each action's reason.
    pub cancellation_reasons: Option<Vec<serde_json::Value>>,
}

impl DynamoError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> DynamoError {
        DynamoError { code, message: message.into(), item: None, cancellation_reasons: None }
    }

    pub fn validation(message: impl Into<String>) -> DynamoError {
        DynamoError::new("ValidationException", message)
    }

    pub fn not_found(message: impl Into<String>) -> DynamoError {
        DynamoError::new("ResourceNotFoundException", message)
    }

    pub fn in_use(message: impl Into<String>) -> DynamoError {
        DynamoError::new("ResourceInUseException", message)
    }

    pub fn condition_failed() -> DynamoError {
        DynamoError::new("ConditionalCheckFailedException", "The conditional request failed")
    }

    pub fn internal(message: impl Into<String>) -> DynamoError {
        DynamoError::new("InternalServerError", message)
    }

    pub fn unknown_operation(message: impl Into<String>) -> DynamoError {
        DynamoError::new("UnknownOperationException", message)
    }

    pub fn serialization(message: impl Into<String>) -> DynamoError {
        DynamoError::new("SerializationException", message)
    }

    pub fn http_status(&self) -> u16 {
        if self.code == "InternalServerError" { 500 } else { 400 }
    }

    /// The answer's body.
    pub fn body(&self) -> Vec<u8> {
        let mut body = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{}", self.code),
            "message": self.message,
        });
        if let Some(item) = &self.item {
            body["Item"] = serde_json::to_value(item).expect("items serialise");
        }
        if let Some(reasons) = &self.cancellation_reasons {
            body["CancellationReasons"] = serde_json::Value::Array(reasons.clone());
        }
        serde_json::to_vec(&body).expect("JSON")
    }
}
