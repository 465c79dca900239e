"""Two brokers race for the same shard manifests in a real S3-compatible store (MinIO), in phases:

  setup: create a stream of N shards on broker A and wait until its description is in the
         bucket (so that broker B, started next on an empty data directory, restores it and
         takes its shards).
  race:  for each shard, A and B both take it (POST /shards/take on their admin ports) from
         the epoch its manifest holds, at the same moment. Exactly one must win (200), the
         other must be refused (409); the manifest must name the winner at the next epoch;
         the winner must accept a write to the shard and the loser refuse it (InternalFailure).

Ends with `N passed, M failed`; exits non-zero on any failure.
"""
import argparse
import json
import sys
import threading
import time
import urllib.error
import urllib.request

import boto3

checks = []


def check(name, ok, detail=""):
    checks.append((name, ok))
    if not ok:
        print(f"FAIL  {name}: {detail}")
    return ok


def post(url, body, headers=None):
    """POST JSON; (status, parsed answer)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def kinesis(endpoint, op, body):
    return post(endpoint + "/", body, {"X-Amz-Target": f"Kinesis_20131202.{op}",
                                       "Content-Type": "application/x-amz-json-1.1"})


def s3(args):
    return boto3.client("s3", endpoint_url=args.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key)


def manifest(bucket, args, shard):
    key = f"{args.prefix}/streams/{args.stream}/shards/{shard}/manifest.json"
    return json.loads(bucket.get_object(Bucket=args.bucket, Key=key)["Body"].read())


def setup(args):
    status, answer = kinesis(args.a, "CreateStream", {"StreamName": args.stream, "ShardCount": args.shards})
    check("CreateStream on broker A", status == 200, answer)
    bucket, key = s3(args), f"{args.prefix}/streams/{args.stream}/meta.json"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if json.loads(bucket.get_object(Bucket=args.bucket, Key=key)["Body"].read())["meta"]["status"] == "ACTIVE":
                return
        except bucket.exceptions.NoSuchKey:
            pass
        time.sleep(0.1)
    check("stream description mirrored to the bucket", False, f"{key} not ACTIVE after 30 s")


def race(args):
    bucket = s3(args)
    status, listed = kinesis(args.a, "ListShards", {"StreamName": args.stream})
    if not check("ListShards on A", status == 200, listed):
        return
    wins = {"A": 0, "B": 0}
    for n, shard in enumerate(listed["Shards"]):
        sid = shard["ShardId"]
        before = manifest(bucket, args, sid)
        if n == 0:
            check("B took the restored shards at start", before.get("owner") is not None and before["epoch"] >= 1, before)
        barrier = threading.Barrier(2)
        results = {}

        def take(name, admin):
            barrier.wait()
            results[name] = post(admin + "/shards/take", {"stream": args.stream, "shard": sid,
                                                          "fromEpoch": before["epoch"]})

        threads = [threading.Thread(target=take, args=("A", args.a_admin)),
                   threading.Thread(target=take, args=("B", args.b_admin))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [name for name, (status, _) in results.items() if status == 200]
        losers = [name for name, (status, _) in results.items() if status == 409]
        if not check(f"{sid}: exactly one winner, the other refused", len(winners) == 1 and len(losers) == 1, results):
            continue
        winner, loser = winners[0], losers[0]
        wins[winner] += 1
        won = results[winner][1]
        after = manifest(bucket, args, sid)
        check(f"{sid}: the manifest names the winner at the next epoch",
              after.get("owner") == won["owner"] and after["epoch"] == before["epoch"] + 1 == won["epoch"],
              (after.get("owner"), after["epoch"], won))
        put = {"StreamName": args.stream, "PartitionKey": "k", "Data": "AAAA",
               "ExplicitHashKey": shard["HashKeyRange"]["StartingHashKey"]}
        endpoints = {"A": args.a, "B": args.b}
        status, answer = kinesis(endpoints[winner], "PutRecord", put)
        check(f"{sid}: the winner ({winner}) writes the shard", status == 200 and answer.get("ShardId") == sid, answer)
        status, answer = kinesis(endpoints[loser], "PutRecord", put)
        check(f"{sid}: the loser ({loser}) refuses to write it",
              status == 500 and "owned by another broker" in answer.get("message", ""), (status, answer))
    print(f"manifest race: {len(listed['Shards'])} shards; wins {wins}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["setup", "race"])
    p.add_argument("--a", required=True, help="Kinesis endpoint of broker A")
    p.add_argument("--b", help="Kinesis endpoint of broker B")
    p.add_argument("--a-admin", help="admin endpoint of broker A")
    p.add_argument("--b-admin", help="admin endpoint of broker B")
    p.add_argument("--stream", default="owner-race")
    p.add_argument("--shards", type=int, default=10)
    p.add_argument("--s3-endpoint", required=True)
    p.add_argument("--bucket", default="streamfabric")
    p.add_argument("--prefix", default="e2e-leases")
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    args = p.parse_args()
    setup(args) if args.phase == "setup" else race(args)
    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
