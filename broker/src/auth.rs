//! Authentication. With `--credentials`, every API request must carry a valid AWS
//! Signature Version 4 (header form) of a configured access key; without it requests are
//! served unauthenticated, as before. A request one broker forwards to another carries a
//! peer proof instead (an HMAC under the cluster's key), so the owner does not check the
//! client's signature again (the forwarded body may be a part of the client's).

use crate::tokens::TokenSigner;
use http::HeaderMap;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use streamfabric_api::sigv4::{self, Authorization, UNSIGNED_PAYLOAD};
use streamfabric_api::{ApiError, ErrorCode};

/// AWS accepts a request signed at most this far from its own clock, either way.
const MAX_SKEW_SECS: i64 = 300;
/// Carries a forwarding broker's proof (`PeerProof`).
pub const PEER_PROOF_HEADER: &str = "x-streamfabric-peer-proof";

/// Who sent a request: the access key of its signature (with the groups it is configured
/// in), a peer broker that forwarded it, or nobody (no credentials configured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    Peer,
    AccessKey { id: String, groups: Vec<String> },
}

/// What a request is checked against: its head, its body, and the service its credential
/// scope must name (`kinesis`, or `dynamodb` for the lease store).
pub struct Signed<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The `:authority` of an HTTP/2 request (which has no Host header).
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
    pub service: &'a str,
    /// SubscribeToShard: the SDKs may leave an event-stream request's payload unsigned.
    pub unsigned_payload_allowed: bool,
}

/// Access key id -> its secret and groups.
type Keys = HashMap<String, Key>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    secret: String,
    /// Named groups that policies can grant to (`group:<name>`).
    groups: Vec<String>,
}

pub struct Auth {
    /// A file of key lines, or a directory of one file per key.
    source: Option<PathBuf>,
    keys: RwLock<Arc<Keys>>,
    region: String,
    failures: IntCounterVec,
    key_count: IntGauge,
    /// Authenticated requests per access key (as many series as configured keys).
    by_key: IntCounterVec,
}

