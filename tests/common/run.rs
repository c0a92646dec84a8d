//! A zdm-ost process whose stderr is read line by line while it runs, so a test can wait for
//! a log line (a phase, a failpoint) and then act: kill it, change the table, talk to it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

pub struct Running {
    pub child: tokio::process::Child,
    pub lines: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

/// A test that fails while zdm-ost runs shows what zdm-ost logged (a socket that vanished, a
/// status that never came: the reason is in its log).
impl Drop for Running {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- zdm-ost's log up to the failure ----\n{}",
                self.stderr()
            );
        }
    }
}

impl Running {
    /// `zdm-ost --host 127.0.0.1 --port PORT --database DB ARGS...` with `env` added.
    ///
    /// These tests exercise the copy path, so an `--execute` run gets `--no-attempt-instant-ddl`
    /// (many test ALTERs are INSTANT-class); a test of the INSTANT path passes
    /// `--attempt-instant-ddl`, which overrides it.
    pub fn spawn(port: u16, db: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = tokio::process::Command::new(super::zdm_bin());
        let port = port.to_string();
        cmd.args(["--host", "127.0.0.1", "--port", &port, "--database", db]);
        if args.contains(&"--execute") {
            cmd.arg("--no-attempt-instant-ddl");
        }
        cmd.args(args)
            .env_remove("ZDM_FAILPOINT")
            .env_remove("ZDM_PASSWORD")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn zdm-ost");
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        Running {
            child,
            lines,
            reader,
        }
    }

    /// Waits until a stderr line contains `needle`; panics with the log after `within`.
    pub async fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // read before the lines: once stderr is closed every line is in
            let exited = self.reader.is_finished();
            if self
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
            {
                return;
            }
            // stderr closed: the process has exited and will never log it
            assert!(
                !exited && tokio::time::Instant::now() < deadline,
                "zdm-ost {} `{needle}`:\n{}",
                if exited {
                    "exited without logging"
                } else {
                    "never logged"
                },
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = self.child.wait().await;
        let _ = (&mut self.reader).await;
    }

    /// Waits for the exit; returns (exit code, stdout, stderr).
    pub async fn finish(mut self) -> (Option<i32>, String, String) {
        let mut out = String::new();
        if let Some(mut so) = self.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            so.read_to_string(&mut out).await.unwrap();
        }
        let status = self.child.wait().await.unwrap();
        let lines = Arc::clone(&self.lines);
        let _ = (&mut self.reader).await;
        let err = lines.lock().unwrap().join("\n");
        (status.code(), out, err)
    }
}

/// zdm-ost with `args` and its cut-over postponed by a flag file, once it waits for the
/// cut-over (copy and checksum done: from here changes reach the ghost only through the
/// binlog). Returns the run and the flag file; removing the file lets the cut-over go.
pub async fn postponed(port: u16, db: &str, name: &str, args: &[&str]) -> (Running, PathBuf) {
    let dir = std::env::temp_dir().join(format!("zdm-postpone-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let flag = dir.join("postpone");
    std::fs::write(&flag, "").unwrap();
    let mut all = args.to_vec();
    all.extend_from_slice(&["--postpone-cut-over-flag-file", flag.to_str().unwrap()]);
    let run = Running::spawn(port, db, &all, &[]);
    run.wait_for("cut-over postponed", Duration::from_secs(120))
        .await;
    (run, flag)
}
