//! The webhook's serving certificate. The API server calls the webhook over HTTPS and
//! checks its certificate against the CA bundle of the MutatingWebhookConfiguration.
//!
//! Managed (the default), the operator keeps its own CA and serving certificate in a
//! Secret (so every replica serves the same one), renews the serving certificate when a
//! third of its life is left, and writes the CA into the webhook configuration. Otherwise
//! (`--webhook-certs external`) cert-manager writes the Secret and injects the CA, and
//! the operator only serves what the Secret holds.

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

const NOT_AFTER: &str = "streamfabric.io/not-after";
const CA_NOT_AFTER: &str = "streamfabric.io/ca-not-after";
const DNS_NAMES: &str = "streamfabric.io/dns-names";
const CA_NAME: &str = "streamfabric operator webhook CA";
/// The CA outlives many serving certificates; it is replaced (with the old one kept in the
/// bundle until it expires) when less than this is left.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Clone, Debug)]
pub struct CertSettings {
    pub namespace: String,
    /// The Secret (type kubernetes.io/tls) with tls.crt, tls.key and ca.crt.
    pub secret: String,
    /// The webhook's Service: the names the certificate is for.
    pub service: String,
    /// The MutatingWebhookConfiguration whose caBundle the operator keeps (managed only).
    pub webhook_configuration: String,
    /// false: cert-manager (or an administrator) writes the Secret and the CA bundle.
    pub managed: bool,
    /// How long a serving certificate the operator issues is valid.
    pub validity: Duration,
}

impl CertSettings {
    /// The names the API server may call the webhook by (it uses `<service>.<namespace>.svc`).
    pub fn dns_names(&self) -> Vec<String> {
        let (s, ns) = (&self.service, &self.namespace);
        vec![s.clone(), format!("{s}.{ns}"), format!("{s}.{ns}.svc"), format!("{s}.{ns}.svc.cluster.local")]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("generating the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Secret {0}: {1}")]
    Secret(String, String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// What one pass did.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    Serving,
    Issued,
    CaReplaced,
}

/// The certificate the TLS server presents; swapped when the Secret changes.
#[derive(Debug, Default)]
pub struct CertResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertResolver {
    pub fn ready(&self) -> bool {
        self.current.read().unwrap().is_some()
    }

