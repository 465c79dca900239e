//! SigV4: the Authorization header's parser, X-Amz-Date, and a whole request's check (its
//! headers from the input, one `name:value` per line, then the body) against a configured
//! key: an error or a principal, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use streamfabric_api::sigv4::{Authorization, parse_amz_date};
use streamfabric_broker::auth::{Auth, Signed};

fn auth() -> &'static Auth {
    static AUTH: OnceLock<Auth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let file = std::env::temp_dir().join(format!("streamfabric-fuzz-credentials-{}", std::process::id()));
        std::fs::write(&file, "AKIDFUZZ fuzz-secret\n").unwrap();
        Auth::new(Some(&file), "us-east-1", &prometheus::Registry::new()).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Authorization::parse(&text);
    let _ = parse_amz_date(&text);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut headers = http::HeaderMap::new();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::try_from(value)) else {
            continue;
        };
        headers.append(name, value);
    }
    let request = Signed {
        method: "POST",
        path: "/",
        query: "",
        headers: &headers,
        authority: None,
        body: body.as_bytes(),
        service: "kinesis",
        unsigned_payload_allowed: true,
    };
    let _ = auth().verify(&request, 1_765_000_000);
});
