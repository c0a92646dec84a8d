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
cargo test "$@"
