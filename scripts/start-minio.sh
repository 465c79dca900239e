#!/usr/bin/env bash
# Starts a MinIO server (built by scripts/install-go-tools.sh) in the
# background on 127.0.0.1, keeping everything under DIR, and prints its
# connection facts as shell assignments (also written to DIR/minio.env):
#
#   eval "$(scripts/start-minio.sh /tmp/sf-minio)"
#   # -> MINIO_ENDPOINT=http://127.0.0.1:PORT MINIO_ACCESS_KEY=... MINIO_SECRET_KEY=...
#   #    MINIO_PID_FILE=/tmp/sf-minio/minio.pid
#   scripts/start-minio.sh --stop /tmp/sf-minio      # or: kill "$(cat DIR/minio.pid)"
#
# Layout: DIR/data (the drive), DIR/minio.log, DIR/minio.pid, DIR/minio.env.
# The credentials are generated on first start and kept in DIR/credentials, so
# a restart on the same DIR keeps its data and keys. MINIO_PORT picks the port
# (default: a free one); MINIO_BIN a minio binary (default: install-go-tools.sh).
# Progress and errors go to stderr; waits are bounded (MINIO_START_TIMEOUT, 60 s).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "start-minio: $*" >&2; }

source "$here/lib/process.sh"

if [[ "${1:-}" == "--stop" ]]; then
    [[ $# -eq 2 ]] || { echo "usage: $0 --stop DIR" >&2; exit 2; }
    stop_pidfile "$2/minio.pid" minio
    exit 0
fi
[[ $# -eq 1 ]] || { echo "usage: $0 DIR | $0 --stop DIR" >&2; exit 2; }

dir="$(mkdir -p "$1" && cd "$1" && pwd)"
pidfile="$dir/minio.pid"
if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    log "already running (pid $(cat "$pidfile")); stop it first: $0 --stop $dir"
    exit 1
fi

minio="${MINIO_BIN:-}"
if [[ -z "$minio" ]]; then
    minio="$("$here/install-go-tools.sh" minio | tail -1)/minio"
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="${MINIO_PORT:-$(free_port)}"

umask 077
if [[ ! -f "$dir/credentials" ]]; then
    printf '%s %s\n' "sf$(openssl rand -hex 8)" "$(openssl rand -hex 24)" >"$dir/credentials"
fi
read -r access secret <"$dir/credentials"
mkdir -p "$dir/data"

# The web console is off (MINIO_BROWSER=off): only the S3 API listens.
MINIO_ROOT_USER="$access" MINIO_ROOT_PASSWORD="$secret" MINIO_BROWSER=off \
MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
    setsid nohup "$minio" server --quiet --address "127.0.0.1:$port" "$dir/data" \
    >"$dir/minio.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

endpoint="http://127.0.0.1:$port"
deadline=$((SECONDS + ${MINIO_START_TIMEOUT:-60}))
until curl -fsS -o /dev/null --max-time 2 "$endpoint/minio/health/ready" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
        log "minio exited during start; last lines of $dir/minio.log:"; tail -20 "$dir/minio.log" >&2
        rm -f "$pidfile"; exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "not ready after ${MINIO_START_TIMEOUT:-60}s; stopping it. Log: $dir/minio.log"
        tail -20 "$dir/minio.log" >&2
        stop_pidfile "$pidfile" minio; exit 1
    fi
    sleep 0.2
done

# %q-quoted, so the lines can be eval'ed or sourced whatever the paths hold.
{
    printf 'MINIO_ENDPOINT=%q\n' "$endpoint"
    printf 'MINIO_ACCESS_KEY=%q\n' "$access"
    printf 'MINIO_SECRET_KEY=%q\n' "$secret"
    printf 'MINIO_REGION=%q\n' us-east-1
    printf 'MINIO_PID_FILE=%q\n' "$pidfile"
    printf 'MINIO_LOG=%q\n' "$dir/minio.log"
} >"$dir/minio.env"
log "ready at $endpoint (pid $pid)"
cat "$dir/minio.env"
