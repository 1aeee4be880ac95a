#!/usr/bin/env bash
# A real single-node Slurm on this machine, from Debian's packages, for the tests of
# `lskd-study --launcher slurm` (tests/test_study_slurm.py) and for trying the launcher by hand.
#
#   sudo bash scripts/slurm_local.sh start    # install if needed, configure, start; waits until it answers
#   sudo bash scripts/slurm_local.sh status   # sinfo and sacct, or exit 1 when it does not answer
#   sudo bash scripts/slurm_local.sh stop     # cancel the jobs, stop every daemon it started
#
# What runs: munged (authentication), MariaDB + slurmdbd (accounting: without it sacct fails and
# submitit sees every job as UNKNOWN, so failed and preempted jobs could not be told apart),
# slurmctld and slurmd. One node (this host, all its CPUs), one partition `debug` (the default),
# proctrack/linuxproc and task/none (no cgroups needed). Root only: it writes /etc/slurm and
# starts system daemons. Configuration files this script did not write are never overwritten.
set -euo pipefail

PARTITION=${LSKD_SLURM_PARTITION:-debug}
CLUSTER=lskd
MARK="# written by lskd scripts/slurm_local.sh"
CONF=/etc/slurm/slurm.conf
DBDCONF=/etc/slurm/slurmdbd.conf
LOGDIR=/var/log/slurm
DBPASS=lskd-local-accounting

say() { echo "[slurm_local] $*"; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "this starts system daemons and writes /etc/slurm: run it as root (sudo bash $0 $1)"
}

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd slurmdbd mariadbd sbatch sacct; do
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing munge slurm-wlm slurmdbd mariadb-server (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed (no package mirror?); install munge slurm-wlm slurmdbd mariadb-server by hand"
    apt-get install -y -qq munge slurm-wlm slurmdbd mariadb-server >/dev/null \
        || die "apt-get install munge slurm-wlm slurmdbd mariadb-server failed"
}

write_conf() {  # path, content: refuse to replace a configuration someone else wrote
    local path=$1 content=$2
    if [ -f "$path" ] && ! grep -qF "$MARK" "$path"; then
        die "$path exists and was not written by this script; this machine has its own Slurm: use it, or move $path away"
    fi
    printf '%s\n%s\n' "$MARK" "$content" > "$path"
}

configure() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd /run/munge
    write_conf "$CONF" "ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP"
    write_conf "$DBDCONF" "AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
PidFile=/run/slurmdbd.pid
LogFile=$LOGDIR/slurmdbd.log"
    chmod 600 "$DBDCONF"
}

wait_for() {  # seconds, description, command...
    local n=$1 what=$2
    shift 2
    for _ in $(seq "$n"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "$what did not come up within ${n}s (logs: $LOGDIR/)"
}

running() { pgrep -x "$1" >/dev/null 2>&1; }

start() {
    need_root start
    install_packages
    configure
    if ! running munged; then
        [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
        chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    wait_for 10 munged munge -n
    if ! running mariadbd; then
        mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
        (mysqld_safe --user=mysql >"$LOGDIR/mariadb.log" 2>&1 &)
    fi
    wait_for 30 MariaDB mysqladmin ping
    mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    running slurmdbd || /usr/sbin/slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i -n list cluster format=cluster | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    running slurmctld || /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
    running slurmd || /usr/sbin/slurmd
    wait_for 30 "the node" bash -c "sinfo -h -p $PARTITION -o %t | grep -qE '^(idle|mix|alloc)'"
    wait_for 30 "accounting (sacct)" sacct -n -X --starttime now-1minutes
    say "Slurm answers: partition $PARTITION on $(hostname -s), $(nproc) CPUs, accounting by slurmdbd"
}

stop() {
    need_root stop
    command -v scancel >/dev/null 2>&1 && scancel --user=root >/dev/null 2>&1 || true
    for d in slurmd slurmctld slurmdbd; do
        running "$d" && pkill -x "$d" || true
    done
    if running mariadbd; then mysqladmin shutdown >/dev/null 2>&1 || pkill -x mariadbd || true; fi
    running munged && pkill -x munged || true
    for _ in $(seq 20); do
        running slurmd || running slurmctld || running slurmdbd || running mariadbd || running munged || break
        sleep 0.5
    done
    say "stopped"
}

status() {
    scontrol ping >/dev/null 2>&1 || { echo "slurm_local: Slurm does not answer (start it: sudo bash $0 start)" >&2; exit 1; }
    sinfo
    sacct -n -X --starttime now-1minutes >/dev/null 2>&1 && echo "accounting: sacct answers" \
        || { echo "accounting: sacct does not answer" >&2; exit 1; }
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: bash $0 start|stop|status" >&2; exit 2 ;;
esac
