#!/usr/bin/env bash
# Stop exactly the daemons .ci/slurm-up.sh started: the PIDs in $PDAE_SLURM_PIDS (default
# $PDAE_SLURM_DIR/started.pids), newest first.
#
# A PID is only signalled while its process still has the recorded name (a recycled PID is left alone).
# SIGTERM, then SIGKILL after 10 s. Afterwards /etc/slurm/slurm.conf (ours) is removed: with a config
# but no slurmctld, every `scontrol` call (and so every snakemake start, through the slurm executor
# plugin, which runs `scontrol show config` with a 10 s timeout at start-up) stalls 10-20 s; without a
# config scontrol fails at once.
# Set PDAE_SLURM_KEEP_CONF=1 to keep the config.
set -uo pipefail

PDAE_SLURM_DIR=${PDAE_SLURM_DIR:-/tmp/pdae-slurm}
PIDS=${PDAE_SLURM_PIDS:-$PDAE_SLURM_DIR/started.pids}   # where the PIDs of the daemons started here go
MARKER="# written by pdae-bench .ci/slurm-up.sh"

# Alive and not a zombie (a killed munged lingers as <defunct> under PID 1 for a while; kill -0 succeeds on it).
running() { [[ -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

if [[ ! -s $PIDS ]]; then
    echo "slurm-down: nothing to stop ($PIDS is empty or missing)"
else
    # Newest first: slurmd, slurmctld, slurmdbd, mariadbd, munged.
    mapfile -t entries < <(tac "$PIDS")
    stopping=()
    for entry in "${entries[@]}"; do
        read -r name pid <<< "$entry"
        [[ $pid =~ ^[0-9]+$ ]] || continue
        if running "$pid" && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]; then
            kill -TERM "$pid" 2>/dev/null && stopping+=("$pid") && echo "slurm-down: stopping $name (pid $pid)"
            # slurmctld needs slurmdbd alive to flush; give each daemon a moment before the next one.
            for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
        else
            echo "slurm-down: $name (pid $pid) is not running"
        fi
    done
    for pid in "${stopping[@]}"; do
        for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
        if running "$pid"; then
            echo "slurm-down: pid $pid ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
    done
    : > "$PIDS"
fi

if [[ ${PDAE_SLURM_KEEP_CONF:-0} != 1 ]]; then
    for conf in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
        # (`scontrol ping` would itself stall here, so liveness is read from the PID file.)
        ctld=$(tr -dc 0-9 2>/dev/null < "$PDAE_SLURM_DIR/slurmctld.pid" || true)
        if [[ -e $conf ]] && grep -q "^$MARKER" "$conf" && ! { [[ -n $ctld ]] && running "$ctld"; }; then
            rm -f "$conf"
        fi
    done
fi
