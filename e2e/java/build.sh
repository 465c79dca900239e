#!/usr/bin/env bash
# Builds the Java scenarios (e2e/java: the AWS SDK for Java v2 check and the KCL worker) with
# Maven, artifacts from Maven Central cached in $STREAMFABRIC_CACHE/m2, the build in
# $STREAMFABRIC_CACHE/java-compat (both outside the clone, warm after the first run); prints
# the classpath to run them with as the last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STREAMFABRIC_CACHE:-/var/cache/streamfabric}"
build="$cache/java-compat"
mkdir -p "$build"
mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$cache/m2" -Dstreamfabric.build="$build" \
    -Dstyle.color=never package dependency:build-classpath -Dmdep.outputFile="$build/classpath.txt" >&2
echo "$build/classes:$(cat "$build/classpath.txt")"
