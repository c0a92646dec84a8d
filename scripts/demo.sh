#!/usr/bin/env bash
# A zdm-ost demo on the local test servers: starts the MariaDB primary and replica, creates
# demo.orders with 100k rows, and runs zdm-ost against it.
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

echo "== zdm-ost (dry run)"
set -x
./target/release/zdm-ost --host 127.0.0.1 --port "${ZDM_PRIMARY_PORT:-3310}" --user zdm --password zdm \
  --database demo --table orders --alter "ADD COLUMN note TEXT NULL, MODIFY qty BIGINT NOT NULL" \
  --replica "127.0.0.1:${ZDM_REPLICA_PORT:-3311}"
