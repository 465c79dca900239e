//! Opaque tokens handed to clients (shard iterators, paging tokens): a payload and an
//! HMAC-SHA256 tag under a key the brokers share, so any broker can verify one and
//! nobody can forge or alter one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io;
use std::path::Path;
use streamfabric_api::limits::SHARD_ITERATOR_TTL_SECS;
use streamfabric_api::types::Timestamp;
use streamfabric_api::{ApiError, ErrorCode};

const TAG_LEN: usize = 16;

#[derive(Clone)]
pub struct TokenSigner {
    key: [u8; 32],
    /// Tokens signed with this key verify too (the object store's key, once a cluster
    /// signs with one of its own): none fails while a cluster moves from one to the other.
    previous: Option<[u8; 32]>,
}

/// What a shard iterator says: where to read next, in which incarnation of which stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IteratorToken {
    pub stream: String,
    pub incarnation: u64,
    pub shard_index: u64,
    pub position: u64,
    pub issued_ms: i64,
}

impl TokenSigner {
    pub fn new(key: [u8; 32]) -> TokenSigner {
        TokenSigner { key, previous: None }
    }

    /// Signs with `key`; tokens signed with `previous` verify as well.
    pub fn with_previous(key: [u8; 32], previous: Option<[u8; 32]>) -> TokenSigner {
        TokenSigner { key, previous: previous.filter(|p| *p != key) }
    }

    /// A key file as an operator writes it: 32 bytes, or 64 hex digits (a newline after them
    /// allowed).
    pub fn read_key_file(path: &Path) -> io::Result<[u8; 32]> {
        let bytes = std::fs::read(path)?;
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
        let text = std::str::from_utf8(&bytes).unwrap_or_default().trim();
        let mut key = [0u8; 32];
        let hex = text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return Err(io::Error::other(format!(
                "{}: a cluster key is 32 bytes or 64 hex digits; this file has {} bytes",
                path.display(),
                bytes.len()
            )));
        }
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits");
        }
        Ok(key)
    }

    /// The key kept at `path`, if there is a valid one.
    pub fn read_key(path: &Path) -> Option<[u8; 32]> {
        let bytes = std::fs::read(path).ok()?;
        let key = <[u8; 32]>::try_from(bytes.as_slice()).ok();
        if key.is_none() {
            tracing::warn!("{} is not a 32-byte key; it will be replaced", path.display());
        }
        key
    }

    /// Keep `key` at `path`, durably.
    pub fn write_key(path: &Path, key: &[u8; 32]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, key)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(payload);
        mac.finalize().into_bytes()[..TAG_LEN].try_into().expect("tag length")
    }

    pub fn sign(&self, payload: &[u8]) -> String {
        let mut bytes = payload.to_vec();
        bytes.extend_from_slice(&self.tag(payload));
        B64.encode(bytes)
    }

    /// The payload of a token we signed (with the key, or the previous one), or None.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        let mut bytes = B64.decode(token).ok()?;
        if bytes.len() < TAG_LEN {
            return None;
        }
        let tag = bytes.split_off(bytes.len() - TAG_LEN);
        let signed_with = |key: &[u8; 32]| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
            mac.update(&bytes);
            mac.verify_truncated_left(&tag).is_ok()
        };
        (signed_with(&self.key) || self.previous.as_ref().is_some_and(signed_with)).then_some(bytes)
    }

    pub fn iterator(&self, it: &IteratorToken) -> String {
        let mut p = Vec::with_capacity(33 + it.stream.len());
        p.push(1u8); // token kind and version
        p.extend_from_slice(&it.incarnation.to_be_bytes());
        p.extend_from_slice(&it.shard_index.to_be_bytes());
        p.extend_from_slice(&it.position.to_be_bytes());
        p.extend_from_slice(&it.issued_ms.to_be_bytes());
        p.extend_from_slice(it.stream.as_bytes());
        self.sign(&p)
    }

    /// Verify a shard iterator and its age at `now_ms`.
    pub fn parse_iterator(&self, token: &str, now_ms: i64) -> Result<IteratorToken, ApiError> {
        let it = self.open_iterator(token)?;
        let ttl_ms = SHARD_ITERATOR_TTL_SECS * 1000;
        // Saturating: a signed token may carry any time (fuzzing found the overflow).
        if now_ms.saturating_sub(it.issued_ms) > ttl_ms {
            return Err(ApiError::new(
                ErrorCode::ExpiredIterator,
                format!(
                    "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {ttl_ms} milliseconds.",
                    it.issued_ms, now_ms
                ),
            ));
        }
        Ok(it)
    }

    /// A shard iterator we signed, whatever its age (what stream it reads, for access control).
    pub fn open_iterator(&self, token: &str) -> Result<IteratorToken, ApiError> {
        let invalid = || ApiError::invalid("Invalid ShardIterator: it was not issued by this service or was altered.");
        let p = self.verify(token).ok_or_else(invalid)?;
        if p.len() < 33 || p[0] != 1 {
            return Err(invalid());
        }
        let word = |i: usize| u64::from_be_bytes(p[1 + 8 * i..9 + 8 * i].try_into().unwrap());
        let it = IteratorToken {
            incarnation: word(0),
            shard_index: word(1),
            position: word(2),
            issued_ms: word(3) as i64,
            stream: String::from_utf8(p[33..].to_vec()).map_err(|_| invalid())?,
        };
        Ok(it)
    }
}

