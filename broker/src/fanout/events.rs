//! The `application/vnd.amazon.eventstream` messages of a SubscribeToShard answer, framed
//! by aws-smithy-eventstream (the AWS Rust SDK's own codec: prelude, typed headers,
//! payload and both CRC32s exactly as the SDKs read them).

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use streamfabric_api::model::SubscribeToShardEvent;
use streamfabric_api::{ApiError, ErrorCode, Format};

pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

fn string(name: &'static str, value: impl Into<String>) -> Header {
    Header::new(name, HeaderValue::String(value.into().into()))
}

fn frame(headers: Vec<Header>, payload: Vec<u8>) -> Bytes {
    let mut framed = Vec::with_capacity(payload.len() + 128);
    write_message_to(&Message::new_from_parts(headers, payload), &mut framed)
        .expect("our headers are short and well formed");
    framed.into()
}

fn event(event_type: &'static str, format: Format, payload: Vec<u8>) -> Bytes {
    let headers = vec![
        string(":message-type", "event"),
        string(":event-type", event_type),
        string(":content-type", format.content_type()),
    ];
    frame(headers, payload)
}

/// The first message of every subscription: the operation's (empty) output.
pub fn initial_response(format: Format) -> Bytes {
    event("initial-response", format, format.encode(&streamfabric_api::model::Empty {}))
}

pub fn records(format: Format, batch: &SubscribeToShardEvent) -> Bytes {
    event("SubscribeToShardEvent", format, format.encode(batch))
}

/// An error that ends a subscription, typed as the SDKs' event-stream errors are.
pub fn exception(format: Format, e: &ApiError) -> Bytes {
    let kind = match e.code {
        ErrorCode::InternalFailure => "InternalFailureException".to_string(),
        code => code.as_str().to_string(),
    };
    let headers = vec![
        string(":message-type", "exception"),
        string(":exception-type", kind),
        string(":content-type", format.content_type()),
    ];
    frame(headers, format.encode(&serde_json::json!({ "message": e.message })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_eventstream::frame::read_message_from;

    fn header<'a>(message: &'a Message, name: &str) -> &'a str {
        let found = message.headers().iter().find(|h| h.name().as_str() == name).expect(name);
        found.value().as_string().expect("a string header").as_str()
    }

    #[test]
    fn messages_read_back_with_their_headers_and_payloads() {
        let event = SubscribeToShardEvent {
            records: vec![],
            continuation_sequence_number: Some("49".into()),
            millis_behind_latest: 7,
            child_shards: None,
        };
        let message = read_message_from(records(Format::Json, &event)).unwrap();
        assert_eq!(header(&message, ":message-type"), "event");
        assert_eq!(header(&message, ":event-type"), "SubscribeToShardEvent");
        let payload: serde_json::Value = serde_json::from_slice(message.payload()).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"Records": [], "ContinuationSequenceNumber": "49", "MillisBehindLatest": 7})
        );

        let first = read_message_from(initial_response(Format::Cbor)).unwrap();
        assert_eq!(header(&first, ":event-type"), "initial-response");
        assert_eq!(header(&first, ":content-type"), "application/x-amz-cbor-1.1");

        let failed = read_message_from(exception(Format::Json, &ApiError::in_use("taken over"))).unwrap();
        assert_eq!(header(&failed, ":message-type"), "exception");
        assert_eq!(header(&failed, ":exception-type"), "ResourceInUseException");
    }

    #[test]
    fn a_damaged_message_is_refused_by_its_crc() {
        let mut framed = initial_response(Format::Json).to_vec();
        let last = framed.len() - 5;
        framed[last] ^= 1;
        assert!(read_message_from(Bytes::from(framed)).is_err());
    }
}
