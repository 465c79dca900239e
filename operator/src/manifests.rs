//! The children of a DataStream, built as pure functions of its spec: a StatefulSet of
//! brokers, a headless Service (stable pod names), a client Service (the Kinesis
//! endpoint), a ConfigMap (broker settings), a PodDisruptionBudget, and the Secret holding
//! the cluster key that signs shard iterators (created once, never rewritten).

use crate::access;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    Lifecycle, LifecycleHandler, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, Secret, SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, SleepAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use streamfabric_api::crd::{self, DataStream, DataStreamSpec, StreamMode};
use streamfabric_api::settings::{BrokerConfig, Durability, FlushSetting, parse_duration};

pub const API_PORT: i32 = 4567;
pub const ADMIN_PORT: i32 = 4568;
/// The Kinesis API over HTTPS, with `spec.tls`.
pub const TLS_PORT: i32 = 4443;
/// Where broker pods find the certificate of `spec.tls` (the Secret's `tls.crt`, `tls.key`).
pub const TLS_DIR: &str = "/etc/streamfabric/tls";
pub const DATA_DIR: &str = "/data";
/// Where broker pods find the cluster key Secret, and its key in the Secret.
pub const CLUSTER_KEY_DIR: &str = "/etc/streamfabric/cluster-key";
pub const CLUSTER_KEY_FILE: &str = "token.key";
/// Where broker pods find the access keys they accept (`spec.authentication`): a directory
/// per Secret (the user's, the operator's own), one file per access key (`access`).
pub const CREDENTIALS_DIR: &str = "/etc/streamfabric/credentials";
/// The operator's access key id at the brokers of a DataStream with authentication.
pub const OPERATOR_ACCESS_KEY_ID: &str = "streamfabric-operator";
/// The broker pod's preStop pause, while its removal from the Service reaches kube-proxy.
pub const PRE_STOP_SLEEP_SECONDS: i64 = 3;
/// The preStop pause, then the broker's shutdown: up to 12 s each for the requests in
/// flight, the handoff of its shards and the last uploads (broker/src/main.rs).
pub const BROKER_TERMINATION_GRACE_SECONDS: i64 = 60;
/// Brokers per open shard when the spec sets neither replicas nor shardsPerBroker.
pub const DEFAULT_SHARDS_PER_BROKER: i32 = 4;

/// Names of the children, derived from the DataStream's name.
pub struct Names {
    pub brokers: String,
    pub headless: String,
    pub client: String,
    pub config: String,
    pub cluster_key: String,
    /// The operator's access key for these brokers (`operator_key_secret`).
    pub operator_key: String,
    /// The brokers' access policy (`access::policy_config_map`).
    pub access_policy: String,
}

impl Names {
    pub fn of(ds: &DataStream) -> Names {
        let name = ds.name_any();
        Names {
            brokers: format!("{name}-broker"),
            headless: format!("{name}-broker-headless"),
            client: name.clone(),
            config: format!("{name}-broker-config"),
            cluster_key: format!("{name}-cluster-key"),
            operator_key: format!("{name}-operator-key"),
            access_policy: format!("{name}-access-policy"),
        }
    }
}

pub fn selector_labels(ds: &DataStream) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "streamfabric-broker".to_string()),
        ("app.kubernetes.io/instance".to_string(), ds.name_any()),
    ])
}

fn labels(ds: &DataStream) -> BTreeMap<String, String> {
    let mut labels = selector_labels(ds);
    labels.insert("app.kubernetes.io/managed-by".into(), "streamfabric-operator".into());
    labels.insert("app.kubernetes.io/part-of".into(), "streamfabric".into());
    labels
}

pub(crate) fn metadata(ds: &DataStream, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: ds.namespace(),
        labels: Some(labels(ds)),
        owner_references: Some(vec![owner(ds)]),
        ..ObjectMeta::default()
    }
}

/// The controller owner reference: children are garbage-collected with their DataStream.
pub fn owner(ds: &DataStream) -> OwnerReference {
    ds.controller_owner_ref(&()).expect("a DataStream read from the API server has a name and uid")
}

