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
    /// SigV4 (with credentials configured): no Authorization header.
    MissingAuthenticationToken,
    /// An Authorization header without all of its parts.
    IncompleteSignature,
    /// An access key id the broker does not know.
    UnrecognizedClient,
    /// A signature that does not match, or a request older or newer than 5 minutes.
    InvalidSignature,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
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
        Self::MissingAuthenticationToken,
        Self::IncompleteSignature,
        Self::UnrecognizedClient,
        Self::InvalidSignature,
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
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature => "IncompleteSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature => "InvalidSignatureException",
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
    pub fn validation(field: impl fmt::Display, value: impl fmt::Display, constraint: &str) -> Self {
        let mut shown = value.to_string();
        if shown.len() > 64 {
            let mut cut = 64;
            while !shown.is_char_boundary(cut) {
                cut -= 1;
            }
            shown.truncate(cut);
            shown.push_str("...");
        }
        Self::violations(1, &[format!("Value '{shown}' at '{field}' failed to satisfy constraint: {constraint}")])
    }

    pub fn missing(field: &str) -> Self {
        Self::violations(1, &[format!("Value null at '{field}' failed to satisfy constraint: Member must not be null")])
    }

    /// Every constraint one request broke, in one message as AWS lists them.
    fn violations(count: usize, found: &[String]) -> Self {
        let plural = if count == 1 { "" } else { "s" };
        Self::new(ErrorCode::Validation, format!("{count} validation error{plural} detected: {}", found.join("; ")))
    }
}

/// Collects the checks of one request's members so that every violated constraint is
/// answered in one ValidationException, as AWS does. AWS checks the members' constraints
/// before anything else, so another error (InvalidArgument, say) is answered only when no
/// constraint is violated.
#[derive(Debug, Default)]
pub struct Violations {
    count: usize,
    found: Vec<String>,
    other: Option<ApiError>,
}

impl Violations {
    /// The value of a check that passed; None (kept for `finish`) for one that failed.
    pub fn check<T>(&mut self, result: Result<T, ApiError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                let counted = e
                    .message
                    .split_once(" validation error")
                    .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?, rest.split_once(" detected: ")?.1)));
                match (e.code, counted) {
                    (ErrorCode::Validation, Some((n, found))) => {
                        self.count += n;
                        self.found.push(found.to_string());
                    }
                    _ => {
                        self.other.get_or_insert(e);
                    }
                }
                None
            }
        }
    }

    /// Every violation found, as one error; else the first other error; else Ok.
    pub fn finish(self) -> Result<(), ApiError> {
        if !self.found.is_empty() {
            return Err(ApiError::violations(self.count, &self.found));
        }
        self.other.map_or(Ok(()), Err)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_of_one_request_is_answered_in_one_message() {
        let mut v = Violations::default();
        assert_eq!(v.check(Ok::<_, ApiError>(3)), Some(3));
        v.check::<()>(Err(ApiError::invalid("not a constraint")));
        v.check::<()>(Err(ApiError::validation(
            "streamName",
            "a;b c",
            "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
        )));
        v.check::<()>(Err(ApiError::missing("shardCount")));
        let e = v.finish().unwrap_err();
        assert_eq!(e.code, ErrorCode::Validation);
        assert_eq!(
            e.message,
            "2 validation errors detected: Value 'a;b c' at 'streamName' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+; \
             Value null at 'shardCount' failed to satisfy constraint: Member must not be null"
        );
        // Without a violated constraint, the first other error is the answer.
        let mut v = Violations::default();
        v.check::<()>(Err(ApiError::invalid("first")));
        v.check::<()>(Err(ApiError::invalid("second")));
        assert_eq!(v.finish().unwrap_err().message, "first");
        assert!(Violations::default().finish().is_ok());
        // Collected errors of a nested collector keep their count.
        let mut inner = Violations::default();
        inner.check::<()>(Err(ApiError::missing("a")));
        inner.check::<()>(Err(ApiError::missing("b")));
        let mut outer = Violations::default();
        outer.check(inner.finish());
        outer.check::<()>(Err(ApiError::missing("c")));
        assert!(outer.finish().unwrap_err().message.starts_with("3 validation errors detected: "));
    }
}