impl Auth {
    /// Reads the credentials (if any); unreadable or malformed ones stop the start.
    pub fn new(source: Option<&Path>, region: &str, registry: &Registry) -> std::io::Result<Auth> {
        let failures = IntCounterVec::new(
            Opts::new(
                "streamfabric_auth_failures_total",
                "Requests refused by authentication, by reason: missing, incomplete, unknown_key, expired, scope, payload, signature, peer.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        registry.register(Box::new(failures.clone())).expect("metric registered once");
        let key_count = IntGauge::new("streamfabric_auth_keys", "Access keys accepted (0: authentication is off).")
            .expect("valid metric");
        registry.register(Box::new(key_count.clone())).expect("metric registered once");
        let by_key = IntCounterVec::new(
            Opts::new("streamfabric_auth_requests_total", "Requests authenticated by SigV4, per access key id."),
            &["access_key_id"],
        )
        .expect("valid metric");
        registry.register(Box::new(by_key.clone())).expect("metric registered once");
        let auth = Auth {
            source: source.map(Path::to_path_buf),
            keys: RwLock::new(Arc::new(Keys::new())),
            region: region.to_string(),
            failures,
            key_count,
            by_key,
        };
        if let Some(source) = &auth.source {
            auth.install(read_keys(source)?);
            tracing::info!(credentials = %source.display(), keys = auth.key_count.get(), "SigV4 required on every request");
        } else {
            tracing::warn!("no --credentials: requests are not authenticated (any credentials work)");
        }
        Ok(auth)
    }

    pub fn required(&self) -> bool {
        self.source.is_some()
    }

    fn install(&self, keys: Keys) {
        self.key_count.set(keys.len() as i64);
        *self.keys.write().unwrap() = Arc::new(keys);
    }

    /// Re-read the credentials, and use them if they changed (a rotated Secret); ones that
    /// do not read keep the keys in use.
    pub fn reload_if_changed(&self) {
        let Some(source) = &self.source else { return };
        match read_keys(source) {
            Ok(keys) if keys == **self.keys.read().unwrap() => {}
            Ok(keys) => {
                let count = keys.len();
                self.install(keys);
                tracing::info!(credentials = %source.display(), keys = count, "credentials reloaded");
            }
            Err(e) => {
                tracing::error!(credentials = %source.display(), "credentials not reloaded, the previous keys stay: {e}")
            }
        }
    }

    /// Re-read the credentials every few seconds for as long as the broker runs.
    pub fn watch(self: &Arc<Self>) {
        if self.source.is_some() {
            crate::reload::every_few_seconds(self, Auth::reload_if_changed);
        }
    }

    /// The sender of a request, or AWS's error for why it is refused (counted by reason).
    pub fn verify(&self, req: &Signed<'_>, now_secs: i64) -> Result<Principal, ApiError> {
        if !self.required() {
            return Ok(Principal::Anonymous);
        }
        let principal = self.check(req, now_secs).map_err(|(reason, e)| {
            self.failures.with_label_values(&[reason]).inc();
            e
        })?;
        if let Principal::AccessKey { id, .. } = &principal {
            self.by_key.with_label_values(&[id]).inc();
        }
        Ok(principal)
    }

    /// Count a forwarded request refused for its peer proof.
    pub fn refused_peer(&self) {
        self.failures.with_label_values(&["peer"]).inc();
    }

    fn check(&self, req: &Signed<'_>, now_secs: i64) -> Result<Principal, (&'static str, ApiError)> {
        let header = |name: &str| req.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let Some(authorization) = header("authorization") else {
            return Err((
                "missing",
                ApiError::new(ErrorCode::MissingAuthenticationToken, "Missing Authentication Token"),
            ));
        };
        let incomplete = |m: String| ("incomplete", ApiError::new(ErrorCode::IncompleteSignature, m));
        let auth = Authorization::parse(&authorization).map_err(incomplete)?;
        let amz_date = header("x-amz-date")
            .ok_or_else(|| incomplete("Authorization header requires existence of a 'X-Amz-Date' header.".into()))?;
        let signed_at = sigv4::parse_amz_date(&amz_date)
            .ok_or_else(|| incomplete(format!("X-Amz-Date {amz_date:?} is not of the form YYYYMMDD'T'HHMMSS'Z'.")))?;
        if !auth.signed_headers.iter().any(|h| h == "host") {
            return Err(incomplete("'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into()));
        }
        let invalid = |reason, m: String| (reason, ApiError::new(ErrorCode::InvalidSignature, m));
        if auth.date != amz_date[..8] {
            return Err(invalid(
                "scope",
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                    auth.date,
                    &amz_date[..8]
                ),
            ));
        }
        if auth.region != self.region {
            return Err(invalid(
                "scope",
                format!("Credential should be scoped to a valid region, not '{}'. ", auth.region),
            ));
        }
        if auth.service != req.service {
            return Err(invalid(
                "scope",
                format!("Credential should be scoped to correct service: '{}'. ", req.service),
            ));
        }
        if signed_at < now_secs - MAX_SKEW_SECS {
            return Err(invalid(
                "expired",
                format!(
                    "Signature expired: {amz_date} is now earlier than {} ({} - 5 min.)",
                    sigv4::amz_date(now_secs - MAX_SKEW_SECS),
                    sigv4::amz_date(now_secs)
                ),
            ));
        }
        if signed_at > now_secs + MAX_SKEW_SECS {
            return Err(invalid(
                "expired",
                format!(
                    "Signature not yet current: {amz_date} is still later than {} ({} + 5 min.)",
                    sigv4::amz_date(now_secs + MAX_SKEW_SECS),
                    sigv4::amz_date(now_secs)
                ),
            ));
        }
        let keys = self.keys.read().unwrap().clone();
        let Some(key) = keys.get(&auth.access_key_id) else {
            return Err((
                "unknown_key",
                ApiError::new(ErrorCode::UnrecognizedClient, "The security token included in the request is invalid."),
            ));
        };
        let body_hash = sigv4::sha256_hex(req.body);
        let payload_hash = match header("x-amz-content-sha256") {
            None => body_hash,
            Some(h) if h == UNSIGNED_PAYLOAD && req.unsigned_payload_allowed => h,
            Some(h) if h == body_hash => h,
            Some(_) => {
                return Err(invalid(
                    "payload",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
                ));
            }
        };
        // Every header as sent; an HTTP/2 request's Host is its :authority.
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if !req.headers.contains_key(http::header::HOST)
            && let Some(authority) = req.authority
        {
            headers.push(("host".into(), authority.into()));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let canonical = sigv4::canonical_request(
            &sigv4::Request {
                method: req.method,
                path: req.path,
                query: req.query,
                headers: &headers,
                payload_hash: &payload_hash,
            },
            &auth.signed_headers,
            sigv4::SERVICE_PATHS,
        );
        let scope = sigv4::scope(&auth.date, &auth.region, &auth.service);
        let signing_key = sigv4::signing_key(&key.secret, &auth.date, &auth.region, &auth.service);
        let expected = sigv4::signature(&signing_key, &sigv4::string_to_sign(&amz_date, &scope, &canonical));
        if !constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
            return Err(invalid(
                "signature",
                "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.".into(),
            ));
        }
        Ok(Principal::AccessKey { groups: key.groups.clone(), id: auth.access_key_id })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A file of `<access key id> <secret access key> [group,...]` lines (blank lines and `#`
/// comments skipped), or a directory of one file per key: named by the access key id,
/// holding the secret (how a Kubernetes Secret is mounted; its hidden `..data` entries are
/// skipped). A subdirectory is a group: the keys in it belong to the group of its name.
fn read_keys(source: &Path) -> std::io::Result<Keys> {
    let mut keys = Keys::new();
    if source.is_dir() {
        read_key_dir(source, None, &mut keys)?;
    } else {
        for (n, line) in std::fs::read_to_string(source)?.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (id, secret, groups) = match line.split_whitespace().collect::<Vec<_>>()[..] {
                [id, secret] => (id, secret, Vec::new()),
                [id, secret, groups] => (id, secret, groups.split(',').map(str::to_string).collect()),
                _ => {
                    return Err(invalid_data(format!(
                        "{} line {}: expected `<access key id> <secret access key> [group,...]`",
                        source.display(),
                        n + 1
                    )));
                }
            };
            add_key(&mut keys, id, secret, groups, source)?;
        }
    }
    if keys.is_empty() {
        return Err(invalid_data(format!("{}: no access keys", source.display())));
    }
    Ok(keys)
}

fn read_key_dir(dir: &Path, group: Option<&str>, keys: &mut Keys) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() && group.is_none() {
            read_key_dir(&path, Some(&name), keys)?;
        } else if path.is_file() {
            let secret = std::fs::read_to_string(&path)?.trim().to_string();
            if secret.is_empty() || secret.contains(char::is_whitespace) {
                return Err(invalid_data(format!("{}: the secret of {name} is empty or has spaces", dir.display())));
            }
            add_key(keys, &name, &secret, group.into_iter().map(str::to_string).collect(), dir)?;
        }
    }
    Ok(())
}

/// One key, maybe seen before in another group: its secret must be the same.
fn add_key(keys: &mut Keys, id: &str, secret: &str, groups: Vec<String>, source: &Path) -> std::io::Result<()> {
    let key = keys.entry(id.to_string()).or_insert_with(|| Key { secret: secret.to_string(), groups: Vec::new() });
    if key.secret != secret {
        return Err(invalid_data(format!("{}: access key {id} is given two different secrets", source.display())));
    }
    key.groups.extend(groups);
    key.groups.sort();
    key.groups.dedup();
    Ok(())
}

fn invalid_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// What a broker adds to a request it forwards: proof, under the cluster's key, that a
/// broker of the cluster sent this target and body within the last 5 minutes.
#[derive(Clone)]
pub struct PeerProof {
    signer: TokenSigner,
}

impl PeerProof {
    pub fn new(signer: TokenSigner) -> PeerProof {
        PeerProof { signer }
    }

    fn payload(at_secs: i64, from: &str, target: &str, body: &[u8]) -> String {
        format!("P\n{at_secs}\n{from}\n{target}\n{}", sigv4::sha256_hex(body))
    }

    pub fn make(&self, from: &str, target: &str, body: &[u8], now_secs: i64) -> String {
        self.signer.sign(Self::payload(now_secs, from, target, body).as_bytes())
    }

    /// Whether `proof` is this cluster's, for this sender, target and body, and recent.
    pub fn holds(&self, proof: &str, from: &str, target: &str, body: &[u8], now_secs: i64) -> bool {
        let Some(payload) = self.signer.verify(proof) else { return false };
        let Ok(payload) = String::from_utf8(payload) else { return false };
        let Some(at) = payload.split('\n').nth(1).and_then(|s| s.parse::<i64>().ok()) else { return false };
        (at - now_secs).abs() <= MAX_SKEW_SECS && payload == Self::payload(at, from, target, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_proof_holds_for_its_sender_target_body_and_time_only() {
        let proof = PeerProof::new(TokenSigner::new([7; 32]));
        let p = proof.make("b-0", "Kinesis_20131202.PutRecords", b"{}", 1000);
        assert!(proof.holds(&p, "b-0", "Kinesis_20131202.PutRecords", b"{}", 1100));
        assert!(!proof.holds(&p, "b-1", "Kinesis_20131202.PutRecords", b"{}", 1100));
        assert!(!proof.holds(&p, "b-0", "Kinesis_20131202.DeleteStream", b"{}", 1100));
        assert!(!proof.holds(&p, "b-0", "Kinesis_20131202.PutRecords", b"{ }", 1100));
        assert!(!proof.holds(&p, "b-0", "Kinesis_20131202.PutRecords", b"{}", 1000 + 301));
        let other = PeerProof::new(TokenSigner::new([8; 32]));
        assert!(!other.holds(&p, "b-0", "Kinesis_20131202.PutRecords", b"{}", 1100), "another cluster's key");
    }

    #[test]
    fn a_credentials_directory_has_a_file_per_key_as_a_secret_volume_mounts_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("..2026_12_06");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("AKIDA"), "secretA\n").unwrap();
        std::os::unix::fs::symlink("..2026_12_06", dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/AKIDA", dir.path().join("AKIDA")).unwrap();
        let keys = read_keys(dir.path()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys["AKIDA"].secret, "secretA");
        let group = dir.path().join("writers");
        std::fs::create_dir(&group).unwrap();
        std::fs::write(group.join("AKIDW"), "secretW").unwrap();
        std::fs::write(group.join("AKIDA"), "secretA").unwrap();
        let keys = read_keys(dir.path()).unwrap();
        assert_eq!(
            (keys["AKIDW"].groups.as_slice(), keys["AKIDA"].groups.as_slice()),
            (&["writers".to_string()][..], &["writers".to_string()][..])
        );
        std::fs::write(group.join("AKIDA"), "another").unwrap();
        assert!(read_keys(dir.path()).unwrap_err().to_string().contains("two different secrets"));
    }

    #[test]
    fn credentials_files_are_pairs_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(&file, "# team a\nAKIDA secretA\n\n  AKIDB   secretB  readers,writers\n").unwrap();
        let keys = read_keys(&file).unwrap();
        assert_eq!((keys["AKIDA"].secret.as_str(), keys["AKIDB"].secret.as_str()), ("secretA", "secretB"));
        assert_eq!(keys["AKIDB"].groups, ["readers", "writers"]);
        std::fs::write(&file, "AKIDA\n").unwrap();
        assert!(read_keys(&file).unwrap_err().to_string().contains("line 1"));
        std::fs::write(&file, "# nothing\n").unwrap();
        assert!(read_keys(&file).is_err());
    }
}
