#!/usr/bin/env bash
# Stop the SLURM test cluster started by .ci/slurm/start.sh: cancel its jobs, then end each
# daemon recorded in $STATE/pids by its PID, in reverse start order (slurmd, slurmctld,
# slurmdbd, mariadbd, munged). A PID whose process no longer runs the recorded program is
# skipped (it ended, and the number may belong to another process now). Processes that this
# script did not start are never touched. Safe to run when nothing is running.
#
# Environment: MSCFLOW_SLURM_STATE (default /tmp/mscflow-slurm), as for start.sh.
set -euo pipefail

STATE=${MSCFLOW_SLURM_STATE:-/tmp/mscflow-slurm}
PIDS="$STATE/pids"

log() { echo "slurm/stop: $*"; }

if [[ ! -s $PIDS ]]; then
    log "nothing recorded in $PIDS: nothing to stop"
    exit 0
fi

pid_alive() {
    local name=$1 pid=$2 comm
    [[ -r /proc/$pid/comm ]] || return 1
    comm=$(<"/proc/$pid/comm")
    [[ $comm == "$name" ]]
}

# Cancel this cluster's jobs first, so that no slurmstepd or job process outlives the
# daemons (they are children of slurmd's steps, not of the daemons listed in $PIDS).
if grep -q '^slurmctld ' "$PIDS" && timeout 10 squeue -h >/dev/null 2>&1; then
    mapfile -t jobs < <(timeout 10 squeue -h -o %A || true)
    if [[ ${#jobs[@]} -gt 0 ]]; then
        log "cancelling jobs ${jobs[*]}"
        timeout 10 scancel "${jobs[@]}" || true
        for _ in $(seq 50); do
            [[ -z $(timeout 10 squeue -h -t running,completing -o %A || true) ]] && break
            sleep 0.2
        done
    fi
fi

mapfile -t entries < <(tac "$PIDS")
for entry in "${entries[@]}"; do
    read -r name pid <<<"$entry"
    if ! pid_alive "$name" "$pid"; then
        log "$name (pid $pid) is not running"
        continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        pid_alive "$name" "$pid" || break
        sleep 0.1
    done
    if pid_alive "$name" "$pid"; then
        log "$name (pid $pid) still running after 10s; sending KILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    if pid_alive "$name" "$pid"; then
        log "ERROR: could not stop $name (pid $pid)"
        exit 1
    fi
    log "stopped $name (pid $pid)"
done
rm -f "$PIDS"
log "done; logs kept in $STATE/log"
