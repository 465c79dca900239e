//! Against a real kube-apiserver (scripts/e2e-operator starts one and runs these with
//! `--ignored`): the CRD installs, invalid DataStreams are refused with a clear message, and
//! the controller creates owned children with its field manager, writes status and
//! Events, follows a spec change and runs its finalizer on delete.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use streamfabric_api::crd::DataStream;
use streamfabric_operator::controller::{self, FIELD_MANAGER};
use streamfabric_operator::metrics::Metrics;

async fn client_with_crd() -> Client {
    let client = Client::try_default().await.expect("KUBECONFIG points at the test API server");
    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/datastream.yaml")).unwrap(),
    )
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch("datastreams.streamfabric.io", &PatchParams::apply("streamfabric-tests").force(), &Patch::Apply(&crd))
        .await
        .unwrap();
    eventually("the CRD is established", || async {
        let crd = crds.get("datastreams.streamfabric.io").await.ok()?;
        let established = crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        established.then_some(())
    })
    .await;
    // The CRD's kind must also be discoverable before typed calls work.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client
}

async fn namespace(client: &Client, name: &str) -> String {
    let ns: Api<Namespace> = Api::all(client.clone());
    let _ =
        ns.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()).await;
    name.to_string()
}

/// Poll `probe` until it gives a value (bounded: 60 s).
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = probe().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("timed out waiting until {what}");
}

