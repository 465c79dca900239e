#!/usr/bin/env bash
# The AWS SDK for Java v2 scenario against a running broker:
#
#   bash e2e/java/run.sh http://127.0.0.1:4567
#   E2E_CA_FILE=ca.crt bash e2e/java/run.sh https://127.0.0.1:4443   # trusting that CA only
set -euo pipefail
endpoint="${1:?usage: $0 <endpoint, e.g. http://127.0.0.1:4567>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
classpath="$("$here/build.sh" | tail -1)"
trust=()
if [[ -n "${E2E_CA_FILE:-}" ]]; then
    # The JVM's trust store, for the sync (Apache) and async (Netty) clients alike: the CA alone.
    store="$(mktemp -d)/ca.p12"
    trap 'rm -rf "$(dirname "$store")"' EXIT
    keytool -importcert -noprompt -alias streamfabric-ca -file "$E2E_CA_FILE" -keystore "$store" \
        -storetype PKCS12 -storepass changeit >/dev/null 2>&1
    trust=(-Djavax.net.ssl.trustStore="$store" -Djavax.net.ssl.trustStoreType=PKCS12
           -Djavax.net.ssl.trustStorePassword=changeit)
fi
java "${trust[@]}" -cp "$classpath" streamfabric.SubscribeCheck "$endpoint"
