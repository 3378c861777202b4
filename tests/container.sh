# Booted containers for the shell tests (sourced): `boot ROOT LOG [OPTION...]` boots the tree
# ROOT under systemd-nspawn (private network: only its own loopback; OPTIONs go to nspawn,
# e.g. --bind=) with its console appended to LOG, and sets $nspawn and $leader; `run CMD...`
# runs a command in all the container's namespaces; `booted` waits until systemd has finished
# starting (running or degraded); `stop_container` shuts it down (SIGTERM to nspawn: a clean
# poweroff, then SIGKILL after 10 s). Needs root.
boot() {
    local root=$1 log=$2
    shift 2
    systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --private-network "$@" \
        >>"$log" 2>&1 </dev/null &
    nspawn=$!
    leader=
    # The container's PID 1 is a child of nspawn named "systemd"; nspawn's own short-lived
    # helper child comes first, and entering its namespaces would fail once it has gone.
    for _ in $(seq 200); do
        leader=$(pgrep -P "$nspawn" -x systemd | head -n 1)
        [ -n "$leader" ] && break
        sleep 0.1
    done
}
run() { nsenter -t "$leader" -a "$@"; }
stop_container() {
    kill -TERM "$nspawn" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$nspawn" 2>/dev/null
}
booted() {
    # The bus appears a moment after PID 1 starts; until then systemctl cannot connect.
    local state
    for _ in $(seq 120); do
        state=$(timeout 60 nsenter -t "$leader" -a systemctl is-system-running --wait 2>/dev/null)
        case "$state" in running | degraded) return 0 ;; esac
        sleep 0.5
    done
    echo "system state: $state"
    return 1
}
