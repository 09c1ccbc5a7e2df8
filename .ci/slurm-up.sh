#!/usr/bin/env bash
# Start a real one-node SLURM cluster on loopback (node `localhost`, partition `debug`) for the tests.
#
#   .ci/slurm-up.sh     # install the Debian packages if missing; start munged, [mariadbd, slurmdbd,] slurmctld, slurmd
#   .ci/slurm-down.sh   # stop exactly the daemons this script started (by PID)
#
# Idempotent: a daemon that already answers is reused and not recorded, so `slurm-down.sh` leaves it alone.
# Everything the cluster writes (state, spool, logs, PID files) lives under $PDAE_SLURM_DIR (default
# /tmp/pdae-slurm); the only files outside it are /etc/slurm/slurm.conf (a copy of $PDAE_SLURM_DIR/slurm.conf,
# so every client finds it without SLURM_CONF), /etc/slurm/slurmdbd.conf, and munge's /run, /var dirs.
# One cluster at a time: with a cluster of another $PDAE_SLURM_DIR or other settings running, this refuses.
# The PIDs of the daemons started here are appended to $PDAE_SLURM_PIDS (default $PDAE_SLURM_DIR/started.pids,
# "name pid" per line); slurm-down.sh with the same $PDAE_SLURM_PIDS stops exactly those.
#
# Accounting (PDAE_SLURM_ACCOUNTING=1, the default): MariaDB (data in $PDAE_SLURM_DIR/mysql, unix socket only)
# and slurmdbd also run, so `sacct` works and records every job with its comment (the slurm executor
# plugin puts `rule_<name>` there). Costs ~240 MB of packages (~40 s apt) and ~12 s on the first start
# (database creation), ~2 s later. PDAE_SLURM_ACCOUNTING=0: no accounting, `sacct` fails, use
# `squeue`/`scontrol show job` (kept for MinJobAge=600 s) instead.
#
# Node size and partitions: PDAE_SLURM_CPUS, PDAE_SLURM_MEM_MB, PDAE_SLURM_PARTITIONS (see step 2).
#
# Needs root (apt-get, munged as the munge user, slurmd). Set-up and traps: the numbered steps below and
# .ci/slurm-down.sh.
set -euo pipefail

PDAE_SLURM_DIR=${PDAE_SLURM_DIR:-/tmp/pdae-slurm}
ACCOUNTING=${PDAE_SLURM_ACCOUNTING:-1}
CONF=/etc/slurm/slurm.conf
MARKER="# written by pdae-bench .ci/slurm-up.sh"
PIDS=${PDAE_SLURM_PIDS:-$PDAE_SLURM_DIR/started.pids}   # where the PIDs of the daemons started here go
t0=$(date +%s.%N)

die() { echo "slurm-up: error: $*" >&2; exit 1; }
log() { echo "slurm-up: $*"; }
alive() { [[ -n ${1:-} && -r /proc/$1/stat ]] && [[ $(awk '{print $3}' "/proc/$1/stat") != Z ]]; }  # not a zombie
pid_of() { [[ -n $1 && -s $1 ]] && tr -dc 0-9 < "$1" || true; }
record() { echo "$1 $2" >> "$PIDS"; log "started $1 (pid $2)"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.1 s
    local limit=$1 what=$2; shift 2
    local end=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < end )) || die "$what did not come up within ${limit} s (logs in $PDAE_SLURM_DIR/log)"
        sleep 0.1
    done
}

[[ $(id -u) == 0 ]] || die "must run as root (munged, slurmd and apt-get need it)"

# 1. Packages.
packages=()
command -v slurmctld >/dev/null || [[ -x /usr/sbin/slurmctld ]] || packages+=(slurm-wlm)
[[ -x /usr/sbin/munged ]] || packages+=(munge)
if [[ $ACCOUNTING == 1 ]]; then
    [[ -x /usr/sbin/slurmdbd ]] || packages+=(slurmdbd)
    command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]] || packages+=(mariadb-server)