/// The open shards the brokers are sized for: spec.shards, or in OnDemand mode the count
/// the autoscaler has reached (once the stream reports one).
pub fn planned_shards(ds: &DataStream) -> i32 {
    let open = ds.status.as_ref().map_or(0, |s| s.open_shards);
    match ds.spec.mode {
        StreamMode::OnDemand if open > 0 => open,
        _ => ds.spec.shards,
    }
}

/// Broker pods: `replicas` when fixed, else one per `shardsPerBroker` of `shards`, within bounds.
pub fn broker_replicas(spec: &DataStreamSpec, shards: i32) -> i32 {
    let b = &spec.brokers;
    let wanted = match b.replicas {
        Some(n) => n,
        None => {
            let per = b.shards_per_broker.unwrap_or(DEFAULT_SHARDS_PER_BROKER).max(1);
            (shards + per - 1) / per
        }
    };
    wanted.clamp(b.min_replicas.min(b.max_replicas), b.max_replicas.max(1))
}

/// The broker settings a DataStream's spec asks for: every spec field that concerns brokers
/// lands here, in the type the broker's own flags read (unset spec fields keep its defaults).
pub fn broker_settings(ds: &DataStream) -> BrokerConfig {
    let s = &ds.spec;
    let l = &s.shard_limits;
    let defaults = BrokerConfig::default();
    let store = s.object_store.as_ref();
    BrokerConfig {
        data_dir: DATA_DIR.into(),
        listen: SocketAddr::from(([0, 0, 0, 0], API_PORT as u16)),
        admin_listen: SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT as u16)),
        // Durability Object needs every acknowledged write fsynced, and so does a pod's disk.
        flush: FlushSetting::Always,
        durability: match s.durability {
            crd::Durability::Local => Durability::Local,
            crd::Durability::Object => Durability::Object,
        },
        object_store: store.map(|o| o.url.clone()),
        object_store_endpoint: store.and_then(|o| o.endpoint.clone()),
        object_store_region: store.and_then(|o| o.region.clone()),
        segment_bytes: s.segments.max_bytes.map_or(defaults.segment_bytes, |b| b as u64),
        segment_age: s
            .segments
            .max_age
            .as_deref()
            // The schema's pattern admits only what parse_duration reads.
            .and_then(|age| parse_duration(age).ok())
            .unwrap_or(defaults.segment_age),
        segment_compression: s.segments.compression.map_or(defaults.segment_compression, Into::into),
        local_retention_bytes: s.brokers.storage.local_retention_bytes.map(|b| b as u64),
        enforce_shard_limits: l.enforce,
        shard_write_bytes_per_sec: l.write_bytes_per_second as u64,
        shard_write_records_per_sec: l.write_records_per_second as u64,
        shard_read_bytes_per_sec: l.read_bytes_per_second as u64,
        shard_read_calls_per_sec: l.read_calls_per_second as u64,
        // Each pod's own name, from the Downward API (see `statefulset`).
        broker_id: None,
        // One key for the brokers of this DataStream, from its Secret (see `cluster_key_secret`).
        cluster_key_file: Some(format!("{CLUSTER_KEY_DIR}/{CLUSTER_KEY_FILE}").into()),
        // The Secrets' keys and the operator's, and who may do what (see `access`).
        credentials: s.authentication.as_ref().map(|_| CREDENTIALS_DIR.into()),
        access_policy: s
            .authentication
            .as_ref()
            .map(|_| format!("{}/{}", access::ACCESS_POLICY_DIR, access::ACCESS_POLICY_FILE).into()),
        tls_listen: s.tls.as_ref().map(|_| SocketAddr::from(([0, 0, 0, 0], TLS_PORT as u16))),
        tls_cert: s.tls.as_ref().map(|_| format!("{TLS_DIR}/tls.crt").into()),
        tls_key: s.tls.as_ref().map(|_| format!("{TLS_DIR}/tls.key").into()),
        ..defaults
    }
}

/// The broker pods the StatefulSet runs. Brokers share a stream through its object store:
/// with `spec.objectStore` they form one cluster (each shard served by one of them, any of
/// them answering any request), sized by `broker_replicas`. Without, each pod's store would
/// be a directory on its own volume and the pods would serve unrelated copies of the stream
/// behind one Service: one broker serves every shard.
pub fn serving_brokers(ds: &DataStream) -> i32 {
    match ds.spec.object_store {
        Some(_) => broker_replicas(&ds.spec, planned_shards(ds)),
        None => 1,
    }
}

