# Sourced by the start-* scripts (which define `log`): stopping a background service.

stop_pidfile() {   # stop_pidfile FILE NAME: TERM, wait up to 20 s, then KILL
    local f=$1 pid i
    [[ -f "$f" ]] || return 0
    pid="$(cat "$f")"
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then log "$2 ($pid) ignored TERM; killing"; kill -9 "$pid" || true; fi
    fi
    rm -f "$f"
}
