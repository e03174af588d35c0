#!/usr/bin/env bash
# A real two-node SLURM cluster on this one machine, for tests and for trying sbatch scripts.
#
#   slurm/local_cluster.sh up       install slurm-wlm + munge if missing, start munged (unless
#                                   one already answers), slurmctld and two slurmd ("nodes" n1,
#                                   n2, one CPU each, partition "debug"); wait for 2 idle nodes
#   slurm/local_cluster.sh down     stop what `up` started (by recorded pid), nothing else
#   slurm/local_cluster.sh status   sinfo, or "down"
#
# Needs root (it writes /etc/slurm/slurm.conf and runs the daemons as root; jobs run as root on
# this host, so the project's .venv and any absolute path work inside jobs as they do here).
# Why the settings are what they are: docs/cluster.md, "The local cluster", and the comments below.
#
# State (pids, logs, spool dirs, controller state) lives in $PIXPERFECT_SLURM_STATE, default
# /tmp/pixperfect-slurm. Logs: $STATE/log/slurmctld.log, $STATE/log/slurmd-n1.log, ...
#
# Requeued jobs: SLURM keeps a requeued job PENDING (reason BeginTime) until the job
# credential has expired. AuthInfo=cred_expire below makes that a few seconds instead of 120,
# and the short scheduler intervals start it soon after. To start one at once:
#   scontrol update JobId=<id> StartTime=now
#
# Environment: PIXPERFECT_SLURM_STATE, PIXPERFECT_SLURM_UP_TIMEOUT (seconds to wait for the
# nodes, default 60), PIXPERFECT_SLURM_MEM_MB (RealMemory per node; default 45% of the RAM).
set -euo pipefail

STATE="${PIXPERFECT_SLURM_STATE:-/tmp/pixperfect-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARKER="# written by pixperfect slurm/local_cluster.sh"
NODES=(n1 n2)
CTLD_PORT=6817
declare -A NODE_PORT=([n1]=6818 [n2]=6821)
UP_TIMEOUT="${PIXPERFECT_SLURM_UP_TIMEOUT:-60}"

usage() {
    echo "usage: $0 up|down|status" >&2
    echo "  up      start a two-node local SLURM cluster (installs slurm-wlm munge if missing)" >&2
    echo "  down    stop the daemons that 'up' started" >&2
    echo "  status  print sinfo, or 'down'" >&2
    exit 2
}

log() { echo "local_cluster: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# pid recorded in file $1 if that process is alive, else nothing (and status 1).
live_pid() {
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Wait up to $2 seconds for pid $1 to exit; status 1 if it is still there.
wait_exit() {
    local pid="$1" deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}

controller_answers() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }

# Nodes that are up and serving (idle, or busy with jobs: an `up` while jobs run is fine).
ready_nodes() {
    timeout 5 sinfo -h -N -t idle,mixed,allocated,completing -o '%N' 2>/dev/null | sort -u | wc -l
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v sinfo >/dev/null && command -v munged >/dev/null; then
        return
    fi
    log "installing slurm-wlm munge with apt (one-time, about 20 s)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 slurm-wlm munge >/dev/null
}

# Start munged unless one already answers (e.g. a system service); record the pid if we start it.
start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "munged already running"
        return
    fi
    install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
    install -d -o munge -g munge -m 755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    runuser -u munge -- /usr/sbin/munged 9>&-  # 9>&-: daemons must not keep our lock
    local tries=50
    until munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || ((--tries == 0)); do sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged does not answer (see /var/log/munge/munged.log)"
    cp /run/munge/munged.pid "$STATE/munged.pid"
    log "started munged (pid $(cat "$STATE/munged.pid"))"
}

write_conf() {
    local host mem_mb
    host="$(hostname)"
    mem_mb="$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.45)}' /proc/meminfo)"
    mem_mb="${PIXPERFECT_SLURM_MEM_MB:-$mem_mb}"
    if [[ -e "$CONF" ]] && ! grep -qF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; move it away first"
    fi
    mkdir -p "$CONF_DIR" "$STATE/log" "$STATE/ctld" "${NODES[@]/#/$STATE/spool/}"
    {
        echo "$MARKER (state: $STATE); rewritten on every 'up'"
        echo "ClusterName=pixperfect"
        echo "SlurmctldHost=$host"
        echo "SlurmctldPort=$CTLD_PORT"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "CryptoType=crypto/munge"
        # Requeued jobs become eligible cred_expire seconds after the requeue (default 120).
        echo "AuthInfo=cred_expire=5"
        echo "MpiDefault=none"
        echo "MailProg=/bin/true"
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "ReturnToService=2"
        echo "JobAcctGatherType=jobacct_gather/none"
        echo "AccountingStorageType=accounting_storage/none"
        # No accounting (sacct does not work): keep finished jobs in `scontrol show job` for 1 h.
        echo "MinJobAge=3600"
        echo "JobRequeue=1"
        # Quick scheduler passes and kills, so tests (and requeues) do not wait.
        echo "SchedulerType=sched/backfill"
        echo "SchedulerParameters=sched_interval=2,bf_interval=1"
        echo "KillWait=5"
        echo "InactiveLimit=0"
        echo "Waittime=0"
        echo "StateSaveLocation=$STATE/ctld"
        echo "SlurmctldPidFile=$STATE/slurmctld.pid"
        echo "SlurmctldLogFile=$STATE/log/slurmctld.log"
        # Two slurmd on one host: each needs its own spool dir and pid file (%n = node name).
        echo "SlurmdSpoolDir=$STATE/spool/%n"
        echo "SlurmdPidFile=$STATE/slurmd-%n.pid"
        echo "SlurmdLogFile=$STATE/log/slurmd-%n.log"
        local node
        for node in "${NODES[@]}"; do
            echo "NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=${NODE_PORT[$node]}" \
                "CPUs=1 RealMemory=$mem_mb State=UNKNOWN"
        done
        echo "PartitionName=debug Nodes=$(IFS=,; echo "${NODES[*]}") Default=YES" \
            "MaxTime=INFINITE State=UP"
    } >"$CONF"
}

