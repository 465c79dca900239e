//! HTTPS with `--tls-listen`: a client trusting the CA gets answers (HTTP/2 or HTTP/1.1 by
//! ALPN) while HTTP goes on beside it; a client trusting another CA, or meeting an expired
//! certificate, refuses the handshake; a certificate rotated on disk is served without a
//! restart; files that do not read stop the start.

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_rustls::rustls;

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// A server certificate for localhost and 127.0.0.1, valid until `not_after` (y, m, d):
/// (certificate PEM, key PEM).
fn server_cert(ca: &Ca, not_after: (i32, u8, u8)) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::new(ca.params.clone(), &ca.key);
    (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
}

fn install(dir: &Path, (cert, key): &(String, String)) {
    // Written aside and renamed, as a Secret volume swaps its files.
    for (name, text) in [("tls.crt", cert), ("tls.key", key)] {
        std::fs::write(dir.join(format!("{name}.tmp")), text).unwrap();
        std::fs::rename(dir.join(format!("{name}.tmp")), dir.join(name)).unwrap();
    }
}

/// What a client trusting `ca_pem` gets from `addr`: the negotiated protocol, the served
/// certificate and the HTTP status of a ListStreams; or the handshake's error.
async fn call(addr: SocketAddr, ca_pem: &str, alpn: &[&[u8]]) -> Result<(Option<Vec<u8>>, Vec<u8>, u16), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| e.to_string())?;
    let (_, session) = tls.get_ref();
    let protocol = session.alpn_protocol().map(<[u8]>::to_vec);
    let served = session.peer_certificates().unwrap()[0].as_ref().to_vec();
    let req = http::Request::post("https://localhost/")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "Kinesis_20131202.ListStreams")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let io = hyper_util::rt::TokioIo::new(tls);
    let status = if protocol.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        resp.into_body().collect().await.unwrap();
        status
    } else {
        let mut req = req;
        req.headers_mut().insert("host", "localhost".parse().unwrap());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let resp = sender.send_request(req).await.unwrap();
        resp.status().as_u16()
    };
    Ok((protocol, served, status))
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_beside_http_and_a_rotated_certificate_without_a_restart() {
    let tls_dir = tempfile::tempdir().unwrap();
    let authority = ca("streamfabric test CA");
    let first = server_cert(&authority, (2099, 1, 1));
    install(tls_dir.path(), &first);
    let b = common::start_with(|c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls_cert = Some(tls_dir.path().join("tls.crt"));
        c.tls_key = Some(tls_dir.path().join("tls.key"));
    })
    .await;
    let addr = b.running.tls_addr.expect("an HTTPS port");

    // Trusted: HTTP/2 when asked (the Java SDK), HTTP/1.1 otherwise (boto3, the CLI).
    let (protocol, served, status) = call(addr, &authority.pem, &[b"h2", b"http/1.1"]).await.unwrap();
    assert_eq!((protocol.as_deref(), status), (Some(&b"h2"[..]), 200));
    assert_eq!(served, der_of(&first.0));
    let (protocol, _, status) = call(addr, &authority.pem, &[b"http/1.1"]).await.unwrap();
    assert_eq!((protocol.as_deref(), status), (Some(&b"http/1.1"[..]), 200));
    let (_, _, status) = call(addr, &authority.pem, &[]).await.unwrap();
    assert_eq!(status, 200, "no ALPN: HTTP/1.1");
    // HTTP side by side, the same streams.
    b.create_stream("both", 1).await;
    let (status, answer) = b.json("ListStreams", serde_json::json!({})).await;
    assert_eq!((status, answer["StreamNames"][0].as_str()), (200, Some("both")));

    // A client trusting another CA refuses the certificate.
    let e = call(addr, &ca("another CA").pem, &[b"http/1.1"]).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    // Rotated to an expired certificate: served within seconds, and refused by the client.
    install(tls_dir.path(), &server_cert(&authority, (2021, 1, 1)));
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        match call(addr, &authority.pem, &[b"http/1.1"]).await {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "the expired certificate served within 10 s"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(e.contains("certificate expired"), "{e}");

    // Rotated again, to a valid one: the new certificate is served, no restart.
    let renewed = server_cert(&authority, (2098, 6, 1));
    install(tls_dir.path(), &renewed);
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        if let Ok((_, served, 200)) = call(addr, &authority.pem, &[b"http/1.1"]).await {
            break served;
        }
        assert!(Instant::now() < deadline, "the renewed certificate served within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(served, der_of(&renewed.0));

    // A key that does not go with the certificate is not taken: the renewed one stays.
    let mismatched = (server_cert(&authority, (2097, 1, 1)).0, server_cert(&authority, (2097, 1, 1)).1);
    install(tls_dir.path(), &mismatched);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(call(addr, &authority.pem, &[b"http/1.1"]).await.unwrap().1, der_of(&renewed.0));
    let (_, metrics) = common::http_get(b.running.admin_addr, "/metrics").await;
    assert!(metrics.contains("streamfabric_tls_certificate_loads_total 3"), "the first and two reloads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_read_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.path().join("tls.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let mut config = streamfabric_api::settings::BrokerConfig::for_dir(dir.path());
    config.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    config.tls_cert = Some(dir.path().join("tls.crt"));
    config.tls_key = Some(dir.path().join("tls.key"));
    let e = streamfabric_broker::start(config).await.err().expect("refused");
    assert!(e.to_string().contains("no certificate"), "{e}");
}