    fn set(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), CertError> {
        let bad = |what: &str| CertError::Tls(rustls::Error::General(format!("{what} is not valid PEM")));
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem).collect::<Result<_, _>>().map_err(|_| bad("tls.crt"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| bad("tls.key"))?;
        let signing = rustls::crypto::ring::sign::any_supported_type(&key)?;
        *self.current.write().unwrap() = Some(Arc::new(CertifiedKey::new(chain, signing)));
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap().clone()
    }
}

/// Keep the certificate: a pass now, then every `every`, until the runtime stops.
pub async fn keep(client: Client, settings: CertSettings, resolver: Arc<CertResolver>, every: Duration) {
    loop {
        match pass(&client, &settings, &resolver, Timestamp::now()).await {
            Ok(Pass::Serving) => {}
            Ok(done) => tracing::info!(secret = %settings.secret, ?done, "webhook certificate written"),
            Err(e) => tracing::warn!(secret = %settings.secret, "webhook certificate: {e}; retrying"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Read the Secret (issuing or renewing its certificate when managed), serve what it holds,
/// and (managed) make the webhook configuration trust its CA.
pub async fn pass(
    client: &Client,
    settings: &CertSettings,
    resolver: &CertResolver,
    now: Timestamp,
) -> Result<Pass, CertError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    // Managed, the Secret belongs to the webhook configuration: it goes when the
    // configuration goes (`helm uninstall`).
    let config = if settings.managed { Some(configs.get(&settings.webhook_configuration).await?) } else { None };
    let existing = secrets.get_opt(&settings.secret).await?;
    let (secret, done) = match (settings.managed, existing) {
        (false, None) => {
            return Err(CertError::Secret(settings.secret.clone(), "not written yet (by cert-manager)".into()));
        }
        (false, Some(secret)) => (secret, Pass::Serving),
        (true, existing) => match renewal(existing.as_ref(), settings, now) {
            None => (existing.expect("a Secret that needs no renewal"), Pass::Serving),
            Some(renew) => {
                let ca = match (&renew, &existing) {
                    (Renewal::Leaf, Some(s)) => Some(ca_of(s)?),
                    _ => None,
                };
                let replaced_ca = ca.is_none();
                let mut fresh = issue(settings, ca, existing.as_ref(), now)?;
                fresh.metadata.owner_references = config.as_ref().map(|c| vec![owner(c)]);
                let written = match existing {
                    Some(old) => {
                        fresh.metadata.resource_version = old.metadata.resource_version;
                        secrets.replace(&settings.secret, &PostParams::default(), &fresh).await?
                    }
                    None => secrets.create(&PostParams::default(), &fresh).await?,
                };
                (written, if replaced_ca { Pass::CaReplaced } else { Pass::Issued })
            }
        },
    };
    let data = secret.data.clone().unwrap_or_default();
    let field = |key: &str| {
        data.get(key)
            .map(|b| b.0.clone())
            .ok_or_else(|| CertError::Secret(settings.secret.clone(), format!("no {key}")))
    };
    resolver.set(&field("tls.crt")?, &field("tls.key")?)?;
    if let Some(config) = config {
        trust(&configs, config, &field("ca.crt")?).await?;
    }
    Ok(done)
}

fn owner(config: &MutatingWebhookConfiguration) -> OwnerReference {
    OwnerReference {
        api_version: "admissionregistration.k8s.io/v1".into(),
        kind: "MutatingWebhookConfiguration".into(),
        name: config.metadata.name.clone().unwrap_or_default(),
        uid: config.metadata.uid.clone().unwrap_or_default(),
        ..OwnerReference::default()
    }
}

#[derive(Debug, PartialEq)]
enum Renewal {
    /// A new serving certificate from the same CA.
    Leaf,
    /// A new CA too (none yet, unreadable, or near its end).
    All,
}

/// Whether the Secret's certificates must be (re)issued now.
fn renewal(secret: Option<&Secret>, settings: &CertSettings, now: Timestamp) -> Option<Renewal> {
    let Some(secret) = secret else { return Some(Renewal::All) };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let time = |key: &str| annotations.get(key).and_then(|v| v.parse::<Timestamp>().ok());
    let data = secret.data.clone().unwrap_or_default();
    if !["tls.crt", "tls.key", "ca.crt", "ca.key"].iter().all(|k| data.contains_key(*k)) {
        return Some(Renewal::All);
    }
    match time(CA_NOT_AFTER) {
        Some(end) if remaining(now, end) > CA_RENEW_BEFORE => {}
        _ => return Some(Renewal::All),
    }
    let names_changed = annotations.get(DNS_NAMES) != Some(&settings.dns_names().join(","));
    match time(NOT_AFTER) {
        Some(end) if remaining(now, end) > settings.validity / 3 && !names_changed => None,
        _ => Some(Renewal::Leaf),
    }
}

fn remaining(now: Timestamp, end: Timestamp) -> Duration {
    Duration::from_secs(end.as_second().saturating_sub(now.as_second()).max(0) as u64)
}

/// The CA's parameters: the same every time, so that its key alone can sign again.
fn ca_params(not_before: Timestamp, not_after: Timestamp) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = offset(not_before);
    params.not_after = offset(not_after);
    Ok(params)
}

struct Ca {
    pem: String,
    key: KeyPair,
    not_after: Timestamp,
}

fn ca_of(secret: &Secret) -> Result<Ca, CertError> {
    let data = secret.data.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| CertError::Secret(name.clone(), format!("no {key}")))
    };
    let not_after = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CA_NOT_AFTER))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| CertError::Secret(name.clone(), format!("no {CA_NOT_AFTER}")))?;
    // ca.crt may hold the previous CA after the current one; the current comes first.
    let pem = text("ca.crt")?;
    let first = pem.split_inclusive("-----END CERTIFICATE-----\n").next().unwrap_or_default().to_string();
    Ok(Ca { pem: first, key: KeyPair::from_pem(&text("ca.key")?)?, not_after })
}

/// A Secret with a serving certificate signed by `ca` (a new CA when none).
fn issue(
    settings: &CertSettings,
    ca: Option<Ca>,
    previous: Option<&Secret>,
    now: Timestamp,
) -> Result<Secret, CertError> {
    let start = now - k8s_openapi::jiff::SignedDuration::from_secs(300); // clocks a little behind
    let (ca, bundle) = match ca {
        Some(ca) => {
            let bundle = previous.and_then(|s| s.data.as_ref()?.get("ca.crt").map(|b| b.0.clone()));
            (ca, bundle)
        }
        None => {
            let key = KeyPair::generate()?;
            let not_after = now + signed(CA_VALIDITY);
            let pem = ca_params(start, not_after)?.self_signed(&key)?.pem();
            // The CA it replaces stays trusted beside it: certificates it signed still verify.
            let old = previous.and_then(|s| ca_of(s).ok()).filter(|old| old.not_after > now);
            let bundle = match old {
                Some(old) => format!("{pem}{}", old.pem),
                None => pem.clone(),
            };
            (Ca { pem, key, not_after }, Some(bundle.into_bytes()))
        }
    };
    let not_after = now + signed(settings.validity);
    let mut params = CertificateParams::new(settings.dns_names())?;
    params.distinguished_name.push(DnType::CommonName, format!("{}.{}.svc", settings.service, settings.namespace));
    params.not_before = offset(start);
    params.not_after = offset(not_after.min(ca.not_after));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let issuer = Issuer::new(ca_params(start, ca.not_after)?, &ca.key);
    let cert = params.signed_by(&key, &issuer)?;
    let data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(cert.pem().into_bytes())),
        ("tls.key".to_string(), ByteString(key.serialize_pem().into_bytes())),
        ("ca.crt".to_string(), ByteString(bundle.unwrap_or_else(|| ca.pem.clone().into_bytes()))),
        ("ca.key".to_string(), ByteString(ca.key.serialize_pem().into_bytes())),
    ]);
    let annotations = BTreeMap::from([
        (NOT_AFTER.to_string(), not_after.min(ca.not_after).to_string()),
        (CA_NOT_AFTER.to_string(), ca.not_after.to_string()),
        (DNS_NAMES.to_string(), settings.dns_names().join(",")),
    ]);
    let mut secret = Secret { data: Some(data), type_: Some("kubernetes.io/tls".into()), ..Secret::default() };
    secret.metadata.name = Some(settings.secret.clone());
    secret.metadata.namespace = Some(settings.namespace.clone());
    secret.metadata.annotations = Some(annotations);
    secret.metadata.labels =
        Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "streamfabric-operator".to_string())]));
    Ok(secret)
}

