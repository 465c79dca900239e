#!/usr/bin/env python3
"""The end-to-end scenario on a real Kubernetes cluster (issue 9), first slice:

  helm      `helm install` of charts/streamfabric: the operator Deployment becomes
            Available and the DataStream CRD is served.
  example   `kubectl apply -f examples/datastream.yaml` (unchanged): the DataStream becomes
            Ready, `kubectl get datastreams -o wide` (and each short name) shows every printer
            column filled in, its Events are there, its volume is Bound.
  boto3     through the client Service named in status.endpoint, from inside the cluster
            network: boto3 puts records and reads each back exactly once.
  loadgen   a pod running `streamfabric-loadgen run --verify` against status.endpoint:
            every acknowledged record comes back exactly once.

Run it inside the cluster network with KUBECONFIG set and kubectl and helm on PATH
(scripts/e2e-kube does: e2e/kube/in-cluster-net python scenario.py ...); boto3 must be
importable. It needs only a cluster, so a kind cluster can run the same program (from a
machine where the Service names resolve). Each step is an assertion that can fail; every
wait has a deadline and fails loudly; on a failure the operator's and the brokers' logs
and `kubectl describe` of the DataStream and the pods are printed. Exit status 0 = pass.

Known bugs are listed in XFAIL: such a check failing is reported and tolerated, and the
same check passing fails the run (strict), so the list is kept in step with the fixes.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

# check name -> the bug it shows (strict: passing is an error, remove the entry then).
XFAIL = {}


class Failed(Exception):
    pass


def log(msg):
    print(f"scenario: {msg}", flush=True)


class Scenario:
    def __init__(self, args):
        self.a = args
        self.ns = args.namespace
        self.stream = None          # the example's DataStream name, read from the file
        self.endpoint = None
        self.timings = []
        self.xfailed = []

    # ---- tools -------------------------------------------------------------------
    def run(self, *cmd, check=True, timeout=120, stdin=None):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=stdin)
        except subprocess.TimeoutExpired:
            raise Failed(f"`{' '.join(cmd)}` did not finish within {timeout}s")
        if check and p.returncode != 0:
            raise Failed(f"`{' '.join(cmd)}` exited {p.returncode}:\n{p.stdout}{p.stderr}")
        return p

    def kubectl(self, *args, **kw):
        return self.run("kubectl", *args, **kw).stdout

    def kjson(self, *args):
        return json.loads(self.kubectl(*args, "-o", "json"))

    def wait(self, what, probe, timeout, interval=0.5):
        """Calls probe() until it returns a true value; that value, or Failed at the deadline."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = probe()
                if value:
                    return value
                last = value
            except Failed as e:
                last = e
            if time.monotonic() >= deadline:
                raise Failed(f"{what}: not within {timeout}s (last seen: {last})")
            time.sleep(interval)

    def check(self, name, ok, detail):
        """A check that may be a known bug (XFAIL)."""
        if name in XFAIL:
            if ok:
                raise Failed(f"XPASS {name}: fixed? remove it from XFAIL in {__file__}")
            log(f"XFAIL {name}: {XFAIL[name]} ({detail})")
            self.xfailed.append(name)
        elif not ok:
            raise Failed(detail)

    # ---- steps -------------------------------------------------------------------
    def step_helm(self):
        a = self.a
        self.run("helm", "install", a.release, os.path.join(a.repo, "charts/streamfabric"),
                 "--namespace", a.operator_namespace, "--create-namespace",
                 "--wait", "--timeout", f"{a.timeout}s", timeout=a.timeout + 30)
        deploy = self.wait("the operator Deployment Available", lambda: self._operator_deployment(), a.timeout)
        log(f"operator Deployment {deploy} Available")
        crd = self.kjson("get", "crd", "datastreams.streamfabric.io")
        established = {c["type"]: c["status"] for c in crd["status"].get("conditions", [])}
        if established.get("Established") != "True" or established.get("NamesAccepted") != "True":
            raise Failed(f"CRD datastreams.streamfabric.io not established: {established}")
        resources = self.kubectl("api-resources", "--api-group=streamfabric.io", "-o", "name")
        if "datastreams.streamfabric.io" not in resources.split():
            raise Failed(f"the API server does not serve datastreams: {resources!r}")
        self.kubectl("get", "datastreams", "--all-namespaces")
        self.crd = crd

    def _operator_deployment(self):
        for d in self.kjson("get", "deployments", "-n", self.a.operator_namespace,
                            "-l", f"app.kubernetes.io/instance={self.a.release}")["items"]:
            conds = {c["type"]: c["status"] for c in d.get("status", {}).get("conditions", [])}
            if conds.get("Available") == "True" and d["status"].get("readyReplicas", 0) >= 1:
                return d["metadata"]["name"]
        return None

    def step_example(self):
        a = self.a
        example = os.path.join(a.repo, "examples/datastream.yaml")
        with open(example) as f:
            m = re.search(r"^kind:\s*DataStream\s*$.*?^  name:\s*(\S+)", f.read(), re.S | re.M)
        if not m:
            raise Failed(f"cannot find the DataStream's name in {example}")
        self.stream = m.group(1)
        t0 = time.monotonic()
        self.kubectl("apply", "-n", self.ns, "-f", example)
        ds = self.wait(f"DataStream {self.stream} Ready", self._ready_datastream, a.timeout)
        log(f"DataStream {self.stream} Ready {time.monotonic() - t0:.1f}s after kubectl apply")
        self.endpoint = ds["status"].get("endpoint")
        if not self.endpoint:
            raise Failed(f"DataStream {self.stream} Ready without status.endpoint: {ds['status']}")

        # Printer columns: every column of the CRD filled in (the table as a user sees it).
        version = next(v for v in self.crd["spec"]["versions"] if v.get("served"))
        columns = [c["name"].upper() for c in version.get("additionalPrinterColumns", [])]
        table = self.kubectl("get", "datastreams", "-n", self.ns, "-o", "wide")
        log("kubectl get datastreams -o wide:\n" + table.rstrip())
        row = self._table_row(table, self.stream)
        for col in ["NAME"] + columns:
            if not row.get(col) or row[col] == "<none>":
                raise Failed(f"`kubectl get datastreams -o wide`: column {col} empty in {row}")
        for short in self.crd["spec"]["names"].get("shortNames", []):
            p = self.run("kubectl", "get", short, "-n", self.ns, check=False)
            ok = p.returncode == 0 and self.stream in p.stdout and "daemonset" not in p.stderr.lower() \
                and all(c in p.stdout.splitlines()[0] for c in columns if c != "ENDPOINT")
            self.check("short-name", ok, f"`kubectl get {short}` -> {p.stdout.strip()!r} {p.stderr.strip()!r}")

        events = self.kjson("get", "events", "-n", self.ns, "--field-selector",
                            f"involvedObject.kind=DataStream,involvedObject.name={self.stream}")["items"]
        if not events:
            raise Failed(f"no Events for DataStream {self.stream}")
        log("Events: " + "; ".join(f"{e.get('reason')}: {e.get('message')}" for e in events))
        pvcs = self.kjson("get", "pvc", "-n", self.ns, "-l", f"app.kubernetes.io/instance={self.stream}")["items"]
        if not pvcs or any(p["status"].get("phase") != "Bound" for p in pvcs):
            raise Failed(f"broker volumes not all Bound: {[(p['metadata']['name'], p['status']) for p in pvcs]}")

    def _ready_datastream(self):
        ds = self.kjson("get", "datastream", self.stream, "-n", self.ns)
        conds = {c["type"]: c["status"] for c in ds.get("status", {}).get("conditions", [])}
        return ds if conds.get("Ready") == "True" else None

    @staticmethod
    def _table_row(table, name):
        lines = table.splitlines()
        header = lines[0]
        starts = [m.start() for m in re.finditer(r"\S+", header)]
        names = header.split()
        for line in lines[1:]:
            if line.split()[:1] == [name]:
                cells = [line[s:e].strip() for s, e in zip(starts, starts[1:] + [None])]
                return dict(zip(names, cells))
        raise Failed(f"no row for {name} in:\n{table}")

    def _client_service(self):
        """The Service status.endpoint names, and a check that it has a ready broker behind it."""
        url = urllib.parse.urlparse(self.endpoint)
        host = url.hostname.split(".")
        svc, ns = host[0], (host[1] if len(host) > 1 else self.ns)
        self.kubectl("get", "service", svc, "-n", ns)
        def ready_addresses():
            slices = self.kjson("get", "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={svc}")
            return [a for s in slices["items"] for e in s.get("endpoints") or []
                    if (e.get("conditions") or {}).get("ready") for a in e["addresses"]]
        return svc, ns, self.wait(f"a ready endpoint behind Service {ns}/{svc}", ready_addresses, 60)

    def step_boto3(self):
        import boto3
        from botocore.config import Config

        sts = self.kjson("get", "statefulset", f"{self.stream}-broker", "-n", self.ns)
        if sts["spec"]["replicas"] != 1:
            raise Failed(f"this slice needs one broker (fabric not in place); {self.stream} has "
                         f"{sts['spec']['replicas']}")
        svc, ns, addrs = self._client_service()
        log(f"endpoint {self.endpoint}: Service {ns}/{svc} -> {addrs}")
        k = boto3.client("kinesis", endpoint_url=self.endpoint, region_name="us-east-1",
                         aws_access_key_id="e2e", aws_secret_access_key="e2e",
                         config=Config(connect_timeout=5, read_timeout=20,
                                       retries={"max_attempts": 3, "mode": "standard"}))
        summary = k.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]
        if summary["StreamStatus"] != "ACTIVE":
            raise Failed(f"stream {self.stream} is {summary['StreamStatus']}")
        run = f"e2e-kube-{os.getpid()}-{int(time.time())}"
        want = {}
        for batch in range(4):
            records = [{"Data": f"{run}-{batch}-{i}".encode(), "PartitionKey": f"key-{batch}-{i}"}
                       for i in range(100)]
            out = k.put_records(StreamName=self.stream, Records=records)
            if out.get("FailedRecordCount"):
                raise Failed(f"PutRecords refused {out['FailedRecordCount']} of 100: "
                             f"{[r for r in out['Records'] if 'ErrorCode' in r][:3]}")
            for rec, res in zip(records, out["Records"]):
                want[rec["Data"]] = (res["ShardId"], res["SequenceNumber"])
        one = k.put_record(StreamName=self.stream, PartitionKey="single", Data=f"{run}-single".encode())
        want[f"{run}-single".encode()] = (one["ShardId"], one["SequenceNumber"])

        shards, token = [], None
        while True:
            page = k.list_shards(NextToken=token) if token else k.list_shards(StreamName=self.stream)
            shards += page["Shards"]
            token = page.get("NextToken")
            if not token:
                break
        seen = {}
        deadline = time.monotonic() + 60
        for shard in shards:
            it = k.get_shard_iterator(StreamName=self.stream, ShardId=shard["ShardId"],
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for _ in range(200):
                if time.monotonic() > deadline:
                    raise Failed("reading the records back: not within 60s")
                out = k.get_records(ShardIterator=it, Limit=1000)
                for r in out["Records"]:
                    if r["Data"].startswith(run.encode()):
                        seen.setdefault(r["Data"], []).append((shard["ShardId"], r["SequenceNumber"]))
                it = out.get("NextShardIterator")
                if not it or (not out["Records"] and out.get("MillisBehindLatest", 0) == 0):
                    break
            else:
                raise Failed(f"shard {shard['ShardId']}: not caught up after 200 GetRecords")
        missing = [d for d in want if d not in seen]
        twice = {d: s for d, s in seen.items() if len(s) > 1}
        wrong = {d: (want[d], s) for d, s in seen.items() if d in want and s[0] != want[d]}
        if missing or twice or wrong:
            raise Failed(f"boto3 read-back: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(twice)} duplicated, {len(wrong)} at another position (e.g. {list(wrong.items())[:2]})")
        log(f"boto3: {len(want)} records put over {len(shards)} shards, each read back once at its sequence number")

    def step_loadgen(self):
        a = self.a
        name = "e2e-loadgen"
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "labels": {"app": name}},
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": a.loadgen_seconds + 120,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                "containers": [{
                    "name": "loadgen", "image": a.loadgen_image, "imagePullPolicy": a.loadgen_pull_policy,
                    "args": ["--threads", "2", "run", "--endpoint", self.endpoint, "--stream", self.stream,
                             "--records", str(a.loadgen_records), "--duration-secs", str(a.loadgen_seconds),
                             "--rate", str(a.loadgen_rate), "--connections", "4", "--batch-size", "100",
                             "--verify", "--create-timeout-secs", "30", "--drain-timeout-secs", "60"],
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(pod))

        def finished():
            p = self.kjson("get", "pod", name, "-n", self.ns)
            return p if p.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
        p = self.wait(f"pod {name} finished", finished, a.loadgen_seconds + 150, interval=1)
        out = self.kubectl("logs", name, "-n", self.ns)
        log(f"loadgen pod output:\n{out.rstrip()}")
        state = p["status"]["containerStatuses"][0]["state"].get("terminated", {})
        if p["status"]["phase"] != "Succeeded" or state.get("exitCode") != 0:
            raise Failed(f"loadgen pod {p['status']['phase']} (exit {state.get('exitCode')}, {state.get('reason')})")
        m = re.search(r"^verify result=(\S+) acked=(\d+) read=\d+ exactly_once=(\d+) missing=(\d+) duplicated=(\d+)",
                      out, re.M)
        if not m:
            raise Failed("no verify line in the loadgen output")
        result, acked, once, missing, dup = m.group(1), *map(int, m.groups()[1:])
        if acked == 0 or once != acked or missing or dup:
            raise Failed(f"loadgen verify: result={result} acked={acked} exactly_once={once} "
                         f"missing={missing} duplicated={dup}")
        log(f"loadgen: {acked} acknowledged records read back exactly once")

    # ---- diagnostics -------------------------------------------------------------
    def diagnostics(self):
        a = self.a
        def show(title, *cmd):
            p = self.run(*cmd, check=False, timeout=60)
            print(f"----- {title}: {' '.join(cmd)}\n{p.stdout}{p.stderr}", flush=True)
        show("operator logs", "kubectl", "logs", "-n", a.operator_namespace, "-l",
             f"app.kubernetes.io/instance={a.release}", "--all-containers", "--tail=300", "--prefix")
        if self.stream:
            show("broker logs", "kubectl", "logs", "-n", self.ns, "-l",
                 f"app.kubernetes.io/instance={self.stream}", "--all-containers", "--tail=200", "--prefix")
            show("describe datastream", "kubectl", "describe", "datastream", self.stream, "-n", self.ns)
        show("describe pods", "kubectl", "describe", "pods", "--all-namespaces")
        show("pods, services, volumes", "kubectl", "get", "pods,svc,endpointslices,pvc,pv,statefulsets",
             "--all-namespaces", "-o", "wide")
        show("events", "kubectl", "get", "events", "--all-namespaces", "--sort-by=.lastTimestamp")

    def main(self):
        steps = [("helm", self.step_helm), ("example", self.step_example),
                 ("boto3", self.step_boto3), ("loadgen", self.step_loadgen)]
        for name, fn in steps:
            if self.a.only and name not in self.a.only:
                continue
            t0 = time.monotonic()
            log(f"step {name} ...")
            try:
                fn()
            except Exception as e:   # noqa: BLE001 - any error fails the step, loudly
                secs = time.monotonic() - t0
                log(f"step {name} FAILED after {secs:.1f}s: {type(e).__name__}: {e}")
                self.diagnostics()
                self.report()
                log(f"FAILED at step {name}")
                return 1
            self.timings.append((name, time.monotonic() - t0))
            log(f"step {name} ok ({self.timings[-1][1]:.1f}s)")
        self.report()
        log("PASSED" + (f" (known bugs: {', '.join(self.xfailed)})" if self.xfailed else ""))
        return 0

    def report(self):
        for name, secs in self.timings:
            print(f"scenario: timing {name:<8} {secs:6.1f}s", flush=True)


def main():
    ap = argparse.ArgumentParser(description="streamfabric end-to-end scenario on a real cluster")
    ap.add_argument("--repo", default=os.path.abspath(os.path.join(os.path.dirname(__file__), "../..")))
    ap.add_argument("--namespace", default="default", help="where the example DataStream goes")
    ap.add_argument("--operator-namespace", default="streamfabric-system")
    ap.add_argument("--release", default="streamfabric")
    ap.add_argument("--timeout", type=int, default=180, help="bound on each wait for Ready/Available")
    ap.add_argument("--loadgen-image", default="ghcr.io/streamfabric/loadgen:0.1.0")
    ap.add_argument("--loadgen-pull-policy", default="Never")
    ap.add_argument("--loadgen-records", type=int, default=20000)
    ap.add_argument("--loadgen-seconds", type=int, default=40)
    ap.add_argument("--loadgen-rate", type=int, default=1000, help="records/s (below the autoscale target)")
    ap.add_argument("--only", action="append", help="run only these steps (repeatable; for debugging)")
    sys.exit(Scenario(ap.parse_args()).main())


if __name__ == "__main__":
    main()
