#!/usr/bin/env python3
"""Writes a one-layer container image as a `docker save`-format tar (manifest.json,
the config JSON, one layer tar) without a container engine, for
`ctr -n k8s.io images import` (scripts/e2e-kube) or `docker load`.

    docker/image-tar.py --tag ghcr.io/streamfabric/broker:0.1.0 --out broker.tar \\
        --file target/release/streamfabric-broker:/usr/local/bin/streamfabric-broker \\
        --dir /data:65532 --user 65532:65532 --env STREAMFABRIC_DATA_DIR=/data \\
        --entrypoint /usr/local/bin/streamfabric-broker --cmd serve --expose 4567

Every dynamically linked --file brings the shared libraries `ldd` lists (and the
loader) at the paths ldd prints, so the image runs the host's build of a binary
(glibc the same as the build machine's). The layer is reproducible: fixed mtimes,
sorted entries, owner root unless a --dir says otherwise, so the same inputs give
the same image id.
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile

# A minimal /etc like distroless's: the nonroot user the pods run as, and name
# lookups through files then DNS (the kubelet mounts hosts and resolv.conf).
ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    "etc/group": "root:x:0:\nnonroot:x:65532:\n",
    "etc/nsswitch.conf": "hosts: files dns\n",
    "etc/hosts": "",
    "etc/resolv.conf": "",
    "etc/hostname": "",
}
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def shared_libraries(binary):
    """Absolute paths of the libraries and loader ldd lists; [] for a static binary."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    text = out.stdout + out.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if out.returncode != 0:
        sys.exit(f"image-tar: ldd {binary} failed: {text.strip()}")
    libs = []
    for line in text.splitlines():
        if "not found" in line:
            sys.exit(f"image-tar: {binary}: missing library: {line.strip()}")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(m.group(1))
    return libs


def read_binary(path, strip_debug):
    if not strip_debug:
        with open(path, "rb") as f:
            return f.read()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "stripped")
        subprocess.run(["objcopy", "--strip-debug", path, out], check=True)
        with open(out, "rb") as f:
            return f.read()


class Layer:
    def __init__(self):
        self.entries = {}  # image path -> (kind, data, mode, uid, gid)

    def add_dir(self, path, mode=0o755, uid=0, gid=0):
        path = path.strip("/")
        parts = path.split("/")
        for i in range(1, len(parts)):
            self.entries.setdefault("/".join(parts[:i]), ("dir", None, 0o755, 0, 0))
        self.entries[path] = ("dir", None, mode, uid, gid)

    def add_file(self, path, data, mode=0o644):
        path = path.strip("/")
        if "/" in path:
            parent = path.rsplit("/", 1)[0]
            if parent not in self.entries:
                self.add_dir(parent)
        self.entries[path] = ("file", data, mode, 0, 0)

    def tar(self):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path in sorted(self.entries):
                kind, data, mode, uid, gid = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.mode, info.uid, info.gid = 0, mode, uid, gid
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    t.addfile(info)
                else:
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True, action="append", help="repository:tag (repeatable)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--file", action="append", default=[], metavar="SRC:DEST",
                    help="host file -> image path, executable; its ldd libraries come along")
    ap.add_argument("--dir", action="append", default=[], metavar="PATH[:UID[:MODE]]",
                    help="an empty directory, e.g. /data:65532 or /tmp:0:1777")
    ap.add_argument("--entrypoint", action="append", default=[])
    ap.add_argument("--cmd", action="append", default=[])
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--user", default="")
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--expose", action="append", default=[], metavar="PORT")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--no-etc", action="store_true", help="no /etc files (e.g. the pause image)")
    ap.add_argument("--strip-debug", action="store_true",
                    help="objcopy --strip-debug each --file, as the Dockerfiles do")
    args = ap.parse_args()

    layer = Layer()
    if not args.no_etc:
        for path, text in ETC.items():
            layer.add_file(path, text.encode())
        if os.path.exists(CA_BUNDLE):
            with open(CA_BUNDLE, "rb") as f:
                layer.add_file(CA_BUNDLE, f.read())
        layer.add_dir("tmp", 0o1777)
        layer.add_dir("home/nonroot", 0o755, 65532, 65532)
    for spec in args.file:
        src, dest = spec.split(":", 1)
        layer.add_file(dest, read_binary(src, args.strip_debug), 0o755)
        for lib in shared_libraries(src):
            with open(os.path.realpath(lib), "rb") as f:
                layer.add_file(lib, f.read(), 0o755)
    for spec in args.dir:
        parts = spec.split(":")
        uid = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        mode = int(parts[2], 8) if len(parts) > 2 else 0o755
        layer.add_dir(parts[0], mode, uid, uid)
    layer_tar = layer.tar()
    diff_id = "sha256:" + hashlib.sha256(layer_tar).hexdigest()

    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "User": args.user,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"] + args.env,
            "Entrypoint": args.entrypoint or None,
            "Cmd": args.cmd or None,
            "WorkingDir": args.workdir,
            "ExposedPorts": {f"{p}/tcp": {} for p in args.expose} or None,
            "Labels": dict(kv.split("=", 1) for kv in args.label) or None,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "docker/image-tar.py"}],
    }
    config["config"] = {k: v for k, v in config["config"].items() if v is not None}
    config_json = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_json).hexdigest() + ".json"
    layer_name = diff_id[len("sha256:"):] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": args.tag, "Layers": [layer_name]}]

    tmp = args.out + ".tmp"
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in [(layer_name, layer_tar), (config_name, config_json),
                           ("manifest.json", json.dumps(manifest).encode())]:
            if "/" in name:
                d = tarfile.TarInfo(name.split("/")[0])
                d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, 0
                t.addfile(d)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            t.addfile(info, io.BytesIO(data))
    os.replace(tmp, args.out)
    print(f"image-tar: {args.out}: {', '.join(args.tag)} ({len(layer_tar) >> 20} MiB layer, "
          f"{len(layer.entries)} entries, id sha256:{config_name[:-5][:12]})", file=sys.stderr)


if __name__ == "__main__":
    main()
