//! What the webhook does to one pod: nothing, add the sidecar, or admit it untouched with
//! the reason no sidecar was added. Pure: the caller looks the DataStream up.
//!
//! A pod opts in with the label `streamfabric.io/inject: "true"` (the webhook's object
//! selector: the API server calls the webhook for those pods only) and names its stream and
//! settings in annotations, each `streamfabric.io/<flag>` for one of the sidecar's flags.

use clap::{CommandFactory, Parser};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use streamfabric_sidecar::cli::Args;

pub const INJECT_LABEL: &str = "streamfabric.io/inject";
/// The DataStream (in the pod's namespace) the sidecar produces to and consumes from.
pub const STREAM_ANNOTATION: &str = "streamfabric.io/stream";
/// `producer` (the default), `consumer`, or both: `producer,consumer`.
pub const ROLES_ANNOTATION: &str = "streamfabric.io/roles";
/// Set on the pods the webhook changed (its value: the sidecar image).
pub const INJECTED_ANNOTATION: &str = "streamfabric.io/injected";
/// The access key the sidecar signs with (a DataStream with `spec.authentication`), and the
/// Secret holding its secret under that id (one of the DataStream's key Secrets).
pub const ACCESS_KEY_ANNOTATION: &str = "streamfabric.io/access-key-id";
pub const CREDENTIALS_SECRET_ANNOTATION: &str = "streamfabric.io/credentials-secret";
pub const CONTAINER_NAME: &str = "streamfabric-sidecar";
/// Where the application finds the sidecar (the Kinesis API and the pull API).
pub const SIDECAR_URL: &str = "http://127.0.0.1:4599";
const ADMIN_PORT: i32 = 4600;

/// The sidecar flags a pod may set, each by the annotation `streamfabric.io/<flag>`; the
/// broker endpoint, the stream, the worker id and the addresses are the webhook's.
pub const SETTABLE_FLAGS: &[&str] = &[
    "max-buffered-time",
    "max-batch-records",
    "record-ttl",
    "ack",
    "max-buffered-bytes",
    "aggregate",
    "aggregation-max-bytes",
    "consumer-application",
    "deliver-to",
    "initial-position",
    "failover-time",
    "sample-records",
    "sample-keys",
    "sample-filter",
    "max-records",
    "max-batches-in-flight",
];

#[derive(Debug, PartialEq)]
pub enum Injection {
    /// Not asking for a sidecar, already has one, or not a creation.
    Untouched,
    /// The JSON patch that adds the sidecar.
    Inject(json_patch::Patch),
    /// Asked for a sidecar but cannot have one; admitted as it is, with this reason.
    Refused(String),
}

/// Where the sidecar comes from and where it sends records.
pub struct SidecarTemplate {
    pub image: String,
}

/// The DataStream a pod names, as the webhook found it.
pub enum StreamLookup {
    /// Its Kinesis endpoint (status.endpoint, or where the brokers will answer).
    Found {
        endpoint: String,
    },
    Missing,
}

pub fn asks_for_sidecar(pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    labels.and_then(|l| l.get(INJECT_LABEL)).is_some_and(|v| v == "true")
}

pub fn has_sidecar(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == CONTAINER_NAME)
}

/// The stream a pod asks for, if it asks for one.
pub fn stream_of(pod: &Pod) -> Option<&str> {
    pod.metadata.annotations.as_ref()?.get(STREAM_ANNOTATION).map(String::as_str)
}

