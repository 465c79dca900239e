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
  ondemand  a bounded load at twice the target utilisation: the example (OnDemand) grows
            within maxShards (AutoscaleDecision Event); with the stabilisation window patched
            to 20 s it shrinks again once the load stopped.
  paused    spec.paused: PutRecord refused with ResourceInUseException, GetRecords goes on,
            Paused Event; unpaused: writes accepted, Resumed Event.
  invalid   DataStreams breaking each CEL rule (and a range) are refused by the API server
            with the rule's message; none is created.
  degraded  the example's only broker pod deleted: Degraded True, then Ready again.
  pending   a DataStream whose volume claim cannot bind: Ready names the claim
            (VolumePending), with an Event.
  minio     e2e/kube/minio.yaml: MinIO erasure coded over 4 drives, and the bucket that
            examples/datastream-object-store.yaml names.
  fabric    `kubectl apply -f examples/datastream-object-store.yaml` (unchanged): Ready with
            every broker pod a member and the shards spread evenly; loadgen --verify through
            the Service (any broker answers, forwarding to the owner); write-ahead objects
            and membership records in the bucket.
  auth      spec.authentication: signed calls only (the operator's too), a rotated Secret
            served without a restart; writers' and readers' keys do their part only (the
            operator's access policy); a resource policy set through the API applies.
  tls       spec.tls: HTTPS on the client Service's port 4443 with a kubernetes.io/tls
            Secret's certificate: boto3 with the CA reads what it wrote, another CA refused,
            a renewed certificate served without a restart.
  sidecar   a pod whose loadgen writes through a streamfabric-sidecar container beside it
            (a native sidecar: an init container that keeps running), with --aggregate:
            the sidecar sends each shard's aggregates straight to its broker (the pods'
            advertised names) and loadgen --verify reads every record back once, de-aggregated.
  inject    the operator's webhook adds the sidecar to pods labelled streamfabric.io/inject
            (settings in annotations): one produces through it (loadgen --verify, aggregated),
            one consumes through it (loadgen pull: the pull API); an unlabelled pod is untouched;
            one naming a missing DataStream is admitted without a sidecar, with an Event.
  disruptions  under load, one broker process SIGKILLed (restarts on its volume) and
            another pod deleted (its shards handed over, then back): loadgen --verify.
  lost-volume  a broker pod deleted with its volume claim: every record boto3 wrote before
            is read back once (served from the bucket).
  scale     `kubectl scale datastream` adds shards; the brokers follow (shardsPerBroker);
            loadgen --verify again.
  drive-wipe  one of MinIO's four drives wiped from the node under load: loadgen --verify.
  delete    `kubectl delete datastream`: with deletionPolicy Retain (the object-store example)
            the brokers go, their volumes and the stream's objects in the bucket stay; with
            Delete (a DataStream made here) the brokers, volumes, the stream's objects and its
            write-ahead objects go; neither finalizer hangs.
  uninstall  with no DataStream left, `helm uninstall` leaves nothing of the release but the
            CRD (no Deployment, Service, ServiceAccount, RBAC, Lease); the CRD then deletes.

Run it inside the cluster network with KUBECONFIG set and kubectl and helm on PATH
(scripts/e2e-kube does: e2e/kube/in-cluster-net python scenario.py ...); boto3 must be
importable. It needs only a cluster: e2e/kind/run.sh runs the same program in a pod of a
kind cluster (host PID namespace and the node's kubelet directory mounted, for the steps
that kill a broker process and wipe a MinIO drive from the node). Each step is an assertion that can fail; every
wait has a deadline and fails loudly; on a failure the operator's and the brokers' logs
and `kubectl describe` of the DataStream and the pods are printed. Exit status 0 = pass.

Known bugs are listed in XFAIL: such a check failing is reported and tolerated, and the
same check passing fails the run (strict), so the list is kept in step with the fixes.
"""

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

# check name -> the bug it shows (strict: passing is an error, remove the entry then).
XFAIL = {}


class Failed(Exception):
    pass


def log(msg):
    print(f"scenario: {msg}", flush=True)


class Scenario:
    FABRIC_EXAMPLE = "examples/datastream-object-store.yaml"

    def __init__(self, args):
        self.a = args
        self.ns = args.namespace
        self.stream = None          # the example's DataStream name, read from the file
        self.fabric = None          # the object-store example's DataStream name
        self.endpoint = None
        self.fabric_endpoint = None
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
        # Columns with a priority show only with -o wide.
        narrow = [c["name"].upper() for c in version.get("additionalPrinterColumns", []) if not c.get("priority")]
        table = self.kubectl("get", "datastreams", "-n", self.ns, "-o", "wide")
        log("kubectl get datastreams -o wide:\n" + table.rstrip())
        row = self._table_row(table, self.stream)
        for col in ["NAME"] + columns:
            if not row.get(col) or row[col] == "<none>":
                raise Failed(f"`kubectl get datastreams -o wide`: column {col} empty in {row}")
        for short in self.crd["spec"]["names"].get("shortNames", []):
            p = self.run("kubectl", "get", short, "-n", self.ns, check=False)
            ok = p.returncode == 0 and self.stream in p.stdout and "daemonset" not in p.stderr.lower() \
                and all(c in p.stdout.splitlines()[0] for c in narrow)
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
        sts = self.kjson("get", "statefulset", f"{self.stream}-broker", "-n", self.ns)
        if sts["spec"]["replicas"] != 1:
            raise Failed(f"the README's example should start with one broker; {self.stream} has "
                         f"{sts['spec']['replicas']}")
        svc, ns, addrs = self._client_service()
        log(f"endpoint {self.endpoint}: Service {ns}/{svc} -> {addrs}")
        k = self.kinesis(self.endpoint)
        summary = k.describe_stream_summary(StreamName=self.stream)["StreamDescriptionSummary"]
        if summary["StreamStatus"] != "ACTIVE":
            raise Failed(f"stream {self.stream} is {summary['StreamStatus']}")
        run = f"e2e-kube-{os.getpid()}-{int(time.time())}"
        want = self.put_tagged(k, self.stream, run)
        shards = self.read_back(k, self.stream, run, want)
        log(f"boto3: {len(want)} records put over {shards} shards, each read back once at its sequence number")

    @staticmethod
    def kinesis(endpoint):
        import boto3
        from botocore.config import Config
        return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                            aws_access_key_id="e2e", aws_secret_access_key="e2e",
                            config=Config(connect_timeout=5, read_timeout=20,
                                          retries={"max_attempts": 5, "mode": "standard"}))

    @staticmethod
    def put_tagged(k, stream, run, batches=4, per_batch=100):
        """Records tagged with run, by PutRecords and one PutRecord: data -> (shard, sequence)."""
        want = {}
        for batch in range(batches):
            records = [{"Data": f"{run}-{batch}-{i}".encode(), "PartitionKey": f"key-{batch}-{i}"}
                       for i in range(per_batch)]
            # Entries refused retryably (a shard moving between brokers, throttling) are sent
            # again, as every Kinesis producer does; any other refusal fails the step.
            for attempt in range(10):
                out = k.put_records(StreamName=stream, Records=records)
                again, why = [], ""
                for rec, res in zip(records, out["Records"]):
                    if "ErrorCode" not in res:
                        want[rec["Data"]] = (res["ShardId"], res["SequenceNumber"])
                    elif res["ErrorCode"] in ("InternalFailure", "ProvisionedThroughputExceededException"):
                        again.append(rec)
                        why = res.get("ErrorMessage", "")
                    else:
                        raise Failed(f"PutRecords refused an entry with {res['ErrorCode']}: {res}")
                if not again:
                    break
                log(f"PutRecords: {len(again)} of {len(records)} entries refused retryably "
                    f"({why[:100]}); sent again")
                records = again
                time.sleep(0.5 * (attempt + 1))
            else:
                raise Failed(f"PutRecords: {len(records)} entries still refused after 10 attempts")
        one = k.put_record(StreamName=stream, PartitionKey="single", Data=f"{run}-single".encode())
        want[f"{run}-single".encode()] = (one["ShardId"], one["SequenceNumber"])
        return want

    @staticmethod
    def read_back(k, stream, run, want, timeout=90):
        """Reads every shard from TRIM_HORIZON; each record of want must be there once, at
        its shard and sequence number. Returns the number of shards read."""
        shards, token = [], None
        while True:
            page = k.list_shards(NextToken=token) if token else k.list_shards(StreamName=stream)
            shards += page["Shards"]
            token = page.get("NextToken")
            if not token:
                break
        seen = {}
        deadline = time.monotonic() + timeout
        for shard in shards:
            it = k.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                      ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            for _ in range(500):
                if time.monotonic() > deadline:
                    raise Failed(f"reading the records back: not within {timeout}s")
                out = k.get_records(ShardIterator=it, Limit=1000)
                for r in out["Records"]:
                    if r["Data"].startswith(run.encode()):
                        seen.setdefault(r["Data"], []).append((shard["ShardId"], r["SequenceNumber"]))
                it = out.get("NextShardIterator")
                if not it or (not out["Records"] and out.get("MillisBehindLatest", 0) == 0):
                    break
            else:
                raise Failed(f"shard {shard['ShardId']}: not caught up after 500 GetRecords")
        missing = [d for d in want if d not in seen]
        twice = {d: s for d, s in seen.items() if len(s) > 1}
        wrong = {d: (want[d], s) for d, s in seen.items() if d in want and s[0] != want[d]}
        if missing or twice or wrong:
            raise Failed(f"boto3 read-back: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(twice)} duplicated, {len(wrong)} at another position (e.g. {list(wrong.items())[:2]})")
        return len(shards)

    def step_invalid(self):
        """Invalid DataStreams are refused by the API server, each with the message of the rule
        it breaks, and nothing is created."""
        base = {"shards": 4, "deletionPolicy": "Retain"}
        cases = [
            ("durability Object without an object store", {"durability": "Object"},
             "durability Object needs spec.objectStore"),
            ("OnDemand without scaling", {"mode": "OnDemand"},
             "mode OnDemand needs spec.scaling"),
            ("shards outside the scaling bounds",
             {"mode": "OnDemand", "scaling": {"minShards": 8, "maxShards": 16}},
             "spec.shards must lie within spec.scaling's minShards..maxShards"),
            ("minShards above maxShards", {"mode": "OnDemand", "shards": 4, "scaling": {"minShards": 5, "maxShards": 3}},
             "scaling.minShards must not exceed scaling.maxShards"),
            ("replicas and shardsPerBroker", {"brokers": {"replicas": 2, "shardsPerBroker": 2}},
             "set brokers.replicas or brokers.shardsPerBroker, not both"),
            ("minReplicas above maxReplicas", {"brokers": {"minReplicas": 3, "maxReplicas": 2}},
             "brokers.minReplicas must not exceed brokers.maxReplicas"),
            ("retention below 24 hours", {"retentionHours": 1}, "spec.retentionHours"),
            ("no shards", {"shards": 0}, "spec.shards"),
        ]
        for i, (what, spec, message) in enumerate(cases):
            name = f"e2e-invalid-{i}"
            doc = {"apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
                   "metadata": {"name": name, "namespace": self.ns}, "spec": {**base, **spec}}
            p = self.run("kubectl", "apply", "-f", "-", check=False, stdin=json.dumps(doc))
            if p.returncode == 0 or message not in p.stderr:
                raise Failed(f"{what}: `kubectl apply` exited {p.returncode}, expected a refusal naming "
                             f"{message!r}: {p.stdout}{p.stderr}")
            if self.run("kubectl", "get", "datastream", name, "-n", self.ns, check=False).returncode == 0:
                raise Failed(f"{what}: refused, yet DataStream {name} exists")
            log(f"refused ({what}): {p.stderr.strip().splitlines()[-1][:200]}")

    def conditions_of(self, name):
        ds = self.kjson("get", "datastream", name, "-n", self.ns)
        return {c["type"]: c for c in ds.get("status", {}).get("conditions", [])}

    def step_degraded(self):
        """The example's only broker pod deleted: Degraded turns True (it was serving), then
        with the pod back Ready is True and Degraded False again."""
        a = self.a
        pod = f"{self.stream}-broker-0"
        t0 = time.monotonic()
        deleted_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
        self.kubectl("delete", "pod", pod, "-n", self.ns, "--wait=false")
        def degraded():
            c = self.conditions_of(self.stream).get("Degraded", {})
            if c.get("status") == "True":
                return f"{c['reason']} ({c['message']})"
            # The StatefulSet's ready count may dip for less than a poll: a flip back to
            # False since the deletion shows it was True in between.
            if c.get("lastTransitionTime", "") >= deleted_at:
                return f"True and back to False at {c['lastTransitionTime']}"
            raise Failed(f"Degraded {c}")
        d = self.wait("Degraded True with the only broker down", degraded, a.timeout, interval=0.5)
        log(f"Degraded {d}, {time.monotonic() - t0:.1f}s after the pod deletion")
        def recovered():
            c = self.conditions_of(self.stream)
            if c.get("Ready", {}).get("status") != "True" or c.get("Degraded", {}).get("status") != "False":
                raise Failed(f"Ready {c.get('Ready', {}).get('status')}, Degraded {c.get('Degraded', {}).get('status')}")
            return True
        self.wait("Ready again, not Degraded", recovered, a.timeout, interval=1)
        log(f"Ready again {time.monotonic() - t0:.1f}s after the pod deletion")

    def step_pending(self):
        """A DataStream whose volume claim cannot bind (no such StorageClass): Ready names the
        claim (reason VolumePending) and a VolumePending Event says so."""
        a = self.a
        name = "e2e-pending"
        doc = {"apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
               "metadata": {"name": name, "namespace": self.ns},
               "spec": {"shards": 1, "deletionPolicy": "Retain",
                        "brokers": {"storage": {"storageClassName": "no-such-class"}}}}
        self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(doc))
        def named():
            ready = self.conditions_of(name).get("Ready", {})
            if ready.get("reason") != "VolumePending" or f"data-{name}-broker-0" not in ready.get("message", ""):
                raise Failed(f"Ready {ready}")
            return ready["message"]
        message = self.wait("Ready naming the Pending volume claim", named, 90, interval=2)
        self.wait("a VolumePending Event", lambda: "VolumePending" in self.event_reasons(name), 30)
        log(f"pending: Ready says {message!r}")
        self.delete_datastream(name)
        for claim in self.claims_of(name):
            self.kubectl("delete", "pvc", claim, "-n", self.ns, "--wait=false")

    def datastream_events(self, name):
        return self.kjson("get", "events", "-n", self.ns, "--field-selector",
                          f"involvedObject.kind=DataStream,involvedObject.name={name}")["items"]

    def step_ondemand(self):
        """OnDemand (the README's example): a bounded load above the target utilisation adds
        shards, within scaling.maxShards; once it stops and the stabilisation window (patched
        short) has passed, the stream shrinks again."""
        a = self.a
        ds = self.kjson("get", "datastream", self.stream, "-n", self.ns)
        start, most = ds["status"]["openShards"], ds["spec"]["scaling"]["maxShards"]
        target = ds["spec"]["scaling"].get("targetWriteUtilization", 70) / 100
        # Per-shard limit 1,000 records/s: twice what the open shards carry at the target.
        rate = int(2 * start * 1000 * target)
        def grows():
            d = self.kjson("get", "datastream", self.stream, "-n", self.ns)
            return d["status"]["openShards"] if d["status"]["openShards"] > start else None
        seen = {}
        def watch_growth():
            t0 = time.monotonic()   # the load pod is Running
            seen["open"] = self.wait(f"more than {start} open shards under {rate} records/s", grows,
                                     a.loadgen_seconds, interval=1)
            seen["after"] = time.monotonic() - t0
        self.run_loadgen("e2e-loadgen-ondemand", self.stream, self.endpoint, rate * a.loadgen_seconds,
                         a.loadgen_seconds, during=watch_growth, rate=rate)
        grown = seen["open"]
        if not start < grown <= most:
            raise Failed(f"OnDemand grew {start} -> {grown} shards, not within {start + 1}..{most}")
        decisions = [e for e in self.datastream_events(self.stream) if e.get("reason") == "AutoscaleDecision"]
        if not decisions:
            raise Failed("no AutoscaleDecision Event for the growth")
        log(f"OnDemand: {start} -> {grown} shards under {rate} records/s, {seen['after']:.0f}s after the load "
            f"started ({decisions[-1].get('note') or decisions[-1].get('message')})")
        self.kubectl("patch", "datastream", self.stream, "-n", self.ns, "--type", "merge",
                     "-p", json.dumps({"spec": {"scaling": {"scaleDownStabilizationSeconds": 20}}}))
        def shrinks():
            d = self.kjson("get", "datastream", self.stream, "-n", self.ns)
            open_now = d["status"]["openShards"]
            return open_now if open_now < grown else None
        t0 = time.monotonic()
        shrunk = self.wait(f"fewer than {grown} open shards once the load stopped", shrinks, a.timeout, interval=2)
        log(f"OnDemand: {grown} -> {shrunk} shards {time.monotonic() - t0:.0f}s after the window was set to 20 s")

    def step_paused(self):
        """spec.paused: writes refused with ResourceInUseException, reads go on; resumed."""
        from botocore.exceptions import ClientError
        a = self.a
        k = self.kinesis(self.endpoint)
        def patch(paused):
            self.kubectl("patch", "datastream", self.stream, "-n", self.ns, "--type", "merge",
                         "-p", json.dumps({"spec": {"paused": paused}}))
        def refused():
            try:
                k.put_record(StreamName=self.stream, PartitionKey="p", Data=b"while paused")
                return None
            except ClientError as e:
                code = e.response["Error"]["Code"]
                if code != "ResourceInUseException":
                    raise Failed(f"a write while paused got {code}, not ResourceInUseException")
                return e.response["Error"].get("Message", "")
        patch(True)
        message = self.wait("writes refused after spec.paused: true", refused, a.timeout, interval=1)
        log(f"paused: PutRecord refused: {message}")
        shard = k.list_shards(StreamName=self.stream)["Shards"][0]["ShardId"]
        it = k.get_shard_iterator(StreamName=self.stream, ShardId=shard,
                                  ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        k.get_records(ShardIterator=it, Limit=10)
        reasons = {e.get("reason") for e in self.datastream_events(self.stream)}
        if "Paused" not in reasons:
            raise Failed(f"no Paused Event (Events: {sorted(reasons)})")
        patch(False)
        def accepted():
            try:
                return k.put_record(StreamName=self.stream, PartitionKey="p", Data=b"resumed")["SequenceNumber"]
            except ClientError as e:
                if e.response["Error"]["Code"] != "ResourceInUseException":
                    raise
                return None
        self.wait("writes accepted after spec.paused: false", accepted, a.timeout, interval=1)
        self.wait("a Resumed Event", lambda: "Resumed" in {e.get("reason") for e in self.datastream_events(self.stream)},
                  60, interval=1)
        log("paused: reads went on; resumed: writes accepted again")

    def step_drive_wipe(self):
        """One of MinIO's four drives wiped under load (from the node): nothing acknowledged is
        lost, and MinIO keeps its write quorum."""
        a = self.a
        pod = self.kjson("get", "pods", "-n", self.ns, "-l", "app=minio")["items"][0]
        drive = os.path.join(self.a.kubelet_dir, "pods", pod["metadata"]["uid"], "volumes",
                             "kubernetes.io~empty-dir", "d2")
        if not os.path.isdir(drive) or not os.listdir(drive):
            raise Failed(f"MinIO's drive d2 is not at {drive}, or is empty")
        wiped = {}
        def wipe():
            time.sleep(8)
            entries = os.listdir(drive)
            for entry in entries:
                path = os.path.join(drive, entry)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            wiped["entries"] = len(entries)
            log(f"wiped MinIO drive d2 ({len(entries)} entries) under load")
        self.run_loadgen("e2e-loadgen-drive", self.fabric, self.fabric_endpoint, a.loadgen_records,
                         a.loadgen_seconds // 2, during=wipe)
        brokers = self.kjson("get", "statefulset", f"{self.fabric}-broker", "-n", self.ns)["spec"]["replicas"]
        self.wait(f"{brokers} members after the wipe", lambda: self.fabric_status(brokers), a.timeout, interval=1)

    # ---- deletion and uninstall -----------------------------------------------------
    def stream_keys(self, prefix, stream):
        """Keys in the bucket under a DataStream's prefix: the stream's own, and write-ahead ones."""
        keys = self.bucket_keys(prefix)
        own = [k for k in keys if k.startswith(f"{prefix}/streams/{stream}/")]
        wal = [k for k in keys if k.startswith(f"{prefix}/wal/")]
        return own, wal, keys

    def ready_named(self, name):
        """The DataStream name once Ready is True (else Failed, for wait to retry)."""
        ds = self.kjson("get", "datastream", name, "-n", self.ns)
        conds = {c["type"]: c["status"] for c in ds.get("status", {}).get("conditions", [])}
        if conds.get("Ready") != "True":
            raise Failed(f"Ready={conds.get('Ready')}")
        return ds

    def delete_datastream(self, name):
        """`kubectl delete datastream name`, waited for: the finalizer must not hang."""
        t0 = time.monotonic()
        self.run("kubectl", "delete", "datastream", name, "-n", self.ns, "--wait=true",
                 f"--timeout={self.a.timeout}s", timeout=self.a.timeout + 30)
        def pods_gone():
            pods = self.kjson("get", "pods", "-n", self.ns, "-l", f"app.kubernetes.io/instance={name}")["items"]
            if pods:
                raise Failed(f"{len(pods)} broker pod(s) left: {[p['metadata']['name'] for p in pods]}")
            return True
        self.wait(f"the broker pods of {name} gone", pods_gone, self.a.timeout)
        log(f"DataStream {name} deleted, its brokers gone, {time.monotonic() - t0:.1f}s after kubectl delete")

    def claims_of(self, name):
        return [c["metadata"]["name"] for c in self.kjson(
            "get", "pvc", "-n", self.ns, "-l", f"app.kubernetes.io/instance={name}")["items"]]

    def event_reasons(self, name):
        return {e.get("reason") for e in self.datastream_events(name)}

    def step_delete(self):
        a = self.a
        # Retain (the object-store example): volumes and bucket data stay.
        claims = self.claims_of(self.fabric)
        own_before, _, _ = self.stream_keys(self.prefix, self.fabric)
        if not claims or not own_before:
            raise Failed(f"before deleting {self.fabric}: {len(claims)} claims, {len(own_before)} stream objects")
        spec = self.kjson("get", "datastream", self.fabric, "-n", self.ns)["spec"]
        self.delete_datastream(self.fabric)
        kept = self.claims_of(self.fabric)
        own_after, _, _ = self.stream_keys(self.prefix, self.fabric)
        if sorted(kept) != sorted(claims) or not own_after:
            raise Failed(f"deletionPolicy Retain: claims {claims} -> {kept}, stream objects "
                         f"{len(own_before)} -> {len(own_after)}")
        if "DataRetained" not in self.event_reasons(self.fabric):
            raise Failed(f"no DataRetained Event for {self.fabric}: {self.event_reasons(self.fabric)}")
        log(f"Retain: {len(kept)} volume claims and {len(own_after)} objects of stream {self.fabric} kept")
        for claim in kept:   # frees the node's disk for what follows
            self.kubectl("delete", "pvc", claim, "-n", self.ns, "--wait=false")

        # Delete: a DataStream of its own on the same MinIO.
        name = "e2e-delete"
        store = dict(spec["objectStore"], url=f"s3://{self.bucket}/{name}")
        doc = {"apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
               "metadata": {"name": name, "namespace": self.ns},
               "spec": {"shards": 2, "durability": "Object", "objectStore": store, "deletionPolicy": "Delete",
                        "brokers": {"replicas": 1, "storage": spec["brokers"].get("storage", {})}}}
        self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(doc))
        ds = self.wait(f"DataStream {name} Ready", lambda: self.ready_named(name), a.timeout, interval=1)
        k = self.kinesis(ds["status"]["endpoint"])
        run = f"e2e-delete-{int(time.time())}"
        self.read_back(k, name, run, self.put_tagged(k, name, run))
        def in_bucket():
            own, wal, _ = self.stream_keys(name, name)
            if not own or not wal:
                raise Failed(f"{len(own)} stream objects, {len(wal)} write-ahead objects")
            return own, wal
        own, wal = self.wait(f"the objects of {name} in the bucket", in_bucket, 60, interval=1)
        claims = self.claims_of(name)
        self.delete_datastream(name)
        def claims_gone():
            left = self.claims_of(name)
            if left:
                raise Failed(f"volume claims left: {left}")
            return True
        self.wait(f"the volume claims of {name} gone", claims_gone, a.timeout, interval=1)
        def objects_gone():
            own_left, wal_left, keys = self.stream_keys(name, name)
            if own_left or wal_left:
                raise Failed(f"{len(own_left)} stream objects, {len(wal_left)} write-ahead objects left: "
                             f"{(own_left + wal_left)[:5]}")
            return keys
        left = self.wait(f"the objects of {name} gone from the bucket", objects_gone, 30, interval=1)
        if "DataDeleted" not in self.event_reasons(name):
            raise Failed(f"no DataDeleted Event for {name}: {self.event_reasons(name)}")
        log(f"Delete: {len(claims)} volume claim(s), {len(own)} stream and {len(wal)} write-ahead objects "
            f"deleted; the cluster's own records left under the prefix: {sorted(left)}")

    def step_uninstall(self):
        a = self.a
        # DataStreams first (README's order): their finalizers need the operator.
        for ds in self.kjson("get", "datastreams", "-n", self.ns)["items"]:
            self.delete_datastream(ds["metadata"]["name"])
        self.run("helm", "uninstall", a.release, "--namespace", a.operator_namespace, "--wait",
                 "--timeout", f"{a.timeout}s", timeout=a.timeout + 30)
        kinds = "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,configmaps,secrets,leases"
        def nothing_left():
            items = self.kjson("get", kinds, "-n", a.operator_namespace)["items"]
            # What every namespace has whatever is installed.
            ours = [f"{i['kind']}/{i['metadata']['name']}" for i in items
                    if not (i["kind"] == "ServiceAccount" and i["metadata"]["name"] == "default")
                    and not (i["kind"] == "ConfigMap" and i["metadata"]["name"] == "kube-root-ca.crt")]
            cluster = self.kjson("get", "clusterroles,clusterrolebindings,mutatingwebhookconfigurations", "-l",
                                 f"app.kubernetes.io/instance={a.release}")["items"]
            ours += [f"{i['kind']}/{i['metadata']['name']}" for i in cluster]
            if ours:
                raise Failed(f"left after helm uninstall: {ours}")
            return True
        self.wait("nothing of the release left", nothing_left, 60, interval=1)
        if self.run("kubectl", "get", "crd", "datastreams.streamfabric.io", check=False).returncode != 0:
            raise Failed("helm uninstall removed the CRD; Helm keeps CRDs, and DataStreams with them")
        self.run("kubectl", "delete", "crd", "datastreams.streamfabric.io", "--wait=true", "--timeout=60s",
                 timeout=90)
        log("helm uninstall left only the CRD; the CRD then deleted without hanging")

    # ---- brokers sharing a stream through a bucket ---------------------------------
    def step_minio(self):
        """The MinIO of e2e/kube/minio.yaml and the bucket the object-store example names."""
        a = self.a
        with open(os.path.join(a.repo, self.FABRIC_EXAMPLE)) as f:
            text = f.read()
        m = re.search(r"^  name:\s*(\S+)", text, re.M)
        u = re.search(r"^\s+url:\s*s3://([^/\s]+)/(\S+)", text, re.M)
        e = re.search(r"^\s+endpoint:\s*(\S+)", text, re.M)
        if not (m and u and e):
            raise Failed(f"cannot find name, objectStore.url and endpoint in {self.FABRIC_EXAMPLE}")
        self.fabric, self.bucket, self.prefix, s3_endpoint = m.group(1), u.group(1), u.group(2), e.group(1)
        self.kubectl("apply", "-n", self.ns, "-f", os.path.join(a.repo, "e2e/kube/minio.yaml"))
        def available():
            d = self.kjson("get", "deployment", "minio", "-n", self.ns)
            return d.get("status", {}).get("readyReplicas", 0) >= 1
        self.wait("MinIO ready (write quorum over its 4 drives)", available, a.timeout)
        secret = self.kjson("get", "secret", "minio-creds", "-n", self.ns)["data"]
        import base64
        import boto3
        key = {k: base64.b64decode(v).decode() for k, v in secret.items()}
        self.s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                               aws_access_key_id=key["AWS_ACCESS_KEY_ID"],
                               aws_secret_access_key=key["AWS_SECRET_ACCESS_KEY"])
        self.wait(f"bucket {self.bucket} created", lambda: self._create_bucket(), 60, interval=2)
        log(f"MinIO at {s3_endpoint}, bucket {self.bucket}")

    def _create_bucket(self):
        try:
            self.s3.create_bucket(Bucket=self.bucket)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as e:   # noqa: BLE001 - MinIO still starting: retried by wait()
            raise Failed(f"create_bucket: {e}")
        return True

    def bucket_keys(self, prefix=None):
        """Every key under prefix (default: the object-store example's) in the bucket."""
        keys, token = [], None
        while True:
            kw = {"Bucket": self.bucket, "Prefix": (prefix or self.prefix) + "/"}
            if token:
                kw["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kw)
            keys += [o["Key"] for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not token:
                return keys

    def fabric_status(self, brokers):
        """The object-store DataStream Ready with `brokers` members, its open shards spread
        evenly over them and no handoff under way."""
        ds = self.kjson("get", "datastream", self.fabric, "-n", self.ns)
        st = ds.get("status", {})
        conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
        per = st.get("shardsPerBroker", {})
        spread = sorted(per.values())
        even = spread and spread[-1] - spread[0] <= 1 and sum(spread) == st.get("openShards")
        settled = st.get("handoffs", 0) == 0
        if conds.get("Ready") == "True" and st.get("members") == brokers and len(per) == brokers and even \
                and settled:
            return ds
        raise Failed(f"Ready={conds.get('Ready')} members={st.get('members')} open={st.get('openShards')} "
                     f"shardsPerBroker={per} handoffs={st.get('handoffs')}")

    def step_fabric(self):
        a = self.a
        t0 = time.monotonic()
        self.kubectl("apply", "-n", self.ns, "-f", os.path.join(a.repo, self.FABRIC_EXAMPLE))
        sts = self.wait(f"StatefulSet {self.fabric}-broker", lambda: self.kjson(
            "get", "statefulset", f"{self.fabric}-broker", "-n", self.ns), 60)
        brokers = sts["spec"]["replicas"]
        if brokers < 2:
            raise Failed(f"{self.FABRIC_EXAMPLE} should run several brokers; its StatefulSet has {brokers}")
        ds = self.wait(f"DataStream {self.fabric} Ready with {brokers} members",
                       lambda: self.fabric_status(brokers), a.timeout, interval=1)
        log(f"DataStream {self.fabric} Ready, {brokers} members {ds['status']['shardsPerBroker']}, "
            f"{time.monotonic() - t0:.1f}s after kubectl apply")
        self.fabric_endpoint = ds["status"]["endpoint"]
        table = self.kubectl("get", "datastreams", self.fabric, "-n", self.ns, "-o", "wide")
        log("kubectl get datastreams -o wide:\n" + table.rstrip())
        if self._table_row(table, self.fabric).get("MEMBERS") != str(brokers):
            raise Failed(f"MEMBERS column is not {brokers}:\n{table}")
        # The settings arrived where they are used: each broker reports the bucket as its store.
        for i in range(brokers):
            pod = f"{self.fabric}-broker-{i}"
            env = self.kjson("get", "pod", pod, "-n", self.ns)["spec"]["containers"][0].get("env", [])
            names = {e["name"] for e in env}
            if "AWS_ACCESS_KEY_ID" not in names:
                raise Failed(f"pod {pod}: no AWS_ACCESS_KEY_ID from spec.objectStore.credentialsSecretRef")
        self.check_cluster_key(brokers)
        # Any broker answers: the Service spreads connections over all of them; each write
        # and read of a shard another broker owns is forwarded.
        self.run_loadgen("e2e-loadgen-fabric", self.fabric, self.fabric_endpoint,
                         a.loadgen_records, a.loadgen_seconds)
        keys = self.bucket_keys()
        wal = [k for k in keys if "/wal/" in k or k.endswith(".wal")]
        members = [k for k in keys if "/members/" in k]
        if not wal:
            raise Failed(f"durability Object, yet no write-ahead objects under s3://{self.bucket}/{self.prefix}: "
                         f"{keys[:20]}")
        if len(members) < brokers:
            raise Failed(f"{len(members)} membership records in the bucket for {brokers} brokers: {members}")
        log(f"bucket: {len(keys)} objects, {len(wal)} write-ahead, {len(members)} members")

    def step_fanout(self):
        """Enhanced fan-out through the Service of the three-broker DataStream: a consumer
        registered, each shard subscribed (the Service picks a broker; one that does not own
        the shard relays the owner's stream), a record put into each shard pushed live."""
        k = self.kinesis(self.fabric_endpoint)
        stream_arn = k.describe_stream_summary(StreamName=self.fabric)["StreamDescriptionSummary"]["StreamARN"]
        arn = k.register_stream_consumer(StreamARN=stream_arn, ConsumerName="e2e-fanout")["Consumer"]["ConsumerARN"]
        self.wait("the consumer ACTIVE", lambda: k.describe_stream_consumer(ConsumerARN=arn)[
            "ConsumerDescription"]["ConsumerStatus"] == "ACTIVE" or None, 30)
        try:
            shards = k.list_shards(StreamName=self.fabric, ShardFilter={"Type": "AT_LATEST"})["Shards"]
            latencies = []
            for shard in shards:
                sid = shard["ShardId"]
                events = iter(k.subscribe_to_shard(ConsumerARN=arn, ShardId=sid,
                                                   StartingPosition={"Type": "LATEST"})["EventStream"])
                next(events)  # the first event: the subscription is in place
                data = f"fanout-{sid}".encode()
                sent = time.monotonic()
                put = k.put_record(StreamName=self.fabric, PartitionKey="fanout", Data=data,
                                   ExplicitHashKey=shard["HashKeyRange"]["StartingHashKey"])
                if put["ShardId"] != sid:
                    raise Failed(f"a record for {sid} went to {put['ShardId']}")
                deadline = time.monotonic() + 20
                while True:
                    if time.monotonic() > deadline:
                        raise Failed(f"{sid}: the record was not pushed within 20 s")
                    records = next(events)["SubscribeToShardEvent"]["Records"]
                    if any(r["Data"] == data for r in records):
                        latencies.append(time.monotonic() - sent)
                        break
            latencies.sort()
            log(f"fan-out: {len(shards)} shards subscribed through the Service, each record pushed live "
                f"(put to event p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
                f"max {latencies[-1] * 1000:.0f} ms, durability Object)")
        finally:
            k.deregister_stream_consumer(ConsumerARN=arn)

    def step_auth(self):
        """spec.authentication: the brokers take SigV4 requests of the Secrets' keys only (the
        operator signs with its own key, so the DataStream gets Ready), a wrong secret and an
        unsigned request are refused; a writers' key writes only and a readers' key reads only
        (the operator's access policy), a resource policy set through the API denies at once;
        and a rotated Secret is served without a restart."""
        from botocore import UNSIGNED
        from botocore.config import Config
        from botocore.exceptions import ClientError
        import boto3
        a, name, secret_name = self.a, "e2e-auth", "e2e-auth-keys"
        def keys_secret(entries, secret=secret_name):
            return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": self.ns},
                    "type": "Opaque", "stringData": entries}
        self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(keys_secret({"AKIDE2EFIRST": "first-secret"})))
        roles = {"writers": ("e2e-auth-writers", "AKIDE2EWRITER", "writer-secret"),
                 "readers": ("e2e-auth-readers", "AKIDE2EREADER", "reader-secret")}
        for secret, key, value in roles.values():
            self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(keys_secret({key: value}, secret)))
        doc = {"apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
               "metadata": {"name": name, "namespace": self.ns},
               "spec": {"shards": 1, "deletionPolicy": "Delete",
                        "authentication": {"credentialsSecretRef": {"name": secret_name},
                                           **{role: [{"name": secret}] for role, (secret, _, _) in roles.items()}}}}
        t0 = time.monotonic()
        self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(doc))
        ds = self.wait(f"DataStream {name} Ready (the operator's signed CreateStream served)",
                       lambda: self.ready_named(name), a.timeout, interval=1)
        log(f"auth: {name} Ready {time.monotonic() - t0:.1f}s after kubectl apply")
        endpoint = ds["status"]["endpoint"]
        def client(key, secret, **config):
            return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1",
                                aws_access_key_id=key, aws_secret_access_key=secret,
                                config=Config(connect_timeout=5, read_timeout=20,
                                              retries={"max_attempts": 1, "mode": "standard"}, **config))
        def refusal(k):
            try:
                k.list_streams()
                return None
            except ClientError as e:
                return e.response["Error"]["Code"]
        k = client("AKIDE2EFIRST", "first-secret")
        run = f"e2e-auth-{int(time.time())}"
        want = self.put_tagged(k, name, run, batches=1, per_batch=50)
        self.read_back(k, name, run, want)
        for what, c, expected in [("a wrong secret", client("AKIDE2EFIRST", "wrong"), "InvalidSignatureException"),
                                  ("an unknown key", client("AKIDNOBODY", "x"), "UnrecognizedClientException"),
                                  ("no signature", client("x", "x", signature_version=UNSIGNED),
                                   "MissingAuthenticationTokenException")]:
            got = refusal(c)
            if got != expected:
                raise Failed(f"{what}: {got}, not {expected}")
        self.check_access_policy(name, client, k)
        pod = self.kjson("get", "pod", f"{name}-broker-0", "-n", self.ns)
        uid, restarts = pod["metadata"]["uid"], pod["status"]["containerStatuses"][0]["restartCount"]
        # Rotation: a second key in, the first out; the broker serves the change as the kubelet
        # updates the mounted Secret, without a restart.
        # replace, not apply: apply merges stringData into the stored data and keeps the first key.
        self.run("kubectl", "replace", "-f", "-", stdin=json.dumps(keys_secret({"AKIDE2ESECOND": "second-secret"})))
        t0 = time.monotonic()
        rotated = client("AKIDE2ESECOND", "second-secret")
        self.wait("the rotated key served", lambda: refusal(rotated) is None or None, 240, interval=2)
        took = time.monotonic() - t0
        if refusal(k) != "UnrecognizedClientException":
            raise Failed("the removed key is still served")
        pod = self.kjson("get", "pod", f"{name}-broker-0", "-n", self.ns)
        if (pod["metadata"]["uid"], pod["status"]["containerStatuses"][0]["restartCount"]) != (uid, restarts):
            raise Failed("the broker pod was restarted or replaced by the rotation")
        log(f"auth: 50 records put and read back with the Secret's key; a wrong secret, an unknown key and "
            f"no signature refused; a rotated Secret served {took:.0f}s after kubectl replace, no restart")
        self.delete_datastream(name)
        for secret in [secret_name] + [secret for secret, _, _ in roles.values()]:
            self.kubectl("delete", "secret", secret, "-n", self.ns)

    def step_tls(self):
        """spec.tls: the brokers serve HTTPS on the client Service's port 4443 with the
        Secret's certificate (a kubernetes.io/tls Secret, as cert-manager writes one), beside
        HTTP; boto3 trusting the CA reads what it wrote, trusting another CA refuses; a renewed
        certificate replaced in the Secret is served without a restart."""
        import datetime
        from botocore.config import Config
        from botocore.exceptions import SSLError
        import boto3
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compat"))
        import tls_scenario as certs
        from cryptography import x509
        name, secret = "e2e-tls", "e2e-tls-cert"
        ca, ca_key = certs.make_ca("e2e-kube CA")
        other, _ = certs.make_ca("another CA")
        workdir = tempfile.mkdtemp(prefix="e2e-tls-")
        ca_file, other_file = os.path.join(workdir, "ca.crt"), os.path.join(workdir, "other.crt")
        for path, cert in ((ca_file, ca), (other_file, other)):
            with open(path, "wb") as f:
                f.write(cert.public_bytes(certs.serialization.Encoding.PEM))
        now = datetime.datetime.now(datetime.timezone.utc)
        host = f"{name}.{self.ns}.svc"
        def tls_secret(cert_pem, key_pem):
            return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": secret, "namespace": self.ns},
                    "stringData": {"tls.crt": cert_pem.decode(), "tls.key": key_pem.decode()}}
        first = certs.server_cert(ca, ca_key, now - certs.DAY, now + 7 * certs.DAY, dns_names=(host,), ips=())
        self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(tls_secret(*first)))
        doc = {"apiVersion": "streamfabric.io/v1alpha1", "kind": "DataStream",
               "metadata": {"name": name, "namespace": self.ns},
               "spec": {"shards": 1, "deletionPolicy": "Delete", "tls": {"secretRef": {"name": secret}}}}
        self.run("kubectl", "apply", "-f", "-", stdin=json.dumps(doc))
        ds = self.wait(f"DataStream {name} Ready", lambda: self.ready_named(name), self.a.timeout, interval=1)
        endpoint = ds["status"].get("tlsEndpoint")
        if endpoint != f"https://{host}:4443":
            raise Failed(f"status.tlsEndpoint is {endpoint!r}")
        def client(verify):
            return boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1", verify=verify,
                                aws_access_key_id="any", aws_secret_access_key="any",
                                config=Config(connect_timeout=5, read_timeout=20,
                                              retries={"max_attempts": 1, "mode": "standard"}))
        def served():
            host_port = endpoint.removeprefix("https://")
            h, p = host_port.rsplit(":", 1)
            return x509.load_pem_x509_certificate(ssl.get_server_certificate((h, int(p))).encode())
        k = client(ca_file)
        run = f"e2e-tls-{int(time.time())}"
        want = self.put_tagged(k, name, run, batches=1, per_batch=50)
        self.read_back(self.kinesis(ds["status"]["endpoint"]), name, run, want)
        try:
            client(other_file).list_streams()
            raise Failed("a client trusting another CA was served")
        except SSLError:
            pass
        pod = self.kjson("get", "pod", f"{name}-broker-0", "-n", self.ns)
        uid, restarts = pod["metadata"]["uid"], pod["status"]["containerStatuses"][0]["restartCount"]
        renewed = certs.server_cert(ca, ca_key, now - certs.DAY, now + 30 * certs.DAY, dns_names=(host,), ips=())
        self.run("kubectl", "replace", "-f", "-", stdin=json.dumps(tls_secret(*renewed)))
        t0 = time.monotonic()
        want_cert = x509.load_pem_x509_certificate(renewed[0])
        self.wait("the renewed certificate served", lambda: served() == want_cert or None, 240, interval=2)
        took = time.monotonic() - t0
        client(ca_file).list_streams()
        pod = self.kjson("get", "pod", f"{name}-broker-0", "-n", self.ns)
        if (pod["metadata"]["uid"], pod["status"]["containerStatuses"][0]["restartCount"]) != (uid, restarts):
            raise Failed("the broker pod was restarted or replaced by the renewal")
        log(f"tls: 50 records put over HTTPS ({endpoint}) and read back over HTTP; another CA refused; "
            f"a renewed certificate served {took:.0f}s after kubectl replace, no restart")
        self.delete_datastream(name)
        self.kubectl("delete", "secret", secret, "-n", self.ns)

    def check_access_policy(self, name, client, admin):
        """The writers' and readers' keys of the auth step do their part only, as the operator's
        access policy (a ConfigMap the broker reads from its mount) says; a resource policy
        denying the writer, set with the admin's key, applies, and lifts when deleted."""
        from botocore.exceptions import ClientError
        writer, reader = client("AKIDE2EWRITER", "writer-secret"), client("AKIDE2EREADER", "reader-secret")
        def denied(call, **kw):
            try:
                call(**kw)
                return False
            except ClientError as e:
                if e.response["Error"]["Code"] != "AccessDeniedException":
                    raise
                return True
        run = f"e2e-access-{int(time.time())}"
        want = self.put_tagged(writer, name, run, batches=1, per_batch=20)
        self.read_back(reader, name, run, want)
        shard = dict(StreamName=name, ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")
        refused = {"the writer reads": denied(writer.get_shard_iterator, **shard),
                   "the writer deletes": denied(writer.delete_stream, StreamName=name),
                   "the reader writes": denied(reader.put_record, StreamName=name, PartitionKey="p", Data=b"x")}
        if not all(refused.values()):
            raise Failed(f"not refused: {[what for what, ok in refused.items() if not ok]}")
        arn = admin.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
        deny = {"Statement": [{"Sid": "e2e", "Effect": "Deny", "Principal": {"AWS": "AKIDE2EWRITER"},
                               "Action": "kinesis:PutRecord*", "Resource": arn}]}
        admin.put_resource_policy(ResourceARN=arn, Policy=json.dumps(deny))
        if not denied(writer.put_record, StreamName=name, PartitionKey="p", Data=b"x"):
            raise Failed("the resource policy's Deny did not apply")
        admin.delete_resource_policy(ResourceARN=arn)
        writer.put_record(StreamName=name, PartitionKey="p", Data=b"x")
        log(f"access: the writers' key wrote {len(want)} records the readers' key read back; the writer's reads "
            f"and delete and the reader's writes refused; a resource policy's Deny applied and lifted")

    def check_cluster_key(self, brokers):
        """One key signs every broker's iterators: the operator's Secret, read by each broker
        process from its mount; an iterator from the first broker reads at the last."""
        import base64
        secret = self.kjson("get", "secret", f"{self.fabric}-cluster-key", "-n", self.ns)
        key = base64.b64decode(secret["data"]["token.key"])
        if len(key) != 32 or secret["metadata"]["ownerReferences"][0]["kind"] != "DataStream":
            raise Failed(f"Secret {self.fabric}-cluster-key: {len(key)}-byte key, owners "
                         f"{secret['metadata'].get('ownerReferences')}")
        clients = []
        for i in range(brokers):
            pod = f"{self.fabric}-broker-{i}"
            ip = self.kjson("get", "pod", pod, "-n", self.ns)["status"]["podIP"]
            with urllib.request.urlopen(f"http://{ip}:4568/config", timeout=10) as r:
                path = json.load(r).get("cluster_key_file")
            if not path:
                raise Failed(f"pod {pod}: /config shows no cluster_key_file")
            with open(f"/proc/{self.broker_pid(pod)}/root{path}", "rb") as f:
                if f.read() != key:
                    raise Failed(f"pod {pod}: {path} is not the key of Secret {self.fabric}-cluster-key")
            clients.append(self.kinesis(f"http://{ip}:4567"))
        shard = clients[0].list_shards(StreamName=self.fabric)["Shards"][0]["ShardId"]
        it = clients[0].get_shard_iterator(StreamName=self.fabric, ShardId=shard,
                                           ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        clients[-1].get_records(ShardIterator=it, Limit=1)
        log(f"cluster key: Secret {self.fabric}-cluster-key in all {brokers} brokers; an iterator of "
            f"{self.fabric}-broker-0 read at {self.fabric}-broker-{brokers - 1}")

    def broker_pid(self, pod):
        """The host pid of the broker process of pod (the scenario runs on the node as root)."""
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if b"streamfabric-broker" not in f.read().split(b"\0")[0]:
                        continue
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if f"STREAMFABRIC_BROKER_ID={pod}".encode() in f.read().split(b"\0"):
                        return int(entry)
            except OSError:
                continue
        raise Failed(f"no broker process of pod {pod} on this node")

    def step_disruptions(self):
        """Under load through the Service: one broker's process SIGKILLed (its container
        restarts on the same volume), another pod deleted (the StatefulSet brings it back;
        its shards are handed over meanwhile). Nothing acknowledged is lost."""
        a = self.a
        brokers = self.kjson("get", "statefulset", f"{self.fabric}-broker", "-n", self.ns)["spec"]["replicas"]
        killed, deleted = f"{self.fabric}-broker-1", f"{self.fabric}-broker-2"
        restarts = self._restarts(killed)
        def disrupt():
            time.sleep(8)
            pid = self.broker_pid(killed)
            os.kill(pid, 9)
            log(f"SIGKILL to the broker of {killed} (pid {pid})")
            time.sleep(10)
            self.kubectl("delete", "pod", deleted, "-n", self.ns, "--wait=false")
            log(f"kubectl delete pod {deleted}")
        self.run_loadgen("e2e-loadgen-disrupted", self.fabric, self.fabric_endpoint,
                         a.loadgen_records * 2, a.loadgen_seconds, during=disrupt)
        if self._restarts(killed) <= restarts:
            raise Failed(f"{killed} did not restart after its broker was killed")
        self.wait(f"{brokers} members again", lambda: self.fabric_status(brokers), a.timeout, interval=1)
        segments = [k for k in self.bucket_keys() if "/segments/" in k]
        if not segments:
            raise Failed("no sealed segment in the bucket after a shard was handed over")
        log(f"{len(segments)} sealed segments in the bucket")

    def _restarts(self, pod):
        p = self.kjson("get", "pod", pod, "-n", self.ns)
        return sum(c.get("restartCount", 0) for c in p.get("status", {}).get("containerStatuses", []))

    def step_lost_volume(self):
        """A broker pod lost with its volume: the stream is served from the bucket, every
        record written before is read back once."""
        a = self.a
        brokers = self.kjson("get", "statefulset", f"{self.fabric}-broker", "-n", self.ns)["spec"]["replicas"]
        # The disruptions' shards handed back first: this step is about the lost volume.
        self.wait(f"{brokers} members, no handoff under way", lambda: self.fabric_status(brokers), a.timeout, interval=1)
        k = self.kinesis(self.fabric_endpoint)
        run = f"e2e-volume-{os.getpid()}-{int(time.time())}"
        want = self.put_tagged(k, self.fabric, run)
        pod = f"{self.fabric}-broker-0"
        pvc = self.kjson("get", "pod", pod, "-n", self.ns)["spec"]["volumes"]
        claim = next(v["persistentVolumeClaim"]["claimName"] for v in pvc if "persistentVolumeClaim" in v)
        old_volume = self.kjson("get", "pvc", claim, "-n", self.ns)["spec"]["volumeName"]
        self.kubectl("delete", "pvc", claim, "-n", self.ns, "--wait=false")
        self.kubectl("delete", "pod", pod, "-n", self.ns, "--wait=true", timeout=a.timeout)
        def new_volume():
            # The StatefulSet may have made the pod again while the old claim was still
            # terminating: that pod waits for a claim that is gone; delete it once more, and
            # the StatefulSet makes both anew.
            c = json.loads(self.run("kubectl", "get", "pvc", claim, "-n", self.ns, "-o", "json",
                                    "--ignore-not-found").stdout or "null")
            if c is None or c["metadata"].get("deletionTimestamp"):
                p = json.loads(self.run("kubectl", "get", "pod", pod, "-n", self.ns, "-o", "json",
                                        "--ignore-not-found").stdout or "null")
                if c is None and p and p["status"].get("phase") == "Pending":
                    self.kubectl("delete", "pod", pod, "-n", self.ns, "--wait=false")
                return None
            v = c["spec"].get("volumeName")
            return v if c["status"].get("phase") == "Bound" and v != old_volume else None
        volume = self.wait(f"{pod} on a new volume", new_volume, a.timeout, interval=1)
        log(f"{pod}: volume {old_volume} deleted with its claim, now on {volume}")
        self.wait(f"{brokers} members again", lambda: self.fabric_status(brokers), a.timeout, interval=1)
        shards = self.read_back(k, self.fabric, run, want)
        log(f"after the lost volume: {len(want)} records over {shards} shards read back once")

    def step_scale(self):
        """`kubectl scale datastream`: more shards, and the brokers follow (shardsPerBroker)."""
        a = self.a
        ds = self.kjson("get", "datastream", self.fabric, "-n", self.ns)
        shards = ds["spec"]["shards"] + 2
        per = ds["spec"]["brokers"]["shardsPerBroker"]
        brokers = min(-(-shards // per), ds["spec"]["brokers"].get("maxReplicas", 4))
        t0 = time.monotonic()
        self.kubectl("scale", "datastream", self.fabric, "-n", self.ns, f"--replicas={shards}")
        def scaled():
            d = self.fabric_status(brokers)
            return d if d["status"].get("openShards") == shards else None
        d = self.wait(f"{shards} open shards on {brokers} members", scaled, a.timeout, interval=1)
        log(f"scaled to {shards} shards on {brokers} brokers {d['status']['shardsPerBroker']} "
            f"in {time.monotonic() - t0:.1f}s")
        events = self.kjson("get", "events", "-n", self.ns, "--field-selector",
                            f"involvedObject.kind=DataStream,involvedObject.name={self.fabric}")["items"]
        log("Events: " + "; ".join(f"{e.get('reason')}: {e.get('message')}" for e in events[-6:]))
        self.run_loadgen("e2e-loadgen-scaled", self.fabric, self.fabric_endpoint,
                         a.loadgen_records, a.loadgen_seconds // 2)

    def step_loadgen(self):
        a = self.a
        self.run_loadgen("e2e-loadgen", self.stream, self.endpoint, a.loadgen_records, a.loadgen_seconds)

    def step_sidecar(self):
        a = self.a
        if not self.fabric_endpoint:
            raise Failed("the sidecar step needs the fabric step's DataStream")
        sidecar = {
            "name": "sidecar", "image": a.sidecar_image, "imagePullPolicy": a.loadgen_pull_policy,
            # A native sidecar: started (and healthy) before the application, stopped after it.
            "restartPolicy": "Always",
            "env": [{"name": "STREAMFABRIC_SIDECAR_BROKER_ENDPOINT", "value": self.fabric_endpoint},
                    {"name": "STREAMFABRIC_SIDECAR_AGGREGATE", "value": "true"}],
            "startupProbe": {"httpGet": {"path": "/healthz", "port": 4600}, "periodSeconds": 1,
                             "failureThreshold": 30},
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]}},
        }
        acked = self.run_loadgen("e2e-loadgen-sidecar", self.fabric, "http://127.0.0.1:4599",
                                 a.loadgen_records, a.loadgen_seconds // 2, init_containers=[sidecar])
        logs = self.kubectl("logs", "e2e-loadgen-sidecar", "-n", self.ns, "-c", "sidecar")
        if "aggregate=true" not in logs:
            raise Failed(f"the sidecar did not start with aggregation on:\n{logs[-2000:]}")
        log(f"sidecar: {acked} records through the sidecar, aggregated, read back once")

    def webhook_configuration(self):
        items = self.kjson("get", "mutatingwebhookconfigurations", "-l",
                           f"app.kubernetes.io/instance={self.a.release}")["items"]
        if len(items) != 1:
            raise Failed(f"the chart made {len(items)} MutatingWebhookConfigurations, not 1")
        return items[0]

    def step_inject(self):
        """The operator's webhook adds the sidecar to pods labelled streamfabric.io/inject; one
        produces through it (loadgen --verify, aggregated), another consumes through it (the pull
        API); an unlabelled pod is untouched; one naming a missing DataStream is admitted
        without a sidecar, with an Event that says why."""
        a = self.a
        if not self.fabric_endpoint:
            raise Failed("the inject step needs the fabric step's DataStream")
        config = self.wait("the operator's CA in the webhook configuration",
                           lambda: self.webhook_configuration()["webhooks"][0]["clientConfig"].get("caBundle"),
                           a.timeout)
        log(f"webhook configuration trusts the operator's CA ({len(config)} bytes of PEM, base64)")
        asks = {"streamfabric.io/inject": "true"}

        def pod(name, labels, annotations, args):
            return {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": self.ns, "labels": labels, "annotations": annotations},
                "spec": {"restartPolicy": "Never", "activeDeadlineSeconds": 300,
                         "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                         "containers": [{"name": "app", "image": a.loadgen_image,
                                         "imagePullPolicy": a.loadgen_pull_policy, "args": args}]},
            }

        def sidecar_of(p):
            return next((c for c in p["spec"].get("initContainers", []) if c["name"] == "streamfabric-sidecar"), None)

        def dry_run(p):
            return json.loads(self.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(p)))

        # The API server picks a new CA bundle up within moments: dry runs until it calls.
        probe = pod("e2e-inject-probe", asks, {"streamfabric.io/stream": self.fabric}, ["--help"])
        self.wait("the API server calls the webhook", lambda: sidecar_of(dry_run(probe)), 60, interval=1)
        plain = dry_run(pod("e2e-inject-plain", {"app": "plain"}, {"streamfabric.io/stream": self.fabric}, ["--help"]))
        if plain["spec"].get("initContainers") or plain["spec"]["containers"][0].get("env"):
            raise Failed(f"a pod without the label was changed: {plain['spec']}")

        # A producer: the application's SDK calls go to 127.0.0.1:4599 (the injected sidecar).
        acked = self.run_loadgen("e2e-inject-producer", self.fabric, "http://127.0.0.1:4599",
                                 a.loadgen_records // 2, a.loadgen_seconds // 2,
                                 labels=asks, annotations={"streamfabric.io/stream": self.fabric,
                                                           "streamfabric.io/aggregate": "true"})
        produced = self.kjson("get", "pod", "e2e-inject-producer", "-n", self.ns)
        env = {e["name"]: e.get("value") for e in sidecar_of(produced).get("env", [])}
        if env.get("STREAMFABRIC_SIDECAR_BROKER_ENDPOINT") != self.fabric_endpoint or \
                env.get("STREAMFABRIC_SIDECAR_AGGREGATE") != "true":
            raise Failed(f"the injected sidecar's settings: {env}")

        # A consumer: the sidecar holds the leases and hands records out on GET /v1/next.
        name = "e2e-inject-consumer"
        self.run("kubectl", "delete", "pod", name, "-n", self.ns, "--ignore-not-found", "--wait=true")
        consumer = pod(name, asks, {"streamfabric.io/stream": self.fabric, "streamfabric.io/roles": "consumer",
                                    "streamfabric.io/consumer-application": "e2e-inject"},
                       ["pull", "--endpoint", "http://127.0.0.1:4599", "--min-records", str(acked),
                        "--timeout-secs", "150"])
        self.kubectl("apply", "-f", "-", stdin=json.dumps(consumer))

        def finished():
            p = self.kjson("get", "pod", name, "-n", self.ns)
            return p if p.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
        p = self.wait(f"pod {name} finished", finished, 240, interval=1)
        out = self.kubectl("logs", name, "-n", self.ns, "-c", "app")
        m = re.search(r"^pull records=(\d+) distinct=(\d+) shards=(\d+)", out, re.M)
        if p["status"]["phase"] != "Succeeded" or not m or int(m.group(2)) < acked:
            raise Failed(f"{name} {p['status']['phase']}: {out[-2000:]}")
        log(f"{name}: {m.group(2)} distinct records from {m.group(3)} shards through its sidecar "
            f"(at least the {acked} just produced)")

        # Asking for a DataStream that is not there: admitted as it is, and told why.
        lost = "e2e-inject-lost"
        self.run("kubectl", "delete", "pod", lost, "-n", self.ns, "--ignore-not-found", "--wait=true")
        created = json.loads(self.kubectl("create", "-o", "json", "-f", "-",
                                          stdin=json.dumps(pod(lost, asks, {"streamfabric.io/stream": "nope"},
                                                               ["--help"]))))
        if sidecar_of(created):
            raise Failed("a pod naming a missing DataStream got a sidecar")

        def told():
            events = self.kjson("get", "events.events.k8s.io", "-n", self.ns)["items"]
            return next((e.get("note") for e in events if e.get("reason") == "SidecarNotInjected"
                         and (e.get("regarding") or {}).get("name") == lost), None)
        note = self.wait("an Event about the pod without its sidecar", told, 30)
        log(f"{lost}: admitted without a sidecar, Event: {note}")
        for pod_name in (lost, name, "e2e-inject-producer"):
            self.run("kubectl", "delete", "pod", pod_name, "-n", self.ns, "--ignore-not-found", "--wait=false")

    def run_loadgen(self, name, stream, endpoint, records, seconds, during=None, rate=None, init_containers=None,
                    labels=None, annotations=None):
        """A pod running `streamfabric-loadgen run --verify` against endpoint: every acknowledged
        record must come back exactly once (a second copy only of a record sent again after
        a request whose outcome was unknown, as with any Kinesis producer that retries).
        during(), if given, runs once the pod is Running, while it writes; init_containers
        (native sidecars) run beside it."""
        a = self.a
        self.run("kubectl", "delete", "pod", name, "-n", self.ns, "--ignore-not-found", "--wait=true")
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": self.ns, "labels": {"app": "e2e-loadgen", **(labels or {})},
                         "annotations": annotations or {}},
            "spec": {
                "restartPolicy": "Never",
                "activeDeadlineSeconds": seconds + 180,
                "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
                "containers": [{
                    "name": "loadgen", "image": a.loadgen_image, "imagePullPolicy": a.loadgen_pull_policy,
                    "args": ["--threads", "2", "run", "--endpoint", endpoint, "--stream", stream,
                             "--records", str(records), "--duration-secs", str(seconds),
                             "--rate", str(rate or a.loadgen_rate), "--connections", "4", "--batch-size", "100",
                             "--verify", "--create-timeout-secs", "30", "--drain-timeout-secs", "90"],
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            },
        }
        if init_containers:
            pod["spec"]["initContainers"] = init_containers
        self.kubectl("apply", "-f", "-", stdin=json.dumps(pod))
        if during:
            def running():
                p = self.kjson("get", "pod", name, "-n", self.ns)
                phase = p.get("status", {}).get("phase")
                if phase in ("Succeeded", "Failed"):
                    raise Failed(f"pod {name} ended ({phase}) before the disruption")
                return phase == "Running"
            self.wait(f"pod {name} Running", running, 60)
            during()

        def finished():
            p = self.kjson("get", "pod", name, "-n", self.ns)
            return p if p.get("status", {}).get("phase") in ("Succeeded", "Failed") else None
        p = self.wait(f"pod {name} finished", finished, seconds + 200, interval=1)
        out = self.kubectl("logs", name, "-n", self.ns, "-c", "loadgen")
        log(f"{name} pod output:\n{out.rstrip()}")
        state = next(c for c in p["status"]["containerStatuses"] if c["name"] == "loadgen")["state"].get("terminated", {})
        if p["status"]["phase"] != "Succeeded" or state.get("exitCode") != 0:
            raise Failed(f"{name} pod {p['status']['phase']} (exit {state.get('exitCode')}, {state.get('reason')})")
        m = re.search(r"^verify result=(\S+) acked=(\d+) read=\d+ exactly_once=(\d+) missing=(\d+) "
                      r"duplicated=(\d+) resent_duplicated=(\d+)", out, re.M)
        if not m:
            raise Failed(f"no verify line in the {name} output")
        result, acked, once, missing, dup, resent = m.group(1), *map(int, m.groups()[1:])
        if acked == 0 or once + resent != acked or missing or dup:
            raise Failed(f"{name} verify: result={result} acked={acked} exactly_once={once} "
                         f"missing={missing} duplicated={dup} resent_duplicated={resent}")
        log(f"{name}: {acked} acknowledged records read back, {once} exactly once, "
            f"{resent} twice after a resend")
        return acked

    # ---- diagnostics -------------------------------------------------------------
    def diagnostics(self):
        a = self.a
        def show(title, *cmd):
            p = self.run(*cmd, check=False, timeout=60)
            print(f"----- {title}: {' '.join(cmd)}\n{p.stdout}{p.stderr}", flush=True)
        show("operator logs", "kubectl", "logs", "-n", a.operator_namespace, "-l",
             f"app.kubernetes.io/instance={a.release}", "--all-containers", "--tail=300", "--prefix")
        for stream in filter(None, [self.stream, self.fabric]):
            show(f"broker logs of {stream}", "kubectl", "logs", "-n", self.ns, "-l",
                 f"app.kubernetes.io/instance={stream}", "--all-containers", "--tail=200", "--prefix")
            show(f"describe datastream {stream}", "kubectl", "describe", "datastream", stream, "-n", self.ns)
        if self.fabric:
            show("MinIO logs", "kubectl", "logs", "-n", self.ns, "deployment/minio", "--tail=100")
        show("describe pods", "kubectl", "describe", "pods", "--all-namespaces")
        show("pods, services, volumes", "kubectl", "get", "pods,svc,endpointslices,pvc,pv,statefulsets",
             "--all-namespaces", "-o", "wide")
        show("events", "kubectl", "get", "events", "--all-namespaces", "--sort-by=.lastTimestamp")

    def main(self):
        steps = [("helm", self.step_helm), ("example", self.step_example),
                 ("boto3", self.step_boto3), ("loadgen", self.step_loadgen),
                 ("ondemand", self.step_ondemand), ("paused", self.step_paused),
                 ("invalid", self.step_invalid), ("degraded", self.step_degraded),
                 ("pending", self.step_pending),
                 ("minio", self.step_minio), ("fabric", self.step_fabric), ("fanout", self.step_fanout),
                 ("auth", self.step_auth), ("tls", self.step_tls),
                 ("sidecar", self.step_sidecar),
                 ("inject", self.step_inject),
                 ("disruptions", self.step_disruptions), ("lost-volume", self.step_lost_volume),
                 ("scale", self.step_scale), ("drive-wipe", self.step_drive_wipe),
                 ("delete", self.step_delete), ("uninstall", self.step_uninstall)]
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
    ap.add_argument("--sidecar-image", default="ghcr.io/streamfabric/sidecar:0.1.0")
    ap.add_argument("--loadgen-records", type=int, default=20000)
    ap.add_argument("--loadgen-seconds", type=int, default=40)
    ap.add_argument("--loadgen-rate", type=int, default=1000, help="records/s (below the autoscale target)")
    ap.add_argument("--only", action="append", help="run only these steps (repeatable; for debugging)")
    ap.add_argument("--kubelet-dir", help="the node's kubelet directory, seen from here (drive-wipe); "
                    "default: kubelet/ beside $KUBECONFIG, as scripts/e2e-kube lays it out")
    args = ap.parse_args()
    if not args.kubelet_dir:
        args.kubelet_dir = os.path.join(os.path.dirname(os.environ.get("KUBECONFIG", "")), "kubelet")
    sys.exit(Scenario(args).main())


if __name__ == "__main__":
    main()
