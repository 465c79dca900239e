use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("DataStream {0} has no namespace")]
    NotNamespaced(String),
}

impl Error {
    /// A bounded label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NotNamespaced(_) => "not_namespaced",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
