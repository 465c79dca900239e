#!/usr/bin/env bash
# Runs the Kinesis compatibility scenarios (boto3, the AWS CLI, the AWS SDK for Java v2, the
# KCL 3.x and 2.x with fan-out and polling retrieval) against a
# running server:
#
#   bash e2e/compat/run.sh http://127.0.0.1:4567
#
# Installs the pinned Python tools first (cached; about a second when warm).
# Ends with the combined "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

endpoint="${1:?usage: $0 <endpoint, e.g. http://127.0.0.1:4567>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

bin="$("$root/scripts/install-python-tools.sh" | tail -1)" || {
    echo "run.sh: installing the Python tools failed" >&2
    exit 2
}
export PATH="$bin:$PATH"

passed=0
failed=0
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# run_scenario NAME COMMAND...: runs one scenario and adds its closing
# "N passed, M failed" line to the totals; a scenario that dies without one
# counts as one failure.
run_scenario() {
    local name="$1"; shift
    echo "== $name"
    "$@" 2>&1 | tee "$log"
    local rc="${PIPESTATUS[0]}"
    local summary
    summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)"
    if [[ -z "$summary" ]]; then
        echo "run.sh: $name ended (exit $rc) without a summary line" >&2
        failed=$((failed + 1))
        return
    fi
    local p f
    read -r p _ f _ <<<"${summary//,/}"
    passed=$((passed + p))
    failed=$((failed + f))
    if (( rc != 0 && f == 0 )); then
        echo "run.sh: $name exited $rc" >&2
        failed=$((failed + 1))
    fi
}

run_scenario boto3 "$bin/python" "$here/boto3_scenario.py" --endpoint "$endpoint"
run_scenario awscli bash "$here/awscli_scenario.sh" "$endpoint"
# Against a broker with --credentials holding the scenarios' keys (scripts/e2e-compat).
if [[ "${E2E_SIGV4:-}" == 1 ]]; then
    run_scenario auth "$bin/python" "$here/auth_scenario.py" --endpoint "$endpoint"
fi
run_scenario java-sdk bash "$root/e2e/java/run.sh" "$endpoint"
# Unmodified KCL applications, their leases in the broker's DynamoDB subset: KCL 3.x, then
# the same worker on KCL 2.x (one artifact, so its own Maven module and classpath).
classpath="$("$root/e2e/java/build.sh" | tail -1)"
for mode in fanout polling late-start; do
    run_scenario "kcl3-$mode" "$bin/python" "$root/e2e/kcl/scenario.py" --endpoint "$endpoint" \
        --classpath "$classpath" --mode "$mode"
done
classpath="$("$root/e2e/java/build.sh" kcl2 | tail -1)"
for mode in fanout polling; do
    run_scenario "kcl2-$mode" "$bin/python" "$root/e2e/kcl/scenario.py" --endpoint "$endpoint" \
        --classpath "$classpath" --mode "$mode"
done

echo "== total"
echo "$passed passed, $failed failed"
(( failed == 0 ))
