#!/usr/bin/env bash
# Runs zdm-ost's whole test suite against real servers: starts the local MariaDB primary and
# replica (installing mariadb-server from Debian if needed), then `cargo test`.
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test preflight).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo not found; install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
scripts/mysql-env.sh start
status=0
cargo test "$@" || status=$?
if [ "$status" != 0 ]; then
  # A failure may be the server's, not the tool's: say whether each server is still up and
  # show the end of its error log (a crash report lands there).
  env_dir=${ZDM_ENV_DIR:-.mysql-env}
  for log in "$env_dir"/*/error.log; do
    [ -f "$log" ] || continue
    dir=$(dirname "$log")
    pid=$(cat "$dir/mysqld.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then state="running (pid $pid)"; else state="not running"; fi
    echo "test.sh: server $(basename "$dir"): $state; the end of $log:" >&2
    tail -n 40 "$log" >&2
  done
  exit "$status"
fi
