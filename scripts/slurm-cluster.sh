#!/usr/bin/env bash
# A throw-away one-node SLURM cluster on this machine, for the slurm executor's tests.
#
#   scripts/slurm-cluster.sh start   install slurm-wlm and munge if missing (needs root),
#                                    start munged, slurmctld and slurmd, wait until a job runs,
#                                    and write ${TMPDIR:-/tmp}/exprun-slurm/env.sh (exports SLURM_CONF)
#   scripts/slurm-cluster.sh stop    end the daemons that 'start' started, by their pid files
#
# Every file of the cluster (config, state, spool, logs, pid files) lives in that one folder.
set -euo pipefail

BASE="${TMPDIR:-/tmp}/exprun-slurm"
CONF="$BASE/slurm.conf"

say() { echo "slurm-cluster: $*" >&2; }

install_if_missing() {
  local tool missing=0
  for tool in slurmctld slurmd munged sinfo srun sbatch; do
    command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" = 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "slurm-wlm and munge are not installed and cannot be installed here (needs root and apt-get)"
    return 1
  fi
  say "installing slurm-wlm and munge"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_works; then return 0; fi  # a munged is already serving this machine
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  # Our own pid file (in a folder munged, not running as root, may write), so 'stop'
  # ends exactly the munged started here.
  mkdir -p "$BASE/munge"
  chown munge:munge "$BASE/munge"
  runuser -u munge -- munged --force --pid-file="$BASE/munge/munged.pid"
  for _ in $(seq 50); do munge_works && return 0; sleep 0.1; done
  say "munged did not start"
  return 1
}

write_conf() {
  local host
  host="$(hostname)"
  mkdir -p "$BASE/state" "$BASE/spool"
  cat >"$CONF" <<CONF
ClusterName=exprun
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pid
SlurmdPidFile=$BASE/slurmd.pid
SlurmctldLogFile=$BASE/slurmctld.log
SlurmdLogFile=$BASE/slurmd.log
NodeName=$host CPUs=$(nproc) RealMemory=4000 State=UNKNOWN
PartitionName=exprun Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  install_if_missing
  export PATH="$PATH:/usr/sbin"
  mkdir -p "$BASE"
  if [ -f "$BASE/slurmctld.pid" ] && kill -0 "$(cat "$BASE/slurmctld.pid")" 2>/dev/null; then
    say "already running (SLURM_CONF=$CONF)"
  else
    start_munge
    write_conf
    export SLURM_CONF="$CONF"
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
  fi
  printf 'export SLURM_CONF=%q\nexport PATH="$PATH:/usr/sbin"\n' "$CONF" >"$BASE/env.sh"
  export SLURM_CONF="$CONF"
  for _ in $(seq 60); do
    if sinfo -h >/dev/null 2>&1 && timeout 20 srun -N1 hostname >/dev/null 2>&1; then
      say "ready: partition exprun on $(hostname); source $BASE/env.sh"
      return 0
    fi
    sleep 1
  done
  say "the cluster did not answer 'srun -N1 hostname'; logs are in $BASE"
  return 1
}

stop_pid_file() {
  local file="$1" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$file"
}

stop() {
  stop_pid_file "$BASE/slurmd.pid"
  stop_pid_file "$BASE/slurmctld.pid"
  stop_pid_file "$BASE/munge/munged.pid"
  say "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
