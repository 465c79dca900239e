#!/usr/bin/env python3
"""Kinesis Data Streams compatibility scenario, driven through boto3.

    python boto3_scenario.py --endpoint http://127.0.0.1:4567 [--seed N]

Checks the server against AWS's documented behaviour (not any emulator's):
stream lifecycle, routing by MD5 of the partition key, exactly-once ordered
reads of 10,000 records, every shard iterator type, paging, tags, retention
and error codes. Each check prints its name; the last line is
"N passed, M failed" and the exit status is non-zero on any failure.
"""

import argparse
import base64
import datetime
import hashlib
import itertools
import json
import random
import sys
import time
import traceback
import urllib.error
import urllib.request
import uuid

import boto3
import botocore.auth
import botocore.awsrequest
import botocore.credentials
from botocore.config import Config
from botocore.exceptions import ClientError

REGION = "us-east-1"
ACCESS_KEY = "AKIDSTREAMFABRICTEST"
SECRET_KEY = "streamfabric-test-secret"
MAX_HASH_KEY = 2**128 - 1

SHARDS = 4
TOTAL_RECORDS = 10_000
BATCH_MAX = 500  # PutRecords limit per request
GET_LIMIT = 1000

# Every wait and read loop is bounded by one of these.
ACTIVE_TIMEOUT = 60.0
DELETE_TIMEOUT = 60.0
READ_TIMEOUT = 120.0
NEW_RECORD_TIMEOUT = 15.0


class CheckFailed(Exception):
    pass


class Abort(Exception):
    """A required step failed; the checks after it cannot run meaningfully."""


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def expect_client_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ClientError as e:
        got = e.response.get("Error", {}).get("Code")
        expect(got == code, f"expected {code}, got {got}: {e}")
        return e
    raise CheckFailed(f"expected {code}, but the call succeeded")


def md5_hash_key(partition_key):
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def shard_for_hash(shards, hash_key):
    for s in shards:
        r = s["HashKeyRange"]
        if int(r["StartingHashKey"]) <= hash_key <= int(r["EndingHashKey"]):
            return s["ShardId"]
    return None


# --------------------------------------------------------------------------
# Check registry: run checks in order, record the outcome, print failures.
# --------------------------------------------------------------------------


class Suite:
    def __init__(self):
        self.passed = []
        self.failed = []

    def run(self, name, fn, *args, required=False):
        t0 = time.monotonic()
        try:
            fn(*args)
        except CheckFailed as e:
            self._fail(name, str(e))
        except ClientError as e:
            self._fail(name, f"unexpected {e.response.get('Error', {}).get('Code')}: {e}")
        except Exception as e:  # a bug in the server's answer shape, or in this script
            self._fail(name, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        else:
            self.passed.append(name)
            print(f"ok    {name} ({time.monotonic() - t0:.2f}s)", flush=True)
            return
        if required:
            raise Abort(name)

    def _fail(self, name, message):
        self.failed.append(name)
        print(f"FAIL  {name}: {message}", flush=True)


# --------------------------------------------------------------------------
# Scenario state and helpers
# --------------------------------------------------------------------------


def kinesis_client(endpoint, max_attempts):
    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(
            connect_timeout=5,
            read_timeout=30,
            retries={"mode": "standard", "max_attempts": max_attempts},
        ),
    )


