//! AWS error codes and the error value every operation returns.

use std::fmt;

/// The `__type` codes clients branch on; names and HTTP statuses as AWS sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    ResourceNotFound,
    ResourceInUse,
    InvalidArgument,
    Validation,
    LimitExceeded,
    ProvisionedThroughputExceeded,
    ExpiredIterator,
    ExpiredNextToken,
    AccessDenied,
    Serialization,
    UnknownOperation,
    InternalFailure,
    ServiceUnavailable,
    /// streamfabric's lease operations: a conditional change lost to another writer, or
    /// the caller's owner or lease counter is stale. Re-read the lease.
    LeaseConflict,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 14] = [
        Self::ResourceNotFound,
        Self::ResourceInUse,
        Self::InvalidArgument,
        Self::Validation,
        Self::LimitExceeded,
        Self::ProvisionedThroughputExceeded,
        Self::ExpiredIterator,
        Self::ExpiredNextToken,
        Self::AccessDenied,
        Self::Serialization,
        Self::UnknownOperation,
        Self::InternalFailure,
        Self::ServiceUnavailable,
        Self::LeaseConflict,
    ];

    /// The code a `__type` names (AWS may prefix it with a namespace and `#`).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        let name = name.rsplit_once('#').map_or(name, |(_, n)| n);
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResourceNotFound => "ResourceNotFoundException",
            Self::ResourceInUse => "ResourceInUseException",
            Self::InvalidArgument => "InvalidArgumentException",
            Self::Validation => "ValidationException",
            Self::LimitExceeded => "LimitExceededException",
            Self::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            Self::ExpiredIterator => "ExpiredIteratorException",
            Self::ExpiredNextToken => "ExpiredNextTokenException",
            Self::AccessDenied => "AccessDeniedException",
            Self::Serialization => "SerializationException",
            Self::UnknownOperation => "UnknownOperationException",
            Self::InternalFailure => "InternalFailure",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::LeaseConflict => "LeaseConflictException",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        // Some services prefix the code with a namespace ("ns#Code").
        let code = s.rsplit('#').next().unwrap_or(s);
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// The code a failed PutRecords entry carries: AWS documents only these two, and
    /// clients (the KPL among them) retry both; a shard moving between brokers or a peer
    /// out of reach is an InternalFailure there, whatever it is as a whole answer.
    pub fn as_entry_code(self) -> ErrorCode {
        match self {
            Self::ProvisionedThroughputExceeded => self,
            _ => Self::InternalFailure,
        }
    }

    pub fn http_status(self) -> u16 {
        match self {
            Self::InternalFailure => 500,
            Self::ServiceUnavailable => 503,
            _ => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error as the client sees it: a code and a message that names the input and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceNotFound, message)
    }
    pub fn in_use(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ResourceInUse, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn limit(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LimitExceeded, message)
    }
    pub fn lease_conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::LeaseConflict, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalFailure, message)
    }

    /// AWS's wording for a constraint on one member, e.g.
    /// `Value '...' at 'partitionKey' failed to satisfy constraint: Member must ...`.
    pub fn validation(field: &str, value: impl fmt::Display, constraint: &str) -> Self {
        let mut shown = value.to_string();
        if shown.len() > 64 {
            let mut cut = 64;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push_str("...");
        }
        Self::new(
            ErrorCode::Validation,
            format!(
                "1 validation error detected: Value '{shown}' at '{field}' failed to satisfy constraint: {constraint}"
            ),
        )
    }

    /// A required member that was absent.
    pub fn missing(field: &str) -> Self {
        Self::new(
            ErrorCode::Validation,
            format!(
                "1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"
            ),
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;
