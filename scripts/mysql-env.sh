#!/usr/bin/env bash
# Local MariaDB test bed for zdm-ost: a primary on 127.0.0.1:3310 and a replica on
# 127.0.0.1:3311, each with its own datadir and my.cnf (/etc/mysql is never read).
#
#   scripts/mysql-env.sh start|stop|status|reset|destroy
#   scripts/mysql-env.sh start-instance NAME PORT [mariadbd option ...]   # a throwaway extra server
#   scripts/mysql-env.sh stop-instance NAME
#
# Everything lives under $ZDM_ENV_DIR (default: <repo>/.mysql-env). `start` is idempotent,
# waits until replication runs, and fails fast (printing the error log) on a port conflict.
# `stop` only signals the pids recorded in the pid files; `destroy` stops every server under
# $ZDM_ENV_DIR and deletes the directory.
# Accounts on every server: root (no password, from 127.0.0.1 and the socket) and zdm/zdm.
#
# InnoDB is sized for the test suite: a 512M buffer pool and a 128M redo log on the primary
# and replica (ZDM_INNODB_BUFFER_POOL_SIZE, ZDM_INNODB_LOG_FILE_SIZE to change; the benchmark
# runs servers of its own with more), 128M and 48M on throwaway instances. The redo log is
# allocated in full when a datadir is created, so every server costs its size in disk.
# ZDM_MARIADBD_OPTS adds server options to the primary and replica, space-separated
# (e.g. "innodb_autoinc_lock_mode=2"; the benchmark uses it to compare server settings).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_DIR=${ZDM_ENV_DIR:-$here/.mysql-env}
PRIMARY_PORT=${ZDM_PRIMARY_PORT:-3310}
REPLICA_PORT=${ZDM_REPLICA_PORT:-3311}

BUFFER_POOL=${ZDM_INNODB_BUFFER_POOL_SIZE:-512M}
LOG_FILE=${ZDM_INNODB_LOG_FILE_SIZE:-128M}

log() { printf 'mysql-env: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ensure_installed() {
  if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
    log "mariadbd not found; installing mariadb-server from Debian"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  fi
  # percona-style tools are not needed here; the client is.
  command -v mariadb >/dev/null 2>&1 || die "the mariadb client is missing (apt-get install mariadb-client)"
}

mariadbd_bin() { command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd; }

# cli NAME [args...]: the mariadb client on an instance's socket, as root.
cli() {
  local name=$1; shift
  mariadb --no-defaults --protocol=socket -S "$ENV_DIR/$name/mysqld.sock" -uroot "$@"
}

pid_of() {
  local f="$ENV_DIR/$1/mysqld.pid"
  [ -s "$f" ] || return 1
  local pid; pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# megabytes of a size written like 512M or 2G
size_mb() {
  local v=$1
  case "$v" in
    *[gG]) echo $(( ${v%[gG]} * 1024 )) ;;
    *[mM]) echo "${v%[mM]}" ;;
    *) echo $(( v / 1048576 )) ;;
  esac
}