class Scenario:
    def __init__(self, endpoint, seed):
        self.endpoint = endpoint.rstrip("/")
        self.rng = random.Random(seed)
        # Standard mode retries throttling (ProvisionedThroughputExceeded).
        self.kinesis = kinesis_client(self.endpoint, max_attempts=8)
        run_id = f"{int(time.time())}-{uuid.uuid4().hex[:8]}"
        self.prefix = f"sf-compat-{run_id}"
        self.stream = f"{self.prefix}-main"
        self.page_streams = [f"{self.prefix}-page-{c}" for c in "abc"]
        self.created = []  # everything to delete at the end, even after a failure
        self.shards = []  # list_shards output for the main stream
        # (shard id, sequence number) -> (partition key, data, routing hash key)
        self.acked = {}
        self.read = {}  # shard id -> records from TRIM_HORIZON, in order
        self.get_records_max_page = 0

    # ---- helpers ----

    def create_stream(self, name, shards):
        self.kinesis.create_stream(StreamName=name, ShardCount=shards)
        self.created.append(name)

    def wait_active(self, name):
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        status = None
        while time.monotonic() < deadline:
            desc = self.kinesis.describe_stream_summary(StreamName=name)
            status = desc["StreamDescriptionSummary"]["StreamStatus"]
            if status == "ACTIVE":
                return desc["StreamDescriptionSummary"]
            time.sleep(0.1)
        raise CheckFailed(f"{name} not ACTIVE after {ACTIVE_TIMEOUT}s (last status {status})")

    def list_all_shards(self, name, max_results=1000):
        """ListShards, following NextToken (StreamName must be omitted then)."""
        shards, pages = [], []
        resp = self.kinesis.list_shards(StreamName=name, MaxResults=max_results)
        for _ in range(10_000):
            pages.append(len(resp["Shards"]))
            shards.extend(resp["Shards"])
            token = resp.get("NextToken")
            if not token:
                return shards, pages
            resp = self.kinesis.list_shards(NextToken=token, MaxResults=max_results)
        raise CheckFailed("ListShards paging did not end after 10,000 pages")

    def random_key(self):
        roll = self.rng.random()
        if roll < 0.02:  # non-ASCII keys: AWS hashes their UTF-8 bytes
            return "ключ-é-🚀-" + str(self.rng.randrange(10**6))
        length = self.rng.choice([1, 4, 8, 16, 36, 64, 128, 256]) if roll < 0.1 else 16
        alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
        return "".join(self.rng.choice(alphabet) for _ in range(length))

    def random_data(self):
        roll = self.rng.random()
        if roll < 0.70:
            size = self.rng.randint(1, 256)
        elif roll < 0.95:
            size = self.rng.randint(257, 2048)
        else:
            size = self.rng.randint(2049, 4096)
        return self.rng.randbytes(size)

    def put_record(self, key, data, **extra):
        resp = self.kinesis.put_record(StreamName=self.stream, PartitionKey=key, Data=data, **extra)
        hash_key = int(extra["ExplicitHashKey"]) if "ExplicitHashKey" in extra else md5_hash_key(key)
        self.acked[(resp["ShardId"], resp["SequenceNumber"])] = (key, data, hash_key)
        return resp

    def put_batch(self, entries):
        """PutRecords, resending only the entries that failed (bounded)."""
        pending = entries
        for attempt in range(20):
            resp = self.kinesis.put_records(
                StreamName=self.stream,
                Records=[{"PartitionKey": k, "Data": d} for k, d in pending],
            )
            results = resp["Records"]
            expect(
                len(results) == len(pending),
                f"PutRecords returned {len(results)} results for {len(pending)} records",
            )
            failed_entries = []
            for (key, data), result in zip(pending, results):
                if "ErrorCode" in result:
                    failed_entries.append((key, data))
                else:
                    ident = (result["ShardId"], result["SequenceNumber"])
                    expect(ident not in self.acked, f"sequence number acknowledged twice: {ident}")
                    self.acked[ident] = (key, data, md5_hash_key(key))
            expect(
                resp.get("FailedRecordCount", 0) == len(failed_entries),
                f"FailedRecordCount {resp.get('FailedRecordCount')} but {len(failed_entries)} entries have ErrorCode",
            )
            if not failed_entries:
                return
            pending = failed_entries
            time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off
        raise CheckFailed(f"{len(pending)} PutRecords entries still failing after 20 attempts")

    def read_shard(self, iterator, stop_after=None, timeout=READ_TIMEOUT):
        """GetRecords until caught up (no records and MillisBehindLatest == 0),
        or until stop_after records arrived. Returns (records, next iterator)."""
        records = []
        deadline = time.monotonic() + timeout
        while iterator and time.monotonic() < deadline:
            resp = self.kinesis.get_records(ShardIterator=iterator, Limit=GET_LIMIT)
            page = resp["Records"]
            self.get_records_max_page = max(self.get_records_max_page, len(page))
            records.extend(page)
            iterator = resp.get("NextShardIterator")
            if stop_after is not None and len(records) >= stop_after:
                break
            if not page and resp.get("MillisBehindLatest") == 0:
                if stop_after is None:
                    break
                time.sleep(0.2)  # waiting for a record still to come
        else:
            if iterator:
                raise CheckFailed(f"shard read did not finish within {timeout}s ({len(records)} records)")
        return records, iterator

    def iterator(self, shard_id, kind, **extra):
        return self.kinesis.get_shard_iterator(
            StreamName=self.stream, ShardId=shard_id, ShardIteratorType=kind, **extra
        )["ShardIterator"]

    def shard_with_explicit_key(self, index):
        """An ExplicitHashKey inside shard `index`'s range, and the shard's id."""
        r = self.shards[index]["HashKeyRange"]
        lo, hi = int(r["StartingHashKey"]), int(r["EndingHashKey"])
        return str((lo + hi) // 2), self.shards[index]["ShardId"]

    def raw_call(self, operation, body):
        """A SigV4-signed JSON 1.1 request, bypassing boto3's parsing, to see
        the status code and body exactly as the server sends them."""
        request = botocore.awsrequest.AWSRequest(
            method="POST",
            url=self.endpoint + "/",
            data=json.dumps(body).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": f"Kinesis_20131202.{operation}",
            },
        )
        credentials = botocore.credentials.Credentials(ACCESS_KEY, SECRET_KEY)
        botocore.auth.SigV4Auth(credentials, "kinesis", REGION).add_auth(request)
        prepared = request.prepare()
        http_request = urllib.request.Request(
            prepared.url, data=prepared.body, headers=dict(prepared.headers), method="POST"
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(http_request, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    # ---- stream setup ----

    def check_create_stream(self):
        self.create_stream(self.stream, SHARDS)
        summary = self.wait_active(self.stream)
        expect(summary["OpenShardCount"] == SHARDS, f"OpenShardCount {summary['OpenShardCount']}")

    def check_describe_stream_summary(self):
        s = self.kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]
        expect(s["StreamName"] == self.stream, f"StreamName {s['StreamName']}")
        expect(s["StreamStatus"] == "ACTIVE", f"StreamStatus {s['StreamStatus']}")
        expect(s["RetentionPeriodHours"] == 24, f"RetentionPeriodHours {s['RetentionPeriodHours']}")
        expect(s["StreamARN"].endswith(f":stream/{self.stream}"), f"StreamARN {s['StreamARN']}")
        expect(isinstance(s["StreamCreationTimestamp"], datetime.datetime), "StreamCreationTimestamp missing")

    def check_list_shards(self):
        self.shards, _ = self.list_all_shards(self.stream)
        expect(len(self.shards) == SHARDS, f"{len(self.shards)} shards")
        ids = [s["ShardId"] for s in self.shards]
        expect(len(set(ids)) == SHARDS, f"duplicate shard ids {ids}")
        for s in self.shards:
            expect(
                "StartingSequenceNumber" in s["SequenceNumberRange"],
                f"{s['ShardId']} lacks StartingSequenceNumber",
            )
            expect(
                "EndingSequenceNumber" not in s["SequenceNumberRange"],
                f"open {s['ShardId']} has EndingSequenceNumber",
            )

    def check_hash_ranges_cover_keyspace(self):
        ranges = sorted(
            (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
            for s in self.shards
        )
        expect(ranges[0][0] == 0, f"first range starts at {ranges[0][0]}")
        expect(ranges[-1][1] == MAX_HASH_KEY, f"last range ends at {ranges[-1][1]}")
        for (_, end), (start, _) in itertools.pairwise(ranges):
            expect(start == end + 1, f"gap or overlap between {end} and {start}")

    def check_list_shards_paging(self):
        shards, pages = self.list_all_shards(self.stream, max_results=1)
        expect(pages == [1] * SHARDS, f"page sizes {pages} with MaxResults=1, expected {[1] * SHARDS}")
        expect(
            [s["ShardId"] for s in shards] == [s["ShardId"] for s in self.shards], "paged shard ids differ"
        )

    # ---- writes ----

    def check_put_records(self):
        # All but the 5 records that check_put_record writes one by one.
        remaining = TOTAL_RECORDS - 5
        while remaining:
            # Mostly full batches, some partial ones.
            size = min(remaining, BATCH_MAX if self.rng.random() < 0.7 else self.rng.randint(1, BATCH_MAX))
            self.put_batch([(self.random_key(), self.random_data()) for _ in range(size)])
            remaining -= size
        expect(len(self.acked) == TOTAL_RECORDS - 5, f"{len(self.acked)} records acknowledged")

    def check_put_record(self):
        for _ in range(2):
            self.put_record(self.random_key(), self.random_data())
        # ExplicitHashKey overrides the MD5 of the partition key.
        explicit, shard_id = self.shard_with_explicit_key(2)
        resp = self.put_record("explicit-" + self.random_key(), self.random_data(), ExplicitHashKey=explicit)
        expect(
            resp["ShardId"] == shard_id, f"ExplicitHashKey record on {resp['ShardId']}, expected {shard_id}"
        )

    def check_sequence_number_for_ordering(self):
        key = self.random_key()
        first = self.put_record(key, self.random_data())
        second = self.put_record(key, self.random_data(), SequenceNumberForOrdering=first["SequenceNumber"])
        expect(second["ShardId"] == first["ShardId"], "same partition key landed on two shards")
        expect(
            int(second["SequenceNumber"]) > int(first["SequenceNumber"]),
            f"{second['SequenceNumber']} not greater than {first['SequenceNumber']}",
        )

    def check_all_acknowledged(self):
        expect(
            len(self.acked) == TOTAL_RECORDS,
            f"{len(self.acked)} distinct records acknowledged, expected {TOTAL_RECORDS}",
        )

    def check_routing_by_md5(self):
        wrong = [
            (shard, key, shard_for_hash(self.shards, hash_key))
            for (shard, _), (key, _, hash_key) in self.acked.items()
            if shard_for_hash(self.shards, hash_key) != shard
        ]
        expect(
            not wrong, f"{len(wrong)} records on the wrong shard, e.g. (put on, key, expected) {wrong[:3]}"
        )

    # ---- reads ----

    def read_all_shards(self):
        for s in self.shards:
            records, _ = self.read_shard(self.iterator(s["ShardId"], "TRIM_HORIZON"))
            self.read[s["ShardId"]] = records

    def check_read_exactly_once(self):
        seen = {}
        for shard_id, records in self.read.items():
            for r in records:
                ident = (shard_id, r["SequenceNumber"])
                seen[ident] = seen.get(ident, 0) + 1
        missing = [i for i in self.acked if i not in seen]
        duplicated = [i for i, n in seen.items() if n > 1]
        unknown = [i for i in seen if i not in self.acked]
        expect(not missing, f"{len(missing)} acknowledged records not read back, e.g. {missing[:3]}")
        expect(not duplicated, f"{len(duplicated)} records read more than once, e.g. {duplicated[:3]}")
        expect(not unknown, f"{len(unknown)} records read that were never acknowledged, e.g. {unknown[:3]}")

    def check_read_order(self):
        for shard_id, records in self.read.items():
            seqs = [int(r["SequenceNumber"]) for r in records]
            bad = [i for i in range(1, len(seqs)) if seqs[i] <= seqs[i - 1]]
            expect(not bad, f"{shard_id}: sequence numbers not strictly increasing at positions {bad[:5]}")

    def check_read_content(self):
        bad = []
        for shard_id, records in self.read.items():
            for r in records:
                want = self.acked.get((shard_id, r["SequenceNumber"]))
                if want and (r["PartitionKey"], r["Data"]) != want[:2]:
                    bad.append((shard_id, r["SequenceNumber"]))
        expect(not bad, f"{len(bad)} records with wrong partition key or data, e.g. {bad[:3]}")

    def check_read_metadata(self):
        for records in self.read.values():
            for r in records:
                expect(
                    isinstance(r.get("ApproximateArrivalTimestamp"), datetime.datetime),
                    "record lacks ApproximateArrivalTimestamp",
                )
        expect(
            0 < self.get_records_max_page <= GET_LIMIT,
            f"a GetRecords page held {self.get_records_max_page} records with Limit={GET_LIMIT}",
        )

    # ---- shard iterator types ----

    def busiest_shard(self):
        return max(self.read, key=lambda s: len(self.read[s]))

    def check_at_sequence_number(self):
        shard_id = self.busiest_shard()
        target = self.read[shard_id][len(self.read[shard_id]) // 2]
        records, _ = self.read_shard(
            self.iterator(shard_id, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=target["SequenceNumber"]),
            stop_after=1,
        )
        expect(records, "no records returned")
        expect(
            records[0]["SequenceNumber"] == target["SequenceNumber"],
            f"started at {records[0]['SequenceNumber']}, expected {target['SequenceNumber']}",
        )

    def check_after_sequence_number(self):
        shard_id = self.busiest_shard()
        middle = len(self.read[shard_id]) // 2
        target, following = self.read[shard_id][middle], self.read[shard_id][middle + 1]
        records, _ = self.read_shard(
            self.iterator(shard_id, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=target["SequenceNumber"]),
            stop_after=1,
        )
        expect(records, "no records returned")
        expect(
            records[0]["SequenceNumber"] == following["SequenceNumber"],
            f"started at {records[0]['SequenceNumber']}, expected {following['SequenceNumber']}",
        )

    def check_latest(self):
        explicit, shard_id = self.shard_with_explicit_key(1)
        before, iterator = self.read_shard(self.iterator(shard_id, "LATEST"))
        expect(not before, f"LATEST returned {len(before)} old records")
        put = self.put_record(self.random_key(), b"after-latest", ExplicitHashKey=explicit)
        records, iterator = self.read_shard(iterator, stop_after=1, timeout=NEW_RECORD_TIMEOUT)
        more, _ = self.read_shard(iterator)
        got = [r["SequenceNumber"] for r in records + more]
        expect(got == [put["SequenceNumber"]], f"got {got}, expected only {put['SequenceNumber']}")
        expect(records[0]["Data"] == b"after-latest", "wrong data")

    def check_at_timestamp(self):
        explicit, shard_id = self.shard_with_explicit_key(3)
        self.put_record(self.random_key(), b"before-timestamp", ExplicitHashKey=explicit)
        time.sleep(1.1)
        timestamp = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(1.1)
        after = self.put_record(self.random_key(), b"after-timestamp", ExplicitHashKey=explicit)
        records, _ = self.read_shard(
            self.iterator(shard_id, "AT_TIMESTAMP", Timestamp=timestamp),
            stop_after=1,
            timeout=NEW_RECORD_TIMEOUT,
        )
        expect(records, "no records returned")
        expect(
            records[0]["SequenceNumber"] == after["SequenceNumber"],
            f"started at {records[0]['SequenceNumber']} ({records[0]['Data'][:20]!r}), expected {after['SequenceNumber']}",
        )

    def check_subscribe_to_shard(self):
        """Enhanced fan-out as boto3 does it (HTTP/1.1, chunked event stream): live records
        pushed in order, a duplicate subscription refused, the consumer deregistered."""
        stream_arn = self.kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]["StreamARN"]
        consumer = self.kinesis.register_stream_consumer(StreamARN=stream_arn, ConsumerName="compat-efo")["Consumer"]
        arn = consumer["ConsumerARN"]
        deadline = time.monotonic() + ACTIVE_TIMEOUT
        while self.kinesis.describe_stream_consumer(ConsumerARN=arn)["ConsumerDescription"]["ConsumerStatus"] != "ACTIVE":
            expect(time.monotonic() < deadline, "the consumer never turned ACTIVE")
            time.sleep(0.05)
        explicit, shard_id = self.shard_with_explicit_key(2)
        events = self.kinesis.subscribe_to_shard(
            ConsumerARN=arn, ShardId=shard_id, StartingPosition={"Type": "LATEST"}
        )["EventStream"]
        try:
            expect_client_error(
                "ResourceInUseException",
                self.kinesis.subscribe_to_shard,
                ConsumerARN=arn,
                ShardId=shard_id,
                StartingPosition={"Type": "LATEST"},
            )
            sent, latencies, received = {}, [], []
            count = 20
            iterator = iter(events)
            first = next(iterator)  # the first event: the subscription is in place
            expect("SubscribeToShardEvent" in first, f"unexpected first event {first}")
            received.extend(r["Data"] for r in first["SubscribeToShardEvent"]["Records"])
            deadline = time.monotonic() + NEW_RECORD_TIMEOUT
            for i in range(count):
                data = f"efo-{i}".encode()
                sent[data] = time.monotonic()
                self.put_record(self.random_key(), data, ExplicitHashKey=explicit)
                while data not in received:  # one at a time: the latency of each push
                    expect(time.monotonic() < deadline, f"{len(received)} of {count} records pushed")
                    event = next(iterator)["SubscribeToShardEvent"]
                    for r in event["Records"]:
                        received.append(r["Data"])
                        latencies.append(time.monotonic() - sent[r["Data"]])
                    expect(event["ContinuationSequenceNumber"], "a continuation in every event")
            expect(received == [f"efo-{i}".encode() for i in range(count)], f"pushed in order: {received}")
            latencies.sort()
            print(f"      boto3 SubscribeToShard: {count} records, latency from put start to event "
                  f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
        finally:
            events.close()
            self.kinesis.deregister_stream_consumer(ConsumerARN=arn)

    # ---- paging ----

    def create_page_streams(self):
        for name in self.page_streams:
            self.create_stream(name, 1)
        for name in self.page_streams:
            self.wait_active(name)

    def check_list_streams_exclusive_start(self):
        # Our names sort right after the bare prefix, so paging starts there.
        names, start = [], self.prefix
        for _ in range(100):
            resp = self.kinesis.list_streams(Limit=1, ExclusiveStartStreamName=start)
            expect(len(resp["StreamNames"]) <= 1, f"{len(resp['StreamNames'])} names with Limit=1")
            if not resp["StreamNames"] or not resp["StreamNames"][0].startswith(self.prefix):
                break
            start = resp["StreamNames"][0]
            names.append(start)
            if not resp["HasMoreStreams"]:
                break
        want = sorted(self.page_streams + [self.stream])
        expect(names == want, f"paged {names}, expected {want}")

    def check_list_streams_next_token(self):
        names, resp = [], self.kinesis.list_streams(Limit=1)
        for _ in range(10_000):
            expect(len(resp["StreamNames"]) <= 1, f"{len(resp['StreamNames'])} names with Limit=1")
            names.extend(resp["StreamNames"])
            if not resp["HasMoreStreams"]:
                break
            expect(resp.get("NextToken"), "HasMoreStreams is true but there is no NextToken")
            resp = self.kinesis.list_streams(Limit=1, NextToken=resp["NextToken"])
        expect(len(names) == len(set(names)), "a stream name was listed twice")
        missing = set(self.page_streams + [self.stream]) - set(names)
        expect(not missing, f"not listed: {sorted(missing)}")

    def check_describe_stream_paging(self):
        ids, start = [], None
        for _ in range(SHARDS + 1):
            extra = {"ExclusiveStartShardId": start} if start else {}
            desc = self.kinesis.describe_stream(StreamName=self.stream, Limit=1, **extra)["StreamDescription"]
            expect(len(desc["Shards"]) == 1, f"{len(desc['Shards'])} shards with Limit=1")
            start = desc["Shards"][0]["ShardId"]
            ids.append(start)
            if not desc["HasMoreShards"]:
                break
        want = [s["ShardId"] for s in self.shards]
        expect(ids == want, f"paged {ids}, expected {want}")

    # ---- tags and retention ----

    def check_tags(self):
        self.kinesis.add_tags_to_stream(StreamName=self.stream, Tags={"team": "streaming", "env": "compat"})
        resp = self.kinesis.list_tags_for_stream(StreamName=self.stream)
        tags = {t["Key"]: t["Value"] for t in resp["Tags"]}
        expect(tags == {"team": "streaming", "env": "compat"}, f"tags after add: {tags}")
        expect(resp["HasMoreTags"] is False, "HasMoreTags is not false")
        self.kinesis.remove_tags_from_stream(StreamName=self.stream, TagKeys=["env"])
        tags = {
            t["Key"]: t["Value"] for t in self.kinesis.list_tags_for_stream(StreamName=self.stream)["Tags"]
        }
        expect(tags == {"team": "streaming"}, f"tags after remove: {tags}")

    def retention(self):
        return self.kinesis.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"][
            "RetentionPeriodHours"
        ]

    def check_retention(self):
        self.kinesis.increase_stream_retention_period(StreamName=self.stream, RetentionPeriodHours=48)
        self.wait_active(self.stream)
        expect(self.retention() == 48, f"retention {self.retention()} after increase to 48")
        self.kinesis.decrease_stream_retention_period(StreamName=self.stream, RetentionPeriodHours=24)
        self.wait_active(self.stream)
        expect(self.retention() == 24, f"retention {self.retention()} after decrease to 24")

    def check_retention_max(self):
        # AWS allows up to 8760 hours (365 days).
        self.kinesis.increase_stream_retention_period(StreamName=self.stream, RetentionPeriodHours=8760)
        self.wait_active(self.stream)
        expect(self.retention() == 8760, f"retention {self.retention()} after increase to 8760")
        self.kinesis.decrease_stream_retention_period(StreamName=self.stream, RetentionPeriodHours=24)
        self.wait_active(self.stream)

    def check_retention_above_max(self):
        expect_client_error(
            "InvalidArgumentException",
            self.kinesis.increase_stream_retention_period,
            StreamName=self.stream,
            RetentionPeriodHours=8761,
        )

    def check_retention_below_min(self):
        expect_client_error(
            "InvalidArgumentException",
            self.kinesis.decrease_stream_retention_period,
            StreamName=self.stream,
            RetentionPeriodHours=23,
        )

    # ---- errors ----

    def check_unknown_stream(self):
        missing = f"{self.prefix}-does-not-exist"
        expect_client_error(
            "ResourceNotFoundException", self.kinesis.describe_stream_summary, StreamName=missing
        )
        expect_client_error(
            "ResourceNotFoundException",
            self.kinesis.put_record,
            StreamName=missing,
            PartitionKey="k",
            Data=b"x",
        )

    def check_create_existing(self):
        expect_client_error(
            "ResourceInUseException", self.kinesis.create_stream, StreamName=self.stream, ShardCount=1
        )

    def check_partition_key_too_long(self):
        # botocore validates only minimum lengths, so this reaches the server.
        expect_client_error(
            "ValidationException",
            self.kinesis.put_record,
            StreamName=self.stream,
            PartitionKey="k" * 257,
            Data=b"x",
        )

    def check_data_too_large(self):
        # Raw request: the status code and __type as sent, not as boto3 maps them.
        body = {
            "StreamName": self.stream,
            "PartitionKey": "k",
            "Data": base64.b64encode(b"\0" * (1024 * 1024 + 1)).decode(),
        }
        status, answer = self.raw_call("PutRecord", body)
        error_type = answer.get("__type", "")
        expect(status == 400, f"status {status}: {answer}")
        expect(error_type.split("#")[-1] == "ValidationException", f"__type {error_type!r}: {answer}")

    def check_garbage_iterator(self):
        garbage = base64.b64encode(b"not a shard iterator" * 8).decode()
        expect_client_error("InvalidArgumentException", self.kinesis.get_records, ShardIterator=garbage)

    # ---- resharding ----

    def read_to_end(self, name, shard_id):
        """(records, child shard ids or None): a closed shard ends with ChildShards."""
        it = self.kinesis.get_shard_iterator(
            StreamName=name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = []
        for _ in range(10_000):
            page = self.kinesis.get_records(ShardIterator=it, Limit=1000)
            records.extend(page["Records"])
            if page.get("NextShardIterator") is None:
                return records, [c["ShardId"] for c in page.get("ChildShards", [])]
            if not page["Records"] and page["MillisBehindLatest"] == 0:
                return records, None
            it = page["NextShardIterator"]
        raise CheckFailed(f"{shard_id} did not drain")

    def check_reshard(self):
        name = f"{self.prefix}-reshard"
        self.create_stream(name, 2)
        self.wait_active(name)
        acked = set()

        def put(n):
            entries = [{"PartitionKey": f"k{self.rng.randrange(10**9)}", "Data": b"r"} for _ in range(n)]
            resp = self.kinesis.put_records(StreamName=name, Records=entries)
            expect(resp["FailedRecordCount"] == 0, f"FailedRecordCount {resp['FailedRecordCount']}")
            acked.update(r["SequenceNumber"] for r in resp["Records"])

        put(200)
        first = self.kinesis.list_shards(StreamName=name)["Shards"][0]
        start, end = (int(first["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
        middle = start + (end - start) // 2 + 1
        self.kinesis.split_shard(StreamName=name, ShardToSplit=first["ShardId"], NewStartingHashKey=str(middle))
        self.wait_active(name)
        shards = self.kinesis.list_shards(StreamName=name)["Shards"]
        children = [s for s in shards if s.get("ParentShardId") == first["ShardId"]]
        expect(len(shards) == 4 and len(children) == 2, f"after the split: {shards}")
        parent = next(s for s in shards if s["ShardId"] == first["ShardId"])
        expect("EndingSequenceNumber" in parent["SequenceNumberRange"], "the split parent is closed")
        put(200)
        self.kinesis.merge_shards(
            StreamName=name, ShardToMerge=children[0]["ShardId"], AdjacentShardToMerge=children[1]["ShardId"]
        )
        self.wait_active(name)
        put(200)
        resp = self.kinesis.update_shard_count(StreamName=name, TargetShardCount=4, ScalingType="UNIFORM_SCALING")
        expect(resp["TargetShardCount"] == 4, f"UpdateShardCount answered {resp}")
        summary = self.wait_active(name)
        expect(summary["OpenShardCount"] == 4, f"OpenShardCount {summary['OpenShardCount']}")
        put(200)
        # boto3 retries LimitExceededException as throttling for ~45 s: ask once.
        once = kinesis_client(self.endpoint, max_attempts=1)
        expect_client_error(
            "LimitExceededException",
            once.update_shard_count,
            StreamName=name,
            TargetShardCount=9,
            ScalingType="UNIFORM_SCALING",
        )
        read = []
        for s in self.kinesis.list_shards(StreamName=name)["Shards"]:
            records, children = self.read_to_end(name, s["ShardId"])
            closed = "EndingSequenceNumber" in s["SequenceNumberRange"]
            expect(closed == (children is not None), f"{s['ShardId']}: closed {closed}, children {children}")
            read.extend(r["SequenceNumber"] for r in records)
        expect(len(read) == len(set(read)), "a record was read twice")
        expect(set(read) == acked, f"{len(acked)} acknowledged, {len(set(read))} read back")

    # ---- teardown ----

    def check_delete_streams(self):
        for name in list(self.created):
            self.kinesis.delete_stream(StreamName=name)
        deadline = time.monotonic() + DELETE_TIMEOUT
        remaining = list(self.created)
        while remaining and time.monotonic() < deadline:
            for name in list(remaining):
                try:
                    self.kinesis.describe_stream_summary(StreamName=name)
                except ClientError as e:
                    if e.response["Error"]["Code"] == "ResourceNotFoundException":
                        remaining.remove(name)
                        self.created.remove(name)
                    else:
                        raise
            time.sleep(0.1)
        expect(not remaining, f"still described after {DELETE_TIMEOUT}s: {remaining}")
        listed = self.kinesis.list_streams(ExclusiveStartStreamName=self.prefix, Limit=100)["StreamNames"]
        leftovers = [n for n in listed if n.startswith(self.prefix)]
        expect(not leftovers, f"still listed: {leftovers}")

    def cleanup(self):
        """Best effort, after an abort: leave no streams behind."""
        for name in self.created:
            try:
                self.kinesis.delete_stream(StreamName=name)
            except Exception as e:
                print(f"cleanup: could not delete {name}: {e}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="e.g. http://127.0.0.1:4567")
    parser.add_argument("--seed", type=int, default=None, help="random seed, to replay a run")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"endpoint {args.endpoint}, seed {seed}", flush=True)

    sc = Scenario(args.endpoint, seed)
    suite = Suite()
    try:
        suite.run("create-stream-and-wait-active", sc.check_create_stream, required=True)
        suite.run("describe-stream-summary", sc.check_describe_stream_summary)
        suite.run("list-shards", sc.check_list_shards, required=True)
        suite.run("hash-ranges-cover-keyspace", sc.check_hash_ranges_cover_keyspace)
        suite.run("list-shards-paging-max-results", sc.check_list_shards_paging)
        suite.run("put-records-batches", sc.check_put_records, required=True)
        suite.run("put-record-explicit-hash-key", sc.check_put_record)
        suite.run("put-record-sequence-number-for-ordering", sc.check_sequence_number_for_ordering)
        suite.run("put-10000-distinct-acknowledgements", sc.check_all_acknowledged)
        suite.run("routing-by-md5-of-partition-key", sc.check_routing_by_md5)
        suite.run("get-records-trim-horizon-all-shards", sc.read_all_shards, required=True)
        suite.run("read-every-record-exactly-once", sc.check_read_exactly_once)
        suite.run("read-strictly-increasing-sequence-per-shard", sc.check_read_order)
        suite.run("read-partition-key-and-data", sc.check_read_content)
        suite.run("read-arrival-timestamp-and-limit", sc.check_read_metadata)
        suite.run("iterator-at-sequence-number", sc.check_at_sequence_number)
        suite.run("iterator-after-sequence-number", sc.check_after_sequence_number)
        suite.run("iterator-latest", sc.check_latest)
        suite.run("iterator-at-timestamp", sc.check_at_timestamp)
        suite.run("subscribe-to-shard-live-records", sc.check_subscribe_to_shard)
        suite.run("create-paging-streams", sc.create_page_streams, required=True)
        suite.run("list-streams-exclusive-start-stream-name", sc.check_list_streams_exclusive_start)
        suite.run("list-streams-next-token", sc.check_list_streams_next_token)
        suite.run("describe-stream-paging-exclusive-start-shard-id", sc.check_describe_stream_paging)
        suite.run("tags-add-list-remove", sc.check_tags)
        suite.run("retention-increase-decrease", sc.check_retention)
        suite.run("retention-max-8760", sc.check_retention_max)
        suite.run("retention-8761-invalid-argument", sc.check_retention_above_max)
        suite.run("retention-23-invalid-argument", sc.check_retention_below_min)
        suite.run("error-unknown-stream", sc.check_unknown_stream)
        suite.run("error-create-existing-stream", sc.check_create_existing)
        suite.run("error-partition-key-257-chars", sc.check_partition_key_too_long)
        suite.run("error-data-1mib-plus-1", sc.check_data_too_large)
        suite.run("error-garbage-shard-iterator", sc.check_garbage_iterator)
        suite.run("reshard-split-merge-update-shard-count", sc.check_reshard)
        suite.run("delete-streams", sc.check_delete_streams)
    except Abort as e:
        print(f"aborted: required step {e} failed; later checks not run", flush=True)
    finally:
        sc.cleanup()

    if suite.failed:
        print("failed: " + ", ".join(suite.failed))
    print(f"{len(suite.passed)} passed, {len(suite.failed)} failed")
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
