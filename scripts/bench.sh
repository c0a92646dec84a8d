#!/usr/bin/env bash
# zdm-ost benchmark: one command, one run, interleaved rounds.
#
#   scripts/bench.sh [--rows N] [--rounds N] [--rate TXN_PER_S] [--methods "native ptosc zdm"]
#                    [--modes "idle load unpaced"] [--zdm-args "--chunk-time 0.1"] [--keep-servers]
#                    [--no-replica]
#
# It runs on servers of its own (scripts/mysql-env.sh under .mysql-env-bench, primary
# 127.0.0.1:3320, replica :3321; ZDM_BENCH_PRIMARY_PORT / ZDM_BENCH_REPLICA_PORT to move them),
# sized for a 1M-row table: a 2G buffer pool and a 1G redo log (with 512M and 256M a loaded
# 1M-row checksum took 13.7 s instead of 6.2 s). A run writes several GB of binlog, so the
# servers and their data are deleted when it ends, unless --keep-servers.
#
# Mode `unpaced` (zdm-ost only) runs the load as fast as it goes, to show whether the applier
# keeps up: changed keys applied per second and the largest backlog.
#
# Builds a sysbench-style table (id, k, c CHAR(120), pad CHAR(60), index on k) on the local test
# primary, applies a change that forces a table copy (MODIFY k BIGINT NOT NULL DEFAULT 0) with
# native ALTER ... ALGORITHM=COPY, pt-online-schema-change and zdm-ost, each idle and under a
# paced write load (examples/bench_load.rs: fixed rate, every transaction mirrored to a control
# table in the same transaction, latency from each transaction's intended start), and prints one
# table: median wall time, ratio to native COPY, load tps, p50/p99/max latency, correctness
# (table == control table after the change), zdm-ost's peak RSS. Timings are never asserted.
#
# ZDM_BIN=path runs that zdm-ost binary instead of the one just built (to compare two builds
# on the same servers: run it twice with --keep-servers).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=1000000 ROUNDS=3 RATE=500 METHODS="native ptosc zdm" MODES="idle load unpaced" ZDM_ARGS="" KEEP=0 REPLICA=1
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) ROWS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --methods) METHODS=$2; shift 2 ;;
    --zdm-args) ZDM_ARGS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --keep-servers) KEEP=1; shift ;;
    --no-replica) REPLICA=0; shift ;;
    *) echo "usage: $0 [--rows N] [--rounds N] [--rate N] [--methods \"native ptosc zdm\"] [--modes \"idle load unpaced\"] [--zdm-args \"...\"] [--keep-servers] [--no-replica]" >&2; exit 2 ;;
  esac
done
export ZDM_ENV_DIR=$PWD/.mysql-env-bench
export ZDM_PRIMARY_PORT=${ZDM_BENCH_PRIMARY_PORT:-3320} ZDM_REPLICA_PORT=${ZDM_BENCH_REPLICA_PORT:-3321}
export ZDM_INNODB_BUFFER_POOL_SIZE=${ZDM_INNODB_BUFFER_POOL_SIZE:-2G} ZDM_INNODB_LOG_FILE_SIZE=${ZDM_INNODB_LOG_FILE_SIZE:-1G}
PORT=$ZDM_PRIMARY_PORT
REPLICA_PORT=$ZDM_REPLICA_PORT
ALTER="MODIFY k BIGINT NOT NULL DEFAULT 0"
OUT=$(mktemp -d)
sql() { mariadb --no-defaults -h127.0.0.1 -P"$PORT" -uroot "$@"; }

scripts/mysql-env.sh start >/dev/null
# --no-replica: the replica stops replicating, so the primary has the machine to itself (as
# with a replica on another machine); zdm-ost then has no replica to watch
if [ "$REPLICA" = 0 ]; then
  mariadb --no-defaults -h127.0.0.1 -P"$REPLICA_PORT" -uroot -e "STOP SLAVE"
fi
if [ "$KEEP" = 0 ]; then
  trap 'scripts/mysql-env.sh destroy 2>/dev/null' EXIT
fi
if [[ " $METHODS " == *" ptosc "* ]] && ! command -v pt-online-schema-change >/dev/null; then
  echo "bench: installing percona-toolkit from Debian" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq percona-toolkit >/dev/null
