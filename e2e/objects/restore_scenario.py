"""Disk-loss recovery and a store outage against a real S3-compatible store (MinIO), in phases:

  write:  create a 4-shard stream, put N records, read every shard back, save what was read.
  verify: against a broker started on an EMPTY data directory with the same bucket:
          every shard reads back as a prefix of what was saved (same sequence numbers and data),
          missing at most the unsealed tail; the bucket holds the sealed segments and
          manifests; new records are numbered after every old one.
  outage: MinIO stopped for a while under load (driven by scripts/e2e-objects).
  remote-reads: against a broker with a small local retention: put N records, wait until
          uploaded segments are evicted from local disk, read every shard back (every record,
          once, in order, from the bucket with ranged GETs and then the local log), twice:
          cold cache, then warm; prints the drain rates and checks the cache metrics.

Ends with `N passed, M failed`; exits non-zero on any failure.
"""
import argparse
import base64
import json
import sys
import time

import boto3

checks = []


def check(name, ok, detail=""):
    checks.append((name, ok))
    print(("ok    " if ok else "FAIL  ") + name + ("" if ok else f": {detail}"))


def kinesis(endpoint):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def read_all(k, stream):
    shards = {}
    for shard in k.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        it = k.get_shard_iterator(StreamName=stream, ShardId=sid, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records = []
        for _ in range(10_000):
            page = k.get_records(ShardIterator=it, Limit=10_000)
            # Lists, not tuples, so that they compare equal to what json.load gives back.
            records += [[r["SequenceNumber"], base64.b64encode(r["Data"]).decode()] for r in page["Records"]]
            if not page["Records"] and page["MillisBehindLatest"] == 0:
                break
            it = page["NextShardIterator"]
        shards[sid] = records
    return shards


def write(args):
    k = kinesis(args.endpoint)
    k.create_stream(StreamName=args.stream, ShardCount=4)
    for _ in range(200):
        if k.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    for batch in range(args.records // 500):
        entries = [{"PartitionKey": f"key-{batch}-{i}", "Data": f"record {batch:05d}-{i:03d} ".encode() * 4}
                   for i in range(500)]
        out = k.put_records(StreamName=args.stream, Records=entries)
        if out["FailedRecordCount"]:
            sys.exit(f"put_records failed for {out['FailedRecordCount']} records")
    shards = read_all(k, args.stream)
    total = sum(len(r) for r in shards.values())
    check("wrote-and-read-back", total == args.records, f"{total} of {args.records}")
    with open(args.state, "w") as f:
        json.dump(shards, f)


def verify(args):
    k = kinesis(args.endpoint)
    before = json.load(open(args.state))
    after = read_all(k, args.stream)
    check("same-shards", sorted(after) == sorted(before), f"{sorted(after)} vs {sorted(before)}")
    restored = 0
    for sid, old in before.items():
        new = after.get(sid, [])
        restored += len(new)
        check(f"{sid}-prefix-with-same-numbers-and-data", new == old[:len(new)], f"{len(new)} records differ")
        check(f"{sid}-at-most-the-unsealed-tail-missing", len(old) - len(new) <= args.max_unsealed,
              f"{len(old) - len(new)} missing")
    print(f"restored {restored} of {sum(len(v) for v in before.values())} records")
    s3 = boto3.client("s3", endpoint_url=args.s3_endpoint, region_name="us-east-1",
                      aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket)
            for o in page.get("Contents", [])]
    segments = [key for key in keys if key.endswith(".seg")]
    manifests = [key for key in keys if key.endswith("manifest.json")]
    check("bucket-holds-segments-and-manifests", len(segments) >= 4 and len(manifests) == 4,
          f"{len(segments)} segments, {len(manifests)} manifests")
    check("bucket-holds-the-stream-description", any(key.endswith(f"{args.stream}/meta.json") for key in keys))
    highest = {sid: max(int(s) for s, _ in old) for sid, old in before.items() if old}
    fresh_ok = True
    for i in range(40):
        put = k.put_record(StreamName=args.stream, PartitionKey=f"fresh-{i}", Data=b"fresh")
        fresh_ok &= int(put["SequenceNumber"]) > highest.get(put["ShardId"], -1)
    check("new-numbers-after-every-old-one", fresh_ok)


def metric(admin, name):
    import urllib.request
    text = urllib.request.urlopen(f"{admin}/metrics", timeout=5).read().decode()
    return next(int(float(line.split()[1])) for line in text.splitlines() if line.startswith(name + " "))


def backlog_bytes(admin):
    return metric(admin, "streamfabric_upload_backlog_bytes")


def remote_reads(args):
    import os
    k = kinesis(args.endpoint)
    k.create_stream(StreamName=args.stream, ShardCount=2)
    for _ in range(200):
        if k.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    acked = {}
    for batch in range(args.records // 500):
        entries = [{"PartitionKey": f"t-{batch}-{i}", "Data": (f"tiered {batch:05d}-{i:03d} ".encode() * 40)[:512]}
                   for i in range(500)]
        out = k.put_records(StreamName=args.stream, Records=entries)
        if out["FailedRecordCount"]:
            sys.exit(f"put_records failed for {out['FailedRecordCount']} records")
        for e, r in zip(entries, out["Records"]):
            acked.setdefault(r["ShardId"], []).append([r["SequenceNumber"], base64.b64encode(e["Data"]).decode()])
    # Uploaded, then evicted from local disk by the passes of local retention (polled, with a
    # generous deadline: a loaded machine runs them late).
    shards_dir = os.path.join(args.data_dir, "streams", args.stream, "shards")

    def local_files():
        return {sid: len([f for f in os.listdir(os.path.join(shards_dir, sid)) if f.endswith(".log")]) for sid in acked}

    for _ in range(300):
        if metric(args.admin, "streamfabric_segments_evicted_total") >= 10 and backlog_bytes(args.admin) == 0 \
                and all(n <= 5 for n in local_files().values()):
            break
        time.sleep(0.2)
    evicted = metric(args.admin, "streamfabric_segments_evicted_total")
    check("uploaded-segments-evicted-from-local-disk", evicted >= 10, f"{evicted} evicted")
    local = local_files()
    written = {sid: len(r) * 512 for sid, r in acked.items()}
    check("local-disk-keeps-only-the-newest-segments", all(n <= 5 for n in local.values()),
          f"local segment files per shard: {local}")
    total_bytes = sum(written.values())
    rates = []
    for attempt in ("cold", "warm"):
        before = {m: metric(args.admin, f"streamfabric_{m}") for m in
                  ("remote_cache_hits_total", "remote_cache_misses_total", "remote_fetch_bytes_total",
                   "remote_records_total")}
        t = time.time()
        got = read_all(k, args.stream)
        took = time.time() - t
        delta = {m: metric(args.admin, f"streamfabric_{m}") - v for m, v in before.items()}
        ok = all(got.get(sid) == records for sid, records in acked.items())
        check(f"{attempt}-cache-every-record-once-in-order", ok,
              ", ".join(f"{sid}: {len(got.get(sid, []))} of {len(r)}" for sid, r in acked.items()))
        remote = delta["remote_records_total"]
        check(f"{attempt}-cache-read-from-the-bucket", remote >= len(acked) * 1000, f"{remote} records remote")
        rates.append(total_bytes / took / 1e6)
        print(f"{attempt} cache: {sum(len(r) for r in got.values())} records ({total_bytes / 1e6:.1f} MB of data, "
              f"{remote} from the bucket) in {took:.2f}s = {total_bytes / took / 1e6:.1f} MB/s; "
              f"cache hits {delta['remote_cache_hits_total']}, misses {delta['remote_cache_misses_total']}, "
              f"fetched {delta['remote_fetch_bytes_total'] / 1e6:.1f} MB")
        if attempt == "cold":
            check("cold-cache-misses-and-fetches", delta["remote_cache_misses_total"] > 0
                  and delta["remote_fetch_bytes_total"] > 0, str(delta))
        else:
            check("warm-cache-hits", delta["remote_cache_hits_total"] > 0, str(delta))


def outage(args):
    from botocore.config import Config
    from botocore.exceptions import ClientError
    k = boto3.client("kinesis", endpoint_url=args.endpoint, region_name="us-east-1",
                     aws_access_key_id="x", aws_secret_access_key="x",
                     config=Config(retries={"max_attempts": 1}))
    k.create_stream(StreamName=args.stream, ShardCount=2)
    for _ in range(200):
        if k.describe_stream_summary(StreamName=args.stream)["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
            break
        time.sleep(0.05)
    acked, refused, timeline = {}, 0, []
    start = time.time()
    n = 0
    # Past --seconds only while the last write was refused (the backlog still draining on a
    # loaded machine), for at most 30 s more: the check is that writes resume, not how fast.
    while (time.time() - start < args.seconds
           or (timeline and timeline[-1][1] == "refused" and time.time() - start < args.seconds + 30)):
        entries = [{"PartitionKey": f"o-{n}-{i}", "Data": (f"{n:08d}-{i:03d}".encode() * 100)[:1024]} for i in range(200)]
        try:
            out = k.put_records(StreamName=args.stream, Records=entries)
            for e, r in zip(entries, out["Records"]):
                if "SequenceNumber" in r:
                    acked[r["SequenceNumber"]] = base64.b64encode(e["Data"]).decode()
            timeline.append((time.time() - start, "ok"))
        except ClientError as e:
            if e.response["Error"]["Code"] != "ServiceUnavailable":
                raise
            refused += 1
            timeline.append((time.time() - start, "refused"))
            time.sleep(0.2)
        n += 1
    last_refusal = max((t for t, what in timeline if what == "refused"), default=None)
    print(f"acknowledged {len(acked)} records; {refused} requests refused, the last at {last_refusal}")
    check("writes-refused-while-the-store-was-down", refused > 0, "no write was refused")
    check("writes-resume-after-the-store-returns",
          last_refusal is not None and any(t > last_refusal and what == "ok" for t, what in timeline))
    for _ in range(120):
        if backlog_bytes(args.admin) == 0:
            break
        time.sleep(0.5)
    check("upload-backlog-drains", backlog_bytes(args.admin) == 0, f"{backlog_bytes(args.admin)} bytes left")
    read = {}
    dupes = 0
    for records in read_all(k, args.stream).values():
        for seq, data in records:
            dupes += seq in read
            read[seq] = data
    missing = [s for s in acked if read.get(s) != acked[s]]
    check("every-acknowledged-record-reads-back-once", not missing and not dupes,
          f"{len(missing)} missing or changed, {dupes} duplicated")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["write", "verify", "outage", "remote-reads"])
    p.add_argument("--data-dir")
    p.add_argument("--admin")
    p.add_argument("--seconds", type=float, default=35)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--stream", default="restored")
    p.add_argument("--state")
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--max-unsealed", type=int, default=5_000)
    p.add_argument("--s3-endpoint")
    p.add_argument("--bucket")
    p.add_argument("--access-key")
    p.add_argument("--secret-key")
    args = p.parse_args()
    {"write": write, "verify": verify, "outage": outage, "remote-reads": remote_reads}[args.phase](args)
    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
