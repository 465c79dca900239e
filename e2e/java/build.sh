#!/usr/bin/env bash
# Builds the Java scenarios with Maven, artifacts from Maven Central cached in
# $STREAMFABRIC_CACHE/m2, the build in $STREAMFABRIC_CACHE/java-compat (both outside the clone,
# warm after the first run); prints the classpath to run them with as the last line.
#
#   build.sh        the AWS SDK for Java v2 check and the KCL worker on KCL 3.x (e2e/java)
#   build.sh kcl2   the same KCL worker on KCL 2.x (e2e/java/kcl2)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${STREAMFABRIC_CACHE:-/var/cache/streamfabric}"
case "${1:-}" in
    "") pom="$here/pom.xml"; build="$cache/java-compat" ;;
    kcl2) pom="$here/kcl2/pom.xml"; build="$cache/java-compat-kcl2" ;;
    *) echo "usage: $0 [kcl2]" >&2; exit 2 ;;
esac
mkdir -p "$build"
mvn -q -B -f "$pom" -Dmaven.repo.local="$cache/m2" -Dstreamfabric.build="$build" \
    -Dstyle.color=never package dependency:build-classpath -Dmdep.outputFile="$build/classpath.txt" >&2
echo "$build/classes:$(cat "$build/classpath.txt")"
