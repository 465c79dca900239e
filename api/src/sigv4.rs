//! AWS Signature Version 4, header form, built as AWS documents it: the canonical request,
//! the string to sign, the signing key and the signature. The broker verifies requests with
//! it; the load generator signs its own with it.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// The payload hash of a request whose body is not signed (event streams, some SDKs).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// A secret derived from `master` for `label` (hex HMAC-SHA256): the same on every call.
pub fn derive_secret(master: &[u8], label: &str) -> String {
    hex(&hmac(master, label.as_bytes()))
}

/// The key of one access key, day, region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, service.as_bytes());
    hmac(&k, b"aws4_request")
}

/// The hex signature of a string to sign.
pub fn signature(key: &[u8; 32], string_to_sign: &str) -> String {
    hex(&hmac(key, string_to_sign.as_bytes()))
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn uri_encode(bytes: &[u8], keep_slash: bool, out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_digit = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex_digit), bytes.get(i + 2).copied().and_then(hex_digit)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// How a service canonicalizes paths.
#[derive(Debug, Clone, Copy)]
pub struct PathStyle {
    /// Resolve `.`, `..` and empty segments.
    pub normalize: bool,
    /// Encode the path as sent (so a path sent percent-encoded is encoded twice), rather
    /// than decoding it first.
    pub double_encode: bool,
}

/// Every AWS service but S3 (Kinesis, DynamoDB).
pub const SERVICE_PATHS: PathStyle = PathStyle { normalize: true, double_encode: true };

fn canonical_uri(path: &str, style: PathStyle) -> String {
    let path = if path.is_empty() { "/" } else { path };
    let path = if style.double_encode { path.as_bytes().to_vec() } else { percent_decode(path) };
    let path = String::from_utf8_lossy(&path);
    let resolved = if style.normalize {
        let mut segments: Vec<&str> = Vec::new();
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    segments.pop();
                }
                s => segments.push(s),
            }
        }
        let trailing = path.ends_with('/') && !segments.is_empty();
        format!("/{}{}", segments.join("/"), if trailing { "/" } else { "" })
    } else {
        path.to_string()
    };
    let mut out = String::with_capacity(resolved.len());
    uri_encode(resolved.as_bytes(), true, &mut out);
    out
}

/// Parameters decoded and encoded again, sorted by name then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let (mut key, mut value) = (String::new(), String::new());
            uri_encode(&percent_decode(k), false, &mut key);
            uri_encode(&percent_decode(v), false, &mut value);
            (key, value)
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

/// A header value trimmed, its runs of whitespace (folded lines too) made one space.
fn canonical_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a request is signed over.
pub struct Request<'a> {
    pub method: &'a str,
    /// As sent, before any decoding.
    pub path: &'a str,
    pub query: &'a str,
    /// Every header as sent, names in any case, repeated names in order.
    pub headers: &'a [(&'a str, &'a str)],
    /// The x-amz-content-sha256 value, or the hex SHA-256 of the body.
    pub payload_hash: &'a str,
}

/// The canonical request over the headers named in `signed_headers` (lowercase, sorted).
pub fn canonical_request(req: &Request<'_>, signed_headers: &[String], paths: PathStyle) -> String {
    let mut out = format!("{}\n{}\n{}\n", req.method, canonical_uri(req.path, paths), canonical_query(req.query));
    for name in signed_headers {
        let values: Vec<String> =
            req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| canonical_value(v)).collect();
        let _ = writeln!(out, "{name}:{}", values.join(","));
    }
    let _ = write!(out, "\n{}\n{}", signed_headers.join(";"), req.payload_hash);
    out
}

/// `<date>/<region>/<service>/aws4_request`.
pub fn scope(date: &str, region: &str, service: &str) -> String {
    format!("{date}/{region}/{service}/aws4_request")
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
/// Signature=...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Err: what is missing or malformed, in AWS's words (IncompleteSignatureException).
    pub fn parse(header: &str) -> Result<Authorization, String> {
        let rest = header
            .strip_prefix(ALGORITHM)
            .filter(|r| r.starts_with(' '))
            .ok_or_else(|| format!("Authorization header requires the algorithm {ALGORITHM}."))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            match part.trim().split_once('=') {
                Some(("Credential", v)) => credential = Some(v),
                Some(("SignedHeaders", v)) => signed = Some(v),
                Some(("Signature", v)) => signature = Some(v),
                _ => return Err(format!("Authorization header has a malformed part {:?}.", part.trim())),
            }
        }
        let missing: Vec<&str> = [("Credential", credential), ("SignedHeaders", signed), ("Signature", signature)]
            .into_iter()
            .filter(|(_, v)| v.is_none())
            .map(|(name, _)| name)
            .collect();
        if !missing.is_empty() {
            let needs: Vec<String> =
                missing.iter().map(|m| format!("Authorization header requires '{m}' parameter.")).collect();
            return Err(needs.join(" "));
        }
        let credential = credential.unwrap_or_default();
        let parts: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, "aws4_request"] = parts[..] else {
            return Err(format!(
                "Credential {credential:?} must have the form <access key id>/<date>/<region>/<service>/aws4_request."
            ));
        };
        if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("Credential {credential:?} has no access key id or a malformed date."));
        }
        let signed_headers: Vec<String> = signed.unwrap_or_default().split(';').map(str::to_ascii_lowercase).collect();
        if signed_headers.iter().any(String::is_empty) {
            return Err("SignedHeaders must name at least one header, separated by ';'.".into());
        }
        Ok(Authorization {
            access_key_id: key.into(),
            date: date.into(),
            region: region.into(),
            service: service.into(),
            signed_headers,
            signature: signature.unwrap_or_default().into(),
        })
    }
}

