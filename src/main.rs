//! The zdm-ost binary: parse flags, run, print the result or the error.
//!
//! Exit codes: 0 success; 1 error (the message says what to do); 2 bad usage; 130 interrupted.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use zdm_ost::cli::{Args, Config};
use zdm_ost::migration::ExecOptions;

fn main() -> ExitCode {
    let args = Args::parse();
    let level = match args.verbose {
        0 => "zdm_ost=info",
        1 => "zdm_ost=debug",
        _ => "zdm_ost=trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ZDM_LOG").unwrap_or_else(|_| EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("zdm-ost: error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let cfg = Config::from(&args);
    let cancel = CancellationToken::new();
    tokio::spawn(cancel_on_signal(cancel.clone()));
    let result = if args.execute {
        let mut opts = ExecOptions::from(&args);
        opts.progress_bar = !args.json && std::io::stderr().is_terminal();
        let json = args.json;
        zdm_ost::migration::execute(&cfg, &opts, &cancel, |plan| {
            if !json {
                print!("{}", plan.render(false));
            }
        })
        .await
        .map(|summary| {
            if json {
                serde_json::json!({ "ok": true, "summary": summary })
            } else {
                print!("{}", summary.render());
                serde_json::Value::Null
            }
        })
    } else {
        zdm_ost::dry_run(&cfg, &cancel).await.map(|plan| {
            if args.json {
                serde_json::json!({ "ok": true, "plan": plan })
            } else {
                print!("{}", plan.render(true));
                serde_json::Value::Null
            }
        })
    };
    match result {
        Ok(serde_json::Value::Null) => ExitCode::SUCCESS,
        Ok(doc) => match serde_json::to_string_pretty(&doc) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("zdm-ost: error: cannot render JSON: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": e.to_string() })
                );
            }
            eprintln!("zdm-ost: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Ctrl-C or SIGTERM cancels the run; the run cleans up and returns `Error::Cancelled`.
async fn cancel_on_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::warn!("interrupted: stopping cleanly");
    cancel.cancel();
}
