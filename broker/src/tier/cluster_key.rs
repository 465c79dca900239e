//! The key that signs shard iterators and paging tokens, shared by every broker of one
//! store prefix (one cluster): an iterator issued by one broker verifies at every other,
//! and after a lost disk. Written once, create-if-absent, so of brokers starting together
//! exactly one key wins and all of them read it.

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutPayload};

use super::{Result, TierError, TierStore};

pub const CLUSTER_KEY: &str = "cluster/token.key";

impl TierStore {
    /// The stored token key, if there is one (not created).
    pub async fn stored_token_key(&self) -> Result<Option<[u8; 32]>> {
        let path = self.path(CLUSTER_KEY);
        let got = match self.store().get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(TierError::store("get", &path, e)),
        };
        let bytes = got.bytes().await.map_err(|e| TierError::store("get", &path, e))?;
        key_of(&path, &bytes).map(Some)
    }

    /// The cluster's token key: `candidate` if this call created it, else the stored one.
    pub async fn cluster_token_key(&self, candidate: [u8; 32]) -> Result<[u8; 32]> {
        let path = self.path(CLUSTER_KEY);
        let payload = PutPayload::from_bytes(Bytes::copy_from_slice(&candidate));
        match self.store().put_opts(&path, payload, PutMode::Create.into()).await {
            Ok(_) => return Ok(candidate),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {}
            Err(e) => return Err(TierError::store("put", &path, e)),
        }
        let got = self.store().get(&path).await.map_err(|e| TierError::store("get", &path, e))?;
        let bytes = got.bytes().await.map_err(|e| TierError::store("get", &path, e))?;
        key_of(&path, &bytes)
    }
}

fn key_of(path: &object_store::path::Path, bytes: &[u8]) -> Result<[u8; 32]> {
    <[u8; 32]>::try_from(bytes).map_err(|_| TierError::Corrupt {
        path: path.to_string(),
        reason: format!("a token key has 32 bytes, this object {}", bytes.len()),
    })
}
