//! One HTTP/1.1 keep-alive connection speaking Kinesis JSON 1.1 or CBOR 1.1, over TCP or TLS
//! (`https://`, trusting `--ca-file`). Requests are signed for real with `--access-key-id`;
//! otherwise they carry a well-formed but unchecked SigV4 `Authorization` header (emulators
//! insist on its presence, and signing would only add client cost to the measurement).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use streamfabric_api::Format;
use streamfabric_api::model::{Operation, TARGET_PREFIX};
use streamfabric_api::sigv4::Signer;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const REGION: &str = "us-east-1";
const ACCESS_KEY: &str = "AKIDLOADGEN";
/// 64 hex digits: the shape of a SigV4 signature.
const FAKE_SIGNATURE: &str = "5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e5ca1ab1e";

/// Where requests go: `http://host[:port]`.
#[derive(Clone)]
pub struct Endpoint {
    /// `host:port` to connect to.
    pub addr: String,
    /// The Host header.
    pub host_header: String,
    /// Signs each request for real (brokers with --credentials).
    pub signer: Option<Arc<Signer>>,
    /// `https://`: the TLS client (`with_ca_file`) and the name the certificate must carry.
    pub tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    https: bool,
    /// The body encoding: JSON 1.1 (most SDKs) or CBOR 1.1 (the Java SDK's and the KCL's).
    pub format: Format,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad --endpoint {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(other) => return Err(format!("bad --endpoint {url:?}: scheme {other} unsupported (http or https)")),
            None => return Err(format!("bad --endpoint {url:?}: expected http[s]://host[:port]")),
        };
        let host = uri.host().ok_or_else(|| format!("bad --endpoint {url:?}: no host"))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host_header = match uri.port_u16() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Endpoint {
            addr: format!("{host}:{port}"),
            host_header,
            signer: None,
            tls: None,
            https,
            format: Format::Json,
        })
    }

    /// For an `https://` endpoint: trust the certificates of `ca_file` (PEM), and no others.
    pub fn with_ca_file(self, ca_file: Option<&std::path::Path>) -> Result<Endpoint, String> {
        let ca_file = match (self.https, ca_file) {
            (false, None) => return Ok(self),
            (false, Some(_)) => return Err("--ca-file is for an https:// --endpoint".into()),
            (true, None) => {
                return Err("an https:// --endpoint needs --ca-file (the CA that signed its certificate)".into());
            }
            (true, Some(file)) => file,
        };
        let pem = std::fs::read(ca_file).map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
            roots.add(cert).map_err(|e| format!("--ca-file {}: {e}", ca_file.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("--ca-file {}: no certificate", ca_file.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let host = self.host_header.rsplit_once(':').map_or(self.host_header.as_str(), |(h, _)| h);
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| format!("--endpoint host {host}: {e}"))?;
        Ok(Endpoint { tls: Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name)), ..self })
    }

    /// Requests and answers in `format`.
    pub fn speaking(self, format: Format) -> Endpoint {
        Endpoint { format, ..self }
    }

    /// Every request signed with this access key.
    pub fn signed_by(self, access_key_id: Option<&str>, secret_access_key: Option<&str>) -> Endpoint {
        let signer = access_key_id.map(|id| {
            Arc::new(Signer {
                access_key_id: id.to_string(),
                secret_access_key: secret_access_key.unwrap_or_default().to_string(),
                region: REGION.to_string(),
                service: "kinesis".to_string(),
            })
        });
        Endpoint { signer, ..self }
    }
}

/// How a call failed. A 5xx, a throttling code, a lost connection or a missing answer is
/// worth retrying (a broker restarting or handing a shard on); anything else aborts the run.
#[derive(Debug)]
pub enum CallError {
    Service {
        status: u16,
        code: String,
        message: String,
    },
    /// No connection could be made: nothing of the request was sent.
    Unsent(String),
    /// The connection failed with the request under way: it may have been applied.
    Transport(String),
    Timeout(Duration),
    Decode(String),
}

impl CallError {
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
    pub fn is_throttle(&self) -> bool {
        self.code().is_some_and(is_throttle_code)
    }
    pub fn is_retriable(&self) -> bool {
        match self {
            CallError::Service { status, .. } => *status >= 500 || self.is_throttle(),
            CallError::Unsent(_) | CallError::Transport(_) | CallError::Timeout(_) => true,
            CallError::Decode(_) => false,
        }
    }
    /// Whether the server may have applied the request although it failed: a retry may
    /// then write it twice.
    pub fn may_have_applied(&self) -> bool {
        match self {
            CallError::Service { status, .. } => *status >= 500 && !self.is_throttle(),
            CallError::Transport(_) | CallError::Timeout(_) => true,
            CallError::Unsent(_) | CallError::Decode(_) => false,
        }
    }
}

