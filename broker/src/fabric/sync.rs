//! The cluster-wide catalog: the coordinator writes stream descriptions (mirrored to the
//! bucket as a broker alone does); every other broker adopts them from there.

use crate::broker::Broker;
use crate::catalog::meta::{StreamMeta, StreamStatus};
use crate::tier::TierError;

/// Adopt the bucket's stream descriptions (not at the coordinator, their writer): new
/// streams opened, changed ones updated, streams gone from the bucket removed.
pub async fn sync_catalog(broker: &Broker) -> Result<(), TierError> {
    let Some(fabric) = &broker.fabric else { return Ok(()) };
    if fabric.cluster.is_coordinator() {
        return Ok(());
    }
    adopt_all(broker).await
}

/// Before a broker serves: the cluster's streams, so that it answers no request for one
/// of them with ResourceNotFoundException (as a coordinator too: the bucket holds what it
/// mirrored before a restart).
pub async fn initial(broker: &Broker) {
    if let Err(e) = adopt_all(broker).await {
        tracing::warn!("reading the cluster's stream descriptions at start, serving the local ones: {e}");
    }
}

async fn adopt_all(broker: &Broker) -> Result<(), TierError> {
    let tier = broker.archive.tier();
    let names = tier.list_streams().await?;
    for name in &names {
        sync_stream(broker, name).await?;
    }
    for stream in broker.catalog.all() {
        if !names.contains(&stream.name) {
            tracing::info!(stream = %stream.name, "deleted in the cluster; removing it here");
            broker.catalog.remove(&stream.name).map_err(|e| local("remove", &stream.name, e))?;
        }
    }
    Ok(())
}

/// Adopt one stream's description from the bucket (or remove the stream if it has none).
pub async fn sync_stream(broker: &Broker, name: &str) -> Result<(), TierError> {
    let loaded = broker.archive.tier().stream_meta(name)?.load().await?;
    let Some((doc, _)) = loaded else {
        if broker.catalog.get(name).is_some() {
            broker.catalog.remove(name).map_err(|e| local("remove", name, e))?;
        }
        return Ok(());
    };
    let meta: StreamMeta = match serde_json::from_value(doc.meta) {
        Ok(meta) => meta,
        Err(e) => {
            tracing::warn!(stream = %name, "the bucket's description of this stream is not readable: {e}");
            return Ok(());
        }
    };
    if meta.status == StreamStatus::Deleting && broker.catalog.get(name).is_none() {
        return Ok(());
    }
    broker.catalog.adopt(meta).map_err(|e| local("adopt", name, e))
}

fn local(op: &'static str, stream: &str, source: std::io::Error) -> TierError {
    TierError::Io { op, path: format!("stream {stream} in the data directory"), source }
}