fi
if (( ${#packages[@]} )); then
    command -v apt-get >/dev/null || die "${packages[*]} missing and no apt-get to install them"
    log "installing ${packages[*]}"
    apt-get update -qq >/dev/null || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null \
        || die "apt-get install ${packages[*]} failed"
fi
export PATH=/usr/sbin:/usr/bin:$PATH

# 2. Configuration: one node with this machine's cores and 85% of its memory.
mkdir -p "$PDAE_SLURM_DIR"/{state,spool,log}
touch "$PIDS"
# PDAE_SLURM_CPUS / PDAE_SLURM_MEM_MB advertise more than the machine has (slurmd then trusts the config:
# SlurmdParameters=config_overrides), so a real profile's cpus_per_task / mem_mb requests fit the test node;
# jobs then share the real cores. PDAE_SLURM_PARTITIONS: partition names, all on this node, the first the
# default (e.g. "debug cpu gpu" lets profiles/slurm's partition names work unchanged).
cpus=${PDAE_SLURM_CPUS:-$(nproc)}
mem_mb=${PDAE_SLURM_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)}
[[ $cpus =~ ^[1-9][0-9]*$ && $mem_mb =~ ^[1-9][0-9]*$ ]] || die "PDAE_SLURM_CPUS/PDAE_SLURM_MEM_MB: expected positive integers"
read -r -a partitions <<< "${PDAE_SLURM_PARTITIONS:-debug}"
(( ${#partitions[@]} )) || die "PDAE_SLURM_PARTITIONS: expected at least one partition name"
partition_lines=""
for p in "${partitions[@]}"; do
    [[ $p =~ ^[A-Za-z0-9_-]+$ ]] || die "PDAE_SLURM_PARTITIONS: bad partition name '$p'"
    default=$([[ $p == "${partitions[0]}" ]] && echo YES || echo NO)
    partition_lines+="PartitionName=$p Nodes=localhost Default=$default MaxTime=INFINITE State=UP"$'\n'
done
if [[ $ACCOUNTING == 1 ]]; then
    accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else
    accounting="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
cat > "$PDAE_SLURM_DIR/slurm.conf.new" <<EOF
$MARKER (PDAE_SLURM_DIR=$PDAE_SLURM_DIR)
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$accounting
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=5
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$PDAE_SLURM_DIR/state
SlurmdSpoolDir=$PDAE_SLURM_DIR/spool
SlurmctldPidFile=$PDAE_SLURM_DIR/slurmctld.pid
SlurmdPidFile=$PDAE_SLURM_DIR/slurmd.pid
SlurmctldLogFile=$PDAE_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$PDAE_SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=$mem_mb State=UNKNOWN
${partition_lines%$'\n'}
EOF
mv "$PDAE_SLURM_DIR/slurm.conf.new" "$PDAE_SLURM_DIR/slurm.conf"
if [[ -e $CONF ]] && ! cmp -s "$PDAE_SLURM_DIR/slurm.conf" "$CONF"; then
    grep -q "^$MARKER" "$CONF" || die "$CONF exists and was not written by this script; move it away to use the test cluster"
    # A running slurmctld keeps its old settings: refuse rather than run with a config it does not use.
    old_ctld=$(pid_of "$(sed -n 's/^SlurmctldPidFile=//p' "$CONF")")
    if alive "$old_ctld"; then
        die "a test cluster with other settings is running ($(head -1 "$CONF" | sed 's/.*(//; s/)//')); stop it with .ci/slurm-down.sh first"
    fi
fi
mkdir -p /etc/slurm
cmp -s "$PDAE_SLURM_DIR/slurm.conf" "$CONF" || cp "$PDAE_SLURM_DIR/slurm.conf" "$CONF"

# 3. munged (as the munge user; reused if one already answers on the default socket).
munge_ok() { munge -n | unmunge; }
if munge_ok >/dev/null 2>&1; then
    log "munged already running"
else
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged --force
    wait_for 10 munged munge_ok
    record munged "$(pid_of /run/munge/munged.pid)"
fi

# 4. Accounting: MariaDB (data under $PDAE_SLURM_DIR/mysql) and slurmdbd.
if [[ $ACCOUNTING == 1 ]]; then
    sock=$PDAE_SLURM_DIR/mysql.sock
    if mariadb-admin --socket="$sock" ping >/dev/null 2>&1; then
        log "mariadbd already running"
    else
        if [[ ! -d $PDAE_SLURM_DIR/mysql/mysql ]]; then
            mariadb-install-db --user=root --datadir="$PDAE_SLURM_DIR/mysql" --auth-root-authentication-method=socket \
                --skip-test-db > "$PDAE_SLURM_DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed"
        fi
        mariadbd --user=root --datadir="$PDAE_SLURM_DIR/mysql" --socket="$sock" --skip-networking \
            --pid-file="$PDAE_SLURM_DIR/mariadbd.pid" --log-error="$PDAE_SLURM_DIR/log/mariadb.log" \
            --innodb-buffer-pool-size=64M < /dev/null >> "$PDAE_SLURM_DIR/log/mariadb.log" 2>&1 &
        disown
        wait_for 30 mariadbd mariadb-admin --socket="$sock" ping
        record mariadbd "$(pid_of "$PDAE_SLURM_DIR/mariadbd.pid")"
    fi
    if [[ -e /etc/slurm/slurmdbd.conf ]] && ! grep -q "^$MARKER" /etc/slurm/slurmdbd.conf; then
        die "/etc/slurm/slurmdbd.conf exists and was not written by this script; move it away to use the test cluster"
    fi
    cat > /etc/slurm/slurmdbd.conf <<EOF
$MARKER (PDAE_SLURM_DIR=$PDAE_SLURM_DIR)
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=root
StoragePort=0
LogFile=$PDAE_SLURM_DIR/log/slurmdbd.log
PidFile=$PDAE_SLURM_DIR/slurmdbd.pid
EOF
    chmod 600 /etc/slurm/slurmdbd.conf
    if alive "$(pid_of "$PDAE_SLURM_DIR/slurmdbd.pid")"; then
        log "slurmdbd already running"
    else
        MYSQL_UNIX_PORT=$sock slurmdbd  # StorageHost=localhost: the client library takes the socket from the env
        wait_for 30 slurmdbd sacctmgr -i show cluster
        record slurmdbd "$(pid_of "$PDAE_SLURM_DIR/slurmdbd.pid")"
    fi
    sacctmgr -i show cluster format=cluster -n | grep -qw local || sacctmgr -i add cluster local >/dev/null
fi

# 5. slurmctld, then slurmd (-N: the node name is `localhost`, not the hostname).
if scontrol ping 2>/dev/null | grep -q "is UP"; then
    log "slurmctld already running"
else
    slurmctld
    wait_for 20 slurmctld bash -c 'scontrol ping | grep -q "is UP"'
    record slurmctld "$(pid_of "$PDAE_SLURM_DIR/slurmctld.pid")"
fi
if alive "$(pid_of "$PDAE_SLURM_DIR/slurmd.pid")"; then
    log "slurmd already running"
else
    slurmd -N localhost
    wait_for 10 slurmd bash -c "kill -0 \$(cat '$PDAE_SLURM_DIR/slurmd.pid')"
    record slurmd "$(pid_of "$PDAE_SLURM_DIR/slurmd.pid")"
fi

# 6. Wait until the node accepts jobs (a node left down/drained by an earlier run is resumed).
node_idle() { sinfo -h -N -n localhost -o %t | grep -qE '^(idle|mix|alloc)$'; }
end=$(( $(date +%s) + 30 ))
until node_idle; do
    state=$(sinfo -h -N -n localhost -o %t 2>/dev/null || true)
    case $state in
        down*|drain*|drng*) scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
    esac
    (( $(date +%s) < end )) || die "node localhost not idle after 30 s (state '${state}'; logs in $PDAE_SLURM_DIR/log)"
    sleep 0.1
done
log "cluster up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}') s: $(sinfo -h -o '%P %a %D %t %N')"