/// Make every webhook of the configuration trust `bundle` (a no-op when it does already).
async fn trust(
    configs: &Api<MutatingWebhookConfiguration>,
    mut config: MutatingWebhookConfiguration,
    bundle: &[u8],
) -> Result<(), CertError> {
    let name = config.metadata.name.clone().unwrap_or_default();
    let mut changed = false;
    for webhook in config.webhooks.iter_mut().flatten() {
        if webhook.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()) != Some(bundle) {
            webhook.client_config.ca_bundle = Some(ByteString(bundle.to_vec()));
            changed = true;
        }
    }
    if changed {
        configs.replace(&name, &PostParams::default(), &config).await?;
        tracing::info!(configuration = %name, "the webhook configuration trusts the operator's CA");
    }
    Ok(())
}

fn signed(d: Duration) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(d.as_secs() as i64)
}

fn offset(t: Timestamp) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).expect("a time within the certificate's range")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CertSettings {
        CertSettings {
            namespace: "sf".into(),
            secret: "streamfabric-webhook-tls".into(),
            service: "streamfabric-webhook".into(),
            webhook_configuration: "streamfabric-sidecar-injector".into(),
            managed: true,
            validity: Duration::from_secs(90 * 24 * 3600),
        }
    }

    fn at(days: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + days * 86_400).unwrap()
    }

    #[test]
    fn a_serving_certificate_is_renewed_with_a_third_of_its_life_left_and_the_ca_lasts() {
        let s = settings();
        assert_eq!(renewal(None, &s, at(0)), Some(Renewal::All));
        let first = issue(&s, None, None, at(0)).unwrap();
        assert_eq!(renewal(Some(&first), &s, at(0)), None);
        assert_eq!(renewal(Some(&first), &s, at(59)), None);
        assert_eq!(renewal(Some(&first), &s, at(61)), Some(Renewal::Leaf));
        let second = issue(&s, Some(ca_of(&first).unwrap()), Some(&first), at(61)).unwrap();
        let data = |s: &Secret, k: &str| s.data.as_ref().unwrap()[k].0.clone();
        assert_eq!(data(&second, "ca.crt"), data(&first, "ca.crt"), "the same CA: the bundle stands");
        assert_ne!(data(&second, "tls.crt"), data(&first, "tls.crt"));
        assert_eq!(renewal(Some(&second), &s, at(100)), None);
        // A year before the CA's end, a new one, with the old one still in the bundle.
        assert_eq!(renewal(Some(&second), &s, at(9 * 365 + 10)), Some(Renewal::All));
        let third = issue(&s, None, Some(&second), at(9 * 365 + 10)).unwrap();
        let bundle = String::from_utf8(data(&third, "ca.crt")).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(bundle.ends_with(std::str::from_utf8(&data(&first, "ca.crt")).unwrap()));
        // A Service renamed: a certificate for the new names.
        let renamed = CertSettings { service: "other".into(), ..s };
        assert_eq!(renewal(Some(&third), &renamed, at(9 * 365 + 11)), Some(Renewal::Leaf));
    }

    #[test]
    fn the_serving_certificate_verifies_against_the_bundle_for_the_service_name() {
        use rustls::client::danger::ServerCertVerifier;
        let s = settings();
        let secret = issue(&s, None, None, Timestamp::now()).unwrap();
        let data = |k: &str| secret.data.as_ref().unwrap()[k].0.clone();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(&data("ca.crt")) {
            roots.add(ca.unwrap()).unwrap();
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&data("tls.crt")).collect::<Result<_, _>>().unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let name = rustls_pki_types::ServerName::try_from("streamfabric-webhook.sf.svc").unwrap();
        verifier
            .verify_server_cert(&chain[0], &[], &name, &[], rustls_pki_types::UnixTime::now())
            .expect("the API server's check passes");
        let other = rustls_pki_types::ServerName::try_from("elsewhere.sf.svc").unwrap();
        assert!(verifier.verify_server_cert(&chain[0], &[], &other, &[], rustls_pki_types::UnixTime::now()).is_err());
        CertResolver::default().set(&data("tls.crt"), &data("tls.key")).expect("the server can load it");
    }
}