/// The address a broker pod advertises to its peers (and they forward to): its stable name
/// under the headless Service; `$(…)` expands the broker id (the pod name) set before it.
fn advertised_address(ds: &DataStream) -> String {
    let names = Names::of(ds);
    let namespace = ds.namespace().unwrap_or_else(|| "default".into());
    format!("$({}).{}.{namespace}.svc:{API_PORT}", BrokerConfig::env_name("broker_id"), names.headless)
}

/// Broker settings, as the environment variables `streamfabric-broker serve` reads.
pub fn config_map(ds: &DataStream) -> ConfigMap {
    let data = broker_settings(ds).to_env();
    ConfigMap { metadata: metadata(ds, &Names::of(ds).config), data: Some(data), ..ConfigMap::default() }
}

/// The Secret with the key that signs the brokers' shard iterators and paging tokens, so that
/// one issued by any broker of the DataStream verifies at every other. Created with `key`
/// (random) when absent and never rewritten: a new key would void every iterator out there.
pub fn cluster_key_secret(ds: &DataStream, key: [u8; 32]) -> Secret {
    Secret {
        metadata: metadata(ds, &Names::of(ds).cluster_key),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(CLUSTER_KEY_FILE.to_string(), ByteString(key.to_vec()))])),
        ..Secret::default()
    }
}

