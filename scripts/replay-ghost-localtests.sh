#!/usr/bin/env bash
# Replays gh-ost's localtests scenarios against zdm-ost on the local primary.
#
#   scripts/replay-ghost-localtests.sh LOCALTESTS_DIR [SCENARIO ...]
#
# LOCALTESTS_DIR is the `localtests/` folder of a gh-ost checkout you fetched yourself (its
# files are not part of this repository). For each scenario: the server's sql_mode from its
# `sql_mode` file, its create.sql (a table and an event writing to it every second), zdm-ost
# with the scenario's --alter and the cut-over postponed; once zdm-ost waits for the cut-over,
# the writes are stopped with `ALTER EVENT gh_ost_test DISABLE` (a statement zdm-ost must not
# stop for), the original's rows are read, the cut-over goes ahead, and the new table's rows
# must equal them (over `orig_columns`/`ghost_columns`, `order_by`). A scenario with
# `expect_failure` passes when zdm-ost exits non-zero before any rename.
# Their before.sql and after.sql run around zdm-ost. Skipped: scenarios with their own test.sh,
# GTID-specific ones, ignore_versions matching this server, and those whose create.sql this
# server refuses or that make no gh_ost_test table. Prints one line per scenario and a closing `N passed, N failed` line.
#
# Environment: ZDM_BIN (default target/release/zdm-ost), ZDM_PRIMARY_PORT (3310).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:?usage: $0 LOCALTESTS_DIR [SCENARIO ...]}
shift
bin=${ZDM_BIN:-$here/target/release/zdm-ost}
port=${ZDM_PRIMARY_PORT:-3310}
db=zdm_replay
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
M=(mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot --default-character-set=utf8mb4)
version=$("${M[@]}" -N -e "select @@version")

# gh-ost's flags that zdm-ost has under another name or needs not (it is always strict, it maps
# renamed columns itself, it throttles and checkpoints on its own terms)
zdm_args() {
  local out=() a instant=--no-attempt-instant-ddl
  eval "set -- $1"
  while [ $# -gt 0 ]; do
    a=$1; shift
    case $a in
      --alter=*) out+=(--alter "${a#--alter=}") ;;
      --alter) out+=(--alter "$1"); shift ;;
      --attempt-instant-ddl) instant=--attempt-instant-ddl ;;
      --discard-foreign-keys) out+=(--discard-foreign-keys) ;;
      --approve-renamed-columns | --panic-on-warnings | --allow-zero-in-date | \
      --analyze-ghost-table-before-cutover | --default-retries=* | --chunk-size=* | \
      --nice-ratio=* | --checkpoint-seconds=* | --throttle-query=* | \
      --postpone-cut-over-flag-file=*) ;;
      *) echo "UNSUPPORTED:$a"; return ;;
    esac
  done
  # gh-ost copies: so does zdm-ost here, unless the scenario asks for INSTANT
  [[ " ${out[*]:-} " == *" --alter "* ]] || out+=(--alter "engine=innodb")
  printf '%s\n' "${out[@]}" "$instant"
}

passed=0 failed=0 skipped=0
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=($(ls "$dir"))
for name in "${scenarios[@]}"; do
  t=$dir/$name
  [ -f "$t/create.sql" ] || continue
  if [ -f "$t/test.sh" ] || [ -f "$t/gtid_mode" ] || grep -q -- --gtid "$t/extra_args" 2>/dev/null; then
    echo "SKIP $name (own test.sh or GTID-specific)"; skipped=$((skipped + 1)); continue
  fi
  if [ -f "$t/ignore_versions" ] && echo "$version" | grep -Eq "^$(cat "$t/ignore_versions")"; then
    echo "SKIP $name (ignore_versions)"; skipped=$((skipped + 1)); continue
  fi
  mapfile -t args < <(zdm_args "$(cat "$t/extra_args" 2>/dev/null || true)")
  if [[ "${args[*]:-}" == UNSUPPORTED:* ]]; then
    echo "FAIL $name (gh-ost flag not supported: ${args[0]#UNSUPPORTED:})"; failed=$((failed + 1)); continue
  fi
  "${M[@]}" -e "set global event_scheduler = 1; set global sql_mode = DEFAULT; drop database if exists $db; create database $db"
  [ -f "$t/sql_mode" ] && "${M[@]}" -e "set global sql_mode = '$(cat "$t/sql_mode")'"
  if ! "${M[@]}" "$db" <"$t/create.sql" >"$work/create.log" 2>&1; then
    echo "SKIP $name (create.sql fails on this server: $(tail -1 "$work/create.log"))"; skipped=$((skipped + 1)); continue
  fi
  if [ "$("${M[@]}" -N -e "select count(*) from information_schema.tables where table_schema = '$db' and table_name = 'gh_ost_test'")" != 1 ]; then
    echo "SKIP $name (create.sql makes no gh_ost_test table here)"; skipped=$((skipped + 1)); continue
  fi
  [ -f "$t/before.sql" ] && "${M[@]}" "$db" <"$t/before.sql"
  sleep 2
  flag=$work/postpone; : >"$flag"
  "$bin" --host 127.0.0.1 --port "$port" --user root --database "$db" --table gh_ost_test \
    "${args[@]}" --execute --chunk-size 10 --postpone-cut-over-flag-file "$flag" \
    --serve-socket-file "$work/ctl.sock" >"$work/out" 2>"$work/err" &
  pid=$!
  for _ in $(seq 1 600); do
    grep -q "cut-over postponed" "$work/err" && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  "${M[@]}" "$db" -e "alter event gh_ost_test disable" 2>/dev/null
  sleep 1
  cols=$(cat "$t/orig_columns" 2>/dev/null || echo '*')
  gcols=$(cat "$t/ghost_columns" 2>/dev/null || echo "$cols")
  order=$([ -f "$t/order_by" ] && echo "order by $(cat "$t/order_by")" || echo "order by 1")
  "${M[@]}" "$db" -N -e "select $cols from gh_ost_test $order" >"$work/before" 2>&1
  rm -f "$flag"
  wait $pid; code=$?
  [ -f "$t/after.sql" ] && "${M[@]}" "$db" <"$t/after.sql"
  if [ -f "$t/expect_failure" ]; then
    if [ $code -ne 0 ]; then
      echo "PASS $name (failed as expected: $(grep '^zdm-ost: error' "$work/err" | cut -c1-160))"; passed=$((passed + 1))
    else
      echo "FAIL $name (expected a failure: $(cat "$t/expect_failure"))"; failed=$((failed + 1))
    fi
    continue
  fi
  if [ $code -ne 0 ]; then
    echo "FAIL $name (exit $code: $(grep '^zdm-ost: error' "$work/err" | cut -c1-200))"; failed=$((failed + 1)); continue
  fi
  "${M[@]}" "$db" -N -e "select $gcols from gh_ost_test $order" >"$work/after" 2>&1
  if cmp -s "$work/before" "$work/after"; then
    echo "PASS $name ($(wc -l <"$work/after") rows equal)"; passed=$((passed + 1))
  else
    echo "FAIL $name (rows differ: $(diff "$work/before" "$work/after" | head -3 | tr '\n' ' '))"; failed=$((failed + 1))
  fi
done
"${M[@]}" -e "set global sql_mode = DEFAULT; set global event_scheduler = 0; drop database if exists $db" >/dev/null 2>&1
echo "skipped $skipped"
echo "$passed passed, $failed failed"