cmd_up() {
    local started=$SECONDS
    [[ $EUID -eq 0 ]] || die "must run as root (it writes $CONF and runs the SLURM daemons)"
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock -w 600 9 || die "another 'up' or 'down' holds $STATE/lock"
    if live_pid "$STATE/slurmctld.pid" >/dev/null && controller_answers \
        && [[ "$(ready_nodes)" -ge ${#NODES[@]} ]] 2>/dev/null; then
        log "cluster already up"
        sinfo
        return 0
    fi
    install_packages
    start_munge
    write_conf
    if ! live_pid "$STATE/slurmctld.pid" >/dev/null; then
        slurmctld -c 9>&-  # -c: a clean start, no jobs recovered from an earlier run
    fi
    local deadline=$((SECONDS + UP_TIMEOUT)) node
    until controller_answers; do
        ((SECONDS < deadline)) \
            || die "slurmctld did not answer in ${UP_TIMEOUT}s; see $STATE/log/slurmctld.log"
        sleep 0.2
    done
    for node in "${NODES[@]}"; do
        live_pid "$STATE/slurmd-$node.pid" >/dev/null || slurmd -N "$node" 9>&-
    done
    until [[ "$(ready_nodes)" -ge ${#NODES[@]} ]]; do
        if ((SECONDS >= deadline)); then
            sinfo -N >&2 || true
            die "nodes not up after ${UP_TIMEOUT}s; see $STATE/log/"
        fi
        sleep 0.2
    done
    log "cluster up in $((SECONDS - started))s (conf $CONF, state $STATE)"
    sinfo
}

cmd_down() {
    local pid pids=() node deadline pidfile pidfiles=("$STATE/slurmctld.pid")
    for node in "${NODES[@]}"; do pidfiles+=("$STATE/slurmd-$node.pid"); done
    mkdir -p "$STATE"
    exec 9>"$STATE/lock"
    flock -w 600 9 || die "another 'up' or 'down' holds $STATE/lock"
    for pidfile in "${pidfiles[@]}"; do
        if pid="$(live_pid "$pidfile")"; then pids+=("$pid"); fi
    done
    if live_pid "$STATE/slurmctld.pid" >/dev/null && controller_answers; then
        # Cancel jobs first: slurmd exits on shutdown, but job steps (slurmstepd) may outlive it.
        scancel --full --user=root 2>/dev/null || true
        deadline=$((SECONDS + 15))
        while [[ -n "$(squeue -h -t running,completing -o %i 2>/dev/null)" ]] \
            && ((SECONDS < deadline)); do
            sleep 0.5
        done
        scontrol shutdown >/dev/null || true
    fi
    for pid in "${pids[@]}"; do
        if ! wait_exit "$pid" 30; then
            log "pid $pid still alive after shutdown; sending TERM"
            kill "$pid" 2>/dev/null || true
            wait_exit "$pid" 10 || kill -9 "$pid" 2>/dev/null || true
        fi
    done
    # Job steps of our slurmds that outlived them: a slurmstepd of ours has our slurmd log open.
    for pid in $(pgrep -x slurmstepd || true); do
        if find "/proc/$pid/fd" -lname "$STATE/*" 2>/dev/null | grep -q .; then
            log "stopping leftover slurmstepd (pid $pid)"
            kill "$pid" 2>/dev/null || true
        fi
    done
    if pid="$(live_pid "$STATE/munged.pid")"; then
        kill "$pid"
        wait_exit "$pid" 10 || die "munged (pid $pid) did not exit"
        log "stopped munged (pid $pid)"
    fi
    rm -f "$STATE/munged.pid" "${pidfiles[@]}"
    if [[ ${#pids[@]} -eq 0 ]]; then
        log "cluster was not up (no daemon of ours running)"
    else
        log "cluster down"
    fi
}

cmd_status() {
    if [[ -e "$CONF" ]] && command -v sinfo >/dev/null && controller_answers; then
        sinfo
    else
        echo "down"
    fi
}

[[ $# -eq 1 ]] || usage
case "$1" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
esac
