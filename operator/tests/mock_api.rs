//! The controller against a mock API server: each request's method, URI (field manager
//! included) and body are asserted, in order.

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use std::sync::Arc;
use streamfabric_api::crd::DataStream;
use streamfabric_operator::controller::{BrokerEndpoints, Context, reconcile};
use streamfabric_operator::metrics::Metrics;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn datastream(finalizers: &[&str], deleting: bool) -> DataStream {
    let mut v = json!({
        "apiVersion": "streamfabric.io/v1alpha1",
        "kind": "DataStream",
        "metadata": {"name": "orders", "namespace": "streams", "uid": "u-1", "generation": 3, "resourceVersion": "7",
                     "finalizers": finalizers},
        "spec": {"shards": 8, "deletionPolicy": "Delete"}
    });
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-11-28T00:00:00Z");
    }
    serde_json::from_value(v).unwrap()
}

/// Answer the next request after checking it; returns its JSON body.
async fn expect(handle: &mut Handle, method: Method, path: &str, query: &[&str], answer: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    let uri = request.uri().to_string();
    assert_eq!(request.method(), method, "{uri}");
    assert_eq!(request.uri().path(), path, "{uri}");
    for q in query {
        assert!(uri.contains(q), "{uri} should contain {q}");
    }
    let bytes = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap());
    body
}

/// A context whose brokers answer at `api` and `admin` (a closed port when they need not answer).
fn context(api: &str, admin: &str) -> (Arc<Context>, Handle) {
    let (ctx, handle) = context_for_tests(api, admin);
    (Arc::new(ctx), handle)
}

fn context_for_tests(api: &str, admin: &str) -> (Context, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let endpoints = BrokerEndpoints { api: api.into(), admin: admin.into(), pod_admin: admin.into() };
    (Context::new(client, Arc::new(Metrics::new()), endpoints), handle)
}

/// Run one reconcile, answering every request plausibly (children echoed, the StatefulSet
/// all ready, the status patch with the DataStream); returns the requests in order.
async fn reconcile_answering(ds: &DataStream, ctx: Arc<Context>, api: &mut Handle) -> Vec<(Method, String, Value)> {
    let mut run = tokio::spawn(reconcile(Arc::new(ds.clone()), ctx));
    let mut seen = Vec::new();
    loop {
        tokio::select! {
            done = &mut run => {
                done.unwrap().expect("reconcile succeeds");
                return seen;
            }
            request = api.next_request() => {
                // None: the reconcile ended and dropped its client.
                let Some((request, send)) = request else {
                    (&mut run).await.unwrap().expect("reconcile succeeds");
                    return seen;
                };
                let (method, path) = (request.method().clone(), request.uri().path().to_string());
                let bytes = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
                let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                let answer = if path.ends_with("/status") {
                    serde_json::to_value(ds).unwrap()
                } else if path.contains("/statefulsets/") {
                    let mut sts = body.clone();
                    sts["status"] = json!({"replicas": 2, "readyReplicas": 2});
                    sts
                } else if path.contains("/events") {
                    json!({})
                } else {
                    body.clone()
                };
                send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap());
                seen.push((method, path, body));
            }
        }
    }
}

fn events(seen: &[(Method, String, Value)]) -> Vec<&Value> {
    seen.iter().filter(|(m, p, _)| m == Method::POST && p.ends_with("/events")).map(|(_, _, b)| b).collect()
}

