//! The `wispd` binary: CLI -> config -> tracing -> build -> serve -> drain.

mod admin;
mod cli;
mod client;
mod config;
mod import;
mod maildir;
mod serve;
mod tls;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                report(&file.display().to_string(), &errors);
                ExitCode::FAILURE
            }
        },
        Command::Status { target } => admin::run(&target, admin::Job::Status),
        Command::Queue { target } => admin::run(&target, admin::Job::Queue),
        Command::Ban {
            ip,
            ttl,
            comment,
            force,
            target,
        } => admin::run(
            &target,
            admin::Job::Ban {
                ip,
                ttl,
                comment,
                force,
            },
        ),
        Command::Messages {
            address,
            raw,
            target,
        } => admin::messages(&target, &address, raw),
        Command::Import {
            source,
            from,
            dry_run,
            batch_messages,
            target,
        } => {
            import::BATCH_MESSAGES.store(
                usize::from(batch_messages),
                std::sync::atomic::Ordering::Relaxed,
            );
            admin::import(&target, source, &from, dry_run)
        }
        Command::Serve { config, data_dir } => {
            init_tracing();
            let cfg = match &config {
                Some(path) => Config::load(path),
                None => Ok(Config::embedded()),
            };
            let mut cfg = match cfg {
                Ok(c) => c,
                Err(errors) => {
                    let name = config
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    report(&name, &errors);
                    return ExitCode::from(2);
                }
            };
            if let Some(dir) = data_dir {
                cfg.data_dir = dir;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(serve::run(cfg));
            // A blocking lookup (DNS for a blocklist, say) must not hold the exit hostage.
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

pub(crate) fn report(file: &str, errors: &[String]) {
    eprintln!("{file}: {} problem(s) in the config:", errors.len());
    for e in errors {
        eprintln!("  {e}");
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
}