/// What a paging token (NextToken) pages over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Streams = 2,
    Shards = 3,
    Consumers = 4,
}

/// Where a listing stopped: over what (`scope`, e.g. a stream) and after which item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagePosition {
    pub scope: String,
    pub after: String,
}

impl TokenSigner {
    pub fn page(&self, kind: PageKind, scope: &str, after: &str) -> String {
        let mut p = vec![kind as u8];
        p.extend_from_slice(&Timestamp::now().millis().to_be_bytes());
        p.extend_from_slice(&(scope.len() as u32).to_be_bytes());
        p.extend_from_slice(scope.as_bytes());
        p.extend_from_slice(after.as_bytes());
        self.sign(&p)
    }

    /// A NextToken of `kind` we issued less than 300 s ago (as AWS, ExpiredNextToken after that).
    pub fn parse_page(&self, token: &str, kind: PageKind) -> Result<PagePosition, ApiError> {
        let (issued, position) = self.open_page(token, kind)?;
        if Timestamp::now().millis().saturating_sub(issued) > SHARD_ITERATOR_TTL_SECS * 1000 {
            return Err(ApiError::new(
                ErrorCode::ExpiredNextToken,
                "The NextToken has expired; start the listing again.",
            ));
        }
        Ok(position)
    }

    /// A NextToken of `kind` we signed, whatever its age, and when it was issued.
    pub fn open_page(&self, token: &str, kind: PageKind) -> Result<(i64, PagePosition), ApiError> {
        let invalid = || ApiError::invalid("Invalid NextToken: it was not issued by this service for this operation.");
        let p = self.verify(token).ok_or_else(invalid)?;
        if p.len() < 13 || p[0] != kind as u8 {
            return Err(invalid());
        }
        let issued = i64::from_be_bytes(p[1..9].try_into().unwrap());
        let scope_len = u32::from_be_bytes(p[9..13].try_into().unwrap()) as usize;
        let scope = std::str::from_utf8(p.get(13..13 + scope_len).ok_or_else(invalid)?).map_err(|_| invalid())?;
        let after = std::str::from_utf8(&p[13 + scope_len..]).map_err(|_| invalid())?;
        Ok((issued, PagePosition { scope: scope.to_string(), after: after.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token() -> IteratorToken {
        IteratorToken { stream: "s".into(), incarnation: 7, shard_index: 3, position: 99, issued_ms: 1_000_000 }
    }

    /// Found by the `tokens` fuzz target: a signed token whose time is far in the past
    /// overflowed the age computation (a panic in debug builds, a wrap in release).
    #[test]
    fn tokens_of_any_time_expire_rather_than_overflow() {
        let signer = TokenSigner::new([9; 32]);
        let mut page = vec![PageKind::Streams as u8];
        page.extend_from_slice(&i64::MIN.to_be_bytes());
        page.extend_from_slice(&0u32.to_be_bytes());
        let e = signer.parse_page(&signer.sign(&page), PageKind::Streams).unwrap_err();
        assert_eq!(e.code, ErrorCode::ExpiredNextToken);
        let old = IteratorToken { issued_ms: i64::MIN, ..token() };
        let e = signer.parse_iterator(&signer.iterator(&old), i64::MAX).unwrap_err();
        assert_eq!(e.code, ErrorCode::ExpiredIterator);
    }

    #[test]
    fn iterators_round_trip_and_expire() {
        let signer = TokenSigner::new([9; 32]);
        let t = signer.iterator(&token());
        assert_eq!(signer.parse_iterator(&t, 1_000_000 + 300_000).unwrap(), token());
        let e = signer.parse_iterator(&t, 1_000_000 + 300_001).unwrap_err();
        assert_eq!(e.code, ErrorCode::ExpiredIterator);
    }

    #[test]
    fn another_key_or_garbage_is_invalid() {
        let t = TokenSigner::new([9; 32]).iterator(&token());
        let other = TokenSigner::new([8; 32]);
        assert_eq!(other.parse_iterator(&t, 1_000_000).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(other.parse_iterator("", 0).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(other.parse_iterator("not base64 !", 0).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn tokens_of_the_previous_key_verify_and_new_ones_use_the_new_key() {
        let (old, new) = (TokenSigner::new([1; 32]), TokenSigner::with_previous([2; 32], Some([1; 32])));
        let issued = old.iterator(&token());
        assert_eq!(new.parse_iterator(&issued, token().issued_ms).unwrap(), token());
        let fresh = new.iterator(&token());
        assert!(old.parse_iterator(&fresh, token().issued_ms).is_err(), "signed with the new key");
        assert!(TokenSigner::new([3; 32]).parse_iterator(&issued, token().issued_ms).is_err());
    }

    #[test]
    fn key_files_hold_32_bytes_or_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            TokenSigner::read_key_file(&path)
        };
        assert_eq!(file("raw", &[7; 32]).unwrap(), [7; 32]);
        assert_eq!(file("hex", format!("{}\n", "0a".repeat(32)).as_bytes()).unwrap(), [10; 32]);
        let err = file("short", b"abc").unwrap_err().to_string();
        assert!(err.contains("32 bytes or 64 hex digits") && err.contains("3 bytes"), "{err}");
        assert!(file("nothex", "zz".repeat(32).as_bytes()).is_err());
        assert!(TokenSigner::read_key_file(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_keep_their_kind() {
        let signer = TokenSigner::new([2; 32]);
        let t = signer.page(PageKind::Shards, "s/7", "3");
        let p = signer.parse_page(&t, PageKind::Shards).unwrap();
        assert_eq!((p.scope.as_str(), p.after.as_str()), ("s/7", "3"));
        assert_eq!(signer.parse_page(&t, PageKind::Streams).unwrap_err().code, ErrorCode::InvalidArgument);
    }

    proptest! {
        #[test]
        fn any_alteration_is_refused(flip in 0usize..64, bit in 0u8..8) {
            let signer = TokenSigner::new([1; 32]);
            let t = signer.iterator(&token());
            let mut raw = B64.decode(&t).unwrap();
            let at = flip % raw.len();
            raw[at] ^= 1 << bit;
            prop_assert!(signer.parse_iterator(&B64.encode(raw), 1_000_000).is_err());
        }
    }
}