pub fn is_throttle_code(code: &str) -> bool {
    matches!(code, "ProvisionedThroughputExceededException" | "ThrottlingException")
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Service { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
            CallError::Unsent(e) => write!(f, "not sent: {e}"),
            CallError::Transport(e) => write!(f, "transport error: {e}"),
            CallError::Timeout(d) => write!(f, "no answer within {d:?}"),
            CallError::Decode(e) => write!(f, "undecodable answer: {e}"),
        }
    }
}

/// Date and Authorization headers, rebuilt once a second rather than per request.
struct AuthHeaders {
    second: u64,
    date: HeaderValue,
    authorization: HeaderValue,
}

impl AuthHeaders {
    fn at(second: u64) -> AuthHeaders {
        let date = amz_date(second);
        let authorization = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{}/{REGION}/kinesis/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature={FAKE_SIGNATURE}",
            &date[..8]
        );
        AuthHeaders {
            second,
            date: HeaderValue::from_str(&date).expect("ASCII date"),
            authorization: HeaderValue::from_str(&authorization).expect("ASCII header"),
        }
    }
}

pub struct Connection {
    endpoint: Endpoint,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
    /// The last exchange failed mid-way: the next call opens a new connection.
    broken: bool,
    timeout: Duration,
    auth: AuthHeaders,
}

impl Connection {
    pub async fn open(endpoint: &Endpoint, timeout: Duration) -> Result<Connection, CallError> {
        let sender = handshake(endpoint, timeout).await?;
        Ok(Connection {
            endpoint: endpoint.clone(),
            host: HeaderValue::from_str(&endpoint.host_header)
                .map_err(|e| CallError::Transport(format!("bad host {:?}: {e}", endpoint.host_header)))?,
            sender,
            broken: false,
            timeout,
            auth: AuthHeaders::at(unix_seconds()),
        })
    }

    /// The encoding of this connection's requests and answers.
    pub fn format(&self) -> Format {
        self.endpoint.format
    }

    /// Encode `input`, call `op`, decode the answer.
    pub async fn call<I: Serialize, O: DeserializeOwned>(&mut self, op: Operation, input: &I) -> Result<O, CallError> {
        let body = self.format().encode(input);
        let answer = self.call_raw(op, body).await?;
        decode(self.format(), &answer)
    }

    /// Send an encoded body; a 2xx answer's body comes back, anything else is an error.
    pub async fn call_raw(&mut self, op: Operation, body: Vec<u8>) -> Result<Bytes, CallError> {
        let now = unix_seconds();
        let target = format!("{TARGET_PREFIX}{}", op.name());
        let (date, authorization) = match &self.endpoint.signer {
            Some(signer) => {
                let signed = [("content-type", self.format().content_type()), ("x-amz-target", target.as_str())];
                let (date, authorization) = signer.sign_post(&self.endpoint.host_header, &signed, &body, now as i64);
                let value = |s: String| HeaderValue::from_str(&s).expect("ASCII header");
                (value(date), value(authorization))
            }
            None => {
                if now != self.auth.second {
                    self.auth = AuthHeaders::at(now);
                }
                (self.auth.date.clone(), self.auth.authorization.clone())
            }
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri("/")
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static(self.format().content_type()))
            .header("x-amz-target", target)
            .header("x-amz-date", date)
            .header(AUTHORIZATION, authorization)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(format!("building request: {e}")))?;
        self.send(request).await
    }

    /// A plain HTTP call (not the Kinesis API: the sidecar's pull API); JSON either way.
    pub async fn http(&mut self, method: Method, path: &str, body: Vec<u8>) -> Result<Bytes, CallError> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Transport(format!("building request: {e}")))?;
        self.send(request).await
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Bytes, CallError> {
        // Servers close idle keep-alive connections (node's default is 5 s); nothing was in
        // flight on a closed one, so reopening is safe for every operation.
        if self.broken || self.sender.is_closed() {
            self.sender = handshake(&self.endpoint, self.timeout).await?;
            self.broken = false;
        }
        let exchange = async {
            self.sender.ready().await.map_err(|e| CallError::Transport(e.to_string()))?;
            let response = self.sender.send_request(request).await.map_err(|e| CallError::Transport(e.to_string()))?;
            let status = response.status();
            let content_type = response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
            let format = Format::of_request(content_type).unwrap_or(Format::Json);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Transport(format!("reading answer: {e}")))?
                .to_bytes();
            Ok::<_, CallError>((status, format, body))
        };
        let answer =
            tokio::time::timeout(self.timeout, exchange).await.unwrap_or(Err(CallError::Timeout(self.timeout)));
        self.broken = answer.is_err();
        let (status, format, body) = answer?;
        if status.is_success() { Ok(body) } else { Err(service_error(status.as_u16(), format, &body)) }
    }
}