/// What to do with `pod`, created in a namespace where `stream` was looked up.
pub fn plan(pod: &Pod, stream: &StreamLookup, template: &SidecarTemplate) -> Injection {
    if !asks_for_sidecar(pod) || has_sidecar(pod) {
        return Injection::Untouched;
    }
    let Some(name) = stream_of(pod) else {
        return Injection::Refused(format!("the annotation {STREAM_ANNOTATION} (a DataStream's name) is missing"));
    };
    let endpoint = match stream {
        StreamLookup::Found { endpoint } => endpoint,
        StreamLookup::Missing => {
            return Injection::Refused(format!(
                "no DataStream {name:?} in this namespace (annotation {STREAM_ANNOTATION})"
            ));
        }
    };
    match sidecar_env(pod, name, endpoint) {
        Ok(env) => Injection::Inject(patch(pod, container(template, env))),
        Err(reason) => Injection::Refused(reason),
    }
}

/// The sidecar's environment from the pod's annotations, checked by the sidecar's own flag
/// parser (so a setting the sidecar would refuse at start is refused here, with its message).
fn sidecar_env(pod: &Pod, stream: &str, endpoint: &str) -> Result<Vec<EnvVar>, String> {
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let roles = annotations.get(ROLES_ANNOTATION).map_or("producer", String::as_str);
    let mut consumer = false;
    for role in roles.split(',').map(str::trim) {
        match role {
            "producer" => {}
            "consumer" => consumer = true,
            other => {
                return Err(format!(
                    "annotation {ROLES_ANNOTATION}: {other:?} is not a role (producer, consumer, or both)"
                ));
            }
        }
    }
    let mut flags: BTreeMap<&str, String> = BTreeMap::new();
    flags.insert("broker-endpoint", endpoint.to_string());
    flags.insert("admin-listen", format!("0.0.0.0:{ADMIN_PORT}"));
    for flag in SETTABLE_FLAGS {
        if let Some(value) = annotations.get(&format!("streamfabric.io/{flag}")) {
            flags.insert(flag, value.clone());
        }
    }
    if consumer {
        if !flags.contains_key("consumer-application") {
            return Err(
                "the consumer role needs the annotation streamfabric.io/consumer-application (the name its workers share)"
                    .into(),
            );
        }
        flags.insert("consumer-stream", stream.to_string());
    } else if flags.contains_key("consumer-application") {
        return Err(format!(
            "annotation streamfabric.io/consumer-application without the consumer role (set {ROLES_ANNOTATION}: producer,consumer)"
        ));
    }
    let command = Args::command();
    let arg_of = |flag: &str| command.get_arguments().find(|a| a.get_long() == Some(flag)).expect("a sidecar flag");
    let mut argv = vec!["streamfabric-sidecar".to_string()];
    let mut env = Vec::new();
    for (flag, value) in &flags {
        let arg = arg_of(flag);
        if !arg.get_action().takes_values() {
            // A switch (such as --aggregate): on or off.
            match value.as_str() {
                "true" => argv.push(format!("--{flag}")),
                "false" => continue,
                other => return Err(format!("annotation streamfabric.io/{flag}: {other:?} is not true or false")),
            }
        } else {
            argv.push(format!("--{flag}={value}"));
        }
        let name = arg.get_env().and_then(|e| e.to_str()).expect("every sidecar flag has a variable");
        env.push(EnvVar { name: name.to_string(), value: Some(value.clone()), value_from: None });
    }
    if let Err(e) = Args::try_parse_from(argv) {
        let message = e.to_string();
        let first = message.lines().next().unwrap_or_default().trim_start_matches("error: ");
        return Err(format!("a sidecar setting is invalid: {first} (annotations streamfabric.io/<flag>)"));
    }
    match (annotations.get(ACCESS_KEY_ANNOTATION), annotations.get(CREDENTIALS_SECRET_ANNOTATION)) {
        (None, None) => {}
        // The secret is the kubelet's to read from the Secret, never the webhook's.
        (Some(id), Some(secret)) => env.extend([
            EnvVar { name: "AWS_ACCESS_KEY_ID".into(), value: Some(id.clone()), value_from: None },
            serde_json::from_value(json!({
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {"secretKeyRef": {"name": secret, "key": id}}
            }))
            .expect("an EnvVar"),
        ]),
        _ => {
            return Err(format!(
                "annotations {ACCESS_KEY_ANNOTATION} and {CREDENTIALS_SECRET_ANNOTATION} go together: the access key id, and the Secret holding its secret under that id"
            ));
        }
    }
    if consumer {
        // The pod's name: stable across the sidecar's restarts, unique among the workers.
        env.push(
            serde_json::from_value(json!({
                "name": "STREAMFABRIC_SIDECAR_WORKER_ID",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}
            }))
            .expect("an EnvVar"),
        );
    }
    Ok(env)
}

