#!/usr/bin/env bash
# Kinesis compatibility scenario driven through the AWS CLI:
#
#   bash awscli_scenario.sh http://127.0.0.1:4567
#
# Needs `aws` on PATH (scripts/install-python-tools.sh provides it). Prints each
# check, ends with "N passed, M failed", exits non-zero on any failure.
set -uo pipefail

endpoint="${1:?usage: $0 <endpoint, e.g. http://127.0.0.1:4567>}"

# Dummy credentials; keep the user's ~/.aws config and instance metadata out.
export AWS_ACCESS_KEY_ID=AKIDSTREAMFABRICTEST
export AWS_SECRET_ACCESS_KEY=streamfabric-test-secret
export AWS_DEFAULT_REGION=us-east-1
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_PAGER=""

command -v aws >/dev/null || { echo "aws not on PATH" >&2; exit 2; }
# JSON and base64 handling: the venv's python next to `aws`, else python3.
py="$(dirname "$(command -v aws)")/python"
[[ -x "$py" ]] || py=python3

# Blob parameters: CLI v1 takes raw text and base64-encodes it itself; v2
# expects base64 unless told otherwise. Ask v2 for v1's behaviour, so raw
# text means the same with both.
binary_format=()
if aws --version 2>&1 | grep -q '^aws-cli/2'; then
    binary_format=(--cli-binary-format raw-in-base64-out)
fi

kin() {
    aws --endpoint-url "$endpoint" --cli-connect-timeout 5 --cli-read-timeout 30 \
        --output json "${binary_format[@]}" kinesis "$@"
}

stream="sf-cli-$(date +%s)-$RANDOM"
workdir="$(mktemp -d)"
created=0
cleanup() {
    if (( created )); then kin delete-stream --stream-name "$stream" >/dev/null 2>&1; fi
    rm -rf "$workdir"
}
trap cleanup EXIT

put_shard=""    # where put-record said its record went
put_seq=""
shards=()       # list-shards' answer
passed=0
failed=0
failed_names=()
# check NAME FUNCTION: run one check; a failing check prints why on stderr.
check() {
    local name="$1"; shift
    if "$@"; then
        passed=$((passed + 1)); echo "ok    $name"
    else
        failed=$((failed + 1)); failed_names+=("$name"); echo "FAIL  $name"
    fi
}
fail() { echo "      $*" >&2; return 1; }

stream_status() {
    kin describe-stream-summary --stream-name "$stream" \
        --query StreamDescriptionSummary.StreamStatus --output text
}

# ---- checks ----

check_create_stream() {
    kin create-stream --stream-name "$stream" --shard-count 2 || return 1
    created=1
    # Polled rather than `aws kinesis wait stream-exists`: that waiter sleeps
    # 10 s between attempts, far longer than a local server needs.
    local deadline=$((SECONDS + 60)) status=""
    while (( SECONDS < deadline )); do
        status="$(stream_status)" || return 1
        [[ "$status" == ACTIVE ]] && return 0
        sleep 0.2
    done
    fail "stream not ACTIVE after 60 s (last status $status)"
}

check_put_record() {
    local out
    out="$(kin put-record --stream-name "$stream" --partition-key cli-key-1 \
        --data "hello from the aws cli" --query '[ShardId, SequenceNumber]' --output text)" || return 1
    read -r put_shard put_seq <<<"$out"
    [[ "$put_shard" == shardId-* && "$put_seq" =~ ^[0-9]+$ ]] || fail "unexpected answer: $out"
}

check_put_record_binary() {
    # fileb:// sends the file's bytes unchanged with every CLI version.
    head -c 1500 /dev/urandom >"$workdir/binary.bin"
    kin put-record --stream-name "$stream" --partition-key cli-key-binary \
        --data "fileb://$workdir/binary.bin" >/dev/null
}

check_put_records() {
    local records='[
        {"PartitionKey": "cli-key-2", "Data": "batch record one"},
        {"PartitionKey": "cli-key-3", "Data": "batch record two"},
        {"PartitionKey": "cli-key-4", "Data": "batch record three"}]'
    local out failed_count count
    out="$(kin put-records --stream-name "$stream" --records "$records" \
        --query '[FailedRecordCount, length(Records)]' --output text)" || return 1
    read -r failed_count count <<<"$out"
    [[ "$failed_count" == 0 && "$count" == 3 ]] || fail "FailedRecordCount and record count: $out"
}