/// Signs as an SDK does, over every header given (names lowercased, sorted): the value of the
/// Authorization header. `headers` must include host and x-amz-date.
pub fn authorization(
    req: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> String {
    let mut signed: Vec<String> = req.headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
    signed.sort();
    signed.dedup();
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = scope(date, region, service);
    let canonical = canonical_request(req, &signed, SERVICE_PATHS);
    let sig = signature(&signing_key(secret, date, region, service), &string_to_sign(amz_date, &scope, &canonical));
    format!("{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={sig}", signed.join(";"))
}

/// An access key that signs requests to the brokers, as the SDKs sign them.
#[derive(Clone)]
pub struct Signer {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
    /// `kinesis` (also for the brokers' own lease and shard-owner operations).
    pub service: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("access_key_id", &self.access_key_id).field("region", &self.region).finish()
    }
}

impl Signer {
    /// The `x-amz-date` and `Authorization` of a `POST /` to `host` with `headers` (besides
    /// host and x-amz-date) and `body`, signed at `unix_secs`.
    pub fn sign_post(&self, host: &str, headers: &[(&str, &str)], body: &[u8], unix_secs: i64) -> (String, String) {
        let date = amz_date(unix_secs);
        let mut all: Vec<(&str, &str)> = vec![("host", host), ("x-amz-date", &date)];
        all.extend_from_slice(headers);
        let hash = sha256_hex(body);
        let req = Request { method: "POST", path: "/", query: "", headers: &all, payload_hash: &hash };
        let auth =
            authorization(&req, &self.access_key_id, &self.secret_access_key, &self.region, &self.service, &date);
        (date, auth)
    }
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix_secs: i64) -> String {
    let (days, rem) = (unix_secs.div_euclid(86_400), unix_secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The Unix time of a `YYYYMMDDTHHMMSSZ` date.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' || !digits(0..8) || !digits(9..15) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, min, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || min > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, m as u32, d as u32) * 86_400 + h * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates_format_and_parse_back() {
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(amz_date(951_782_400), "20000229T000000Z");
        assert_eq!(amz_date(1_700_000_000), "20231114T221320Z");
        for t in [0, 951_782_400, 1_700_000_000, 4_102_444_799, 1_440_938_160] {
            assert_eq!(parse_amz_date(&amz_date(t)), Some(t));
        }
        assert_eq!(parse_amz_date("20150830T123600"), None);
        assert_eq!(parse_amz_date("20151330T123600Z"), None);
        assert_eq!(parse_amz_date("2015-08-30T12:36"), None);
    }

    #[test]
    fn authorization_headers_parse_or_say_what_is_missing() {
        let a = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/kinesis/aws4_request, \
             SignedHeaders=host;X-Amz-Date, Signature=abc",
        )
        .unwrap();
        assert_eq!(
            (a.access_key_id.as_str(), a.region.as_str(), a.service.as_str()),
            ("AKIDEXAMPLE", "us-east-1", "kinesis")
        );
        assert_eq!(a.signed_headers, ["host", "x-amz-date"]);
        let e = Authorization::parse("AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/kinesis/aws4_request")
            .unwrap_err();
        assert!(e.contains("'SignedHeaders'") && e.contains("'Signature'"), "{e}");
        assert!(Authorization::parse("Basic dXNlcjpwdw==").is_err());
        assert!(
            Authorization::parse(
                "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/kinesis/aws4_request, SignedHeaders=host, Signature=a"
            )
            .is_err()
        );
    }

    #[test]
    fn the_signature_of_a_request_signed_here_verifies_and_a_changed_request_does_not() {
        let headers = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")];
        let req = Request { method: "GET", path: "/", query: "", headers: &headers, payload_hash: &sha256_hex(b"") };
        let auth = authorization(
            &req,
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
            "service",
            "20150830T123600Z",
        );
        // AWS's get-vanilla vector.
        assert!(auth.ends_with("Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"), "{auth}");
    }
}
