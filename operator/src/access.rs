//! Who may do what at a DataStream's brokers (`spec.authentication`): each Secret of keys is
//! mounted in its own directory of the brokers' credentials, which makes its keys a group
//! named after the Secret, and the access policy (a ConfigMap the brokers re-read) grants
//! each group its part: the operator and `credentialsSecretRef` everything, `writers`
//! writing the stream, `readers` reading it. The operator never reads the Secrets' keys.

use crate::manifests::{CREDENTIALS_DIR, Names, OPERATOR_ACCESS_KEY_ID, metadata};
use k8s_openapi::api::core::v1::{ConfigMap, ConfigMapVolumeSource, SecretVolumeSource, Volume, VolumeMount};
use kube::ResourceExt;
use serde_json::json;
use std::collections::BTreeMap;
use streamfabric_api::crd::{AuthenticationSpec, DataStream};
use streamfabric_api::policy::GROUP_PREFIX;

/// Where broker pods find the access policy, and its key in the ConfigMap.
pub const ACCESS_POLICY_DIR: &str = "/etc/streamfabric/access-policy";
pub const ACCESS_POLICY_FILE: &str = "policy.json";

/// What producers ask of their stream.
const WRITE_ACTIONS: &[&str] = &[
    "kinesis:PutRecord",
    "kinesis:PutRecords",
    "kinesis:Describe*",
    "kinesis:ListShards",
    "kinesis:ListTagsForStream",
];
/// What consumers (the KCL among them) ask of their stream.
const READ_ACTIONS: &[&str] = &[
    "kinesis:GetShardIterator",
    "kinesis:GetRecords",
    "kinesis:SubscribeToShard",
    "kinesis:Describe*",
    "kinesis:List*",
    "kinesis:RegisterStreamConsumer",
    "kinesis:DeregisterStreamConsumer",
];

/// The Secrets of access keys mounted into the broker pods, each one once: the user's, the
/// writers', the readers', then the operator's own.
pub fn key_secrets(auth: &AuthenticationSpec, names: &Names) -> Vec<String> {
    let mut secrets: Vec<String> = Vec::new();
    let listed = std::iter::once(&auth.credentials_secret_ref).chain(&auth.writers).chain(&auth.readers);
    for name in listed.map(|r| r.name.clone()).chain([names.operator_key.clone()]) {
        if !secrets.contains(&name) {
            secrets.push(name);
        }
    }
    secrets
}

/// A volume per Secret of keys, and where each is mounted: `<credentials>/<secret name>`,
/// the group the broker puts its keys in.
pub fn key_volumes(auth: &AuthenticationSpec, names: &Names) -> Vec<(Volume, VolumeMount)> {
    key_secrets(auth, names)
        .into_iter()
        .enumerate()
        .map(|(i, secret)| {
            let name = format!("keys-{i}");
            let mount = VolumeMount {
                name: name.clone(),
                mount_path: format!("{CREDENTIALS_DIR}/{secret}"),
                read_only: Some(true),
                ..VolumeMount::default()
            };
            let volume = Volume {
                name,
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret),
                    // Readable by the broker's group (fsGroup) only.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            };
            (volume, mount)
        })
        .collect()
}

