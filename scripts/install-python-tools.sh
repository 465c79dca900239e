#!/usr/bin/env bash
# Installs the Python tools of the compatibility tests (boto3, AWS CLI v1, awslabs'
# aws-kinesis-agg, the KPL aggregation format's reference for the sidecar's aggregates, and
# cryptography, which makes the TLS scenario's certificates) into
# a cached virtualenv and prints the venv's bin directory as the last line:
#
#   bin=$(scripts/install-python-tools.sh | tail -1)
#   bin=$(scripts/install-python-tools.sh moto | tail -1)   # moto's server, the DynamoDB
#                                                          # oracle (e2e/dynamo), in a venv of its own
#
# The venv lives outside the clone, keyed by Python version and pins, so a
# warm rerun only checks a marker file. Progress goes to stderr.
set -euo pipefail

# The full resolved set is pinned, not just the two top-level packages, so a
# new release of a transitive dependency cannot change what CI runs.
PINS=(
    boto3==1.44.8
    botocore==1.44.8
    awscli==1.46.3
    s3transfer==0.19.3
    jmespath==1.1.0
    python-dateutil==2.9.0.post0
    six==1.17.0
    urllib3==2.8.0
    colorama==0.4.6
    docutils==0.19
    PyYAML==6.0.4
    rsa==4.7.2
    pyasn1==0.6.5
    aws-kinesis-agg==1.2.3
    protobuf==7.36.2
    # Certificates for the TLS scenario (e2e/compat/tls_scenario.py).
    cryptography==51.0.1
    cffi==2.1.1
    pycparser==3.12
)

# moto's server: its own venv, pinned by e2e/dynamo/moto-requirements.txt (the full resolved set).
check='import boto3, awscli, aws_kinesis_agg.aggregator, cryptography'
if [[ "${1:-}" == moto ]]; then
    mapfile -t PINS < "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/e2e/dynamo/moto-requirements.txt"
    check='import moto.server, boto3'
fi

PYTHON="${PYTHON:-python3}"
cache="${STREAMFABRIC_CACHE:-/var/cache/streamfabric}"

py_version="$("$PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
pins_hash="$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-12)"
venv="$cache/venv-py$py_version-$pins_hash"
marker="$venv/.installed"

if [[ ! -f "$marker" ]]; then
    mkdir -p "$cache"
    # Serialise concurrent installs of the same key (e.g. parallel CI jobs).
    exec 9>"$venv.lock"
    flock 9
    if [[ ! -f "$marker" ]]; then
        echo "install-python-tools: creating $venv" >&2
        rm -rf "$venv"    # leftovers of an interrupted install
        "$PYTHON" -m venv "$venv"
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --no-input "${PINS[@]}" >&2
        "$venv/bin/python" -c "$check" >&2
        touch "$marker"
    fi
    exec 9>&-
fi

echo "$venv/bin"
