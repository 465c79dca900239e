#!/usr/bin/env python3
"""SigV4 as boto3 and the AWS CLI sign it, against a broker run with --credentials
holding ACCESS_KEY/SECRET_KEY (scripts/e2e-compat):

    python auth_scenario.py --endpoint http://127.0.0.1:4567

The right key works; a wrong secret, an unknown key, no signature, a body changed after
signing, and a request signed 6 minutes ago each get AWS's error; nothing they asked for is
stored (the broker's streams and records are fingerprinted before and after). A resource
policy set with boto3 (read back by the AWS CLI) denies another key's writes with
AccessDeniedException and nothing else, until it is deleted. Prints, last, "N passed, M failed".
"""

import argparse
import datetime
import hashlib
import json
import os
import subprocess
import sys
import uuid
from unittest import mock

import boto3
import botocore.auth
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from checks import check, summary

ACCESS_KEY = "AKIDSTREAMFABRICTEST"
SECRET_KEY = "streamfabric-test-secret"

def client(endpoint, key=ACCESS_KEY, secret=SECRET_KEY, **config):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}, **config))


def error_code(call):
    try:
        call()
        return None, ""
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["Error"].get("Message", "")


def fingerprint(k):
    """Every stream, shard and record the broker has, as one digest."""
    h = hashlib.sha256()
    for name in sorted(k.list_streams()["StreamNames"]):
        h.update(name.encode())
        for shard in k.list_shards(StreamName=name)["Shards"]:
            it = k.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for r in k.get_records(ShardIterator=it, Limit=10000)["Records"]:
                h.update(r["SequenceNumber"].encode() + r["Data"])
    return h.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    args = p.parse_args()
    k = client(args.endpoint)
    stream = f"auth-{uuid.uuid4().hex[:6]}"
    k.create_stream(StreamName=stream, ShardCount=1)
    k.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    k.put_record(StreamName=stream, PartitionKey="k", Data=b"kept")
    before = fingerprint(k)
    check("the right key is served", before is not None)

    intruder = f"intruder-{uuid.uuid4().hex[:6]}"
    cases = [
        ("a wrong secret", client(args.endpoint, secret="wrong"), "InvalidSignatureException", "does not match"),
        ("an unknown key", client(args.endpoint, key="AKIDNOBODY"), "UnrecognizedClientException", "invalid"),
        ("no signature", client(args.endpoint, signature_version=UNSIGNED),
         "MissingAuthenticationTokenException", "Missing Authentication Token"),
    ]
    for name, c, expected, message in cases:
        code, text = error_code(lambda: c.create_stream(StreamName=intruder, ShardCount=1))
        check(f"{name}: {expected}", code == expected and message in text, f"got {code}: {text}")
        code, _ = error_code(lambda: c.put_record(StreamName=stream, PartitionKey="k", Data=b"intruder"))
        check(f"{name}: the put is refused too", code == expected, f"got {code}")

    # The body changed after signing (a proxy rewriting it): the signature no longer holds.
    tampering = client(args.endpoint)

    def tamper(request, **_):
        request.body = request.body.replace(b"aW50cnVkZXI=", b"dGFtcGVyZWQ=")  # "intruder" -> "tampered"

    tampering.meta.events.register("before-send.kinesis.PutRecord", tamper)
    code, text = error_code(lambda: tampering.put_record(StreamName=stream, PartitionKey="k", Data=b"intruder"))
    check("a body changed after signing: InvalidSignatureException",
          code == "InvalidSignatureException", f"got {code}: {text}")

    # Signed 6 minutes ago (a replayed or delayed request): AWS allows 5.
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=6)
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=old):
        code, text = error_code(lambda: client(args.endpoint).create_stream(StreamName=intruder, ShardCount=1))
    check("signed 6 minutes ago: InvalidSignatureException, Signature expired",
          code == "InvalidSignatureException" and "Signature expired" in text, f"got {code}: {text}")

    # The AWS CLI with a wrong secret.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY="wrong", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/dev/null", AWS_MAX_ATTEMPTS="1")
    cli = subprocess.run(["aws", "kinesis", "create-stream", "--stream-name", intruder, "--shard-count", "1",
                          "--endpoint-url", args.endpoint], env=env, capture_output=True, text=True, timeout=60)
    check("the AWS CLI with a wrong secret: InvalidSignatureException",
          cli.returncode != 0 and "InvalidSignatureException" in cli.stderr, cli.stderr.strip()[-300:])
    env["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    cli = subprocess.run(["aws", "kinesis", "describe-stream-summary", "--stream-name", stream,
                          "--endpoint-url", args.endpoint], env=env, capture_output=True, text=True, timeout=60)
    check("the AWS CLI with the right key", cli.returncode == 0, cli.stderr.strip()[-300:])

    check("nothing refused was stored", fingerprint(k) == before)

    # A resource policy: another configured key may not write this stream, and may still read it.
    other = client(args.endpoint, key="testing", secret="testing")
    arn = k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    deny = {"Version": "2012-10-17", "Statement": [{"Sid": "noTesting", "Effect": "Deny",
            "Principal": {"AWS": ["testing"]}, "Action": "kinesis:PutRecord*", "Resource": arn}]}
    k.put_resource_policy(ResourceARN=arn, Policy=json.dumps(deny))
    code, text = error_code(lambda: other.put_record(StreamName=stream, PartitionKey="k", Data=b"denied"))
    check("a resource policy's Deny: AccessDeniedException naming the action and the stream",
          code == "AccessDeniedException" and f"kinesis:PutRecord on resource: {arn}" in text, f"got {code}: {text}")
    code, text = error_code(lambda: other.describe_stream_summary(StreamName=stream))
    check("what the policy does not deny is served", code is None, f"got {code}: {text}")
    cli = subprocess.run(["aws", "kinesis", "get-resource-policy", "--resource-arn", arn,
                          "--endpoint-url", args.endpoint], env=env, capture_output=True, text=True, timeout=60)
    shown = json.loads(cli.stdout)["Policy"] if cli.returncode == 0 else cli.stderr
    check("the AWS CLI reads the policy back", shown == json.dumps(deny), shown[-300:])
    check("the denied put stored nothing", fingerprint(k) == before)
    k.delete_resource_policy(ResourceARN=arn)
    code, text = error_code(lambda: other.put_record(StreamName=stream, PartitionKey="k", Data=b"allowed"))
    check("the deleted policy denies no more", code is None, f"got {code}: {text}")
    k.delete_stream(StreamName=stream)
    return summary()


if __name__ == "__main__":
    sys.exit(main())
