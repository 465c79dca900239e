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
