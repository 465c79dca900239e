//! AWS's published SigV4 test suite (v4, header form) against `sigv4`: for each case, the
//! canonical request, the string to sign and the signature must be AWS's. The suite is read
//! where cargo unpacked the aws-sigv4 crate (a dependency of the AWS SDK the broker's tests
//! use), which ships it; it is not copied here.

use serde_json::Value;
use std::path::{Path, PathBuf};
use streamfabric_api::sigv4::{self, PathStyle, Request};

/// The suite inside the aws-sigv4 crate of the workspace's lock file, where cargo unpacked it.
fn suite_dir() -> PathBuf {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock")).unwrap();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"aws-sigv4\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .expect("aws-sigv4 in Cargo.lock")
        .trim_end_matches('"')
        .to_string();
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let registries = std::fs::read_dir(home.join("registry/src")).expect("cargo's registry sources");
    registries
        .filter_map(|r| Some(r.ok()?.path().join(format!("aws-sigv4-{version}/aws-signing-test-suite/v4"))))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("aws-sigv4 {version} unpacked under {}", home.display()))
}

struct Case {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A request.txt: request line, headers (a line starting with whitespace continues the
/// previous one), a blank line, the body.
fn parse_request(text: &str) -> Case {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    let method = request_line.split(' ').next().unwrap().to_string();
    let target = request_line[method.len() + 1..].rsplit_once(" HTTP/").unwrap().0;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            headers.last_mut().unwrap().1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.to_string()));
        }
    }
    Case { method, path: path.into(), query: query.into(), headers, body: body.as_bytes().to_vec() }
}

#[test]
fn the_canonical_requests_strings_to_sign_and_signatures_are_awss() {
    let dir = suite_dir();
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let case_dir = entry.unwrap().path();
        let name = case_dir.file_name().unwrap().to_string_lossy().to_string();
        let Ok(context) = std::fs::read_to_string(case_dir.join("context.json")) else {
            // The two cases added in the crate's copy without a context (double-encode-path,
            // double-url-encode) are checked below from their canonical requests.
            continue;
        };
        let context: Value = serde_json::from_str(&context).unwrap();
        let expect = |file: &str| std::fs::read_to_string(case_dir.join(file)).unwrap();
        let mut case = parse_request(&expect("request.txt"));
        let timestamp = context["timestamp"].as_str().unwrap();
        let amz_date = timestamp.replace(['-', ':'], "");
        case.headers.push(("X-Amz-Date".into(), amz_date.clone()));
        let payload_hash = sigv4::sha256_hex(&case.body);
        if context["sign_body"] == true {
            case.headers.push(("x-amz-content-sha256".into(), payload_hash.clone()));
        }
        if let (Some(token), false) = (context["credentials"]["token"].as_str(), context["omit_session_token"] == true)
        {
            case.headers.push(("X-Amz-Security-Token".into(), token.into()));
        }
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let mut signed: Vec<String> = headers.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        signed.sort();
        signed.dedup();
        let req = Request {
            method: &case.method,
            path: &case.path,
            query: &case.query,
            headers: &headers,
            payload_hash: &payload_hash,
        };
        // The suite's cases encode paths once (as S3 does), normalized or not.
        let style = PathStyle { normalize: context["normalize"] != false, double_encode: false };
        let canonical = sigv4::canonical_request(&req, &signed, style);
        assert_eq!(canonical, expect("header-canonical-request.txt"), "{name}: canonical request");
        let (region, service) = (context["region"].as_str().unwrap(), context["service"].as_str().unwrap());
        let scope = sigv4::scope(&amz_date[..8], region, service);
        let to_sign = sigv4::string_to_sign(&amz_date, &scope, &canonical);
        assert_eq!(to_sign, expect("header-string-to-sign.txt"), "{name}: string to sign");
        let secret = context["credentials"]["secret_access_key"].as_str().unwrap();
        let key = sigv4::signing_key(secret, &amz_date[..8], region, service);
        assert_eq!(sigv4::signature(&key, &to_sign), expect("header-signature.txt").trim(), "{name}: signature");
        checked += 1;
    }
    assert!(checked >= 30, "the suite has its cases: {checked} checked in {}", dir.display());
    // Every service but S3 encodes a path sent percent-encoded again.
    for name in ["double-url-encode", "double-encode-path"] {
        let case = parse_request(&std::fs::read_to_string(dir.join(name).join("request.txt")).unwrap());
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let signed = vec!["host".to_string(), "x-amz-date".to_string()];
        let hash = sigv4::sha256_hex(&case.body);
        let req = Request {
            method: &case.method,
            path: &case.path,
            query: &case.query,
            headers: &headers,
            payload_hash: &hash,
        };
        // Their dates differ from their requests' (the crate's runner sets them): the path is compared.
        let expected = std::fs::read_to_string(dir.join(name).join("header-canonical-request.txt")).unwrap();
        let canonical = sigv4::canonical_request(&req, &signed, sigv4::SERVICE_PATHS);
        assert_eq!(canonical.lines().nth(1), expected.lines().nth(1), "{name}");
    }
}
