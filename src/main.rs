//! The `spate` command line: what the user typed (clap), turned into a
//! validated [`Config`] before anything runs.

use clap::{Args, Parser, Subcommand};
use spate::config::{Config, Overrides, RawConfig, DEFAULT_TOML};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "spate",
    version,
    about = "Thread-per-core bulk mail transfer agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the engine: accept mail over SMTP, spool it, deliver it.
    Serve(Box<ServeArgs>),
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Offline spool tools (stop the engine first).
    #[command(subcommand)]
    Spool(SpoolCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the default configuration as a commented TOML file.
    Default,
    /// Check a configuration (file plus flags) and print what it resolves to.
    Check(Box<ServeArgs>),
}

#[derive(Subcommand)]
enum SpoolCmd {
    /// Check every record of every segment; exit 1 on any damage.
    Verify { dir: PathBuf },
    /// Print every record as a JSON line.
    Dump { dir: PathBuf },
}

#[derive(Args, Clone)]
struct ServeArgs {
    /// Configuration file (TOML); `spate config default` prints a template.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to accept SMTP on (IP:PORT); repeatable.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<String>,
    /// CPUs to run on: a count ("4"), a list ("0,2-3") or "all".
    #[arg(long, value_name = "SPEC")]
    cores: Option<String>,
    /// Spool directory.
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// Directory for the delivery logs.
    #[arg(long = "log-dir", value_name = "DIR")]
    log_dir: Option<PathBuf>,
    /// DNS resolver, ADDR or ADDR:PORT; repeatable.
    #[arg(long = "dns", value_name = "ADDR")]
    dns: Vec<String>,
    /// Deliver everything to this HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    smarthost: Option<String>,
    /// Route one domain to a HOST:PORT; repeatable.
    #[arg(long = "route", value_name = "DOMAIN=HOST:PORT")]
    route: Vec<String>,
    /// Clients allowed to relay (CIDR); repeatable. Default: loopback only.
    #[arg(long = "relay-from", value_name = "CIDR")]
    relay_from: Vec<String>,
    /// Largest message accepted, in bytes.
    #[arg(long = "max-message-size", value_name = "BYTES")]
    max_message_size: Option<u64>,
    /// Host name for the greeting, EHLO and Received headers.
    #[arg(long)]
    hostname: Option<String>,
    /// PEM certificate chain for STARTTLS.
    #[arg(long = "tls-cert", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for STARTTLS.
    #[arg(long = "tls-key", value_name = "FILE")]
    tls_key: Option<PathBuf>,
}

impl ServeArgs {
    fn config(&self) -> Result<Config, String> {
        let file = self
            .config
            .as_deref()
            .map(RawConfig::load)
            .transpose()
            .map_err(|e| e.to_string())?;
        let o = Overrides {
            listen: self.listen.clone(),
            cores: self.cores.clone(),
            spool_dir: self.spool.clone(),
            log_dir: self.log_dir.clone(),
            dns: self.dns.clone(),
            smarthost: self.smarthost.clone(),
            routes: self.route.clone(),
            relay_from: self.relay_from.clone(),
            max_message_bytes: self.max_message_size,
            hostname: self.hostname.clone(),
            tls_certificate: self.tls_cert.clone(),
            tls_private_key: self.tls_key.clone(),
        };
        Config::build(file, o).map_err(|e| e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve(args) => args
            .config()
            .and_then(|cfg| spate::engine::serve(cfg).map_err(|e| e.to_string())),
        Cmd::Config(ConfigCmd::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(())
        }
        Cmd::Config(ConfigCmd::Check(args)) => args.config().map(|cfg| println!("{cfg:#?}")),
        Cmd::Spool(SpoolCmd::Verify { dir }) => verify(&dir),
        Cmd::Spool(SpoolCmd::Dump { dir }) => {
            spate::spool_tool::dump(&dir, &mut std::io::stdout().lock())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn verify(dir: &std::path::Path) -> Result<(), String> {
    let report = spate::spool_tool::verify(dir)?;
    for p in &report.problems {
        println!("{p}");
    }
    println!(
        "{} segments, {} records, {} problems",
        report.segments,
        report.records,
        report.problems.len()
    );
    if report.problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} problems found", report.problems.len()))
    }
}