/// Wait until the broker's stream `orders` is ACTIVE with `open` open shards.
async fn wait_for_open_shards(endpoint: &str, open: i32) {
    let admin = streamfabric_operator::kinesis::KinesisAdmin::default();
    for _ in 0..3000 {
        let state = admin.ensure_stream(endpoint, "orders", &PROVISIONED_8).await.unwrap();
        if state.active && state.open_shards == open {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("stream orders did not reach {open} open shards");
}

const PROVISIONED_8: streamfabric_operator::kinesis::WantedStream =
    streamfabric_operator::kinesis::WantedStream { shards: 8, retention_hours: 24, on_demand: false };

const NO_BROKERS: &str = "http://127.0.0.1:9";

/// A real broker, in process, already serving the stream `orders` with 8 shards.
async fn broker_with_orders() -> (streamfabric_broker::Running, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let running = streamfabric_broker::start(streamfabric_broker::BrokerConfig::for_dir(dir.path())).await.unwrap();
    let endpoint = format!("http://{}", running.api_addr);
    let admin = streamfabric_operator::kinesis::KinesisAdmin::default();
    for _ in 0..2000 {
        if admin.ensure_stream(&endpoint, "orders", &PROVISIONED_8).await.unwrap().active {
            return (running, dir);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("stream orders did not become ACTIVE");
}

const APPLY: &[&str] = &["fieldManager=streamfabric-operator", "force=true"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_creates_children_with_one_field_manager_then_status_and_an_event() {
    let (broker, _dir) = broker_with_orders().await;
    let (ctx, mut api) = context(&format!("http://{}", broker.api_addr), &format!("http://{}", broker.admin_addr));
    let mut ds = datastream(&["streamfabric.io/cleanup"], false);
    ds.spec = serde_json::from_value(json!({
        "shards": 8, "deletionPolicy": "Delete", "durability": "Object",
        "objectStore": {"url": "s3://streams/orders", "endpoint": "http://minio.storage:9000", "region": "eu-west-1",
                        "credentialsSecretRef": {"name": "minio"}},
        "segments": {"maxBytes": 8388608, "maxAge": "10m", "compression": "Lz4"},
        "brokers": {"storage": {"localRetentionBytes": 1073741824}},
        "shardLimits": {"enforce": true, "writeBytesPerSecond": 2097152, "writeRecordsPerSecond": 2000,
                        "readBytesPerSecond": 4194304, "readCallsPerSecond": 10}
    }))
    .unwrap();
    let run = tokio::spawn(reconcile(Arc::new(ds.clone()), ctx));

    // The cluster key: created (a POST, not an apply: an existing key is never rewritten).
    let secret = expect(
        &mut api,
        Method::POST,
        "/api/v1/namespaces/streams/secrets",
        &[],
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "orders-cluster-key"}}),
    )
    .await;
    assert_eq!(secret["metadata"]["name"], "orders-cluster-key");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "DataStream");
    let key = secret["data"]["token.key"].as_str().expect("the key");
    let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key).unwrap();
    assert_eq!(key.len(), 32);

    let cm = expect(
        &mut api,
        Method::PATCH,
        "/api/v1/namespaces/streams/configmaps/orders-broker-config",
        APPLY,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "orders-broker-config"}}),
    )
    .await;
    assert_eq!(cm["metadata"]["ownerReferences"][0]["kind"], "DataStream");
    assert_eq!(cm["metadata"]["ownerReferences"][0]["controller"], true);
    // The whole ConfigMap: each spec field above is in it, every other setting at its default.
    assert_eq!(
        cm["data"],
        json!({
            "STREAMFABRIC_ACCOUNT": "000000000000",
            "STREAMFABRIC_ADMIN_LISTEN": "0.0.0.0:4568",
            "STREAMFABRIC_CLUSTER_KEY_FILE": "/etc/streamfabric/cluster-key/token.key",
            "STREAMFABRIC_DATA_DIR": "/data",
            "STREAMFABRIC_DURABILITY": "object",
            "STREAMFABRIC_ENFORCE_SHARD_LIMITS": "true",
            "STREAMFABRIC_FLUSH": "always",
            "STREAMFABRIC_HEARTBEAT_INTERVAL": "1s",
            "STREAMFABRIC_LISTEN": "0.0.0.0:4567",
            "STREAMFABRIC_LOCAL_RETENTION_BYTES": "1073741824",
            "STREAMFABRIC_LOCAL_RETENTION_CHECK": "5s",
            "STREAMFABRIC_MAX_RECORD_BYTES": "1048576",
            "STREAMFABRIC_MEMBER_TIMEOUT": "10s",
            "STREAMFABRIC_OBJECT_BATCH_BYTES": "8388608",
            "STREAMFABRIC_OBJECT_BATCH_INFLIGHT": "4",
            "STREAMFABRIC_OBJECT_BATCH_LINGER": "1ms",
            "STREAMFABRIC_OBJECT_PUT_TIMEOUT": "5s",
            "STREAMFABRIC_OBJECT_STORE": "s3://streams/orders",
            "STREAMFABRIC_OBJECT_STORE_ENDPOINT": "http://minio.storage:9000",
            "STREAMFABRIC_OBJECT_STORE_REGION": "eu-west-1",
            "STREAMFABRIC_ORPHAN_SWEEP": "6h",
            "STREAMFABRIC_REGION": "us-east-1",
            "STREAMFABRIC_REMOTE_CACHE_BYTES": "268435456",
            "STREAMFABRIC_RETENTION_CHECK": "1m",
            "STREAMFABRIC_SEGMENT_AGE": "10m",
            "STREAMFABRIC_SEGMENT_BYTES": "8388608",
            "STREAMFABRIC_SEGMENT_COMPRESSION": "lz4",
            "STREAMFABRIC_SHARD_LIMIT": "500",
            "STREAMFABRIC_SHARD_READ_BYTES": "4194304",
            "STREAMFABRIC_SHARD_READ_CALLS": "10",
            "STREAMFABRIC_SHARD_WRITE_BYTES": "2097152",
            "STREAMFABRIC_SHARD_WRITE_RECORDS": "2000",
            "STREAMFABRIC_STATUS_DELAY": "100ms",
            "STREAMFABRIC_SUBSCRIPTION_LIFETIME": "5m",
            "STREAMFABRIC_UPLOAD_BACKLOG_LIMIT": "1073741824",
        })
    );
    let headless = expect(
        &mut api,
        Method::PATCH,
        "/api/v1/namespaces/streams/services/orders-broker-headless",
        APPLY,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-broker-headless"}}),
    )
    .await;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let client = expect(
        &mut api,
        Method::PATCH,
        "/api/v1/namespaces/streams/services/orders",
        APPLY,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders"}}),
    )
    .await;
    assert_eq!(client["spec"]["ports"][0]["port"], 4567);
    let sts = expect(
        &mut api,
        Method::PATCH,
        "/apis/apps/v1/namespaces/streams/statefulsets/orders-broker",
        APPLY,
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "orders-broker"},
               "spec": {"selector": {}, "serviceName": "orders-broker-headless", "template": {}},
               "status": {"replicas": 2, "readyReplicas": 2}}),
    )
    .await;
    assert_eq!(sts["spec"]["replicas"], 2, "8 shards at 4 per broker, sharing the stream through its object store");
    let env = &sts["spec"]["template"]["spec"]["containers"][0]["env"];
    let advertise = env.as_array().unwrap().iter().find(|e| e["name"] == "STREAMFABRIC_ADVERTISE").unwrap();
    assert_eq!(
        advertise["value"], "$(STREAMFABRIC_BROKER_ID).orders-broker-headless.streams.svc:4567",
        "each broker is reached at its pod name"
    );
    assert_eq!(sts["spec"]["template"]["spec"]["containers"][0]["args"], json!(["serve"]));
    let pdb = expect(
        &mut api,
        Method::PATCH,
        "/apis/policy/v1/namespaces/streams/poddisruptionbudgets/orders-broker",
        APPLY,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "orders-broker"}}),
    )
    .await;
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let status = expect(
        &mut api,
        Method::PATCH,
        "/apis/streamfabric.io/v1alpha1/namespaces/streams/datastreams/orders/status",
        APPLY,
        serde_json::to_value(&ds).unwrap(),
    )
    .await;
    assert_eq!(status["status"]["readyBrokers"], 2);
    assert_eq!(status["status"]["members"], 2, "both pods' stats answered");
    assert_eq!(status["status"]["openShards"], 8, "read from the brokers");
    assert_eq!(status["status"]["observedGeneration"], 3);
    let ready = status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    // A new generation was applied: an Event says so; then readiness flipped: another.
    let applied =
        expect(&mut api, Method::POST, "/apis/events.k8s.io/v1/namespaces/streams/events", &[], json!({})).await;
    assert_eq!(applied["reason"], "Applied");
    assert!(applied["note"].as_str().unwrap().contains("8 shards"), "{applied}");
    // The action names the decision, so a different one is not folded into this Event.
    assert_eq!(applied["action"], applied["note"]);
    let became_ready =
        expect(&mut api, Method::POST, "/apis/events.k8s.io/v1/namespaces/streams/events", &[], json!({})).await;
    assert_eq!(became_ready["reason"], "Ready");
    run.await.unwrap().expect("reconcile succeeds");
}

