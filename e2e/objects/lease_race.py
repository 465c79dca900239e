"""Two brokers race for the same lease through a real S3-compatible store (MinIO), in phases:

  setup: create a 1-shard stream on broker A and wait until its description is in the bucket
         (so that broker B, started next on an empty data directory, restores it from there).
  race:  for each round, a fresh application: CreateLeases on A, then TakeLease of the same
         shard with ExpectedLeaseCounter 0 on A (worker-a) and on B (worker-b) at the same
         moment. Exactly one must win; the other must get LeaseConflictException; the lease in
         the bucket must name the winner with counter 1, and both brokers must list it so.

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

TARGET = "StreamfabricLeases_20261129."
SHARD = "shardId-000000000000"
checks = []


def check(name, ok, detail=""):
    checks.append((name, ok))
    if not ok:
        print(f"FAIL  {name}: {detail}")
    return ok


def call(endpoint, target, body):
    """POST one JSON 1.1 request; (status, parsed answer)."""
    req = urllib.request.Request(endpoint + "/", data=json.dumps(body).encode(), method="POST", headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def lease_op(endpoint, op, body):
    return call(endpoint, TARGET + op, body)


def s3(args):
    return boto3.client("s3", endpoint_url=args.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key)


def setup(args):
    status, answer = call(args.a, "Kinesis_20131202.CreateStream", {"StreamName": args.stream, "ShardCount": 1})
    check("CreateStream on broker A", status == 200, answer)
    bucket, key = s3(args), f"{args.prefix}/streams/{args.stream}/meta.json"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            meta = json.loads(bucket.get_object(Bucket=args.bucket, Key=key)["Body"].read())
            if meta["meta"]["status"] == "ACTIVE":
                break
        except bucket.exceptions.NoSuchKey:
            pass
        time.sleep(0.1)
    else:
        check("stream description mirrored to the bucket", False, f"{key} not ACTIVE after 30 s")


def race(args):
    bucket = s3(args)
    wins = {"worker-a": 0, "worker-b": 0}
    started = time.time()
    for n in range(args.rounds):
        app = f"race-{n}"
        status, answer = lease_op(args.a, "CreateLeases", {"ApplicationName": app, "StreamName": args.stream})
        if not check(f"round {n}: CreateLeases", status == 200 and answer.get("Created") == [SHARD], answer):
            continue
        barrier = threading.Barrier(2)
        results = {}

        def take(worker, endpoint):
            body = {"ApplicationName": app, "StreamName": args.stream, "ShardId": SHARD,
                    "WorkerId": worker, "ExpectedLeaseCounter": 0}
            barrier.wait()
            results[worker] = lease_op(endpoint, "TakeLease", body)

        threads = [threading.Thread(target=take, args=("worker-a", args.a)),
                   threading.Thread(target=take, args=("worker-b", args.b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [w for w, (status, _) in results.items() if status == 200]
        losers = [w for w, (status, answer) in results.items()
                  if status == 400 and answer.get("__type") == "LeaseConflictException"]
        if not check(f"round {n}: exactly one winner, the other a LeaseConflictException",
                     len(winners) == 1 and len(losers) == 1, results):
            continue
        winner = winners[0]
        wins[winner] += 1
        key = f"{args.prefix}/consumers/{app}/leases/{SHARD}.json"
        stored = json.loads(bucket.get_object(Bucket=args.bucket, Key=key)["Body"].read())
        check(f"round {n}: the bucket names the winner",
              stored.get("LeaseOwner") == winner and stored.get("LeaseCounter") == 1, stored)
        for name, endpoint in (("A", args.a), ("B", args.b)):
            status, answer = lease_op(endpoint, "ListLeases", {"ApplicationName": app, "StreamName": args.stream})
            owners = [lease.get("LeaseOwner") for lease in answer.get("Leases", [])]
            check(f"round {n}: broker {name} lists the winner", status == 200 and owners == [winner], answer)
    print(f"lease race: {args.rounds} rounds in {time.time() - started:.1f}s; wins {wins}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["setup", "race"])
    p.add_argument("--a", required=True, help="endpoint of broker A")
    p.add_argument("--b", help="endpoint of broker B")
    p.add_argument("--stream", default="lease-race")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--s3-endpoint", required=True)
    p.add_argument("--bucket", default="streamfabric")
    p.add_argument("--prefix", default="e2e-leases")
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    args = p.parse_args()
    if args.phase == "setup":
        setup(args)
    else:
        race(args)
    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
