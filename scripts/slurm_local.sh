#!/usr/bin/env bash
# A one-node SLURM cluster on this host, for the tests and for trying `hydra/launcher=slurm` by hand:
#   scripts/slurm_local.sh start    # munged + slurmctld + slurmd, waits until the node is idle
#   export SLURM_CONF=/tmp/pbexp-slurm/slurm.conf   # (start prints it) then sbatch, srun, squeue, pbexp-train -m ...
#   scripts/slurm_local.sh status | stop
# Needs root and Debian's packages (it installs nothing): apt-get install slurmctld slurmd slurm-client munge
# Everything it writes (slurm.conf, a munge key, state, spool, logs, pid files) lives in $PBEXP_SLURM_DIR
# (default /tmp/pbexp-slurm); no systemd, no /etc. No accounting: `sacct` does not work here.
# $PBEXP_SLURM_PORT (default 6817) is slurmctld's port, slurmd takes the next one.
set -euo pipefail

DIR="${PBEXP_SLURM_DIR:-/tmp/pbexp-slurm}"
PORT="${PBEXP_SLURM_PORT:-6817}"
TIMEOUT="${PBEXP_SLURM_TIMEOUT:-60}"  # seconds to wait for the node to come up
CONF="$DIR/slurm.conf"
SOCKET="$DIR/munge/munge.socket.2"
NODE="$(hostname -s)"
export SLURM_CONF="$CONF"
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live in sbin, which a non-login PATH may lack

die() { echo "slurm_local.sh: $*" >&2; exit 1; }

pid_alive() {  # pid_alive NAME: its pid file names a live process of that name (not a stale file's reused pid)
    local f="$DIR/run/$1.pid"
    [ -s "$f" ] && [ "$(cat "/proc/$(cat "$f")/comm" 2>/dev/null)" = "$1" ]
}

running() { pid_alive munged && pid_alive slurmctld && pid_alive slurmd; }

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

write_conf() {
    # The node's CPUs, sockets, cores, threads and memory exactly as slurmd sees them: a config that
    # claims more than the hardware has would leave the node drained.
    local hw
    hw="$(slurmd -C | head -n1 | sed -E 's/^NodeName=[^ ]+ //')"
    local cpus mem
    cpus="$(sed -nE 's/.*CPUs=([0-9]+).*/\1/p' <<<"$hw")"
    mem="$(sed -nE 's/.*RealMemory=([0-9]+).*/\1/p' <<<"$hw")"
    cat >"$CONF" <<EOF
# Written by scripts/slurm_local.sh start: a one-node cluster on $NODE, everything under $DIR.
ClusterName=pbexp-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s).
AuthInfo=socket=$SOCKET,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd.%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups here (no systemd, maybe no writable cgroupfs): track a job's processes through /proc,
# which is also how --signal warnings and scancel reach every process of a step.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# Several 1-CPU jobs at once; memory counts too, as on a real cluster (a job without --mem gets DefMemPerCPU).
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$((mem / cpus))
# A job asking for more than the node has is refused at submission, not left pending for ever.
EnforcePartLimits=ALL
# A node that restarts comes back by itself. Jobs may be requeued (Slurm's default, said here because
# submitit's scontrol requeue at preemption or timeout needs it).
ReturnToService=2
JobRequeue=1
# Look at pending jobs every few seconds (default: a minute), so a requeued job starts again soon.
SchedulerParameters=sched_interval=5,bf_interval=5
# No accounting (no slurmdbd): squeue and scontrol show what is running; sacct fails.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Short timeouts: this cluster lives for a test session.
SlurmdTimeout=30
InactiveLimit=0
MailProg=/bin/true
KillWait=10
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    [ "$(id -u)" = 0 ] || die "must run as root (slurmd starts jobs as their users)"
    local missing=""
    for cmd in munged slurmctld slurmd sinfo sbatch; do
        command -v "$cmd" >/dev/null || missing="$missing $cmd"
    done
    [ -z "$missing" ] || die "missing:$missing (apt-get install slurmctld slurmd slurm-client munge)"
    if running; then
        echo "already running; export SLURM_CONF=$CONF"
        return 0
    fi
    stop >/dev/null  # a half-started cluster (one daemon died): start afresh
    mkdir -p "$DIR"/{munge,state,spool,log,run}
    chmod 0755 "$DIR" "$DIR/munge"  # munged refuses a key or socket folder others may write to
    if [ ! -s "$DIR/munge/munge.key" ]; then
        head -c 1024 /dev/urandom >"$DIR/munge/munge.key"
    fi
    chmod 0400 "$DIR/munge/munge.key"
    write_conf

    munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start; see $DIR/log/munged.log"
    # -c: a fresh cluster, no jobs recovered from an earlier run's state.
    slurmctld -c -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    slurmd -c -f "$CONF" -N "$NODE" || die "slurmd did not start; see $DIR/log/slurmd.log"

    local waited=0 state=""
    while :; do
        state="$(node_state)"
        [ "$state" = idle ] && break
        if [ "$waited" -ge "$TIMEOUT" ]; then
            die "node $NODE not idle after ${TIMEOUT}s (state: ${state:-none}); see $DIR/log/"
        fi
        sleep 1
        waited=$((waited + 1))
    done
    echo "started: node $NODE idle; export SLURM_CONF=$CONF"
}

stop() {
    local name pid stopping=()
    for name in slurmd slurmctld munged; do  # all at once: each takes a second or two to go
        if pid_alive "$name"; then
            pid="$(cat "$DIR/run/$name.pid")"
            kill "$pid" && stopping+=("$name $pid")
        fi
    done
    for entry in "${stopping[@]}"; do
        read -r name pid <<<"$entry"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "stopped $name ($pid)"
    done
    rm -f "$DIR"/run/{slurmd,slurmctld,munged}.pid
}

status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive "$name"; then echo "$name: running ($(cat "$DIR/run/$name.pid"))"; else echo "$name: stopped"; rc=3; fi
    done
    [ "$rc" = 0 ] && echo "node $NODE: $(node_state); export SLURM_CONF=$CONF"
    return "$rc"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) die "usage: $0 start|stop|status" ;;
esac