# A new datadir takes the redo log in full, plus about 200M (system tablespace, temporary
# tablespace, first binlog): refuse clearly rather than let InnoDB fail halfway.
check_disk() {
  local name=$1 log_size=$2 need free
  need=$(( $(size_mb "$log_size") + 200 ))
  free=$(df -Pm "$ENV_DIR" | awk 'NR==2 {print $4}')
  if [ -n "$free" ] && [ "$free" -lt "$need" ]; then
    die "only ${free} MB free on the disk of $ENV_DIR; creating $name needs about ${need} MB (its ${log_size} redo log is allocated in full).
  Free some space (scripts/mysql-env.sh destroy removes every test server's data), or set a smaller ZDM_INNODB_LOG_FILE_SIZE."
  fi
}

# write_cnf NAME PORT SERVER_ID BUFFER_POOL LOG_FILE [mariadbd option ...]
write_cnf() {
  local name=$1 port=$2 server_id=$3 pool=$4 redo=$5; shift 5
  local dir="$ENV_DIR/$name"
  mkdir -p "$dir/data" "$dir/tmp"
  {
    echo "[mariadbd]"
    echo "user=root"
    echo "datadir=$dir/data"
    echo "socket=$dir/mysqld.sock"
    echo "pid-file=$dir/mysqld.pid"
    echo "log-error=$dir/error.log"
    # a tmpdir of its own: at startup a server deletes every #sql* file in its tmpdir, so
    # servers sharing /tmp delete each other's temporary tables (seen here: a throwaway
    # instance starting made the primary fail "Error on delete of '/tmp/#sql-temptable-...'",
    # and once crash with signal 11)
    echo "tmpdir=$dir/tmp"
    echo "port=$port"
    echo "bind-address=127.0.0.1"
    echo "server_id=$server_id"
    echo "log_bin=mariadb-bin"
    echo "binlog_format=ROW"
    echo "binlog_row_image=FULL"
    echo "binlog_row_metadata=FULL"
    echo "log_slave_updates=ON"
    echo "character-set-server=utf8mb4"
    echo "collation-server=utf8mb4_general_ci"
    echo "skip-name-resolve"
    echo "max_connections=500"
    echo "innodb_buffer_pool_size=$pool"
    echo "innodb_log_file_size=$redo"
    echo "innodb_flush_log_at_trx_commit=2"
    echo "sync_binlog=0"
    echo "expire_logs_days=1"
    echo "plugin-load-add=metadata_lock_info"
    for opt in "$@"; do echo "${opt#--}"; done
    echo "[client]"
    echo "default-character-set=utf8mb4"
  } >"$dir/my.cnf"
}

start_one() {
  local name=$1 port=$2
  local dir="$ENV_DIR/$name"
  if pid=$(pid_of "$name"); then
    log "$name already running (pid $pid, port $port)"
    return 0
  fi
  if port_in_use "$port"; then
    die "port $port is already in use by another process; $name cannot start there.
  Stop whatever listens on 127.0.0.1:$port, or choose other ports with ZDM_PRIMARY_PORT / ZDM_REPLICA_PORT."
  fi
  local fresh=0
  if [ ! -d "$dir/data/mysql" ]; then
    fresh=1
    check_disk "$name" "$(awk -F= '/^innodb_log_file_size=/ {v=$2} END {print v}' "$dir/my.cnf")"
    mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=normal \
      --skip-test-db >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; die "mariadb-install-db failed for $name"; }
  fi
  # keep earlier runs' logs: a crash in a previous run must stay readable
  printf '\n==== mysql-env: starting %s on port %s at %s ====\n' "$name" "$port" "$(date -u +%FT%TZ)" >>"$dir/error.log"
  "$(mariadbd_bin)" --defaults-file="$dir/my.cnf" >/dev/null 2>&1 &
  local i
  for i in $(seq 1 300); do
    if cli "$name" -e 'SELECT 1' >/dev/null 2>&1; then break; fi
    if [ "$i" -gt 5 ] && ! pid_of "$name" >/dev/null && ! pgrep -f -- "--defaults-file=$dir/my.cnf" >/dev/null; then
      log "$name failed to start; its error log follows:"
      cat "$dir/error.log" >&2
      die "$name did not start on port $port"
    fi
    sleep 0.1
  done
  cli "$name" -e 'SELECT 1' >/dev/null 2>&1 || { cat "$dir/error.log" >&2; die "$name did not answer within 30 s"; }
  if [ "$fresh" = 1 ]; then
    # Accounts are local to each server: keep them out of the binlog so they never clash.
    cli "$name" <<'SQL'
SET sql_log_bin=0;
DELETE FROM mysql.global_priv WHERE User='';
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE USER IF NOT EXISTS 'zdm'@'127.0.0.1' IDENTIFIED BY 'zdm';
CREATE USER IF NOT EXISTS 'zdm'@'localhost' IDENTIFIED BY 'zdm';
GRANT ALL PRIVILEGES ON *.* TO 'zdm'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'zdm'@'localhost';
FLUSH PRIVILEGES;
SQL
  fi
  log "$name up on 127.0.0.1:$port (pid $(pid_of "$name"))"
}