/// A native sidecar (an init container that keeps running): started and healthy before the
/// application's containers, stopped after them.
fn container(template: &SidecarTemplate, env: Vec<EnvVar>) -> Container {
    serde_json::from_value(json!({
        "name": CONTAINER_NAME,
        "image": template.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "env": env,
        "ports": [{"name": "sf-metrics", "containerPort": ADMIN_PORT}],
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": ADMIN_PORT},
            "periodSeconds": 1, "failureThreshold": 60
        },
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": ADMIN_PORT}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": true, "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
        }
    }))
    .expect("a Container")
}

/// Add the sidecar first among the init containers, point the application's containers at
/// it (AWS SDKs read `AWS_ENDPOINT_URL_KINESIS`; a variable they set already is kept), and
/// mark the pod.
fn patch(pod: &Pod, sidecar: Container) -> json_patch::Patch {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut ops: Vec<Value> = Vec::new();
    let sidecar = serde_json::to_value(sidecar).expect("serializable");
    if spec.init_containers.as_ref().is_none_or(|c| c.is_empty()) {
        ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [sidecar]}));
    } else {
        ops.push(json!({"op": "add", "path": "/spec/initContainers/0", "value": sidecar}));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        let present = |name: &str| c.env.iter().flatten().any(|e| e.name == name);
        let wanted: Vec<Value> = [("AWS_ENDPOINT_URL_KINESIS", SIDECAR_URL), ("STREAMFABRIC_SIDECAR_URL", SIDECAR_URL)]
            .into_iter()
            .filter(|(name, _)| !present(name))
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect();
        if c.env.is_none() {
            if !wanted.is_empty() {
                ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env"), "value": wanted}));
            }
        } else {
            for var in wanted {
                ops.push(json!({"op": "add", "path": format!("/spec/containers/{i}/env/-"), "value": var}));
            }
        }
    }
    let image = sidecar.get("image").cloned().unwrap_or_default();
    if pod.metadata.annotations.is_none() {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    // `/` in a key is `~1` in a JSON pointer.
    let key = INJECTED_ANNOTATION.replace('/', "~1");
    ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": image}));
    serde_json::from_value(Value::Array(ops)).expect("a JSON patch")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(labels: Value, annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "app", "labels": labels, "annotations": annotations},
            "spec": {"containers": [
                {"name": "app", "image": "app:1"},
                {"name": "other", "image": "o:1", "env": [{"name": "AWS_ENDPOINT_URL_KINESIS", "value": "http://mine"}]}
            ]}
        }))
        .unwrap()
    }

    fn found() -> StreamLookup {
        StreamLookup::Found { endpoint: "http://orders.shop.svc:4567".into() }
    }

    fn template() -> SidecarTemplate {
        SidecarTemplate { image: "ghcr.io/streamfabric/sidecar:0.1.0".into() }
    }

    /// The pod after the plan's patch.
    fn patched(pod: &Pod, stream: &StreamLookup) -> Pod {
        let Injection::Inject(patch) = plan(pod, stream, &template()) else { panic!("not injected") };
        let mut value = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut value, &patch).unwrap();
        serde_json::from_value(value).unwrap()
    }

    fn env_of(c: &Container) -> BTreeMap<String, String> {
        c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_else(|| "<from>".into()))).collect()
    }

    #[test]
    fn a_producer_pod_gets_the_sidecar_and_its_sdks_point_at_it() {
        let p = pod(
            json!({"streamfabric.io/inject": "true"}),
            json!({"streamfabric.io/stream": "orders", "streamfabric.io/aggregate": "true", "streamfabric.io/ack": "buffered"}),
        );
        let out = patched(&p, &found());
        let sidecar = &out.spec.as_ref().unwrap().init_containers.as_ref().unwrap()[0];
        assert_eq!(sidecar.name, CONTAINER_NAME);
        assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"), "a native sidecar");
        let env = env_of(sidecar);
        assert_eq!(env["STREAMFABRIC_SIDECAR_BROKER_ENDPOINT"], "http://orders.shop.svc:4567");
        assert_eq!(env["STREAMFABRIC_SIDECAR_AGGREGATE"], "true");
        assert_eq!(env["STREAMFABRIC_SIDECAR_ACK"], "buffered");
        assert_eq!(env["STREAMFABRIC_SIDECAR_ADMIN_LISTEN"], "0.0.0.0:4600");
        assert!(!env.contains_key("STREAMFABRIC_SIDECAR_CONSUMER_STREAM"), "no consumer: {env:?}");
        let containers = &out.spec.as_ref().unwrap().containers;
        assert_eq!(env_of(&containers[0])["AWS_ENDPOINT_URL_KINESIS"], SIDECAR_URL);
        assert_eq!(env_of(&containers[1])["AWS_ENDPOINT_URL_KINESIS"], "http://mine", "its own setting kept");
        assert_eq!(env_of(&containers[1])["STREAMFABRIC_SIDECAR_URL"], SIDECAR_URL);
        assert_eq!(out.metadata.annotations.unwrap()[INJECTED_ANNOTATION], "ghcr.io/streamfabric/sidecar:0.1.0");
        // Injected once: a pod that has the sidecar is left alone.
        assert_eq!(plan(&out_with_sidecar(&p), &found(), &template()), Injection::Untouched);
    }

    fn out_with_sidecar(p: &Pod) -> Pod {
        patched(p, &found())
    }

    #[test]
    fn a_consumer_pod_gets_its_stream_application_and_worker_id() {
        let p = pod(
            json!({"streamfabric.io/inject": "true"}),
            json!({
                "streamfabric.io/stream": "orders", "streamfabric.io/roles": "producer, consumer",
                "streamfabric.io/consumer-application": "billing", "streamfabric.io/deliver-to": "http://127.0.0.1:8080/records",
                "streamfabric.io/sample-keys": "0.25", "streamfabric.io/sample-filter": "kind == \"refund\""
            }),
        );
        let out = patched(&p, &found());
        let env = env_of(&out.spec.unwrap().init_containers.unwrap()[0]);
        assert_eq!(env["STREAMFABRIC_SIDECAR_CONSUMER_STREAM"], "orders");
        assert_eq!(env["STREAMFABRIC_SIDECAR_CONSUMER_APPLICATION"], "billing");
        assert_eq!(env["STREAMFABRIC_SIDECAR_DELIVER_TO"], "http://127.0.0.1:8080/records");
        assert_eq!(env["STREAMFABRIC_SIDECAR_SAMPLE_KEYS"], "0.25");
        assert_eq!(env["STREAMFABRIC_SIDECAR_SAMPLE_FILTER"], "kind == \"refund\"");
        assert_eq!(env["STREAMFABRIC_SIDECAR_WORKER_ID"], "<from>", "the pod's name");
    }

    #[test]
    fn a_pod_naming_a_key_gets_its_id_and_its_secret_from_the_secret() {
        let p = pod(
            json!({"streamfabric.io/inject": "true"}),
            json!({"streamfabric.io/stream": "orders", "streamfabric.io/access-key-id": "AKIDPRODUCER",
                   "streamfabric.io/credentials-secret": "producer-keys"}),
        );
        let out = patched(&p, &found());
        let sidecar = &out.spec.unwrap().init_containers.unwrap()[0];
        assert_eq!(env_of(sidecar)["AWS_ACCESS_KEY_ID"], "AKIDPRODUCER");
        let secret = sidecar.env.iter().flatten().find(|e| e.name == "AWS_SECRET_ACCESS_KEY").unwrap();
        let from = secret.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((from.name.as_str(), from.key.as_str()), ("producer-keys", "AKIDPRODUCER"));
        let half = pod(
            json!({"streamfabric.io/inject": "true"}),
            json!({"streamfabric.io/stream": "orders", "streamfabric.io/access-key-id": "AKIDPRODUCER"}),
        );
        match plan(&half, &found(), &template()) {
            Injection::Refused(reason) => assert!(reason.contains("go together"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn init_containers_already_there_come_after_the_sidecar() {
        let mut p = pod(json!({"streamfabric.io/inject": "true"}), json!({"streamfabric.io/stream": "orders"}));
        p.spec.as_mut().unwrap().init_containers = Some(vec![Container { name: "setup".into(), ..Default::default() }]);
        let names: Vec<String> =
            patched(&p, &found()).spec.unwrap().init_containers.unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(names, [CONTAINER_NAME, "setup"]);
    }

    #[test]
    fn pods_that_do_not_ask_are_untouched() {
        let annotations = json!({"streamfabric.io/stream": "orders"});
        for labels in [json!({}), json!({"streamfabric.io/inject": "false"}), json!({"app": "x"})] {
            assert_eq!(plan(&pod(labels, annotations.clone()), &found(), &template()), Injection::Untouched);
        }
    }

    #[test]
    fn a_pod_that_cannot_have_its_sidecar_is_told_why() {
        let refused = |annotations: Value, stream: StreamLookup| match plan(
            &pod(json!({"streamfabric.io/inject": "true"}), annotations),
            &stream,
            &template(),
        ) {
            Injection::Refused(reason) => reason,
            other => panic!("{other:?}"),
        };
        assert!(refused(json!({}), found()).contains("streamfabric.io/stream"));
        let missing = refused(json!({"streamfabric.io/stream": "nope"}), StreamLookup::Missing);
        assert!(missing.contains("no DataStream \"nope\""), "{missing}");
        let bad = refused(json!({"streamfabric.io/stream": "orders", "streamfabric.io/sample-keys": "2"}), found());
        assert!(bad.contains("--sample-keys") && bad.contains("between 0 and 1"), "{bad}");
        let bad =
            refused(json!({"streamfabric.io/stream": "orders", "streamfabric.io/max-batch-records": "501"}), found());
        assert!(bad.contains("--max-batch-records"), "{bad}");
        let bad = refused(json!({"streamfabric.io/stream": "orders", "streamfabric.io/aggregate": "yes"}), found());
        assert!(bad.contains("streamfabric.io/aggregate: \"yes\" is not true or false"), "{bad}");
        let bad = refused(json!({"streamfabric.io/stream": "orders", "streamfabric.io/roles": "reader"}), found());
        assert!(bad.contains("\"reader\" is not a role"), "{bad}");
        let bad = refused(json!({"streamfabric.io/stream": "orders", "streamfabric.io/roles": "consumer"}), found());
        assert!(bad.contains("consumer-application"), "{bad}");
    }

    /// Every flag a pod may set is one the sidecar has, with its variable.
    #[test]
    fn every_settable_flag_is_a_sidecar_flag() {
        let command = Args::command();
        for flag in SETTABLE_FLAGS.iter().chain(&["broker-endpoint", "admin-listen", "consumer-stream", "worker-id"]) {
            let arg = command.get_arguments().find(|a| a.get_long() == Some(flag));
            assert!(arg.and_then(|a| a.get_env()).is_some(), "--{flag} with an environment variable");
        }
    }
}