fn datastream(name: &str, spec: serde_json::Value) -> DataStream {
    serde_json::from_value(json!({
        "apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap()
}

#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn invalid_datastreams_are_refused_with_a_clear_message() {
    let client = client_with_crd().await;
    let ns = namespace(&client, "sf-invalid").await;
    // Untyped, so that specs our own types would refuse still reach the API server.
    let raw: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<DataStream>(&()));
    let api: Api<DataStream> = Api::namespaced(client, &ns);
    let cases = [
        (json!({"shards": 0}), "spec.shards"),
        (json!({"shards": 2, "retentionHours": 12}), "spec.retentionHours"),
        (json!({"shards": 2, "mode": "Sometimes"}), "spec.mode"),
        (json!({"shards": 2, "durability": "Object"}), "durability Object needs spec.objectStore"),
        (json!({"shards": 2, "mode": "OnDemand"}), "mode OnDemand needs spec.scaling"),
        (
            json!({"shards": 2, "mode": "OnDemand", "scaling": {"minShards": 8, "maxShards": 4}}),
            "minShards must not exceed",
        ),
        (json!({"shards": 2, "brokers": {"replicas": 2, "shardsPerBroker": 4}}), "not both"),
        (json!({"shards": 2, "objectStore": {"url": "ftp://x"}}), "spec.objectStore.url"),
    ];
    for (i, (spec, expected)) in cases.into_iter().enumerate() {
        let object: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
            "metadata": {"name": format!("bad-{i}")}, "spec": spec
        }))
        .unwrap();
        let err = raw.create(&PostParams::default(), &object).await.unwrap_err();
        let kube::Error::Api(status) = err else { panic!("{spec}: not an API error: {err}") };
        assert_eq!(status.code, 422, "{spec}: {}", status.message);
        assert!(status.message.contains(expected), "{spec}: message {:?} should name {expected:?}", status.message);
    }
    // And a valid one is accepted, with defaults filled in.
    let ok = api.create(&PostParams::default(), &datastream("good", json!({"shards": 2}))).await.unwrap();
    assert_eq!(ok.spec.retention_hours, 24);
    api.delete("good", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn the_controller_reconciles_children_status_events_and_cleanup() {
    let client = client_with_crd().await;
    let ns = namespace(&client, "sf-controller").await;
    let client_for_run = client.clone();
    // A real broker, in process, stands in for the DataStream's pods (none run here).
    let dir = tempfile::tempdir().unwrap();
    let broker = streamfabric_broker::start(streamfabric_broker::BrokerConfig::for_dir(dir.path())).await.unwrap();
    let endpoints = controller::BrokerEndpoints {
        api: format!("http://{}", broker.api_addr),
        admin: format!("http://{}", broker.admin_addr),
        pod_admin: format!("http://{}", broker.admin_addr),
    };
    let controller = tokio::spawn(controller::run(client_for_run, Arc::new(Metrics::new()), endpoints, None));
    let api: Api<DataStream> = Api::namespaced(client.clone(), &ns);
    api.create(&PostParams::default(), &datastream("orders", json!({"shards": 8, "deletionPolicy": "Retain"})))
        .await
        .unwrap();

    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts =
        eventually("the StatefulSet exists", || async { sts_api.get_opt("orders-broker").await.ok().flatten() }).await;
    // Without an object store for brokers to share, one broker serves all 8 shards.
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(1));
    let owner = &sts.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("DataStream", "orders", Some(true)));
    assert!(sts.managed_fields().iter().any(|m| m.manager.as_deref() == Some(FIELD_MANAGER)));
    for (kind, present) in [
        (
            "ConfigMap orders-broker-config",
            Api::<ConfigMap>::namespaced(client.clone(), &ns).get_opt("orders-broker-config").await.unwrap().is_some(),
        ),
        ("Service orders", Api::<Service>::namespaced(client.clone(), &ns).get_opt("orders").await.unwrap().is_some()),
        (
            "Service orders-broker-headless",
            Api::<Service>::namespaced(client.clone(), &ns).get_opt("orders-broker-headless").await.unwrap().is_some(),
        ),
        (
            "PodDisruptionBudget orders-broker",
            Api::<PodDisruptionBudget>::namespaced(client.clone(), &ns)
                .get_opt("orders-broker")
                .await
                .unwrap()
                .is_some(),
        ),
    ] {
        assert!(present, "{kind} was created");
    }

    // Status: no pods run here (no controller-manager), so the brokers are starting.
    let ds = eventually("status is written", || async {
        let ds = api.get("orders").await.ok()?;
        (ds.status.as_ref()?.observed_generation == Some(1)).then_some(ds)
    })
    .await;
    let status = ds.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "BrokersStarting"));

    // The stream was created in the brokers through their Kinesis API, and its shards show in status.
    let created = eventually("the brokers serve the stream", || async { broker.broker.catalog.get("orders") }).await;
    assert_eq!(created.meta().shards.len(), 8);
    eventually("status shows the open shards", || async {
        (api.get("orders").await.ok()?.status?.open_shards == 8).then_some(())
    })
    .await;
    assert_eq!(status.endpoint.as_deref(), Some("http://orders.sf-controller.svc:4567"));
    assert!(ds.metadata.finalizers.unwrap().contains(&"streamfabric.io/cleanup".to_string()));

    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for reason in ["Applied", "StreamCreated"] {
        eventually(&format!("a {reason} event"), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items.iter().any(|e| e.reason.as_deref() == Some(reason)).then_some(())
        })
        .await;
    }

    // Writes show up as a rate in status (measured over at least 10 s between reconciles).
    let put = json!({"StreamName": "orders", "Records": (0..500).map(|i| json!({"PartitionKey": format!("k{i}"), "Data": "AAAA"})).collect::<Vec<_>>()});
    let body = serde_json::to_vec(&put).unwrap();
    for _ in 0..4 {
        broker
            .broker
            .call(streamfabric_api::model::Operation::PutRecords, streamfabric_api::Format::Json, &body)
            .await
            .unwrap();
    }
    let rate = eventually("status shows the write rate", || async {
        let r = api.get("orders").await.ok()?.status?.write_records_per_second;
        (r > 0).then_some(r)
    })
    .await;
    assert!(rate <= 2000 / 10, "2,000 records over at least 10 s: {rate}/s");

    // A spec change: the retention follows in the brokers, the settings in the ConfigMap.
    let store = json!({"url": "s3://streams/orders", "endpoint": "http://minio:9000"});
    let spec = json!({"spec": {"shards": 12, "retentionHours": 48, "durability": "Object", "objectStore": store}});
    api.patch("orders", &PatchParams::default(), &Patch::Merge(spec)).await.unwrap();
    let cm_api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let settings = eventually("the ConfigMap carries the object store and durability", || async {
        let data = cm_api.get("orders-broker-config").await.ok()?.data?;
        (data.get("STREAMFABRIC_DURABILITY").map(String::as_str) == Some("object")).then_some(data)
    })
    .await;
    let read = streamfabric_api::settings::BrokerConfig::from_env(&settings).unwrap();
    assert_eq!(read.object_store.as_deref(), Some("s3://streams/orders"));
    assert_eq!(read.object_store_endpoint.as_deref(), Some("http://minio:9000"));
    eventually("the retention follows", || async { (created.meta().retention_hours == 48).then_some(()) }).await;
    eventually("with an object store to share, the StatefulSet runs 3 brokers for 12 shards", || async {
        let sts = sts_api.get("orders-broker").await.ok()?;
        (sts.spec?.replicas == Some(3)).then_some(())
    })
    .await;
    eventually("status observes generation 2", || async {
        (api.get("orders").await.ok()?.status?.observed_generation == Some(2)).then_some(())
    })
    .await;
    // ... and the shard count follows through UpdateShardCount, with an Event.
    eventually("the brokers reshard to 12 open shards", || async {
        (created.meta().open_shard_count() == 12).then_some(())
    })
    .await;
    eventually("status shows 12 open shards and the 8 first ones closed", || async {
        let status = api.get("orders").await.ok()?.status?;
        (status.open_shards == 12 && status.closed_shards >= 8).then_some(())
    })
    .await;
    eventually("a Resharding event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("Resharding")).then_some(())
    })
    .await;

    // Delete: the finalizer runs (an Event), then the DataStream is gone.
    api.delete("orders", &DeleteParams::default()).await.unwrap();
    eventually("the DataStream is gone", || async { api.get_opt("orders").await.ok()?.is_none().then_some(()) }).await;
    eventually("a DataRetained event", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items.iter().any(|e| e.reason.as_deref() == Some("DataRetained")).then_some(())
    })
    .await;
    controller.abort();
}

