//! What the broker reads back from the object store and from producers: segment objects
//! (framed, compressed) and their footers, write-ahead objects, and KPL aggregated records:
//! an error, never a panic or an allocation the input's size does not justify.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamfabric_api::aggregation::deaggregate;
use streamfabric_broker::tier::{frames, wal};

fuzz_target!(|data: &[u8]| {
    let _ = frames::decode(data);
    let _ = frames::parse_footer(data, data.len() as u64);
    let bytes = Bytes::copy_from_slice(data);
    let _ = wal::decode("fuzz/wal/0.wal", &bytes);
    let _ = deaggregate(&bytes);
});
