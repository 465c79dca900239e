"""Durability `object` against a real S3-compatible store (MinIO), in two phases:

  write:  create a 4-shard stream; concurrent writers put records until the broker stops
          answering (it is SIGKILLed meanwhile) or --seconds pass; save what was acknowledged.
  verify: against a broker started on an EMPTY data directory with the same bucket: every
          acknowledged record reads back once, with its sequence number and data; new records
          are numbered above every old one.

Ends with `N passed, M failed`; exits non-zero on any failure.
"""
import argparse
import base64
import json
import sys
import threading
import time

import boto3
from botocore.config import Config

checks = []


def check(name, ok, detail=""):
    checks.append((name, ok))
    print(("ok    " if ok else "FAIL  ") + name + ("" if ok else f": {detail}"))


def kinesis(endpoint, attempts=3):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x",
                        config=Config(retries={"max_attempts": attempts}, connect_timeout=2, read_timeout=10))


def write(args):
    k = kinesis(args.endpoint)
    k.create_stream(StreamName=args.stream, ShardCount=4)
    for _ in range(200):
        if k.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    acked, lock, start = {}, threading.Lock(), time.time()

    def writer(w):
        client = kinesis(args.endpoint, attempts=1)
        n = 0
        while time.time() - start < args.seconds:
            entries = [{"PartitionKey": f"w{w}-{n}-{i}", "Data": f"w{w} {n:06d} {i:03d} ".encode() * 8}
                       for i in range(100)]
            try:
                out = client.put_records(StreamName=args.stream, Records=entries)
            except Exception as e:  # the broker was killed: stop, keeping what was acknowledged
                print(f"writer {w} stops after {n} batches: {type(e).__name__}")
                return
            with lock:
                for e, r in zip(entries, out["Records"]):
                    if "SequenceNumber" in r:
                        acked[r["SequenceNumber"]] = [r["ShardId"], base64.b64encode(e["Data"]).decode()]
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(args.writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"acknowledged {len(acked)} records in {time.time() - start:.1f}s")
    check("writers-acknowledged", len(acked) >= 1000, f"only {len(acked)}")
    with open(args.state, "w") as f:
        json.dump(acked, f)


def verify(args):
    k = kinesis(args.endpoint)
    acked = json.load(open(args.state))
    read, dupes = {}, 0
    for shard in k.list_shards(StreamName=args.stream)["Shards"]:
        sid = shard["ShardId"]
        it = k.get_shard_iterator(StreamName=args.stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        for _ in range(10_000):
            page = k.get_records(ShardIterator=it, Limit=10_000)
            for r in page["Records"]:
                dupes += r["SequenceNumber"] in read
                read[r["SequenceNumber"]] = [sid, base64.b64encode(r["Data"]).decode()]
            if not page["Records"] and page["MillisBehindLatest"] == 0:
                break
            it = page["NextShardIterator"]
    missing = [s for s, v in acked.items() if read.get(s) != v]
    print(f"read back {len(read)} records; {len(acked)} were acknowledged")
    check("every-acknowledged-record-reads-back-with-its-number-and-data", not missing,
          f"{len(missing)} of {len(acked)} missing or changed, e.g. {missing[:3]}")
    check("no-record-twice", dupes == 0, f"{dupes} duplicated")
    highest = {}
    for seq, (sid, _) in acked.items():
        highest[sid] = max(highest.get(sid, -1), int(seq))
    fresh_ok = True
    for i in range(40):
        put = k.put_record(StreamName=args.stream, PartitionKey=f"fresh-{i}", Data=b"fresh")
        fresh_ok &= int(put["SequenceNumber"]) > highest.get(put["ShardId"], -1)
    check("new-numbers-above-every-old-one", fresh_ok)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["write", "verify"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--stream", default="durable")
    p.add_argument("--state", required=True)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--writers", type=int, default=4)
    args = p.parse_args()
    {"write": write, "verify": verify}[args.phase](args)
    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