/// The judge of the fabric on Kubernetes: a DataStream with 8 shards and an object store
/// gets 2 brokers with its object store and durability in their settings, and its status
/// shows the 2 members serving 4 shards each. Two real brokers, in process, stand in for the
/// pods: a cluster on one `file://` store, their admin ports on 127.0.0.10 and 127.0.0.11
/// (the pod template's `{ordinal}`).
#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn a_datastream_on_an_object_store_is_served_by_a_cluster_of_brokers() {
    let client = client_with_crd().await;
    let ns = namespace(&client, "sf-fabric").await;
    let root = tempfile::tempdir().unwrap();
    let store = format!("file://{}", root.path().join("objects").display());
    std::fs::create_dir_all(root.path().join("objects")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.10:0").unwrap().local_addr().unwrap().port();
    let mut brokers = Vec::new();
    for i in 0..2 {
        let mut config = streamfabric_broker::BrokerConfig::for_dir(root.path().join(format!("b{i}")));
        let api = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        config.listen = api;
        config.admin_listen = format!("127.0.0.1{i}:{port}").parse().unwrap();
        config.object_store = Some(store.clone());
        config.broker_id = Some(format!("stream-broker-{i}"));
        config.advertise = Some(api.to_string());
        config.heartbeat_interval = Duration::from_millis(200);
        std::fs::create_dir_all(&config.data_dir).unwrap();
        brokers.push(streamfabric_broker::start(config).await.unwrap());
    }
    let endpoints = controller::BrokerEndpoints {
        api: format!("http://{}", brokers[0].api_addr),
        admin: format!("http://{}", brokers[0].admin_addr),
        pod_admin: format!("http://127.0.0.1{{ordinal}}:{port}"),
    };
    let controller = tokio::spawn(controller::run(client.clone(), Arc::new(Metrics::new()), endpoints, None));
    let api: Api<DataStream> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"shards": 8, "durability": "Object", "objectStore": {"url": store}, "deletionPolicy": "Retain"});
    api.create(&PostParams::default(), &datastream("stream", spec)).await.unwrap();

    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts = eventually("the StatefulSet", || async { sts_api.get_opt("stream-broker").await.ok().flatten() }).await;
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(2), "8 shards at 4 per broker");
    let cm_api = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let settings =
        eventually("the broker settings", || async { cm_api.get("stream-broker-config").await.ok()?.data }).await;
    let read = streamfabric_api::settings::BrokerConfig::from_env(&settings).unwrap();
    assert_eq!(read.object_store.as_deref(), Some(store.as_str()));
    assert_eq!(read.durability, streamfabric_api::settings::Durability::Object);
    // The cluster key: one Secret, owned by the DataStream, mounted where the settings say.
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let key_of = |s: Secret| s.data.and_then(|d| d.get("token.key").map(|k| k.0.clone()));
    let key = key_of(secrets.get("stream-cluster-key").await.unwrap()).expect("a key");
    assert_eq!(key.len(), 32);
    let mount = sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].volume_mounts.clone().unwrap();
    let mount = mount.iter().find(|m| m.name == "cluster-key").expect("the key is mounted");
    assert_eq!(read.cluster_key_file, Some(std::path::Path::new(&mount.mount_path).join("token.key")));
    let status = eventually("status shows 2 members with 4 shards each", || async {
        let status = api.get("stream").await.ok()?.status?;
        let each: Vec<i32> = status.shards_per_broker.values().copied().collect();
        (status.members == 2 && each == [4, 4]).then_some(status)
    })
    .await;
    assert_eq!(
        status.shards_per_broker.keys().cloned().collect::<Vec<_>>(),
        ["stream-broker-0", "stream-broker-1"],
        "{status:?}"
    );
    // Reconciled many times since (status polls): the key is the one first created.
    assert_eq!(key_of(secrets.get("stream-cluster-key").await.unwrap()), Some(key));
    controller.abort();
    for broker in brokers {
        broker.shutdown(Duration::from_secs(5)).await;
    }
}

