//! Command line: `wispd serve`, `wispd check-config`, `wispd messages`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// wispd: a complete mail server and a host firewall in one binary, driven by a REST API.
#[derive(Debug, Parser)]
#[command(name = "wispd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (API, mail and firewall) until SIGTERM/SIGINT.
    Serve {
        /// TOML config file; without it wispd runs the embedded default profile (loopback, high ports).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Data directory (store, TLS material, admin.token); overrides `data_dir` from the config.
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// List the messages of one account (mailbox, UID, size, Message-ID, Subject), one JSON
    /// object per line, straight from the store. Run it while wispd is stopped (the store
    /// admits one process at a time).
    Messages {
        /// Data directory holding the store.
        #[arg(long, value_name = "DIR", default_value = "wispd-data")]
        data_dir: PathBuf,
        /// The account's address.
        #[arg(value_name = "ADDRESS")]
        address: String,
        /// Include each whole message (as text) under "raw".
        #[arg(long)]
        raw: bool,
    },
    /// Validate a config file and report every problem in it; exits 1 if there is any.
    CheckConfig {
        /// The TOML config file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}
