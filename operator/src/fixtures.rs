//! Test fixtures: `DataStream::test().with_shards(4)`.

use kube::api::ObjectMeta;
use streamfabric_api::crd::{DataStream, DataStreamSpec};

pub trait DataStreamExt {
    fn test() -> DataStream;
    fn with_shards(self, shards: i32) -> DataStream;
}

impl DataStreamExt for DataStream {
    /// `streams/orders`, as the API server would return it (uid and generation set).
    fn test() -> DataStream {
        let spec: DataStreamSpec =
            serde_json::from_value(serde_json::json!({"shards": 2})).expect("defaults fill the rest");
        let mut ds = DataStream::new("orders", spec);
        ds.metadata = ObjectMeta {
            name: Some("orders".into()),
            namespace: Some("streams".into()),
            uid: Some("0b1d3a2c-0000-4000-8000-000000000001".into()),
            generation: Some(1),
            ..ObjectMeta::default()
        };
        ds
    }

    fn with_shards(mut self, shards: i32) -> DataStream {
        self.spec.shards = shards;
        self
    }
}
