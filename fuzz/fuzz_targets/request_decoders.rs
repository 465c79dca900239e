//! A request body in JSON and in CBOR, decoded as the inputs the broker takes: an error,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamfabric_api::Format;
use streamfabric_api::model::*;

fn decode_all(format: Format, body: &[u8]) {
    let _ = format.decode::<PutRecordsInput>(body);
    let _ = format.decode::<PutRecordInput>(body);
    let _ = format.decode::<GetRecordsInput>(body);
    let _ = format.decode::<GetShardIteratorInput>(body);
    let _ = format.decode::<CreateStreamInput>(body);
    let _ = format.decode::<ListShardsInput>(body);
    let _ = format.decode::<SubscribeToShardInput>(body);
    let _ = format.decode::<UpdateMaxRecordSizeInput>(body);
    let _ = format.decode_error(body);
}

fuzz_target!(|body: &[u8]| {
    decode_all(Format::Json, body);
    decode_all(Format::Cbor, body);
});
