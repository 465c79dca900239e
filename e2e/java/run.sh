#!/usr/bin/env bash
# The AWS SDK for Java v2 scenario against a running broker:
#
#   bash e2e/java/run.sh http://127.0.0.1:4567
#
# Builds it with Maven (artifacts from Maven Central into $STREAMFABRIC_CACHE/m2, the build
# in $STREAMFABRIC_CACHE/java-compat; both outside the clone, warm after the first run).
set -euo pipefail
endpoint="${1:?usage: $0 <endpoint, e.g. http://127.0.0.1:4567>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STREAMFABRIC_CACHE:-/var/cache/streamfabric}"
build="$cache/java-compat"
mkdir -p "$build"
mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$cache/m2" -Dstreamfabric.build="$build" \
    -Dstyle.color=never package dependency:build-classpath -Dmdep.outputFile="$build/classpath.txt"
# SLF4J's "no provider" notice is the SDK's, not ours.
java -cp "$build/classes:$(cat "$build/classpath.txt")" streamfabric.SubscribeCheck "$endpoint" 2> >(grep -v '^SLF4J' >&2)