#[tokio::test]
async fn a_new_datastream_first_gets_the_finalizer() {
    let (ctx, mut api) = context(NO_BROKERS, NO_BROKERS);
    let run = tokio::spawn(reconcile(Arc::new(datastream(&[], false)), ctx));
    let patch = expect(
        &mut api,
        Method::PATCH,
        "/apis/streamfabric.io/v1alpha1/namespaces/streams/datastreams/orders",
        &[],
        serde_json::to_value(datastream(&["streamfabric.io/cleanup"], false)).unwrap(),
    )
    .await;
    assert!(patch.to_string().contains("streamfabric.io/cleanup"), "{patch}");
    run.await.unwrap().expect("reconcile succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_with_policy_delete_deletes_the_stream_then_the_volumes_then_the_finalizer() {
    let (broker, _dir) = broker_with_orders().await;
    let (ctx, mut api) = context(&format!("http://{}", broker.api_addr), NO_BROKERS);
    let deleting = Arc::new(datastream(&["streamfabric.io/cleanup"], true));
    // First the stream, through its brokers (which delete its objects); the DataStream
    // waits for it, with no request to the API server.
    let first = tokio::time::timeout(std::time::Duration::from_secs(20), reconcile(deleting.clone(), ctx.clone()))
        .await
        .expect("no request to the API server");
    let pending = first.expect_err("the finalizer stays while the stream is deleted");
    assert_eq!(pending.deletion_pending(), Some(std::time::Duration::from_secs(2)), "{pending}");
    for _ in 0..500 {
        if broker.broker.catalog.get("orders").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(broker.broker.catalog.get("orders").is_none(), "the brokers deleted the stream");
    let run = tokio::spawn(reconcile(deleting, ctx));
    expect(
        &mut api,
        Method::GET,
        "/api/v1/namespaces/streams/persistentvolumeclaims",
        &["labelSelector=app.kubernetes.io%2Finstance%3Dorders%2Capp.kubernetes.io%2Fname%3Dstreamfabric-broker"],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaimList", "metadata": {}, "items": [
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-orders-broker-0"}}]}),
    )
    .await;
    expect(
        &mut api,
        Method::DELETE,
        "/api/v1/namespaces/streams/persistentvolumeclaims/data-orders-broker-0",
        &[],
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data-orders-broker-0"}}),
    )
    .await;
    let event =
        expect(&mut api, Method::POST, "/apis/events.k8s.io/v1/namespaces/streams/events", &[], json!({})).await;
    assert_eq!(event["reason"], "DataDeleted");
    assert!(event["note"].as_str().unwrap().contains("the stream and its objects in the object store deleted"));
    let unfinalize = expect(
        &mut api,
        Method::PATCH,
        "/apis/streamfabric.io/v1alpha1/namespaces/streams/datastreams/orders",
        &[],
        serde_json::to_value(datastream(&[], true)).unwrap(),
    )
    .await;
    assert!(unfinalize.to_string().contains("remove"), "finalizer removed: {unfinalize}");
    run.await.unwrap().expect("cleanup succeeds");
}

#[tokio::test]
async fn deletion_with_policy_delete_and_no_brokers_keeps_the_finalizer_and_says_why() {
    let (ctx, mut api) = context(NO_BROKERS, NO_BROKERS);
    let run = tokio::spawn(reconcile(Arc::new(datastream(&["streamfabric.io/cleanup"], true)), ctx));
    let event =
        expect(&mut api, Method::POST, "/apis/events.k8s.io/v1/namespaces/streams/events", &[], json!({})).await;
    assert_eq!((event["reason"].as_str(), event["type"].as_str()), (Some("DeletionBlocked"), Some("Warning")));
    assert!(event["note"].as_str().unwrap().contains("set spec.deletionPolicy to Retain"), "{event}");
    let pending = run.await.unwrap().expect_err("the finalizer stays");
    assert_eq!(pending.deletion_pending(), Some(std::time::Duration::from_secs(10)), "{pending}");
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), api.next_request()).await;
    assert!(matches!(next, Ok(None)), "no volume deleted, the finalizer kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_spec_shards_reshards_the_stream_through_update_shard_count() {
    let (broker, _dir) = broker_with_orders().await;
    let endpoint = format!("http://{}", broker.api_addr);
    let (ctx, mut api) = context(&endpoint, &format!("http://{}", broker.admin_addr));
    let mut ds = datastream(&["streamfabric.io/cleanup"], false);
    ds.spec.shards = 12;
    let seen = reconcile_answering(&ds, ctx, &mut api).await;
    let resharding = events(&seen).into_iter().find(|e| e["reason"] == "Resharding").expect("a Resharding event");
    assert_eq!(resharding["type"], "Normal");
    assert!(resharding["note"].as_str().unwrap().contains("UpdateShardCount 8 -> 12"), "{resharding}");
    let status = seen.iter().find(|(_, p, _)| p.ends_with("/status")).map(|(_, _, b)| b).unwrap();
    let scaling = status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Scaling").unwrap();
    assert_eq!((scaling["status"].as_str(), scaling["reason"].as_str()), (Some("True"), Some("Resharding")));
    wait_for_open_shards(&endpoint, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_on_demand_autoscaler_applies_its_decision_and_says_so() {
    let (broker, _dir) = broker_with_orders().await;
    let endpoint = format!("http://{}", broker.api_addr);
    let (mut ctx, mut api) = context_for_tests(&endpoint, &format!("http://{}", broker.admin_addr));
    ctx.min_sample_secs = 0.2;
    let ctx = Arc::new(ctx);
    let mut ds = datastream(&["streamfabric.io/cleanup"], false);
    ds.spec.mode = streamfabric_api::crd::StreamMode::OnDemand;
    ds.spec.scaling = Some(serde_json::from_value(json!({"minShards": 1, "maxShards": 64})).unwrap());
    ds.spec.shard_limits.write_records_per_second = 10;

    // The first reconcile takes the first sample: no rate yet, no decision.
    let first = reconcile_answering(&ds, ctx.clone(), &mut api).await;
    assert!(events(&first).iter().all(|e| e["reason"] != "AutoscaleDecision"));
    // The brokers' stream follows the DataStream's mode (it was created PROVISIONED).
    let mode = || broker.broker.catalog.get("orders").unwrap().meta().mode;
    assert_eq!(mode(), streamfabric_broker::catalog::meta::StreamMode::OnDemand);
    // 800 records written: far above 8 shards x 10 records/s x 50%.
    for batch in 0..8 {
        let records: Vec<Value> =
            (0..100).map(|i| json!({"PartitionKey": format!("k{batch}-{i}"), "Data": "eA=="})).collect();
        let body = serde_json::to_vec(&json!({"StreamName": "orders", "Records": records})).unwrap();
        let format = streamfabric_api::Format::Json;
        broker.broker.call(streamfabric_api::model::Operation::PutRecords, format, &body).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = reconcile_answering(&ds, ctx, &mut api).await;
    let decision =
        events(&second).into_iter().find(|e| e["reason"] == "AutoscaleDecision").expect("an AutoscaleDecision event");
    let note = decision["note"].as_str().unwrap();
    assert!(note.contains("UpdateShardCount 8 -> 16"), "doubling at most: {note}");
    assert!(note.contains("records/s over 8 shards"), "{note}");
    wait_for_open_shards(&endpoint, 16).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_paused_stops_writes_in_the_brokers_and_clearing_it_resumes_them() {
    let (broker, _dir) = broker_with_orders().await;
    let endpoint = format!("http://{}", broker.api_addr);
    let (ctx, mut api) = context(&endpoint, &format!("http://{}", broker.admin_addr));
    let put = serde_json::to_vec(&json!({"StreamName": "orders", "PartitionKey": "a", "Data": "AAAA"})).unwrap();
    let write =
        || broker.broker.call(streamfabric_api::model::Operation::PutRecord, streamfabric_api::Format::Json, &put);

    let mut ds = datastream(&["streamfabric.io/cleanup"], false);
    ds.spec.paused = true;
    let seen = reconcile_answering(&ds, ctx.clone(), &mut api).await;
    assert!(events(&seen).iter().any(|e| e["reason"] == "Paused"), "a Paused event");
    let refused = write().await.unwrap_err();
    assert_eq!(refused.code, streamfabric_api::ErrorCode::ResourceInUse);

    ds.spec.paused = false;
    let seen = reconcile_answering(&ds, ctx, &mut api).await;
    assert!(events(&seen).iter().any(|e| e["reason"] == "Resumed"), "a Resumed event");
    write().await.expect("writes resume");
}
