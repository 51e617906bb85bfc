#!/usr/bin/env bash
# One-node SLURM for tests and CI, as root, without systemd.
#
#   scripts/slurm_local.sh install   # apt packages (Debian bookworm: SLURM 22.05, munge, PMIx, Open MPI)
#   scripts/slurm_local.sh start     # install if needed, write configs, start munged/slurmctld/slurmd (idempotent)
#   scripts/slurm_local.sh stop      # stop the daemons this script started (by pid file)
#   scripts/slurm_local.sh status    # exit 0 when the node answers and is usable
#
# No slurmdbd: accounting is disabled, so `sacct` fails and clients must fall back to
# squeue/scontrol (MinJobAge=3600 keeps finished jobs visible for an hour).
set -euo pipefail

PKGS=(slurmctld slurmd slurm-client munge slurm-wlm-basic-plugins libpmix2 openmpi-bin libopenmpi-dev)
CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
PARTITION=${CLUSTER_SIM_SLURM_PARTITION:-debug}

log() { echo "[slurm_local] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

need_root() { [ "$(id -u)" -eq 0 ] || die "run as root (the test cluster runs its daemons as root)"; }

pid_alive() {  # pid_alive PIDFILE -> 0 when the pid in the file is a live process
  local f=$1 pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null
}

installed() {
  local p
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

do_install() {
  need_root
  if installed; then log "packages already installed"; return 0; fi
  log "installing: ${PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  installed || die "apt-get finished but packages are missing"
}

start_munge() {
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  id munge >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
      mungekey --create --keyfile=/etc/munge/munge.key --force
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" 2>/dev/null \
    || runuser -u munge -- /usr/sbin/munged
  local i
  for i in $(seq 1 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "munged did not come up (see /var/log/munge/munged.log)"
}

write_conf() {
  local host cpus mem boards sockets cores threads node_line tmp
  host=$(hostname -s)
  # Real hardware as slurmd sees it, so the node does not drain as "low socket*core*thread count".
  node_line=$(slurmd -C | head -n1)
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node_line")
  boards=$(sed -n 's/.*Boards=\([0-9]*\).*/\1/p' <<<"$node_line")
  sockets=$(sed -n 's/.*SocketsPerBoard=\([0-9]*\).*/\1/p' <<<"$node_line")
  cores=$(sed -n 's/.*CoresPerSocket=\([0-9]*\).*/\1/p' <<<"$node_line")
  threads=$(sed -n 's/.*ThreadsPerCore=\([0-9]*\).*/\1/p' <<<"$node_line")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
  [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot parse 'slurmd -C': $node_line"
  mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
  tmp=$(mktemp "$CONF_DIR/.slurm.conf.XXXXXX")
  cat >"$tmp" <<CONF
# Written by cluster-sim scripts/slurm_local.sh; one-node test cluster, no accounting.
ClusterName=clustersim
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${LOG_DIR}/slurmctld.log
SlurmdLogFile=${LOG_DIR}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=pmix
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
JobRequeue=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-1} ThreadsPerCore=${threads:-1} RealMemory=${mem} State=UNKNOWN
PartitionName=${PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  if [ -f "$CONF" ] && cmp -s "$tmp" "$CONF"; then
    rm -f "$tmp"; return 1   # unchanged
  fi
  mv "$tmp" "$CONF"
  chmod 0644 "$CONF"
  log "wrote $CONF (node ${host}: CPUs=${cpus} RealMemory=${mem})"
  return 0
}

node_ok() {
  local st
  st=$(sinfo -h -N -o '%T' 2>/dev/null | head -n1) || return 1
  case "$st" in
    idle*|mixed*|allocated*|completing*) return 0 ;;
    *) return 1 ;;
  esac
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local name=$1 f=$2 pid i
  if pid_alive "$f"; then
    pid=$(cat "$f")
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

do_start() {
  need_root
  command -v slurmctld >/dev/null 2>&1 && installed || do_install
  start_munge
  local changed=0
  write_conf && changed=1 || true
  if [ "$changed" = 1 ]; then
    # Config changed under running daemons: restart them (ours, by pid file).
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
  fi
  if ! pid_alive "$CTLD_PID"; then
    log "starting slurmctld"
    slurmctld -i   # -i: ignore state files that cannot be recovered
  fi
  if ! pid_alive "$SLURMD_PID"; then
    log "starting slurmd"
    slurmd
  fi
  local i host
  host=$(hostname -s)
  for i in $(seq 1 100); do
    if node_ok; then log "SLURM is up: $(sinfo -h -o '%P %a %D %T' | head -n1)"; return 0; fi
    if [ "$i" = 20 ] || [ "$i" = 60 ]; then
      scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    fi
    sleep 0.3
  done
  sinfo -N -l >&2 || true
  tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
  die "node did not become usable within 30 s"
}

do_stop() {
  need_root
  stop_pidfile slurmd "$SLURMD_PID"
  stop_pidfile slurmctld "$CTLD_PID"
  if [ -s "$MUNGE_PID" ]; then stop_pidfile munged "$MUNGE_PID"; fi
}

do_status() {
  pid_alive "$CTLD_PID" || { log "slurmctld not running"; return 1; }
  pid_alive "$SLURMD_PID" || { log "slurmd not running"; return 1; }
  node_ok || { log "node not usable: $(sinfo -h -N -o '%T %E' 2>&1 | head -n1)"; return 1; }
  sinfo -h -o '%P %a %D %T'
}

case "${1:-}" in
  install) do_install ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
