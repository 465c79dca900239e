//! Shard iterators and NextTokens: arbitrary strings, and arbitrary payloads under a valid
//! signature (what only a holder of the cluster key could send), parse to an error or a
//! token, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamfabric_broker::tokens::{PageKind, TokenSigner};

fuzz_target!(|data: &[u8]| {
    let signer = TokenSigner::new([7; 32]);
    let text = String::from_utf8_lossy(data);
    let signed = signer.sign(data);
    for token in [text.as_ref(), signed.as_str()] {
        let _ = signer.parse_iterator(token, 1_800_000_000_000);
        for kind in [PageKind::Streams, PageKind::Shards, PageKind::Consumers] {
            let _ = signer.parse_page(token, kind);
        }
    }
});
