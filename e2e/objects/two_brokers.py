"""What the two-broker race scenarios share: checks, JSON POSTs, the bucket, the setup wait,
the command line and the final tally."""
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


def call(endpoint, target, body):
    """One JSON 1.1 request to a broker's API."""
    return post(endpoint + "/", body, {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})


def kinesis(endpoint, op, body):
    return call(endpoint, f"Kinesis_20131202.{op}", body)


def s3(args):
    return boto3.client("s3", endpoint_url=args.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=args.access_key, aws_secret_access_key=args.secret_key)


def read_json(bucket, args, key):
    return json.loads(bucket.get_object(Bucket=args.bucket, Key=f"{args.prefix}/{key}")["Body"].read())


def create_and_mirror(args, shards):
    """CreateStream on broker A, then wait until its description is ACTIVE in the bucket (so
    that broker B, started next on an empty data directory, restores it from there)."""
    status, answer = kinesis(args.a, "CreateStream", {"StreamName": args.stream, "ShardCount": shards})
    check(f"CreateStream {args.stream} on broker A", status == 200, answer)
    bucket, deadline = s3(args), time.time() + 30
    while time.time() < deadline:
        try:
            if read_json(bucket, args, f"streams/{args.stream}/meta.json")["meta"]["status"] == "ACTIVE":
                return
        except bucket.exceptions.NoSuchKey:
            pass
        time.sleep(0.1)
    check("stream description mirrored to the bucket", False, f"{args.stream} not ACTIVE after 30 s")


def at_once(**calls):
    """Run the named zero-argument calls at the same moment; their results by name."""
    barrier, results = threading.Barrier(len(calls)), {}

    def run(name, fn):
        barrier.wait()
        results[name] = fn()

    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def arguments(stream, extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["setup", "race"])
    p.add_argument("--a", required=True, help="API endpoint of broker A")
    p.add_argument("--b", help="API endpoint of broker B")
    p.add_argument("--stream", default=stream)
    p.add_argument("--s3-endpoint", required=True)
    p.add_argument("--bucket", default="streamfabric")
    p.add_argument("--prefix", default="e2e-leases")
    p.add_argument("--access-key", required=True)
    p.add_argument("--secret-key", required=True)
    if extra:
        extra(p)
    return p.parse_args()


def finish():
    failed = sum(1 for _, ok in checks if not ok)
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