/// The operator's access key at the brokers of `ds` (with `spec.authentication`): its id is
/// `OPERATOR_ACCESS_KEY_ID`, its secret `secret` (derived from the operator's own key, so
/// the same after every restart). Mounted into the broker pods beside the user's keys.
pub fn operator_key_secret(ds: &DataStream, secret: &str) -> Secret {
    Secret {
        metadata: metadata(ds, &Names::of(ds).operator_key),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(OPERATOR_ACCESS_KEY_ID.to_string(), ByteString(secret.as_bytes().to_vec()))])),
        ..Secret::default()
    }
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(ADMIN_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

pub fn statefulset(ds: &DataStream) -> StatefulSet {
    let names = Names::of(ds);
    let spec = &ds.spec;
    // A change of settings must restart the brokers: the pod template carries their digest.
    let config_digest = {
        let cm = config_map(ds);
        let text = serde_json::to_string(&cm.data).expect("config serializes");
        format!("{:016x}", fnv1a(text.as_bytes()))
    };
    // With authentication: each Secret of keys, and the access policy; with TLS, the
    // certificate (all re-read by the brokers as the kubelet updates them, without a restart).
    let access_volumes: Vec<(Volume, VolumeMount)> = spec
        .authentication
        .as_ref()
        .map(|auth| {
            let mut volumes = access::key_volumes(auth, &names);
            volumes.push(access::policy_volume(&names));
            volumes
        })
        .unwrap_or_default()
        .into_iter()
        .chain(spec.tls.as_ref().map(|tls| tls_volume(&tls.secret_ref.name)))
        .collect();
    let from_field = |name: &str, field_path: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(k8s_openapi::api::core::v1::ObjectFieldSelector {
                field_path: field_path.into(),
                ..Default::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    // The pod name is the broker's name in shard manifests: stable across restarts and disks.
    let mut env =
        vec![from_field("POD_IP", "status.podIP"), from_field(&BrokerConfig::env_name("broker_id"), "metadata.name")];
    if spec.object_store.is_some() {
        // Brokers on one object store form a cluster; each is reached at its own pod name.
        env.push(EnvVar {
            name: BrokerConfig::env_name("advertise"),
            value: Some(advertised_address(ds)),
            ..EnvVar::default()
        });
    }
    if let Some(secret) = spec.object_store.as_ref().and_then(|o| o.credentials_secret_ref.as_ref()) {
        for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            env.push(EnvVar {
                name: key.into(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: key.into(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            });
        }
    }
    let container = Container {
        name: "broker".into(),
        image: Some(spec.brokers.image.clone()),
        args: Some(vec!["serve".into()]),
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource { name: names.config.clone(), optional: Some(false) }),
            ..EnvFromSource::default()
        }]),
        ports: Some(
            [
                Some(ContainerPort {
                    name: Some("kinesis".into()),
                    container_port: API_PORT,
                    ..ContainerPort::default()
                }),
                Some(ContainerPort {
                    name: Some("admin".into()),
                    container_port: ADMIN_PORT,
                    ..ContainerPort::default()
                }),
                spec.tls.as_ref().map(|_| ContainerPort {
                    name: Some("kinesis-tls".into()),
                    container_port: TLS_PORT,
                    ..ContainerPort::default()
                }),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        // A terminating pod leaves the Service's endpoints at once, but kube-proxy and
        // clients learn it a moment later: keep serving that long before the SIGTERM
        // (after which the broker stops accepting and finishes what is in flight).
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: PRE_STOP_SLEEP_SECONDS }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: spec.brokers.resources.clone(),
        volume_mounts: Some(
            [
                Some(VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() }),
                Some(VolumeMount {
                    name: "cluster-key".into(),
                    mount_path: CLUSTER_KEY_DIR.into(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                }),
            ]
            .into_iter()
            .flatten()
            .chain(access_volumes.iter().map(|(_, mount)| mount.clone()))
            .collect(),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(k8s_openapi::api::core::v1::Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("data".into()), labels: Some(selector_labels(ds)), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.brokers.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(spec.brokers.storage.size.clone()))])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let mut pod_labels = labels(ds);
    pod_labels.remove("app.kubernetes.io/managed-by");
    StatefulSet {
        metadata: metadata(ds, &names.brokers),
        spec: Some(StatefulSetSpec {
            replicas: Some(serving_brokers(ds)),
            service_name: Some(names.headless.clone()),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector { match_labels: Some(selector_labels(ds)), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([("streamfabric.io/config-digest".to_string(), config_digest)])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(
                        [Some(Volume {
                            name: "cluster-key".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(names.cluster_key.clone()),
                                // Readable by the broker's group (fsGroup) only.
                                default_mode: Some(0o440),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        })]
                        .into_iter()
                        .flatten()
                        .chain(access_volumes.into_iter().map(|(volume, _)| volume))
                        .collect(),
                    ),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(65532),
                        fs_group: Some(65532),
                        ..PodSecurityContext::default()
                    }),
                    termination_grace_period_seconds: Some(BROKER_TERMINATION_GRACE_SECONDS),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

fn ports(ds: &DataStream) -> Vec<ServicePort> {
    let tls = ds.spec.tls.as_ref().map(|_| ServicePort {
        name: Some("kinesis-tls".into()),
        port: TLS_PORT,
        target_port: Some(IntOrString::Int(TLS_PORT)),
        ..ServicePort::default()
    });
    let plain = vec![
        ServicePort {
            name: Some("kinesis".into()),
            port: API_PORT,
            target_port: Some(IntOrString::Int(API_PORT)),
            ..ServicePort::default()
        },
        ServicePort {
            name: Some("admin".into()),
            port: ADMIN_PORT,
            target_port: Some(IntOrString::Int(ADMIN_PORT)),
            ..ServicePort::default()
        },
    ];
    plain.into_iter().chain(tls).collect()
}

/// The certificate of `spec.tls`, from its Secret, where the broker's settings look.
fn tls_volume(secret: &str) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            // Readable by the broker's group (fsGroup) only.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    (
        volume,
        VolumeMount { name: "tls".into(), mount_path: TLS_DIR.into(), read_only: Some(true), ..VolumeMount::default() },
    )
}

/// Stable DNS names for the broker pods (`<pod>.<headless>`), ready or not, so brokers find
/// each other while starting.
pub fn headless_service(ds: &DataStream) -> Service {
    Service {
        metadata: metadata(ds, &Names::of(ds).headless),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(ds)),
            ports: Some(ports(ds)),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The endpoint applications point their SDKs at.
pub fn client_service(ds: &DataStream) -> Service {
    Service {
        metadata: metadata(ds, &Names::of(ds).client),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(ds)),
            ports: Some(ports(ds)),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// At most one broker down at a time for voluntary disruptions (drains, upgrades).
pub fn pod_disruption_budget(ds: &DataStream) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(ds, &Names::of(ds).brokers),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(ds)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The client endpoint as applications in the cluster reach it.
pub fn endpoint(ds: &DataStream) -> String {
    format!("http://{}.{}.svc:{API_PORT}", Names::of(ds).client, ds.namespace().unwrap_or_else(|| "default".into()))
}

/// The same over HTTPS, with `spec.tls`.
pub fn tls_endpoint(ds: &DataStream) -> Option<String> {
    let namespace = ds.namespace().unwrap_or_else(|| "default".into());
    ds.spec.tls.as_ref().map(|_| format!("https://{}.{namespace}.svc:{TLS_PORT}", Names::of(ds).client))
}

/// A small stable hash (FNV-1a) for the config digest; not for security.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::DataStreamExt;

    #[test]
    fn replicas_follow_shards_within_bounds() {
        let ds = DataStream::test().with_shards(9);
        assert_eq!(broker_replicas(&ds.spec, planned_shards(&ds)), 3, "ceil(9 / 4)");
        let mut spec = ds.spec.clone();
        spec.brokers.shards_per_broker = Some(1);
        spec.brokers.max_replicas = 5;
        assert_eq!(broker_replicas(&spec, 9), 5, "clamped to maxReplicas");
        spec.brokers.shards_per_broker = None;
        spec.brokers.replicas = Some(2);
        assert_eq!(broker_replicas(&spec, 9), 2);
        spec.brokers.min_replicas = 3;
        assert_eq!(broker_replicas(&spec, 9), 3, "raised to minReplicas");
    }

    #[test]
    fn on_demand_brokers_follow_the_shards_the_autoscaler_reached() {
        let mut ds = DataStream::test().with_shards(4);
        assert_eq!(planned_shards(&ds), 4);
        ds.status = Some(streamfabric_api::crd::DataStreamStatus { open_shards: 12, ..Default::default() });
        assert_eq!(planned_shards(&ds), 4, "Provisioned: spec.shards is the plan");
        ds.spec.mode = StreamMode::OnDemand;
        assert_eq!(planned_shards(&ds), 12);
        assert_eq!(broker_replicas(&ds.spec, planned_shards(&ds)), 3, "ceil(12 / 4)");
        assert_eq!(statefulset(&ds).spec.unwrap().replicas, Some(1), "one broker until brokers share a stream");
    }

    #[test]
    fn a_stopping_broker_keeps_serving_until_the_service_forgot_it_and_has_time_to_finish() {
        let sts = statefulset(&DataStream::test());
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let pre_stop = pod.containers[0].lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref());
        assert_eq!(pre_stop.and_then(|p| p.sleep.as_ref()).map(|s| s.seconds), Some(PRE_STOP_SLEEP_SECONDS));
        assert!(pod.termination_grace_period_seconds.unwrap() >= PRE_STOP_SLEEP_SECONDS + 3 * 12);
    }

    #[test]
    fn children_are_owned_labelled_and_consistent() {
        let ds = DataStream::test().with_shards(4);
        let sts = statefulset(&ds);
        let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("DataStream", "orders", Some(true)));
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(spec.service_name.as_deref(), Some("orders-broker-headless"));
        assert_eq!(spec.selector.match_labels.as_ref(), Some(&selector_labels(&ds)));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some(streamfabric_api::crd::DEFAULT_BROKER_IMAGE));
        assert_eq!(c.env_from.as_ref().unwrap()[0].config_map_ref.as_ref().unwrap().name, "orders-broker-config");
        assert_eq!(c.security_context.as_ref().unwrap().read_only_root_filesystem, Some(true));
        let claim = &spec.volume_claim_templates.as_ref().unwrap()[0];
        assert_eq!(
            claim.spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "10Gi"
        );
        assert_eq!(headless_service(&ds).spec.unwrap().cluster_ip.as_deref(), Some("None"));
        assert_eq!(client_service(&ds).metadata.name.as_deref(), Some("orders"));
        assert_eq!(endpoint(&ds), "http://orders.streams.svc:4567");
        let cm = config_map(&ds);
        assert_eq!(cm.data.as_ref().unwrap()["STREAMFABRIC_SHARD_WRITE_RECORDS"], "1000");
        assert_eq!(pod_disruption_budget(&ds).spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }

    /// Each spec field that concerns brokers, away from its default, read back from the
    /// ConfigMap with the broker's own parser: one that does not arrive fails here.
    #[test]
    fn every_broker_field_of_the_spec_reaches_the_broker_settings() {
        let mut ds = DataStream::test();
        ds.spec = serde_json::from_value(serde_json::json!({
            "shards": 2, "durability": "Object",
            "objectStore": {"url": "s3://b/p", "endpoint": "http://minio:9000", "region": "eu-west-1"},
            "segments": {"maxBytes": 1048576, "maxAge": "90s", "compression": "None"},
            "brokers": {"storage": {"localRetentionBytes": 4096}},
            "shardLimits": {"enforce": true, "writeBytesPerSecond": 1, "writeRecordsPerSecond": 2,
                            "readBytesPerSecond": 3, "readCallsPerSecond": 4}
        }))
        .unwrap();
        let env = config_map(&ds).data.unwrap();
        let read = BrokerConfig::from_env(&env).unwrap();
        let expected = BrokerConfig {
            data_dir: "/data".into(),
            listen: "0.0.0.0:4567".parse().unwrap(),
            admin_listen: "0.0.0.0:4568".parse().unwrap(),
            durability: Durability::Object,
            object_store: Some("s3://b/p".into()),
            object_store_endpoint: Some("http://minio:9000".into()),
            object_store_region: Some("eu-west-1".into()),
            segment_bytes: 1 << 20,
            segment_age: std::time::Duration::from_secs(90),
            segment_compression: streamfabric_api::settings::Compression::None,
            local_retention_bytes: Some(4096),
            enforce_shard_limits: true,
            shard_write_bytes_per_sec: 1,
            shard_write_records_per_sec: 2,
            shard_read_bytes_per_sec: 3,
            shard_read_calls_per_sec: 4,
            cluster_key_file: Some("/etc/streamfabric/cluster-key/token.key".into()),
            ..BrokerConfig::default()
        };
        assert_eq!(read, expected);
        assert_eq!(
            BrokerConfig::from_env(&config_map(&DataStream::test()).data.unwrap()).unwrap().segment_age,
            BrokerConfig::default().segment_age,
            "unset spec fields keep the broker's defaults"
        );
    }

    /// The key file the settings name is where the pods mount the cluster key Secret.
    #[test]
    fn broker_pods_mount_the_cluster_key_where_their_settings_look_for_it() {
        let ds = DataStream::test();
        let secret = cluster_key_secret(&ds, [7; 32]);
        assert_eq!(secret.metadata.name.as_deref(), Some("orders-cluster-key"));
        assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].kind, "DataStream");
        assert_eq!(secret.data.as_ref().unwrap()[CLUSTER_KEY_FILE].0, vec![7; 32]);
        let pod = statefulset(&ds).spec.unwrap().template.spec.unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "cluster-key").unwrap();
        assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("orders-cluster-key"));
        let mount = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "cluster-key").unwrap();
        assert_eq!(mount.read_only, Some(true));
        let file = std::path::Path::new(&mount.mount_path).join(CLUSTER_KEY_FILE);
        assert_eq!(broker_settings(&ds).cluster_key_file.as_deref(), Some(file.as_path()));
    }

    #[test]
    fn with_authentication_broker_pods_mount_the_users_and_the_operators_keys_where_their_settings_look() {
        let mut ds = DataStream::test();
        assert_eq!(broker_settings(&ds).credentials, None, "open without spec.authentication");
        let pod = statefulset(&ds).spec.unwrap().template.spec.unwrap();
        assert!(!pod.volumes.unwrap().iter().any(|v| v.secret.is_some() && v.name != "cluster-key"));
        ds.spec.authentication =
            serde_json::from_value(serde_json::json!({"credentialsSecretRef": {"name": "app-keys"}})).unwrap();
        let secret = operator_key_secret(&ds, "derived");
        assert_eq!(secret.metadata.name.as_deref(), Some("orders-operator-key"));
        assert_eq!(secret.metadata.owner_references.as_ref().unwrap()[0].kind, "DataStream");
        assert_eq!(secret.data.as_ref().unwrap()[OPERATOR_ACCESS_KEY_ID].0, b"derived");
        let pod = statefulset(&ds).spec.unwrap().template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.as_ref().unwrap();
        let settings = broker_settings(&ds);
        let credentials = settings.credentials.clone().expect("credentials set");
        // Each Secret in its own directory of the credentials (its keys' group), read-only.
        for secret in ["app-keys", "orders-operator-key"] {
            let mount = mounts.iter().find(|m| m.mount_path == credentials.join(secret).to_str().unwrap()).unwrap();
            assert_eq!(mount.read_only, Some(true));
            let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == mount.name).unwrap();
            assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some(secret));
        }
        // The access policy, from its ConfigMap, where the setting looks.
        let policy = settings.access_policy.clone().expect("access policy set");
        let mount = mounts.iter().find(|m| m.name == "access-policy").unwrap();
        assert_eq!(policy, std::path::Path::new(&mount.mount_path).join(crate::access::ACCESS_POLICY_FILE));
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "access-policy").unwrap();
        assert_eq!(volume.config_map.as_ref().unwrap().name, "orders-access-policy");
        // Both arrive in the broker's environment through the ConfigMap.
        let env = config_map(&ds).data.unwrap();
        let read = BrokerConfig::from_env(&env.into_iter().collect()).unwrap();
        assert_eq!((read.credentials, read.access_policy), (settings.credentials, settings.access_policy));
    }

    #[test]
    fn with_tls_the_brokers_serve_https_with_the_secrets_certificate_where_their_settings_look() {
        let mut ds = DataStream::test();
        assert_eq!((broker_settings(&ds).tls_listen, tls_endpoint(&ds)), (None, None), "HTTP only without spec.tls");
        ds.spec.tls = serde_json::from_value(serde_json::json!({"secretRef": {"name": "orders-tls"}})).unwrap();
        let settings = broker_settings(&ds);
        assert_eq!(settings.tls_listen.map(|a| a.port()), Some(TLS_PORT as u16));
        let pod = statefulset(&ds).spec.unwrap().template.spec.unwrap();
        let volume = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "tls").unwrap();
        assert_eq!(volume.secret.as_ref().unwrap().secret_name.as_deref(), Some("orders-tls"));
        let mount = pod.containers[0].volume_mounts.as_ref().unwrap().iter().find(|m| m.name == "tls").unwrap();
        let dir = std::path::Path::new(&mount.mount_path);
        assert_eq!(
            (settings.tls_cert.as_deref(), settings.tls_key.as_deref()),
            (Some(dir.join("tls.crt").as_path()), Some(dir.join("tls.key").as_path()))
        );
        let read = BrokerConfig::from_env(&config_map(&ds).data.unwrap().into_iter().collect()).unwrap();
        assert_eq!(
            (read.tls_listen, read.tls_cert, read.tls_key),
            (settings.tls_listen, settings.tls_cert, settings.tls_key)
        );
        let service = client_service(&ds).spec.unwrap().ports.unwrap();
        assert!(service.iter().any(|p| p.name.as_deref() == Some("kinesis-tls") && p.port == TLS_PORT));
        assert_eq!(tls_endpoint(&ds).as_deref(), Some("https://orders.streams.svc:4443"));
    }

    #[test]
    fn a_settings_change_rolls_the_brokers() {
        let a = DataStream::test();
        let mut b = a.clone();
        b.spec.shard_limits.enforce = true;
        let digest = |ds: &DataStream| {
            statefulset(ds).spec.unwrap().template.metadata.unwrap().annotations.unwrap()["streamfabric.io/config-digest"].clone()
        };
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&a.clone()));
    }

    #[test]
    fn object_store_credentials_come_from_the_secret() {
        let mut ds = DataStream::test();
        ds.spec.object_store = Some(streamfabric_api::crd::ObjectStoreSpec {
            url: "s3://bucket/prefix".into(),
            endpoint: Some("http://minio:9000".into()),
            region: None,
            credentials_secret_ref: Some(streamfabric_api::crd::SecretRef { name: "minio-creds".into() }),
        });
        let sts = statefulset(&ds);
        let env = sts.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
        let key = env.iter().find(|e| e.name == "AWS_ACCESS_KEY_ID").unwrap();
        assert_eq!(key.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap().name, "minio-creds");
    }
}
