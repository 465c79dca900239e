//! Access policies (the broker's file, and PutResourcePolicy's documents from any client):
//! parsed or refused with an error, decided without a panic, wildcards matched in bounded time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamfabric_api::policy::{Decision, Policy, Resource, Subject, glob};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The text's halves as a pattern and a name, for the wildcard matcher alone.
    let (pattern, name) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(0, |(i, _)| i));
    let _ = glob(pattern, name);
    let Ok(policy) = Policy::parse(&text) else { return };
    let groups = ["writers".to_string()];
    for key in [Some("AKIDFUZZ"), None] {
        let subject = Subject { access_key_id: key, groups: &groups, account: "000000000000" };
        for (arn, name) in [("arn:aws:kinesis:us-east-1:000000000000:stream/orders", Some("orders")), ("*", None)] {
            let decision = policy.decide(&subject, "kinesis:PutRecord", &Resource { arn, name });
            assert!(matches!(decision, Decision::Allow | Decision::Deny(_) | Decision::NotAllowed));
        }
    }
});
