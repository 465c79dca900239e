#!/usr/bin/env python3
"""Unmodified KCL applications (3.x, or 2.x: the classpath decides, see e2e/java/build.sh)
against a broker, with no DynamoDB and no CloudWatch beside it (the KCL's leases in the
broker's DynamoDB subset, metrics off).

    python scenario.py --endpoint http://127.0.0.1:4567 --classpath CP --mode fanout|polling|late-start

fanout / polling: three workers of one application (the first started alone, the others once
it processes) share a 4-shard stream while records are put (--records, 100,000 by default);
the worker that processed most is killed (SIGKILL) once records flow, its
leases are taken by the others; the stream is resharded 4 -> 8 (UpdateShardCount); once every
record was processed the workers stop (SIGTERM, checkpointing), and a new worker of the same
application processes only records put afterwards (it resumes from the checkpoints).
late-start: the stream is resharded (4 -> 8, a split, a merge) before the application first
starts; one worker processes every record.

Checked: every record processed at least once; each shard's records in order; children after
their parents' ends; records of one partition key in put order; a record processed twice only
where a worker processed it after its last checkpoint of that shard and then lost the shard.
Prints figures (time to the first record, delivery latency from put to processing) and, last,
"N passed, M failed".
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import boto3
from botocore.config import Config

KEYS = 997  # partition keys, so that each shard gets many and each key many records


class Failed(Exception):
    pass


def kinesis(endpoint):
    return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test",
                        config=Config(retries={"mode": "standard", "max_attempts": 10}))


class Worker:
    def __init__(self, args, stream, app, name, workdir):
        self.name, self.out = name, os.path.join(workdir, f"{name}.out")
        self.log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(
            ["java", "-Xmx384m", f"-DfailoverMillis={args.failover_ms}",
             "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", args.classpath,
             "streamfabric.KclWorker", args.endpoint, stream, app, name, args.retrieval, self.out],
            stdout=self.log, stderr=subprocess.STDOUT)

    def lines(self):
        try:
            with open(self.out) as f:
                return [line.split(" ", 5) for line in f.read().splitlines()]
        except FileNotFoundError:
            return []

    def stop(self, sig=signal.SIGTERM, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise Failed(f"{self.name} did not stop within {timeout}s of {sig.name}")


class Scenario:
    def __init__(self, args):
        self.args = args
        self.k = kinesis(args.endpoint)
        self.run = uuid.uuid4().hex[:6]
        self.workdir = tempfile.mkdtemp(prefix=f"kcl-{args.mode}-")
        self.workers = []
        self.put_at = {}  # data -> time put (before the call)
        self.checks = []

    def check(self, name, ok, detail=""):
        self.checks.append((name, ok))
        print(f"{'ok  ' if ok else 'FAIL'}  {name}{'' if ok else ': ' + detail}", flush=True)

    def create(self, stream, shards):
        self.k.create_stream(StreamName=stream, ShardCount=shards)
        self.wait_active(stream)

    def wait_active(self, stream):
        deadline = time.monotonic() + 60
        while self.k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise Failed(f"{stream} not ACTIVE within 60s")
            time.sleep(0.2)

    def put(self, stream, first, count):
        for start in range(first, first + count, 500):
            entries = [{"PartitionKey": f"key-{i % KEYS}", "Data": str(i).encode()}
                       for i in range(start, min(start + 500, first + count))]
            for _ in range(20):
                now = time.time()
                for e in entries:
                    self.put_at.setdefault(e["Data"].decode(), now)
                out = self.k.put_records(StreamName=stream, Records=entries)
                entries = [e for e, r in zip(entries, out["Records"]) if "ErrorCode" in r]
                if not entries:
                    break
                time.sleep(0.5)
            else:
                raise Failed(f"{len(entries)} records still refused after 20 attempts")

    def start(self, stream, app, name):
        w = Worker(self.args, stream, app, name, self.workdir)
        self.workers.append(w)
        return w

    def processed(self, workers=None):
        """data -> [(millis, worker, shard, sequence)] over the workers' outputs."""
        seen = {}
        for w in workers or self.workers:
            for line in w.lines():
                if len(line) == 6 and line[1] == "RECORD":
                    seen.setdefault(line[5], []).append((int(line[0]), w.name, line[2], line[3]))
        return seen

    def wait_processed(self, want, timeout, workers=None):
        deadline = time.monotonic() + timeout
        while True:
            seen = self.processed(workers)
            missing = [d for d in want if d not in seen]
            if not missing:
                return seen
            if time.monotonic() > deadline:
                dead = [w.name for w in self.workers if w.proc.poll() is not None]
                raise Failed(f"{len(missing)} of {len(want)} records not processed within {timeout}s "
                             f"(e.g. {missing[:5]}; exited workers {dead}; outputs in {self.workdir})")
            time.sleep(1)

    def shards(self, stream):
        return self.k.list_shards(StreamName=stream)["Shards"]

    # ---- checks over the outputs ----

    def check_outcome(self, stream, want, killed=None):
        seen = self.processed()
        missing = [d for d in want if d not in seen]
        self.check("every record processed at least once", not missing,
                   f"{len(missing)} missing, e.g. {missing[:5]}")
        # Each worker's records of a shard in sequence order (a worker reads a shard in order).
        disorder = []
        for w in self.workers:
            last = {}
            for line in w.lines():
                if len(line) == 6 and line[1] == "RECORD":
                    shard, seq = line[2], int(line[3])
                    if shard in last and seq <= last[shard]:
                        disorder.append((w.name, shard, last[shard], seq))
                    last[shard] = seq
                elif len(line) >= 3 and line[1] in ("INIT",):
                    last.pop(line[2], None)  # a shard taken again starts from its checkpoint
        self.check("each shard's records in order at each worker", not disorder, str(disorder[:5]))
        # Children after their parents' ends.
        ends = {}
        for w in self.workers:
            for line in w.lines():
                if len(line) >= 3 and line[1] == "SHARD-END":
                    ends.setdefault(line[2], int(line[0]))
        first_record = {}
        for occurrences in seen.values():
            for millis, _, shard, _ in occurrences:
                first_record[shard] = min(first_record.get(shard, millis), millis)
        early = []
        for s in self.shards(stream):
            parents = [p for p in (s.get("ParentShardId"), s.get("AdjacentParentShardId")) if p]
            child = s["ShardId"]
            for p in parents:
                if child in first_record and (p not in ends or first_record[child] < ends[p]):
                    early.append((child, p, first_record[child], ends.get(p)))
        self.check("children processed after their parents' ends", not early, str(early[:5]))
        # Per key: first processing in put order.
        by_key = {}
        for d in want:
            if d in seen:
                by_key.setdefault(int(d) % KEYS, []).append((int(d), min(o[0] for o in seen[d])))
        out_of_order = []
        for key, records in by_key.items():
            records.sort()
            for (a, ta), (b, tb) in zip(records, records[1:]):
                if tb < ta:
                    out_of_order.append((key, a, b))
        self.check("each partition key's records processed in put order", not out_of_order, str(out_of_order[:5]))
        # Duplicates only after a worker's last checkpoint of the shard.
        last_checkpoint = {}
        for w in self.workers:
            for line in w.lines():
                if len(line) >= 4 and line[1] == "CHECKPOINT":
                    last_checkpoint[(w.name, line[2])] = int(line[3])
        twice = {d: o for d, o in seen.items() if len(o) > 1}
        unexplained = []
        for d, occurrences in twice.items():
            explained = any(int(seq) > last_checkpoint.get((name, shard), -1)
                            for _, name, shard, seq in occurrences)
            if not explained:
                unexplained.append((d, occurrences))
        self.check("records processed twice only after a worker's last checkpoint of the shard", not unexplained,
                   str(unexplained[:3]))
        latencies = sorted(max(0.0, min(o[0] for o in seen[d]) / 1000 - self.put_at[d]) for d in want if d in seen)
        if latencies:
            print(f"      {len(want)} records, {len(twice)} processed twice "
                  f"(worker killed: {killed or 'none'}); put to processing p50 "
                  f"{latencies[len(latencies) // 2] * 1000:.0f} ms, p99 {latencies[int(len(latencies) * 0.99)] * 1000:.0f} ms",
                  flush=True)
        return seen

    def delivery_latency(self, stream, first, count=200):
        """Steady state: one record every 20 ms; time from its put to its processing."""
        ids = [str(first + i) for i in range(count)]
        for d in ids:
            self.put_at[d] = time.time()
            self.k.put_record(StreamName=stream, PartitionKey=f"probe-{d}", Data=d.encode())
            time.sleep(0.02)
        seen = self.wait_processed(ids, 60)
        lat = sorted(max(0.0, min(o[0] for o in seen[d]) / 1000 - self.put_at[d]) for d in ids)
        print(f"      KCL {self.args.retrieval} delivery latency, put to processRecords, {count} records one by one: "
              f"p50 {lat[len(lat) // 2] * 1000:.0f} ms, p99 {lat[int(len(lat) * 0.99)] * 1000:.0f} ms", flush=True)

    # ---- the scenarios ----

    def shared(self):
        a, n = self.args, self.args.records
        stream, app = f"kcl-{a.retrieval}-{self.run}", f"app-{a.retrieval}-{self.run}"
        self.create(stream, 4)
        started = time.time()
        # The first worker alone at first: KCL 3.5 workers of a new application that start at
        # the same moment race to create its migration state, and a loser's Scheduler never
        # initializes (a KCL bug, not one of the lease store's answers).
        ws = [self.start(stream, app, "w1")]
        third = n // 3
        self.put(stream, 0, third)
        seen = self.wait_processed([str(i) for i in range(third // 4)], 240)
        first = min(min(o[0] for o in occurrences) for occurrences in seen.values()) / 1000
        print(f"      first record processed {first - started:.1f}s after the first worker started", flush=True)
        ws += [self.start(stream, app, f"w{i}") for i in (2, 3)]
        time.sleep(25)  # the others initialize and join the lease assignment
        self.put(stream, third, third)
        # Kill the worker that processed most so far, while it processes: its leases must move,
        # and what it processed after its last checkpoints is processed again elsewhere.
        counts = {w.name: sum(1 for l in w.lines() if len(l) == 6 and l[1] == "RECORD") for w in ws}
        victim = max(ws, key=lambda w: counts[w.name])
        victim.stop(signal.SIGKILL)
        print(f"      killed {victim.name} (it had processed {counts[victim.name]} records)", flush=True)
        self.k.update_shard_count(StreamName=stream, TargetShardCount=8, ScalingType="UNIFORM_SCALING")
        self.wait_active(stream)
        self.put(stream, 2 * third, n - 2 * third)
        want = [str(i) for i in range(n)]
        t0 = time.monotonic()
        self.wait_processed(want, a.timeout)
        print(f"      all {n} records processed {time.monotonic() - t0:.1f}s after the last put", flush=True)
        self.delivery_latency(stream, n + 10_000)
        for w in ws:
            w.stop()
        self.check_outcome(stream, want, killed=victim.name)
        # A restart: a new worker of the application goes on from the checkpoints.
        w4 = self.start(stream, app, "w4")
        more = [str(i) for i in range(n, n + 1000)]
        self.put(stream, n, 1000)
        self.wait_processed(more, 240, [w4])
        again = [d for d in self.processed([w4]) if int(d) < n]
        self.check("a restarted worker resumes from the checkpoints (nothing processed before is processed again)",
                   not again, f"{len(again)} records of before the restart processed again, e.g. {again[:5]}")
        w4.stop()

    def late_start(self):
        stream, app = f"kcl-late-{self.run}", f"app-late-{self.run}"
        self.create(stream, 4)
        self.put(stream, 0, 5000)
        self.k.update_shard_count(StreamName=stream, TargetShardCount=8, ScalingType="UNIFORM_SCALING")
        self.wait_active(stream)
        self.put(stream, 5000, 5000)
        open_shards = [s for s in self.shards(stream) if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
        s = open_shards[0]
        low, high = int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"])
        self.k.split_shard(StreamName=stream, ShardToSplit=s["ShardId"], NewStartingHashKey=str((low + high) // 2 + 1))
        self.wait_active(stream)
        open_shards = sorted((s for s in self.shards(stream) if "EndingSequenceNumber" not in s["SequenceNumberRange"]),
                             key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))
        a, b = open_shards[-2], open_shards[-1]
        self.k.merge_shards(StreamName=stream, ShardToMerge=a["ShardId"], AdjacentShardToMerge=b["ShardId"])
        self.wait_active(stream)
        self.put(stream, 10_000, 5000)
        started = time.time()
        self.start(stream, app, "late")
        want = [str(i) for i in range(15_000)]
        seen = self.wait_processed(want, self.args.timeout)
        first = min(min(o[0] for o in occurrences) for occurrences in seen.values()) / 1000
        print(f"      {len(self.shards(stream))} shards (4 -> 8, a split, a merge before the start); first record "
              f"processed {first - started:.1f}s after the worker started", flush=True)
        self.workers[0].stop()
        self.check_outcome(stream, want)

    def main(self):
        try:
            if self.args.mode == "late-start":
                self.late_start()
            else:
                self.shared()
        except Failed as e:
            self.check("scenario ran to its end", False, str(e))
        finally:
            for w in self.workers:
                if w.proc.poll() is None:
                    w.proc.kill()
                    w.proc.wait()
        failed = [n for n, ok in self.checks if not ok]
        if failed:
            print(f"outputs and logs: {self.workdir}")
        print(f"{len(self.checks) - len(failed)} passed, {len(failed)} failed")
        return 1 if failed else 0


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--classpath", required=True, help="e2e/java/build.sh's last line")
    p.add_argument("--mode", choices=["fanout", "polling", "late-start"], required=True)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--failover-ms", type=int, default=5000)
    p.add_argument("--timeout", type=int, default=300, help="seconds for every record to be processed")
    args = p.parse_args()
    args.retrieval = "polling" if args.mode == "late-start" else args.mode
    return args


if __name__ == "__main__":
    sys.exit(Scenario(parse()).main())
