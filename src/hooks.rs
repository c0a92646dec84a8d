//! Hooks: executables in `--hooks-path` run at lifecycle points, with the migration described in
//! `ZDM_*` environment variables: `on-startup`, `on-validated`, `on-row-copy-complete`,
//! `on-before-cut-over`, `on-success`, `on-failure`, `on-status`. Each runs with a timeout
//! ([`TIMEOUT`]); a failing `on-before-cut-over` aborts the migration (before any lock), any
//! other failing hook is logged.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::progress::Progress;

pub const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct Hooks {
    pub dir: Option<PathBuf>,
    /// ZDM_DATABASE, ZDM_TABLE, ZDM_ALTER, ZDM_HOST, ...: fixed for the run.
    pub env: Vec<(String, String)>,
    pub progress: Arc<Progress>,
}

impl Hooks {
    /// Runs hook `name` if it exists; `Err` says why it failed.
    pub async fn run(&self, name: &str, extra: &[(&str, String)]) -> Result<(), String> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(name);
        if !path.is_file() {
            return Ok(());
        }
        let p = &self.progress;
        let mut cmd = tokio::process::Command::new(&path);
        // the password stays in zdm-ost: a hook that logs its environment must not log it
        cmd.env_remove("ZDM_PASSWORD")
            .env_remove("MYSQL_PWD")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("ZDM_HOOK", name)
            .env("ZDM_PHASE", p.phase().to_string())
            .env("ZDM_COPIED_ROWS", p.copied_rows.load(Relaxed).to_string())
            .env(
                "ZDM_ESTIMATED_ROWS",
                p.estimated_rows.load(Relaxed).to_string(),
            )
            .env(
                "ZDM_APPLIED_CHANGES",
                p.applied_keys.load(Relaxed).to_string(),
            )
            .env(
                "ZDM_ELAPSED_SECONDS",
                format!("{:.3}", p.started.elapsed().as_secs_f64()),
            )
            .env(
                "ZDM_THROTTLE_REASON",
                p.throttle_reason().unwrap_or_default(),
            )
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = match tokio::time::timeout(TIMEOUT, cmd.output()).await {
            Err(_) => {
                return Err(format!(
                    "hook {} did not finish within {} s",
                    path.display(),
                    TIMEOUT.as_secs()
                ))
            }
            Ok(Err(e)) => return Err(format!("hook {} could not run: {e}", path.display())),
            Ok(Ok(o)) => o,
        };
        if out.status.success() {
            tracing::debug!("hook {name} ran");
            Ok(())
        } else {
            Err(format!(
                "hook {} failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs a hook whose failure is only logged.
    pub async fn notify(&self, name: &str, extra: &[(&str, String)]) {
        if let Err(e) = self.run(name, extra).await {
            tracing::warn!("{e}");
        }
    }
}
