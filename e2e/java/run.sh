#!/usr/bin/env bash
# The AWS SDK for Java v2 scenario against a running broker:
#
#   bash e2e/java/run.sh http://127.0.0.1:4567
set -euo pipefail
endpoint="${1:?usage: $0 <endpoint, e.g. http://127.0.0.1:4567>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
classpath="$("$here/build.sh" | tail -1)"
java -cp "$classpath" streamfabric.SubscribeCheck "$endpoint"