fi
command -v /usr/bin/time >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
cargo build --release --quiet --bin zdm-ost --example bench_load
ZDM_BIN=${ZDM_BIN:-./target/release/zdm-ost}

reset_table() {
  sql <<SQL
CREATE DATABASE IF NOT EXISTS bench;
DROP TABLE IF EXISTS bench.sbtest, bench.sbtest_ctl, bench._sbtest_new, bench._sbtest_old,
  bench.sbtest_zdm_gho, bench.sbtest_zdm_old, bench.sbtest_zdm_log, bench.sbtest_zdm_ckp;
CREATE TABLE bench.sbtest (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0,
  c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k)) ENGINE=InnoDB;
INSERT INTO bench.sbtest (id, k, c, pad)
  SELECT seq, seq * 7919 % $ROWS, LPAD(seq * 104729, 120, '7'), LPAD(seq, 60, '3') FROM bench.seq_1_to_$ROWS;
CREATE TABLE bench.sbtest_ctl LIKE bench.sbtest;
INSERT INTO bench.sbtest_ctl SELECT * FROM bench.sbtest;
SQL
}

# Every timed run starts with the replica caught up: a native ALTER is replayed by the replica
# after it finishes on the primary, and that replay must not eat into the next method's time.
# Then the binlogs before it go, on both servers: each run writes several GB (the table, its
# control copy and the change, again on the replica through log_slave_updates), and 21 runs
# kept (62 GB) filled the disk and slowed every method down as it went.
catch_up() {
  local gtid p
  gtid=$(sql -N -e "SELECT @@gtid_binlog_pos")
  if [ "$REPLICA" = 1 ]; then
    mariadb --no-defaults -h127.0.0.1 -P"$REPLICA_PORT" -uroot -N -e "SELECT MASTER_GTID_WAIT('$gtid', 600)" >/dev/null
  fi
  for p in "$PORT" "$REPLICA_PORT"; do
    mariadb --no-defaults -h127.0.0.1 -P"$p" -uroot -e "FLUSH BINARY LOGS; PURGE BINARY LOGS BEFORE NOW()" 2>/dev/null || true
  done
}

run_method() { # method -> prints wall seconds (fails if the method failed); zdm's RSS to $OUT/rss
  local m=$1 t0 t1 status=0
  t0=$(date +%s.%N)
  case "$m" in
    native) sql -e "ALTER TABLE bench.sbtest $ALTER, ALGORITHM=COPY" || status=$? ;;
    ptosc) pt-online-schema-change --alter "$ALTER" "D=bench,t=sbtest,h=127.0.0.1,P=$PORT,u=root" \
             --execute --recursion-method=none --no-check-alter --set-vars lock_wait_timeout=5 \
             --chunk-time 0.5 --critical-load Threads_running=1000 --max-load Threads_running=500 >"$OUT/ptosc.log" 2>&1 || status=$? ;;
    zdm) /usr/bin/time -v "$ZDM_BIN" --host 127.0.0.1 --port "$PORT" --database bench --table sbtest \
             --alter "$ALTER" --execute --ok-to-drop-table --json $ZDM_ARGS >"$OUT/zdm.out" 2>"$OUT/zdm.err" || status=$?
         awk -F': ' '/Maximum resident set size/ {print $2}' "$OUT/zdm.err" >"$OUT/rss"
         awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$OUT/zdm.err" >"$OUT/cpu" ;;
  esac
  t1=$(date +%s.%N)
  echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
  [ "$status" = 0 ] || { echo "bench: $m exited with status $status (logs in $OUT)" >&2; return 1; }
}

correct() { # table == control, over the original columns
  local a b
  a=$(sql -N -e "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, k, c, pad))) FROM bench.sbtest")
  b=$(sql -N -e "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, k, c, pad))) FROM bench.sbtest_ctl")
  [ "$a" = "$b" ] && echo yes || echo "NO ($a vs $b)"
}