check_list_shards() {
    local out
    out="$(kin list-shards --stream-name "$stream" --query 'Shards[].ShardId' --output text)" || return 1
    read -ra shards <<<"$out"
    (( ${#shards[@]} == 2 )) || fail "${#shards[@]} shards: $out"
}

check_get_records() {
    # Reads each shard from TRIM_HORIZON until caught up, into one JSON file
    # per page; then compares the decoded data with what was put.
    local shard iterator count behind page=0
    for shard in "${shards[@]}"; do
        iterator="$(kin get-shard-iterator --stream-name "$stream" --shard-id "$shard" \
            --shard-iterator-type TRIM_HORIZON --query ShardIterator --output text)" || return 1
        local deadline=$((SECONDS + 60)) caught_up=0
        while (( SECONDS < deadline )); do
            page=$((page + 1))
            kin get-records --shard-iterator "$iterator" --limit 100 \
                >"$workdir/page-$page-$shard.json" || return 1
            read -r count behind iterator < <("$py" -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(len(d["Records"]), d.get("MillisBehindLatest", 0), d.get("NextShardIterator") or "-")
' "$workdir/page-$page-$shard.json")
            if [[ "$iterator" == - ]] || (( count == 0 && behind == 0 )); then caught_up=1; break; fi
        done
        (( caught_up )) || fail "reading $shard did not finish within 60 s" || return 1
    done
    "$py" - "$workdir" "$put_shard" "$put_seq" <<'PY'
import base64, glob, json, os, sys
workdir, put_shard, put_seq = sys.argv[1:]
want = sorted([
    ("cli-key-1", b"hello from the aws cli"),
    ("cli-key-binary", open(os.path.join(workdir, "binary.bin"), "rb").read()),
    ("cli-key-2", b"batch record one"),
    ("cli-key-3", b"batch record two"),
    ("cli-key-4", b"batch record three"),
])
got, located = [], False
for path in glob.glob(os.path.join(workdir, "page-*.json")):
    shard = os.path.basename(path).split("-", 2)[2][: -len(".json")]  # page-N-<shard>.json
    for r in json.load(open(path))["Records"]:
        got.append((r["PartitionKey"], base64.b64decode(r["Data"])))
        located |= (shard, r["SequenceNumber"]) == (put_shard, put_seq)
if sorted(got) != want:
    sys.exit(f"      read back {sorted(got)!r:.400}\n      expected {want!r:.400}")
if not located:
    sys.exit(f"      put-record's {put_seq} not found on {put_shard}")
PY
}

check_describe_stream_summary() {
    local out name status open_shards retention
    out="$(kin describe-stream-summary --stream-name "$stream" --query \
        'StreamDescriptionSummary.[StreamName, StreamStatus, OpenShardCount, RetentionPeriodHours]' \
        --output text)" || return 1
    read -r name status open_shards retention <<<"$out"
    [[ "$name" == "$stream" && "$status" == ACTIVE && "$open_shards" == 2 && "$retention" == 24 ]] \
        || fail "unexpected summary: $out"
}

check_delete_stream() {
    kin delete-stream --stream-name "$stream" || return 1
    local deadline=$((SECONDS + 60)) err
    while (( SECONDS < deadline )); do
        if ! err="$(stream_status 2>&1)"; then
            if [[ "$err" == *ResourceNotFoundException* ]]; then created=0; return 0; fi
            fail "describe-stream-summary failed: $err" || return 1
        fi
        sleep 0.2
    done
    fail "stream still exists 60 s after delete-stream"
}

echo "endpoint $endpoint, $(aws --version 2>&1)"
check create-stream-and-wait-active check_create_stream
if (( failed == 0 )); then
    check put-record check_put_record
    check put-record-binary-fileb check_put_record_binary
    check put-records check_put_records
    check list-shards check_list_shards
    check get-records-trim-horizon check_get_records
    check describe-stream-summary check_describe_stream_summary
    check delete-stream check_delete_stream
fi

(( failed )) && echo "failed: ${failed_names[*]}"
echo "$passed passed, $failed failed"
(( failed == 0 ))