/// Leader election on a real Lease: two replicas race for it, exactly one leads; the other
/// waits while the leader renews and takes over once it stops; the old leader then learns it
/// lost.
#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn one_replica_leads_and_another_takes_over_when_it_stops_renewing() {
    use streamfabric_operator::leader::Election;
    let client = Client::try_default().await.expect("KUBECONFIG points at the test API server");
    let ns = namespace(&client, "sf-leader").await;
    let replica = |identity: &str| Election {
        namespace: ns.clone(),
        name: "streamfabric-operator".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(2),
        renew_every: Duration::from_millis(300),
    };
    let (a, b) = (replica("replica-a"), replica("replica-b"));
    let (won_a, won_b) = tokio::join!(a.try_acquire(&client), b.try_acquire(&client));
    let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
    assert!(won_a ^ won_b, "exactly one leads: a {won_a}, b {won_b}");
    let (leader, follower) = if won_a { (a, b) } else { (b, a) };
    for _ in 0..3 {
        assert!(leader.try_acquire(&client).await.unwrap(), "the leader renews");
        assert!(!follower.try_acquire(&client).await.unwrap(), "the follower waits");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // The leader stops renewing: within a lease duration the follower leads.
    let started = std::time::Instant::now();
    follower.acquire(&client).await;
    assert!(started.elapsed() >= Duration::from_millis(1500), "not before the lease expired");
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), &ns);
    let spec = leases.get("streamfabric-operator").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(follower.identity.as_str()));
    assert_eq!(spec.lease_transitions, Some(1));
    // The old leader, holding on, finds out.
    tokio::time::timeout(Duration::from_secs(5), leader.hold(&client)).await.expect("the old leader learns it lost");

    // Shutting down: the old leader's release leaves the Lease alone; the holder's frees it,
    // and a standby takes it at once, not a lease duration later.
    leader.release(&client).await;
    let held = leases.get("streamfabric-operator").await.unwrap().spec.unwrap();
    assert_eq!(held.holder_identity.as_deref(), Some(follower.identity.as_str()), "not the old leader's to free");
    follower.release(&client).await;
    let freed = leases.get("streamfabric-operator").await.unwrap().spec.unwrap();
    assert_eq!(freed.holder_identity, None, "released");
    assert!(leader.try_acquire(&client).await.unwrap(), "a standby takes a released Lease at once");
}

