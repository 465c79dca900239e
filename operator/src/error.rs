use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("DataStream {0} has no namespace")]
    NotNamespaced(String),
    /// Cleanup waits for the brokers to delete the stream; an error so that the finalizer
    /// stays (an Ok cleanup removes it).
    #[error("{reason}")]
    DeletionPending { reason: String, retry: std::time::Duration },
    /// spec.authentication, but the operator could not read or create its own key.
    #[error(
        "DataStream {0} requires SigV4, and the operator has no key of its own to sign with (see --operator-key-secret)"
    )]
    NoOperatorKey(String),
}

impl Error {
    /// A bounded label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NotNamespaced(_) => "not_namespaced",
            Error::DeletionPending { .. } => "deletion_pending",
            Error::NoOperatorKey(_) => "no_operator_key",
        }
    }

    /// The cleanup still waiting for its stream's deletion, if that is what this is.
    pub fn deletion_pending(&self) -> Option<std::time::Duration> {
        match self {
            Error::DeletionPending { retry, .. } => Some(*retry),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.deletion_pending(),
                _ => None,
            },
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