stop_one() {
  local name=$1 pid
  if ! pid=$(pid_of "$name"); then
    log "$name is not running"
    return 0
  fi
  kill "$pid"
  local i
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { log "$name stopped"; return 0; }
    sleep 0.1
  done
  log "$name did not stop within 30 s; sending SIGKILL to pid $pid"
  kill -9 "$pid" 2>/dev/null || true
}

setup_replication() {
  local running
  running=$(cli replica -N -e "SHOW SLAVE STATUS" | awk -F'\t' 'NR==1{print $11 "/" $12}')
  if [ "$running" != "Yes/Yes" ]; then
    cli replica -e "STOP SLAVE; CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$PRIMARY_PORT,
      MASTER_USER='root', MASTER_PASSWORD='', MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos; START SLAVE;"
  fi
  local i io sql
  for i in $(seq 1 300); do
    read -r io sql < <(cli replica -N -e "SHOW SLAVE STATUS" | awk -F'\t' 'NR==1{print $11, $12}')
    [ "$io" = Yes ] && [ "$sql" = Yes ] && break
    sleep 0.1
  done
  [ "$io" = Yes ] && [ "$sql" = Yes ] || { cli replica -e "SHOW SLAVE STATUS\G" >&2; die "replication did not start (IO=$io SQL=$sql)"; }
  local gtid caught
  gtid=$(cli primary -N -e "SELECT @@gtid_binlog_pos")
  caught=$(cli replica -N -e "SELECT MASTER_GTID_WAIT('$gtid', 30)")
  [ "$caught" = 0 ] || die "the replica did not catch up to $gtid within 30 s"
  log "replication running: 127.0.0.1:$REPLICA_PORT replicates 127.0.0.1:$PRIMARY_PORT (gtid $gtid)"
}

cmd=${1:-}
case "$cmd" in
  start)
    ensure_installed
    mkdir -p "$ENV_DIR"
    # shellcheck disable=SC2086 # one option per word
    write_cnf primary "$PRIMARY_PORT" 1 "$BUFFER_POOL" "$LOG_FILE" ${ZDM_MARIADBD_OPTS:-}
    # shellcheck disable=SC2086
    write_cnf replica "$REPLICA_PORT" 2 "$BUFFER_POOL" "$LOG_FILE" ${ZDM_MARIADBD_OPTS:-}
    start_one primary "$PRIMARY_PORT"
    start_one replica "$REPLICA_PORT"
    setup_replication
    ;;
  stop)
    stop_one replica
    stop_one primary
    ;;
  status)
    for n in primary replica; do
      if pid=$(pid_of "$n"); then echo "$n: running (pid $pid)"; else echo "$n: stopped"; fi
    done
    if pid_of replica >/dev/null; then
      cli replica -N -e "SHOW SLAVE STATUS" | awk -F'\t' 'NR==1{print "replication: IO=" $11 " SQL=" $12 " behind=" $33 "s"}'
    fi
    ;;
  reset)
    "$0" stop
    rm -rf "$ENV_DIR/primary" "$ENV_DIR/replica"
    "$0" start
    ;;
  destroy)
    if [ -d "$ENV_DIR" ]; then
      for d in "$ENV_DIR"/*/; do
        [ -f "$d/my.cnf" ] && stop_one "$(basename "$d")"
      done
      rm -rf "$ENV_DIR"
      log "removed $ENV_DIR"
    fi
    ;;
  start-instance)
    [ $# -ge 3 ] || die "usage: $0 start-instance NAME PORT [mariadbd option ...]"
    ensure_installed
    name=$2 port=$3; shift 3
    mkdir -p "$ENV_DIR"
    write_cnf "$name" "$port" "$port" 128M 48M "$@"
    start_one "$name" "$port"
    ;;
  stop-instance)
    [ $# -ge 2 ] || die "usage: $0 stop-instance NAME"
    stop_one "$2"
    ;;
  *)
    echo "usage: $0 start|stop|status|reset|destroy | start-instance NAME PORT [opt...] | stop-instance NAME" >&2
    exit 2
    ;;
esac
