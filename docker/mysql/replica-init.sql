-- Runs once, when the replica's data directory is first initialised: accounts, then
-- GTID-based replication from the primary (it restarts with the server after init).
SET sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'zdm'@'%' IDENTIFIED BY 'zdm';
GRANT ALL PRIVILEGES ON *.* TO 'zdm'@'%';
SET sql_log_bin = 1;
CHANGE REPLICATION SOURCE TO
  SOURCE_HOST = 'primary', SOURCE_PORT = 3306,
  SOURCE_USER = 'repl', SOURCE_PASSWORD = 'repl',
  SOURCE_AUTO_POSITION = 1, SOURCE_CONNECT_RETRY = 1;
START REPLICA;
