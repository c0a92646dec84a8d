-- Runs once, when the primary's data directory is first initialised.
-- Accounts are local to each server: keep them out of the binlog (as scripts/mysql-env.sh does).
SET sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'zdm'@'%' IDENTIFIED BY 'zdm';
GRANT ALL PRIVILEGES ON *.* TO 'zdm'@'%';
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED WITH mysql_native_password BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
SET sql_log_bin = 1;