async fn handshake(endpoint: &Endpoint, timeout: Duration) -> Result<SendRequest<Full<Bytes>>, CallError> {
    let connect = async {
        let stream = TcpStream::connect(&endpoint.addr).await?;
        // Requests are written in one go; Nagle would only add latency.
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    };
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| CallError::Unsent(format!("connecting to {}: no answer within {timeout:?}", endpoint.addr)))?
        .map_err(|e| CallError::Unsent(format!("connecting to {}: {e}", endpoint.addr)))?;
    // A connection's errors also surface on the sender side, where they are reported.
    match &endpoint.tls {
        None => {
            let (sender, connection) =
                http1::handshake(TokioIo::new(stream)).await.map_err(|e| CallError::Unsent(e.to_string()))?;
            tokio::spawn(connection);
            Ok(sender)
        }
        Some((connector, name)) => {
            let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), stream))
                .await
                .map_err(|_| CallError::Unsent(format!("TLS with {}: no handshake within {timeout:?}", endpoint.addr)))?
                .map_err(|e| CallError::Unsent(format!("TLS with {}: {e}", endpoint.addr)))?;
            let (sender, connection) =
                http1::handshake(TokioIo::new(tls)).await.map_err(|e| CallError::Unsent(e.to_string()))?;
            tokio::spawn(connection);
            Ok(sender)
        }
    }
}

/// Decode an answer; an empty body (what some servers send for CreateStream) is `{}`.
pub fn decode<O: DeserializeOwned>(format: Format, body: &[u8]) -> Result<O, CallError> {
    format.decode(body).map_err(|e| CallError::Decode(e.message))
}

/// `{"__type": "ns#Code", "message": "..."}` (in the answer's encoding); the code may also be
/// absent (a bare 5xx).
fn service_error(status: u16, format: Format, body: &[u8]) -> CallError {
    #[derive(Default, serde::Deserialize)]
    struct Fields {
        #[serde(rename = "__type")]
        code: Option<String>,
        message: Option<String>,
        #[serde(rename = "Message")]
        capitalised_message: Option<String>,
    }
    let fields: Fields = format.decode(body).unwrap_or_default();
    let code = fields.code.map(|t| t.rsplit('#').next().unwrap_or(&t).to_string());
    CallError::Service {
        status,
        code: code.unwrap_or_else(|| format!("HTTP{status}")),
        message: fields
            .message
            .or(fields.capitalised_message)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()),
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `YYYYMMDDTHHMMSSZ` for a Unix time.
pub fn amz_date(unix_secs: u64) -> String {
    streamfabric_api::sigv4::amz_date(unix_secs as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_header_has_the_sigv4_shape() {
        let h = AuthHeaders::at(1_700_000_000);
        let auth = h.authorization.to_str().unwrap();
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDLOADGEN/20231114/us-east-1/kinesis/aws4_request, "));
        assert!(auth.contains("SignedHeaders=host;x-amz-date, Signature="));
        let sig = auth.rsplit("Signature=").next().unwrap();
        assert!(sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:4567").unwrap();
        assert_eq!((e.addr.as_str(), e.host_header.as_str()), ("127.0.0.1:4567", "127.0.0.1:4567"));
        let e = Endpoint::parse("http://localhost/").unwrap();
        assert_eq!((e.addr.as_str(), e.host_header.as_str()), ("localhost:80", "localhost"));
        let https = Endpoint::parse("https://localhost:4443").unwrap();
        assert_eq!(https.addr, "localhost:4443");
        assert!(https.clone().with_ca_file(None).err().unwrap().contains("needs --ca-file"));
        assert!(Endpoint::parse("http://x").unwrap().with_ca_file(Some(std::path::Path::new("ca.pem"))).is_err());
        assert!(Endpoint::parse("127.0.0.1:4567").is_err());
    }

    #[test]
    fn service_errors_are_classified() {
        let json = Format::Json;
        let e =
            service_error(400, json, br#"{"__type":"ProvisionedThroughputExceededException","message":"slow down"}"#);
        assert!(e.is_throttle() && e.is_retriable());
        let e = service_error(400, json, br#"{"__type":"com.amazon#ResourceNotFoundException","message":"no"}"#);
        assert_eq!(e.code(), Some("ResourceNotFoundException"));
        assert!(!e.is_retriable());
        let e = service_error(503, json, b"busy");
        assert!(e.is_retriable() && !e.is_throttle());
        // A CBOR answer's error, as the broker writes it.
        let throttled =
            streamfabric_api::ApiError::new(streamfabric_api::ErrorCode::ProvisionedThroughputExceeded, "slow");
        let e = service_error(400, Format::Cbor, &Format::Cbor.encode_error(&throttled));
        assert!(e.is_throttle() && e.is_retriable());
        assert!(e.to_string().contains("slow"), "{e}");
    }
}
