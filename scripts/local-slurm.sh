#!/usr/bin/env bash
# A real one-node SLURM on this machine, with accounting, for attn2d's SLURM tests and for
# trying `attn2d compare --executor slurm` without a cluster. Run as root; idempotent (a
# second run checks each daemon and starts only what is missing); prints one status line.
#
#   munged      authentication (the key Debian's munge package made, or a new one)
#   mariadbd    the accounting database: a small local MariaDB, unix socket only
#   slurmdbd    accounting, so `sacct` reports every job's state (submitit asks sacct
#               whether a job ended; without it a task killed by the scheduler looks
#               "UNKNOWN", i.e. still running, forever)
#   slurmctld   the controller, slurmd the node "localhost" with every CPU of the machine
#
# Everything is Debian's (slurm-wlm 22.05, slurmdbd, munge, mariadb-server), installed with
# apt-get when missing. Logs: /var/log/slurm/. Stop: kill the pids in /run/slurm*.pid,
# /run/mysqld/mysqld.pid and /run/munge/munged.pid.
set -euo pipefail

say() { echo "local-slurm: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "expected to run as root (it starts system daemons), got uid $(id -u)"

CLUSTER=attn2d
CONF=/etc/slurm
LOGS=/var/log/slurm
SOCKET=/run/mysqld/mysqld.sock

# -- packages ---------------------------------------------------------------------------------
missing=()
for tool in slurmctld:slurm-wlm slurmd:slurm-wlm slurmdbd:slurmdbd munged:munge \
            mariadbd:mariadb-server; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] \
    || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || die "expected apt-get to install ${missing[*]}, got none"
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge \
    mariadb-server >/dev/null
fi
export PATH="/usr/sbin:$PATH"

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$((seconds * 2))"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "expected $what within ${seconds} s, got nothing; see $LOGS/"
}

mkdir -p "$LOGS" /var/spool/slurmctld /var/spool/slurmd
chown slurm:slurm "$LOGS" /var/spool/slurmctld

# -- munge ------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! (munge -n | unmunge) >/dev/null 2>&1; then
  runuser -u munge -- munged --force
  wait_for 10 "munged to answer" sh -c 'munge -n | unmunge'
fi

# -- MariaDB for the accounting ---------------------------------------------------------------
if ! mariadb-admin --socket="$SOCKET" ping >/dev/null 2>&1; then
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
  mkdir -p /run/mysqld
  chown mysql:mysql /run/mysqld
  # A small server: no TCP port, a 16 MB buffer pool, no performance schema, no binary log.
  setsid -f mariadbd --user=mysql --socket="$SOCKET" --pid-file=/run/mysqld/mysqld.pid \
    --skip-networking --innodb-buffer-pool-size=16M --performance-schema=OFF \
    --skip-log-bin --log-error="$LOGS/mariadb.log" </dev/null >/dev/null 2>&1
  wait_for 60 "MariaDB to answer" mariadb-admin --socket="$SOCKET" ping
fi
# slurmdbd runs as the system user slurm and logs in through the socket as that user.
mariadb --socket="$SOCKET" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

# -- configuration (rewritten only when it changes; a change restarts the daemons) -------------
write_conf() {  # write_conf FILE MODE OWNER  (text on stdin); returns 0 when FILE changed
  local file=$1 mode=$2 owner=$3 tmp
  tmp=$(mktemp "$file.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  if [ -f "$file" ] && cmp -s "$tmp" "$file"; then rm -f "$tmp"; return 1; fi
  mv "$tmp" "$file"
}

cpus=$(nproc)
memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 ))
changed=0
write_conf "$CONF/slurmdbd.conf" 600 slurm:slurm <<EOF && changed=1 || true
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=slurm_acct_db
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
write_conf "$CONF/slurm.conf" 644 root:root <<EOF && changed=1 || true
# attn2d's one-node test cluster (scripts/local-slurm.sh)
ClusterName=$CLUSTER
SlurmctldHost=localhost
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it starts again (default 120).
AuthInfo=cred_expire=10
SlurmUser=slurm
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
KillWait=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
NodeName=localhost CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

stop() {  # stop PIDFILE: end that daemon and wait for it
  running "$1" || return 0
  local pid
  pid=$(cat "$1")
  kill "$pid"
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  die "expected the daemon with pid $pid ($1) to stop, got it still running"
}
if [ "$changed" = 1 ]; then
  stop /run/slurmd.pid; stop /run/slurmctld.pid; stop /run/slurmdbd.pid
fi

# -- daemons ----------------------------------------------------------------------------------
if ! running /run/slurmdbd.pid; then
  slurmdbd
  wait_for 60 "slurmdbd to answer" sacctmgr -n list cluster
fi
if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi
if ! running /run/slurmctld.pid; then
  slurmctld
  wait_for 30 "slurmctld to answer" scontrol ping
fi
if ! running /run/slurmd.pid; then
  slurmd -N localhost
fi

node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -1; }
for _ in $(seq 60); do
  case "$(node_state)" in
    idle | mixed | allocated | completing) break ;;
    down* | drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.5
done
state=$(node_state)
case "$state" in
  idle | mixed | allocated | completing) ;;
  *) die "expected node localhost to come up, got state '${state:-none}'; see $LOGS/" ;;
esac
sacct -n -X -S now >/dev/null 2>&1 || die "expected sacct to answer (accounting), got an error"
echo "local-slurm: cluster $CLUSTER up: node localhost $state, $cpus CPUs, $memory MB," \
  "partition debug, accounting by slurmdbd (sacct works)"
