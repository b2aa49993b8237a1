//! Command line: `wispd serve`, the admin commands that talk to a running server (`status`,
//! `queue`, `ban`, `messages`), and `check-config`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// wispd: a complete mail server and a host firewall in one binary, driven by a REST API.
#[derive(Debug, Parser)]
#[command(
    name = "wispd",
    version,
    about,
    long_about = "wispd: a complete mail server (SMTP MX, submission, IMAP, POP3, DKIM, outbound queue) \
and a host firewall (nftables over netlink, CSF-compatible settings and lists) in one binary, \
driven by the REST API at /api/v1.\n\n\
`wispd serve` runs the server. The admin commands (status, queue, ban, messages) talk to the \
running server's API with DATA_DIR/admin.token; `messages` reads the store directly when no \
server holds it.",
    after_help = "Files: DATA_DIR/wispd.redb (the store), DATA_DIR/admin.token (the first admin API token, 0600), \
DATA_DIR/tls/ (generated certificate), DATA_DIR/api.url (where a running server's API answers)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Which server an admin command talks to, and how it answers.
#[derive(Debug, Args)]
pub struct Target {
    /// The server's config file (for its data_dir and certificate); without it the embedded default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's data directory (holds admin.token and api.url); overrides the config's data_dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Print the API's JSON instead of text for people.
    #[arg(long)]
    pub json: bool,
}

/// What `wispd import` reads.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ImportSource {
    /// ConfigServer Firewall: settings and lists.
    Csf,
    /// Postfix: virtual_alias_maps (forwarders, catch-alls); what belongs in the config file is listed.
    Postfix,
    /// Dovecot: passwd-file users with the password hashes they have, their Maildir++ (UIDs,
    /// flags, keywords, folders, subscriptions) and Sieve scripts.
    Dovecot,
    /// All three, each from what the --from directories (or its defaults) hold.
    All,
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
    /// What the running server does: mail listeners, firewall state, outbound queue.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// The outbound queue of the running server, a message per line.
    Queue {
        #[command(flatten)]
        target: Target,
    },
    /// Blacklist an address or network on the running server (effective in the kernel when
    /// this returns).
    Ban {
        /// An address or CIDR (IPv4-mapped IPv6 counts as IPv4).
        #[arg(value_name = "IP")]
        ip: String,
        /// Seconds until the ban lifts by itself; 0 or absent: permanent.
        #[arg(long, value_name = "S", default_value_t = 0)]
        ttl: i64,
        /// Why (shown in listings).
        #[arg(long, default_value = "wispd ban")]
        comment: String,
        /// Ban even what would lock the caller out (wide prefixes, your own address).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// The messages of one account (mailbox, UID, size, flags, Message-ID, Subject), a line
    /// each (`--json`: one JSON object per line). Through the running server's API, or straight
    /// from the store when no server holds it.
    Messages {
        /// The account's address.
        #[arg(value_name = "ADDRESS")]
        address: String,
        /// Include each whole message (as text) under "raw" (through the API: 64 MiB at most).
        #[arg(long)]
        raw: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Bring another server's setup over, through the running server's API (or, when wispd is
    /// stopped, the same API served in this process over its data dir): `csf` reads csf.conf,
    /// csf.allow, csf.deny, csf.tempban, csf.ignore and csf.blocklists; `postfix` reads main.cf
    /// and its virtual_alias_maps; `dovecot` its passwd-file users, their Maildir++ and Sieve
    /// scripts. Running it again changes nothing; an interrupted run resumes; every item that
    /// can't come over is listed with the reason.
    Import {
        /// What to import from.
        #[arg(value_enum)]
        source: ImportSource,
        /// Where its files are (repeatable; a file for dovecot's passwd-file); default
        /// /etc/csf and /var/lib/csf, /etc/postfix, or /etc/dovecot.
        #[arg(long, value_name = "DIR")]
        from: Vec<PathBuf>,
        /// Say what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Messages per committed batch of a mailbox import (1 to 10000; a batch also ends at 4 MiB).
        #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u16).range(1..=10000))]
        batch_messages: u16,
        #[command(flatten)]
        target: Target,
    },
    /// Validate a config file and report every problem in it; exits 1 if there is any.
    CheckConfig {
        /// The TOML config file to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `man/wispd.1` and a page per subcommand (`man/wispd-ban.1`, …) are generated from the
    /// command line itself; regenerate with `UPDATE_MAN=1 cargo test -p wispd man_pages`.
    #[test]
    fn man_pages_are_the_generated_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let cmd = super::Cli::command();
        let mut pages = vec![("wispd.1".to_string(), cmd.clone())];
        for sub in cmd.get_subcommands() {
            let name = format!("wispd-{}", sub.get_name());
            let file = format!("{name}.1");
            // a test: the page name lives as long as the process anyway
            pages.push((file, sub.clone().name(&*Box::leak(name.into_boxed_str()))));
        }
        for (file, page) in pages {
            let mut out = Vec::new();
            clap_mangen::Man::new(page)
                .render(&mut out)
                .expect("render");
            let path = dir.join(&file);
            if std::env::var_os("UPDATE_MAN").is_some() {
                std::fs::create_dir_all(&dir).expect("man dir");
                std::fs::write(&path, &out).expect("write man page");
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == out,
                "man/{file} differs from the command line: run UPDATE_MAN=1 cargo test -p wispd man_pages"
            );
        }
    }
}
