#!/usr/bin/env python3
"""The sidecar's producer with aggregation, driven through boto3 and checked with awslabs'
KPL aggregation library (aws-kinesis-agg, an implementation independent of ours):

    python sidecar_scenario.py --broker http://127.0.0.1:4567 --sidecar http://127.0.0.1:4599

boto3 points at the sidecar (endpoint changed only) and puts records; they are read back
straight from the broker. Every stored aggregate must be byte for byte what aws-kinesis-agg
builds from the same user records, de-aggregate with its deaggregator into records on the
shard their hash key maps to, and every acknowledged record must be found once, where its
answer said. The last line is "N passed, M failed".
"""

import argparse
import base64
import hashlib
import sys
import time

import boto3
from checks import check, summary
from botocore.config import Config

import aws_kinesis_agg
from aws_kinesis_agg.aggregator import AggRecord
from aws_kinesis_agg import messages_pb2
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

STREAM = "sidecar-aggregation"
SHARDS = 3
ROUNDS = 20
PER_ROUND = 100
READ_TIMEOUT = 60.0

def client(endpoint):
    return boto3.client(
        "kinesis", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="AKIDSIDECARTEST", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 3, "mode": "standard"}))


def hash_key(pk, ehk):
    return int(ehk) if ehk else int.from_bytes(hashlib.md5(pk.encode()).digest(), "big")


def aggregate_message(record):
    """The AggregatedRecord of an aggregate (magic, then the message, then its MD5), else None."""
    data = record["Data"]
    if data[:4] != aws_kinesis_agg.MAGIC or hashlib.md5(data[4:-16]).digest() != data[-16:]:
        return None
    message = messages_pb2.AggregatedRecord()
    message.ParseFromString(data[4:-16])
    return message


def explicit_hash_keys(record):
    """Per user record of an aggregate, its explicit hash key or None, read from the message
    (aws-kinesis-agg's deaggregator gives a record without one the table's first)."""
    message = aggregate_message(record)
    if message is None:
        return None
    return [message.explicit_hash_key_table[mr.explicit_hash_key_index]
            if mr.HasField("explicit_hash_key_index") else None for mr in message.records]


def main():
    args = argparse.ArgumentParser()
    args.add_argument("--broker", required=True)
    args.add_argument("--sidecar", required=True)
    args = args.parse_args()
    side, broker = client(args.sidecar), client(args.broker)

    # Control operations pass through the sidecar to the brokers.
    side.create_stream(StreamName=STREAM, ShardCount=SHARDS)
    deadline = time.time() + 60
    while broker.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        if time.time() > deadline:
            raise SystemExit("stream not ACTIVE in 60 s")
        time.sleep(0.1)

    answered = {}  # data -> (partition key, shard, sequence)
    for r in range(ROUNDS):
        entries = [{"PartitionKey": f"key-{i % 17}", "Data": f"round {r} record {i}".encode()} for i in range(PER_ROUND)]
        if r % 5 == 0:
            entries[0]["ExplicitHashKey"] = str(2**127 + r)
        out = side.put_records(StreamName=STREAM, Records=entries)
        check(f"put_records round {r} through the sidecar: every entry acknowledged", out["FailedRecordCount"] == 0, out)
        for entry, result in zip(entries, out["Records"]):
            answered[entry["Data"]] = (entry["PartitionKey"], result["ShardId"], result["SequenceNumber"])
    for i in range(20):
        data = f"single {i}".encode()
        out = side.put_record(StreamName=STREAM, PartitionKey=f"key-{i % 17}", Data=data)
        answered[data] = (f"key-{i % 17}", out["ShardId"], out["SequenceNumber"])

    shards = broker.list_shards(StreamName=STREAM)["Shards"]
    stored, found = [], {}
    for shard in shards:
        lo, hi = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
        it = broker.get_shard_iterator(StreamName=STREAM, ShardId=shard["ShardId"],
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        deadline = time.time() + READ_TIMEOUT
        while it and time.time() < deadline:
            page = broker.get_records(ShardIterator=it, Limit=1000)
            for record in page["Records"]:
                stored.append(record)
                ehks = explicit_hash_keys(record)
                subs = list(iter_deaggregate_records(record, data_format="Boto3"))
                for sub, ehk in zip(subs, ehks if ehks is not None else [None] * len(subs)):
                    k = sub["kinesis"]
                    data = base64.b64decode(k["data"]) if k.get("aggregated") else k["data"]
                    pk = k["partitionKey"]
                    # A plain record the broker routed itself; only an aggregate's sub-records
                    # can lie outside the shard (as consumers would drop them).
                    in_range = ehks is None or lo <= hash_key(pk, ehk) <= hi
                    found.setdefault(data, []).append((pk, shard["ShardId"], record["SequenceNumber"], in_range))
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
            it = page.get("NextShardIterator")

    aggregates = [r for r in stored if r["Data"][:4] == aws_kinesis_agg.MAGIC]
    check("records were aggregated", len(aggregates) > 0 and len(stored) < len(answered),
          f"{len(stored)} Kinesis records for {len(answered)} user records")
    # Byte for byte: aws-kinesis-agg rebuilds each stored aggregate from its user records.
    identical = 0
    for record in aggregates:
        message = aggregate_message(record)
        rebuilt = AggRecord()
        for mr, ehk in zip(message.records, explicit_hash_keys(record)):
            rebuilt.add_user_record(message.partition_key_table[mr.partition_key_index], mr.data, ehk)
        identical += rebuilt.get_contents()[2] == record["Data"]
    check("every aggregate is byte for byte what aws-kinesis-agg builds", identical == len(aggregates),
          f"{identical} of {len(aggregates)}")
    missing = [d for d in answered if d not in found]
    check("every acknowledged record de-aggregates from the stream", not missing, missing[:3])
    twice = [d for d, places in found.items() if len(places) > 1]
    check("each record is stored once", not twice, twice[:3])
    wrong = [d for d, (pk, shard, seq) in answered.items()
             if d in found and (pk, shard, seq, True) not in found[d]]
    check("each record is where its answer said, with its key, on a shard holding its hash key", not wrong, wrong[:3])
    print(f"{len(answered)} user records in {len(stored)} Kinesis records ({len(aggregates)} aggregates)")
    broker.delete_stream(StreamName=STREAM)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