/// Readiness follows the CRD as the API server serves it: ready with the DataStream CRD,
/// not with a CRD that is not installed.
#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn readiness_follows_whether_the_api_server_serves_the_crd() {
    use streamfabric_operator::{admin::watch_crd, metrics::Metrics};
    let client = client_with_crd().await;
    for (crd, served) in [("datastreams.streamfabric.io", 1), ("absent.streamfabric.io", 0)] {
        let metrics = std::sync::Arc::new(Metrics::new());
        metrics.crd_served.set(1 - served);
        let watch = tokio::spawn(watch_crd(client.clone(), metrics.clone(), crd, Duration::from_millis(100)));
        eventually(&format!("crd_served {served} for {crd}"), || async {
            (metrics.crd_served.get() == served).then_some(())
        })
        .await;
        watch.abort();
    }
}

#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn the_webhook_adds_the_sidecar_to_pods_that_ask_and_admits_the_others_untouched() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::Pod;
    use streamfabric_operator::webhook::{self, certs::CertSettings};
    let client = client_with_crd().await;
    let ns = namespace(&client, "sf-webhook").await;
    let streams: Api<DataStream> = Api::namespaced(client.clone(), &ns);
    let _ = streams.create(&PostParams::default(), &datastream("orders", json!({"shards": 1}))).await;
    // What the controller manager (not run here) would create; pods wait for it.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let _ = accounts
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "default"}})).unwrap())
        .await;

    // The API server calls the webhook by URL here (no Service routes to this process):
    // `localhost` as the "service" makes it one of the certificate's names.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let configs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let name = "sf-test-injector";
    let _ = configs.delete(name, &DeleteParams::default()).await;
    let config = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "sidecar.streamfabric.io",
            "clientConfig": {"url": format!("https://localhost:{port}{}", webhook::PATH)},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "objectSelector": {"matchLabels": {"streamfabric.io/inject": "true"}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Ignore", "sideEffects": "NoneOnDryRun",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 5
        }]
    });
    configs.create(&PostParams::default(), &serde_json::from_value(config).unwrap()).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let settings = webhook::WebhookSettings {
        certs: CertSettings {
            namespace: ns.clone(),
            secret: "sf-webhook-tls".into(),
            service: "localhost".into(),
            webhook_configuration: name.into(),
            managed: true,
            validity: Duration::from_secs(90 * 24 * 3600),
        },
        sidecar_image: "ghcr.io/streamfabric/sidecar:test".into(),
        endpoint_template: "http://{name}.{namespace}.svc:4567".into(),
        check_every: Duration::from_millis(500),
    };
    webhook::spawn(client.clone(), listener, settings, metrics.clone());
    eventually("the configuration trusts the operator's CA", || async {
        let c = configs.get(name).await.ok()?;
        c.webhooks?[0].client_config.ca_bundle.is_some().then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod = |name: &str, labels: serde_json::Value, annotations: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        }))
        .unwrap()
    };
    let sidecar_of =
        |p: &Pod| p.spec.as_ref()?.init_containers.as_ref()?.iter().find(|c| c.name == "streamfabric-sidecar").cloned();
    let asks = json!({"streamfabric.io/inject": "true"});
    let producer_consumer = json!({
        "streamfabric.io/stream": "orders", "streamfabric.io/roles": "producer,consumer",
        "streamfabric.io/consumer-application": "billing", "streamfabric.io/aggregate": "true"
    });
    // The API server picks the new CA bundle up within a moment; dry runs until it has.
    let dry = PostParams { dry_run: true, ..PostParams::default() };
    eventually("the API server calls the webhook", || async {
        let p = pods.create(&dry, &pod("probe", asks.clone(), producer_consumer.clone())).await.ok()?;
        sidecar_of(&p).map(|_| ())
    })
    .await;

    let injected =
        pods.create(&PostParams::default(), &pod("producer", asks.clone(), producer_consumer)).await.unwrap();
    let sidecar = sidecar_of(&injected).expect("the sidecar is added");
    let env: std::collections::BTreeMap<String, Option<String>> =
        sidecar.env.unwrap().into_iter().map(|e| (e.name, e.value)).collect();
    assert_eq!(sidecar.image.as_deref(), Some("ghcr.io/streamfabric/sidecar:test"));
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(env["STREAMFABRIC_SIDECAR_BROKER_ENDPOINT"].as_deref(), Some("http://orders.sf-webhook.svc:4567"));
    assert_eq!(env["STREAMFABRIC_SIDECAR_CONSUMER_STREAM"].as_deref(), Some("orders"));
    assert_eq!(env["STREAMFABRIC_SIDECAR_CONSUMER_APPLICATION"].as_deref(), Some("billing"));
    assert_eq!(env["STREAMFABRIC_SIDECAR_AGGREGATE"].as_deref(), Some("true"));
    let app_env = injected.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
    assert!(
        app_env
            .iter()
            .any(|e| e.name == "AWS_ENDPOINT_URL_KINESIS" && e.value.as_deref() == Some("http://127.0.0.1:4599"))
    );

    let plain = pods.create(&PostParams::default(), &pod("plain", json!({"app": "x"}), json!({}))).await.unwrap();
    assert!(plain.spec.as_ref().unwrap().init_containers.is_none(), "a pod that does not ask is untouched");
    assert!(plain.spec.as_ref().unwrap().containers[0].env.is_none());

    // Asking for a stream that is not there, or with a setting the sidecar refuses: the pod
    // is admitted as it is, and an Event says why.
    let missing = json!({"streamfabric.io/stream": "nope"});
    let lost = pods.create(&PostParams::default(), &pod("lost", asks.clone(), missing)).await.unwrap();
    assert!(sidecar_of(&lost).is_none());
    let bad = json!({"streamfabric.io/stream": "orders", "streamfabric.io/sample-keys": "2"});
    let refused = pods.create(&PostParams::default(), &pod("refused", asks.clone(), bad)).await.unwrap();
    assert!(sidecar_of(&refused).is_none());
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    for (pod, says) in [("lost", "no DataStream \"nope\""), ("refused", "--sample-keys")] {
        eventually(&format!("an Event about {pod}"), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some("SidecarNotInjected")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
                        && e.note.as_deref().is_some_and(|n| n.contains(says))
                })
                .map(|_| ())
        })
        .await;
    }
    eventually("the two pods without their sidecar are counted", || async {
        (metrics.pods_without_sidecar.get() == 2).then_some(())
    })
    .await;
    assert!(metrics.webhook_reviews.with_label_values(&["injected"]).get() >= 2);
    assert_eq!(metrics.webhook_reviews.with_label_values(&["refused"]).get(), 2);

    // Rotation: a serving certificate near its end is renewed from the same CA; the API
    // server goes on trusting the webhook.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let before = secrets.get("sf-webhook-tls").await.unwrap();
    let crt = |s: &Secret| s.data.as_ref().unwrap()["tls.crt"].0.clone();
    let ca = |s: &Secret| s.data.as_ref().unwrap()["ca.crt"].0.clone();
    let expiring = json!({"metadata": {"annotations": {"streamfabric.io/not-after": "2000-01-01T00:00:00Z"}}});
    secrets.patch("sf-webhook-tls", &PatchParams::default(), &Patch::Merge(&expiring)).await.unwrap();
    let after = eventually("the serving certificate is renewed", || async {
        let s = secrets.get("sf-webhook-tls").await.ok()?;
        (crt(&s) != crt(&before)).then_some(s)
    })
    .await;
    assert_eq!(ca(&after), ca(&before), "the same CA");
    eventually("a new connection is served the renewed certificate", || async {
        use rustls_pki_types::pem::PemObject;
        let renewed = rustls_pki_types::CertificateDer::from_pem_slice(&crt(&after)).ok()?;
        (served_certificate(port, &ca(&after)).await? == renewed.to_vec()).then_some(())
    })
    .await;
    eventually("the renewed certificate is served and trusted", || async {
        let p =
            pods.create(&dry, &pod("probe", asks.clone(), json!({"streamfabric.io/stream": "orders"}))).await.ok()?;
        sidecar_of(&p).map(|_| ())
    })
    .await;
    let owners = after.metadata.owner_references.unwrap_or_default();
    assert!(owners.iter().any(|o| o.kind == "MutatingWebhookConfiguration" && o.name == name), "{owners:?}");
    configs.delete(name, &DeleteParams::default()).await.unwrap();
}

