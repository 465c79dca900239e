//! Settings arrive in the process: the real binary, started with nothing but the
//! environment that `BrokerConfig::to_env` renders (what the operator puts in a broker
//! pod's ConfigMap), runs with exactly those settings, as its `/config` shows.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use streamfabric_broker::BrokerConfig;
use streamfabric_broker::config::Durability;

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test]
async fn the_binary_runs_with_the_settings_of_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("bucket");
    std::fs::create_dir_all(&store).unwrap();
    let key_file = dir.path().join("cluster.key");
    std::fs::write(&key_file, [9u8; 32]).unwrap();
    let wanted = BrokerConfig {
        listen: free_addr(),
        admin_listen: free_addr(),
        data_dir: dir.path().join("data"),
        durability: Durability::Object,
        object_store: Some(format!("file://{}", store.display())),
        segment_bytes: 1 << 20,
        segment_age: Duration::from_secs(600),
        segment_compression: streamfabric_broker::tier::Compression::Lz4,
        local_retention_bytes: Some(4 << 20),
        enforce_shard_limits: true,
        shard_write_records_per_sec: 2000,
        shard_read_calls_per_sec: 10,
        broker_id: Some("orders-broker-0".into()),
        cluster_key_file: Some(key_file.clone()),
        ..BrokerConfig::default()
    };
    let env: BTreeMap<String, String> = wanted.to_env();
    let mut child = Command::new(env!("CARGO_BIN_EXE_streamfabric-broker"))
        .arg("serve")
        .env_clear()
        .envs(&env)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(wanted.admin_listen).await.is_err() {
        assert!(Instant::now() < deadline, "broker did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = common::http_get(wanted.admin_listen, "/config").await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(status, 200);
    let shown: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(shown, serde_json::to_value(wanted.shown()).unwrap());
    assert_eq!(shown["durability"], "object");
    assert_eq!(shown["segment_compression"], "lz4");
}

async fn iterator(broker: &common::TestBroker, stream: &str) -> String {
    let ask = serde_json::json!({"StreamName": stream, "ShardId": "shardId-000000000000", "ShardIteratorType": "TRIM_HORIZON"});
    let (status, answer) = broker.json("GetShardIterator", ask).await;
    assert_eq!(status, 200, "{answer}");
    answer["ShardIterator"].as_str().unwrap().to_string()
}

async fn get_records(broker: &common::TestBroker, iterator: &str) -> (u16, serde_json::Value) {
    broker.json("GetRecords", serde_json::json!({ "ShardIterator": iterator })).await
}

/// `--cluster-key-file` signs iterators in the process that reads it; iterators signed with
/// the object store's key before still work there, and nowhere without that key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_key_file_signs_iterators_and_the_stores_key_still_verifies() {
    let objects = tempfile::tempdir().unwrap();
    let url = format!("file://{}", objects.path().display());
    let key_file = objects.path().join("cluster.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();

    let before = common::start_with(|c| c.object_store = Some(url.clone())).await;
    before.create_stream("keyed", 1).await;
    let put = serde_json::json!({"StreamName": "keyed", "PartitionKey": "k", "Data": "aGVsbG8="});
    assert_eq!(before.json("PutRecord", put).await.0, 200);
    let old = iterator(&before, "keyed").await;
    let common::TestBroker { running, dir } = before;
    running.shutdown(Duration::from_secs(5)).await;

    // The same broker, restarted with a key file.
    let mut config = BrokerConfig::for_dir(dir.path());
    config.object_store = Some(url.clone());
    config.cluster_key_file = Some(key_file.clone());
    let after = common::TestBroker { running: streamfabric_broker::start(config).await.unwrap(), dir };
    let (status, answer) = get_records(&after, &old).await;
    assert_eq!(status, 200, "an iterator of the store's key still works: {answer}");
    assert_eq!(answer["Records"].as_array().unwrap().len(), 1);
    let new = iterator(&after, "keyed").await;
    assert_eq!(get_records(&after, &new).await.0, 200);

    // Another broker with the same key file (and its own store): the new iterator verifies
    // (its stream is unknown there), the old one does not.
    let other = common::start_with(|c| c.cluster_key_file = Some(key_file.clone())).await;
    let (status, answer) = get_records(&other, &new).await;
    assert_eq!((status, answer["__type"].as_str()), (400, Some("ResourceNotFoundException")), "{answer}");
    let (status, answer) = get_records(&other, &old).await;
    assert_eq!((status, answer["__type"].as_str()), (400, Some("InvalidArgumentException")), "{answer}");

    // A key file that holds no key: the broker refuses to start and says why.
    std::fs::write(&key_file, b"short").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::for_dir(dir.path());
    config.cluster_key_file = Some(key_file.clone());
    let err = streamfabric_broker::start(config).await.err().expect("refused").to_string();
    assert!(err.contains("--cluster-key-file") && err.contains("64 hex digits"), "{err}");
}
