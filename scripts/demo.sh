#!/usr/bin/env bash
# A zdm-ost demo on the local test servers: starts the MariaDB primary and replica, creates
# demo.orders with 100k rows, shows the dry-run plan, then migrates the table for real while
# a write load runs beside it, and checks the replica ends up identical.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROWS=${ROWS:-100000}
scripts/mysql-env.sh start
cargo build --release --quiet
sql() { mariadb --no-defaults -h127.0.0.1 -P"${ZDM_PRIMARY_PORT:-3310}" -uroot "$@"; }

echo "== creating demo.orders with $ROWS rows"
sql <<SQL
CREATE DATABASE IF NOT EXISTS demo;
DROP TABLE IF EXISTS demo.orders, demo.orders_zdm_gho, demo.orders_zdm_old, demo.orders_zdm_log, demo.orders_zdm_prb;
DROP PROCEDURE IF EXISTS demo.load;
CREATE TABLE demo.orders (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  customer VARCHAR(64) NOT NULL,
  qty INT NOT NULL,
  price DECIMAL(10,2) NOT NULL,
  created DATETIME(6) NOT NULL,
  KEY idx_customer (customer)
);
INSERT INTO demo.orders (customer, qty, price, created)
  SELECT CONCAT('customer-', seq % 5000), seq % 17, (seq % 1000) / 10, '2026-01-01' + INTERVAL seq SECOND
  FROM demo.seq_1_to_${ROWS};
ANALYZE TABLE demo.orders;
SQL

echo "== zdm-ost dry run (changes nothing, prints the plan)"
ALTER="ADD COLUMN note TEXT NULL, MODIFY qty BIGINT NOT NULL"
ZDM=(./target/release/zdm-ost --host 127.0.0.1 --port "${ZDM_PRIMARY_PORT:-3310}" --user zdm --password zdm
     --database demo --table orders --alter "$ALTER" --replica "127.0.0.1:${ZDM_REPLICA_PORT:-3311}")
"${ZDM[@]}"

echo "== starting a write load (inserts, updates, deletes in transactions) beside the migration"
sql <<'SQL'
DROP PROCEDURE IF EXISTS demo.load;
DROP TABLE IF EXISTS demo.load_stop;
CREATE TABLE demo.load_stop (x INT);
DELIMITER //
CREATE PROCEDURE demo.load(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  DECLARE target BIGINT;
  WHILE i < n AND NOT EXISTS (SELECT 1 FROM demo.load_stop) DO
    START TRANSACTION;
    INSERT INTO demo.orders (customer, qty, price, created) VALUES (CONCAT('live-', i), i % 17, 9.99, NOW(6));
    SET target = 1 + FLOOR(RAND() * 100000);
    UPDATE demo.orders SET qty = qty + 1 WHERE id = target;
    COMMIT;
    SET target = 1 + FLOOR(RAND() * 100000);
    DELETE FROM demo.orders WHERE id = target;
    DO SLEEP(0.002);
    SET i = i + 1;
  END WHILE;
END //
DELIMITER ;
SQL
sql -e "CALL demo.load(1000000)" &
LOAD=$!
stop_load() { sql -e "INSERT INTO demo.load_stop VALUES (1)" 2>/dev/null || true; }
trap stop_load EXIT
sleep 1

echo "== zdm-ost --execute"
"${ZDM[@]}" --execute --status-interval 1

# stop the load (it checks demo.load_stop on every round)
stop_load
wait $LOAD 2>/dev/null || true
echo "== after the migration"
sql -e "SHOW CREATE TABLE demo.orders\G; SELECT COUNT(*) AS rows_now, SUM(customer LIKE 'live-%') AS written_by_the_load FROM demo.orders"
gtid=$(sql -N -e "SELECT @@gtid_binlog_pos")
mariadb --no-defaults -h127.0.0.1 -P"${ZDM_REPLICA_PORT:-3311}" -uroot -N -e "SELECT MASTER_GTID_WAIT('$gtid', 30)" >/dev/null
p=$(sql -N -e "CHECKSUM TABLE demo.orders" | cut -f2)
r=$(mariadb --no-defaults -h127.0.0.1 -P"${ZDM_REPLICA_PORT:-3311}" -uroot -N -e "CHECKSUM TABLE demo.orders" | cut -f2)
echo "checksum of demo.orders: primary $p, replica $r"
[ "$p" = "$r" ] || { echo "demo: the replica differs from the primary" >&2; exit 1; }
