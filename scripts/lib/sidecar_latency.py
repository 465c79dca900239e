#!/usr/bin/env python3
"""End-to-end latency through the sidecar: boto3 puts records through a sidecar's producer
at a steady rate, each carrying its send time; the same sidecar's consumer delivers them to
the HTTP sink run here, which notes when each arrives. Prints p50/p99/max of the time from
the producer's call to the consumer's delivery, and how many records arrived.

    python sidecar_latency.py --sidecar http://127.0.0.1:4599 --sink-port 8080 --stream s \
        --seconds 10 --rate 200
"""

import argparse
import base64
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
from botocore.config import Config

latencies, lock = [], threading.Lock()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        now = time.time()
        with lock:
            for r in body["records"]:
                sent = json.loads(base64.b64decode(r["data"]))["sent"]
                latencies.append(now - sent)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def rank(sample, q):
    return sample[max(0, math.ceil(q * len(sample)) - 1)]


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--sidecar", required=True)
    a.add_argument("--sink-port", type=int, required=True)
    a.add_argument("--stream", required=True)
    a.add_argument("--seconds", type=float, default=10)
    a.add_argument("--rate", type=float, default=200, help="PutRecord calls per second")
    args = a.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.sink_port), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    k = boto3.client("kinesis", endpoint_url=args.sidecar, region_name="us-east-1",
                     aws_access_key_id="AKIDBENCH", aws_secret_access_key="bench",
                     config=Config(retries={"max_attempts": 3}))
    sent, start = 0, time.time()
    while time.time() - start < args.seconds:
        due = start + sent / args.rate
        time.sleep(max(0.0, due - time.time()))
        k.put_record(StreamName=args.stream, PartitionKey=f"k{sent % 64}",
                     Data=json.dumps({"sent": time.time(), "n": sent}).encode())
        sent += 1
    deadline = time.time() + 30
    while time.time() < deadline:
        with lock:
            if len(latencies) >= sent:
                break
        time.sleep(0.1)
    with lock:
        sample = sorted(latencies)
    server.shutdown()
    if not sample:
        raise SystemExit("no record was delivered")
    ms = lambda s: f"{s * 1000:.1f}"
    print(f"end-to-end records_put={sent} delivered={len(sample)} p50_ms={ms(rank(sample, .5))} "
          f"p99_ms={ms(rank(sample, .99))} max_ms={ms(sample[-1])}")


if __name__ == "__main__":
    main()