/// The access policy's volume and mount.
pub fn policy_volume(names: &Names) -> (Volume, VolumeMount) {
    let volume = Volume {
        name: "access-policy".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.access_policy.clone(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mount = VolumeMount {
        name: "access-policy".into(),
        mount_path: ACCESS_POLICY_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    (volume, mount)
}

/// The brokers' access policy for `ds`, in IAM's JSON (`streamfabric_api::policy`).
pub fn policy_document(ds: &DataStream, auth: &AuthenticationSpec) -> serde_json::Value {
    let stream = ds.name_any();
    let group = |secret: &str| format!("{GROUP_PREFIX}{secret}");
    let groups = |refs: &[streamfabric_api::crd::SecretRef]| refs.iter().map(|r| group(&r.name)).collect::<Vec<_>>();
    let mut statements = vec![json!({
        "Sid": "operatorAndAdministrators",
        "Effect": "Allow",
        "Principal": {"AWS": [OPERATOR_ACCESS_KEY_ID, group(&auth.credentials_secret_ref.name)]},
        "Action": "*",
        "Resource": "*"
    })];
    for (sid, refs, actions) in [("writers", &auth.writers, WRITE_ACTIONS), ("readers", &auth.readers, READ_ACTIONS)] {
        if refs.is_empty() {
            continue;
        }
        statements.push(json!({
            "Sid": sid, "Effect": "Allow", "Principal": {"AWS": groups(refs)}, "Action": actions, "Resource": stream
        }));
        // Account-wide: listing streams, and finding each shard's broker (the sidecar).
        let mut anywhere = vec!["kinesis:ListStreams", "streamfabric:DescribeShardOwners"];
        if sid == "readers" {
            // The KCL's lease tables and the sidecar's leases.
            anywhere.extend(["dynamodb:*", "streamfabric:*"]);
        }
        statements.push(json!({
            "Sid": format!("{sid}Anywhere"), "Effect": "Allow", "Principal": {"AWS": groups(refs)}, "Action": anywhere, "Resource": "*"
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The ConfigMap holding the access policy.
pub fn policy_config_map(ds: &DataStream, auth: &AuthenticationSpec) -> ConfigMap {
    let text = serde_json::to_string_pretty(&policy_document(ds, auth)).expect("JSON");
    ConfigMap {
        metadata: metadata(ds, &Names::of(ds).access_policy),
        data: Some(BTreeMap::from([(ACCESS_POLICY_FILE.to_string(), text)])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::DataStreamExt;
    use streamfabric_api::policy::{Decision, Policy, Resource, Subject};

    fn secured() -> (DataStream, AuthenticationSpec) {
        let mut ds = DataStream::test();
        let auth: AuthenticationSpec = serde_json::from_value(serde_json::json!({
            "credentialsSecretRef": {"name": "admin-keys"},
            "writers": [{"name": "producer-keys"}],
            "readers": [{"name": "consumer-keys"}, {"name": "admin-keys"}]
        }))
        .unwrap();
        ds.spec.authentication = Some(auth.clone());
        (ds, auth)
    }

    #[test]
    fn each_secret_is_mounted_once_in_a_directory_named_after_it() {
        let (ds, auth) = secured();
        let mounts: Vec<String> = key_volumes(&auth, &Names::of(&ds)).into_iter().map(|(_, m)| m.mount_path).collect();
        assert_eq!(
            mounts,
            [
                "/etc/streamfabric/credentials/admin-keys",
                "/etc/streamfabric/credentials/producer-keys",
                "/etc/streamfabric/credentials/consumer-keys",
                "/etc/streamfabric/credentials/orders-operator-key",
            ]
        );
    }

    #[test]
    fn the_policy_grants_each_group_its_part_of_the_stream() {
        let (ds, auth) = secured();
        let cm = policy_config_map(&ds, &auth);
        assert_eq!(cm.metadata.name.as_deref(), Some("orders-access-policy"));
        let policy = Policy::parse(&cm.data.unwrap()[ACCESS_POLICY_FILE]).expect("the broker reads it");
        let decide = |group: &str, action: &str, stream: &str| {
            let groups = [group.to_string()];
            let subject = Subject { access_key_id: Some("AKID"), groups: &groups, account: "000000000000" };
            let arn = format!("arn:aws:kinesis:us-east-1:000000000000:stream/{stream}");
            policy.decide(&subject, action, &Resource { arn: &arn, name: Some(stream) })
        };
        assert_eq!(decide("producer-keys", "kinesis:PutRecords", "orders"), Decision::Allow);
        assert_eq!(decide("producer-keys", "kinesis:ListShards", "orders"), Decision::Allow);
        assert_eq!(decide("producer-keys", "kinesis:GetRecords", "orders"), Decision::NotAllowed);
        assert_eq!(decide("producer-keys", "kinesis:PutRecords", "other"), Decision::NotAllowed);
        assert_eq!(decide("producer-keys", "kinesis:DeleteStream", "orders"), Decision::NotAllowed);
        assert_eq!(decide("consumer-keys", "kinesis:GetRecords", "orders"), Decision::Allow);
        assert_eq!(decide("consumer-keys", "dynamodb:PutItem", "orders"), Decision::Allow);
        assert_eq!(decide("consumer-keys", "kinesis:PutRecord", "orders"), Decision::NotAllowed);
        assert_eq!(decide("admin-keys", "kinesis:DeleteStream", "orders"), Decision::Allow);
        assert_eq!(decide("someone-else", "kinesis:DescribeStream", "orders"), Decision::NotAllowed);
        let operator = Subject { access_key_id: Some(OPERATOR_ACCESS_KEY_ID), groups: &[], account: "000000000000" };
        let any = Resource { arn: "*", name: None };
        assert_eq!(policy.decide(&operator, "kinesis:UpdateShardCount", &any), Decision::Allow);
    }
}
