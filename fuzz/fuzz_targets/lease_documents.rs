//! Stored documents: consumer leases, DynamoDB items and the expressions of the lease store:
//! an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use streamfabric_api::leases::Lease;
use streamfabric_broker::dynamo::expr::{Placeholders, parse_condition, parse_projection, parse_update};
use streamfabric_broker::dynamo::value::{AttributeValue, Number};

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<Lease>(data);
    if let Ok(item) = serde_json::from_slice::<BTreeMap<String, AttributeValue>>(data) {
        for value in item.values() {
            let _ = value.validate();
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = Number::parse(&text);
    let names = BTreeMap::from([("#n".to_string(), "leaseOwner".to_string())]);
    let values = BTreeMap::from([(":v".to_string(), AttributeValue::S("w".into()))]);
    if let Ok(mut p) = Placeholders::new(Some(names.clone()), Some(values.clone())) {
        let _ = parse_condition(&text, "ConditionExpression", &mut p);
    }
    if let Ok(mut p) = Placeholders::new(Some(names.clone()), Some(values.clone())) {
        let _ = parse_update(&text, &mut p);
    }
    if let Ok(mut p) = Placeholders::new(Some(names), Some(values)) {
        let _ = parse_projection(&text, &mut p);
    }
});