/// The certificate (DER) the webhook on `port` presents to a new TLS connection that trusts `ca_pem`.
async fn served_certificate(port: u16, ca_pem: &[u8]) -> Option<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(ca.ok()?).ok()?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let name = rustls_pki_types::ServerName::try_from("localhost").ok()?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.ok()?;
    Some(tls.get_ref().1.peer_certificates()?.first()?.to_vec())
}

#[tokio::test]
#[ignore = "needs a real API server; run scripts/e2e-operator"]
async fn with_authentication_the_operator_signs_with_its_derived_key_and_mounts_it_beside_the_users() {
    use k8s_openapi::api::core::v1::Secret;
    let client = client_with_crd().await;
    let ns = namespace(&client, "sf-auth").await;
    let master = vec![9u8; 32];
    let derived = streamfabric_api::sigv4::derive_secret(&master, &format!("{ns}/secured"));
    // The broker pods would see a directory per Secret: the user's, the writers', the
    // readers' and the operator's.
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("credentials");
    for (secret, key, value) in [
        ("app-keys", "AKIDUSER", "user-secret"),
        ("producer-keys", "AKIDWRITER", "writer-secret"),
        ("consumer-keys", "AKIDREADER", "reader-secret"),
        ("secured-operator-key", "streamfabric-operator", derived.as_str()),
    ] {
        std::fs::create_dir_all(keys.join(secret)).unwrap();
        std::fs::write(keys.join(secret).join(key), value).unwrap();
    }
    // Until the operator's ConfigMap is copied in (the kubelet's part), everyone may do everything.
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, r#"{"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}}"#)
        .unwrap();
    let mut config = streamfabric_broker::BrokerConfig::for_dir(dir.path());
    config.credentials = Some(keys);
    config.access_policy = Some(policy.clone());
    let broker = streamfabric_broker::start(config).await.unwrap();
    let endpoints = controller::BrokerEndpoints {
        api: format!("http://{}", broker.api_addr),
        admin: format!("http://{}", broker.admin_addr),
        pod_admin: format!("http://{}", broker.admin_addr),
    };
    let controller =
        tokio::spawn(controller::run(client.clone(), Arc::new(Metrics::new()), endpoints, Some(master.clone())));
    let api: Api<DataStream> = Api::namespaced(client.clone(), &ns);
    let spec = json!({"shards": 2, "deletionPolicy": "Retain", "authentication": {
        "credentialsSecretRef": {"name": "app-keys"},
        "writers": [{"name": "producer-keys"}],
        "readers": [{"name": "consumer-keys"}]}});
    api.create(&PostParams::default(), &datastream("secured", spec)).await.unwrap();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let secret = eventually("the operator's key Secret", || async {
        secrets.get_opt("secured-operator-key").await.ok().flatten()
    })
    .await;
    assert_eq!(secret.data.unwrap()["streamfabric-operator"].0, derived.as_bytes());
    let sts_api: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts = eventually("the StatefulSet", || async { sts_api.get_opt("secured-broker").await.ok().flatten() }).await;
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let mut mounted: Vec<String> = pod.volumes.unwrap().into_iter().filter_map(|v| v.secret?.secret_name).collect();
    mounted.sort();
    assert_eq!(mounted, ["app-keys", "consumer-keys", "producer-keys", "secured-cluster-key", "secured-operator-key"]);
    // The stream was created through the brokers' API with the operator's signature.
    eventually("the brokers serve the stream", || async { broker.broker.catalog.get("secured") }).await;
    let metrics = admin_get(&format!("http://{}/metrics", broker.admin_addr)).await;
    assert!(
        metrics.contains("streamfabric_auth_requests_total{access_key_id=\"streamfabric-operator\"}"),
        "signed calls"
    );

    // The access policy the operator wrote, as the brokers get it.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = eventually("the access policy ConfigMap", || async {
        config_maps.get_opt("secured-access-policy").await.ok().flatten()
    })
    .await;
    std::fs::write(&policy, &cm.data.unwrap()["policy.json"]).unwrap();
    let put = json!({"StreamName": "secured", "PartitionKey": "p", "Data": "eA=="});
    let read = json!({"StreamName": "secured", "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"});
    let addr = broker.api_addr;
    eventually("the writer refused a read", || async {
        let (status, answer) = signed_call(addr, "AKIDWRITER", "writer-secret", "GetShardIterator", &read).await;
        (status == 400 && answer["__type"] == "AccessDeniedException").then_some(())
    })
    .await;
    let (status, answer) = signed_call(addr, "AKIDWRITER", "writer-secret", "PutRecord", &put).await;
    assert_eq!(status, 200, "the writer writes: {answer}");
    let (status, answer) = signed_call(addr, "AKIDREADER", "reader-secret", "GetShardIterator", &read).await;
    assert_eq!(status, 200, "the reader reads: {answer}");
    let (_, answer) = signed_call(addr, "AKIDREADER", "reader-secret", "PutRecord", &put).await;
    assert_eq!(answer["__type"], "AccessDeniedException", "the reader does not write");
    let delete = json!({"StreamName": "secured"});
    let (_, answer) = signed_call(addr, "AKIDWRITER", "writer-secret", "DeleteStream", &delete).await;
    assert_eq!(answer["__type"], "AccessDeniedException", "the writer does not delete");
    let (status, _) = signed_call(addr, "AKIDUSER", "user-secret", "DescribeStreamSummary", &delete).await;
    assert_eq!(status, 200, "the user's keys may do everything");
    controller.abort();
}

/// A Kinesis call signed with `key`; (status, answer).
async fn signed_call(
    addr: std::net::SocketAddr,
    key: &str,
    secret: &str,
    op: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let signer = streamfabric_api::sigv4::Signer {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        region: streamfabric_api::names::DEFAULT_REGION.into(),
        service: "kinesis".into(),
    };
    let body = serde_json::to_vec(body).unwrap();
    let (host, target) = (addr.to_string(), format!("Kinesis_20131202.{op}"));
    let content_type = "application/x-amz-json-1.1";
    let headers = [("content-type", content_type), ("x-amz-target", target.as_str())];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (date, authorization) = signer.sign_post(&host, &headers, &body, now);
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/")
        .header("host", host)
        .header("content-type", content_type)
        .header("x-amz-target", target)
        .header("x-amz-date", date)
        .header("authorization", authorization)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// GET over plain HTTP/1.1 (the broker's admin port).
async fn admin_get(url: &str) -> String {
    use http_body_util::BodyExt;
    let uri: http::Uri = url.parse().unwrap();
    let stream = tokio::net::TcpStream::connect(uri.authority().unwrap().as_str()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(uri.path())
        .header("host", uri.authority().unwrap().as_str())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}