echo "zdm-ost extra args: ${ZDM_ARGS:-none}; logs in $OUT" >&2
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(sql -N -e 'SELECT VERSION()'); rows $ROWS; rounds $ROUNDS; load $RATE txn/s; replica $([ "$REPLICA" = 1 ] && echo "replicating, on this machine" || echo "stopped (--no-replica)")" >&2
for round in $(seq 1 "$ROUNDS"); do
  for mode in $MODES; do
    for m in $METHODS; do
      [ "$mode" = unpaced ] && [ "$m" != zdm ] && continue
      reset_table
      catch_up
      stop="$OUT/stop"; rm -f "$stop" "$OUT/rss" "$OUT/cpu"
      if [ "$mode" != idle ]; then
        rate=$RATE; [ "$mode" = unpaced ] && rate=0
        ./target/release/examples/bench_load --port "$PORT" --rate "$rate" --rows "$ROWS" --stop-file "$stop" >"$OUT/load.json" &
        load=$!
        sleep 1
      fi
      wall=$(run_method "$m") || wall="FAILED ($wall s)"
      load_json="{}"
      if [ "$mode" != idle ]; then
        sleep 1; touch "$stop"; wait $load || true
        load_json=$(cat "$OUT/load.json")
      fi
      [ "$m" = zdm ] && cp "$OUT/zdm.err" "$OUT/zdm-$round-$mode.log"
      ok=$(correct)
      rss=$(cat "$OUT/rss" 2>/dev/null || echo "")
      cpu=$(cat "$OUT/cpu" 2>/dev/null || echo "")
      zsum="{}"
      [ "$m" = zdm ] && zsum=$(python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])).get("summary", {})))' "$OUT/zdm.out" 2>/dev/null || echo "{}")
      echo "{\"round\": $round, \"mode\": \"$mode\", \"method\": \"$m\", \"wall\": \"$wall\", \"correct\": \"$ok\", \"rss_kb\": \"$rss\", \"cpu_s\": \"$cpu\", \"load\": $load_json, \"zdm\": $zsum}" | tee -a "$OUT/results.jsonl" >&2
    done
  done
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
out = []
for mode in ("idle", "load", "unpaced"):
    native = med([float(r["wall"]) for r in rows if r["mode"] == mode and r["method"] == "native" and not r["wall"].startswith("FAILED")])
    for m in ("native", "ptosc", "zdm"):
        rs = [r for r in rows if r["mode"] == mode and r["method"] == m]
        if not rs:
            continue
        wall = med([float(r["wall"]) for r in rs if not r["wall"].startswith("FAILED")])
        failed = sum(1 for r in rs if r["wall"].startswith("FAILED"))
        l = [r["load"] for r in rs if r["load"]]
        out.append((mode, m, wall, (wall / native) if wall and native else None,
                    med([x["tps"] for x in l]) if l else None,
                    med([x["p50_ms"] for x in l]) if l else None,
                    med([x["p99_ms"] for x in l]) if l else None,
                    max([x["max_ms"] for x in l]) if l else None,
                    sum(x["errors"] for x in l) if l else None,
                    (f"{failed} FAILED" if failed else "yes") if all(r["correct"] == "yes" for r in rs) else "NO",
                    max([int(r["rss_kb"]) for r in rs if r["rss_kb"]], default=None),
                    med([r["zdm"]["applied_changes"] / (r["zdm"]["total_ms"] / 1000) for r in rs if r.get("zdm", {}).get("total_ms")]),
                    max([r["zdm"]["max_backlog"] for r in rs if r.get("zdm", {}).get("total_ms")], default=None)))
f = lambda v, fmt: "-" if v is None else fmt.format(v)
print(f"{'mode':7} {'method':7} {'median s':>9} {'x native':>9} {'load tps':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'app errs':>8} {'correct':>7} {'peak RSS':>9} {'applied/s':>9} {'max backlog':>11}")
for mode, m, wall, ratio, tps, p50, p99, mx, errs, ok, rss, aps, mb in out:
    print(f"{mode:7} {m:7} {f(wall,'{:.2f}'):>9} {f(ratio,'{:.2f}'):>9} {f(tps,'{:.0f}'):>9} {f(p50,'{:.1f}'):>8} {f(p99,'{:.1f}'):>8} {f(mx,'{:.0f}'):>8} {f(errs,'{}'):>8} {ok:>7} {f(rss and rss/1024,'{:.0f} MB'):>9} {f(aps,'{:.0f}'):>9} {f(mb,'{}'):>11}")
PY
