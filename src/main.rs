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
    /// Traffic shaping: check a rules file, explain a destination's limits.
    #[command(subcommand)]
    Shaping(ShapingCmd),
    /// Load tools: a fault-injecting sink, a load generator, a peak-day run.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Speak to a running spate's admin API: queues, suspend, resume,
    /// bounce, reroute, override, reload, trace, events.
    Ctl(spate::ctl::CtlArgs),
    /// A live terminal view of a running spate: throughput, deepest and
    /// most-deferring destinations, suspensions; keys to sort, filter,
    /// suspend and resume.
    Top(spate::top::TopArgs),
}

#[derive(Subcommand)]
enum BenchCmd {
    /// A fast SMTP sink with fault profiles; counts what it receives.
    Sink(SinkArgs),
    /// A pipelining SMTP load generator; prints msgs/s and latency.
    Inject(InjectArgs),
    /// Start spate, a sink and the generator on loopback with a peak profile.
    Peak(PeakArgs),
}

#[derive(Args)]
struct FaultArgs {
    /// Share of transactions answered 451 (after RCPT or after DATA).
    #[arg(long, default_value_t = 0.0)]
    tempfail: f64,
    /// Share answered 550 (after RCPT or after DATA).
    #[arg(long, default_value_t = 0.0)]
    permfail: f64,
    /// Share of connections greeted with 421 and closed.
    #[arg(long = "banner-421", default_value_t = 0.0)]
    banner_421: f64,
    /// Share of transactions whose connection is closed mid-DATA.
    #[arg(long, default_value_t = 0.0)]
    drop: f64,
    /// Delay before the reply to the final dot, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency: u64,
}

impl FaultArgs {
    fn faults(&self) -> Result<spate::bench::sink::Faults, String> {
        for (name, p) in [
            ("tempfail", self.tempfail),
            ("permfail", self.permfail),
            ("banner-421", self.banner_421),
            ("drop", self.drop),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("--{name} {p}: a share must be between 0 and 1"));
            }
        }
        Ok(spate::bench::sink::Faults {
            tempfail: self.tempfail,
            permfail: self.permfail,
            banner_421: self.banner_421,
            drop: self.drop,
            latency: std::time::Duration::from_millis(self.latency),
        })
    }
}

#[derive(Args)]
struct SinkArgs {
    #[arg(long, value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// Threads (each a glommio executor with its own SO_REUSEPORT socket).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// Check the checksum header `spate bench inject` puts in each body.
    #[arg(long = "check-bodies")]
    check_bodies: bool,
    /// Exit after accepting this many messages.
    #[arg(long = "exit-after", value_name = "N")]
    exit_after: Option<u64>,
    #[command(flatten)]
    faults: FaultArgs,
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Connections kept open at once.
    #[arg(long, default_value_t = 20)]
    concurrency: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 4096)]
    size: usize,
    /// Recipient domains (Zipf mix: a few big ones, a long tail).
    #[arg(long, default_value_t = 50)]
    domains: usize,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    recipients: usize,
}

#[derive(Args)]
struct InjectArgs {
    #[arg(long, value_name = "ADDR")]
    target: std::net::SocketAddr,
    #[command(flatten)]
    load: LoadArgs,
    /// Messages per second to aim at (default: as fast as replies come).
    #[arg(long)]
    rate: Option<f64>,
}

#[derive(Args)]
struct PeakArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// Cores for the engine (as `serve --cores`).
    #[arg(long)]
    cores: Option<String>,
    /// The sink's fault profile; the defaults are a peak day's.
    #[arg(long, default_value_t = 0.02)]
    tempfail: f64,
    #[arg(long, default_value_t = 0.005)]
    permfail: f64,
    #[arg(long, default_value_t = 2)]
    latency: u64,
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print the default configuration as a commented TOML file.
    Default,
    /// Check a configuration (file plus flags) and print what it resolves to.
    Check(Box<ServeArgs>),
}

#[derive(Subcommand)]
enum ShapingCmd {
    /// Check a shaping file offline; the first problem is named by line
    /// and key, and the exit status is 1.
    Check { file: PathBuf },
    /// Print the limits a destination domain gets, each with the rule it
    /// came from, and its MX hosts (asked of the configured resolver).
    Explain {
        domain: String,
        /// Also what mail of this tenant (its X-Spate-Tenant) gets.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        serve: Box<ServeArgs>,
    },
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
    /// Traffic shaping rules (TOML; reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    shaping: Option<PathBuf>,
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
    /// Admin server address (repeatable); "" turns it off [default: 127.0.0.1:8025].
    #[arg(long = "admin", value_name = "ADDR")]
    admin: Vec<String>,
    /// HTTP injection listener address (repeatable); "" turns it off [default: none].
    #[arg(long = "inject", value_name = "ADDR")]
    inject: Vec<String>,
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
            shaping_file: self.shaping.clone(),
            relay_from: self.relay_from.clone(),
            max_message_bytes: self.max_message_size,
            hostname: self.hostname.clone(),
            tls_certificate: self.tls_cert.clone(),
            tls_private_key: self.tls_key.clone(),
            admin: self.admin.clone(),
            inject: self.inject.clone(),
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
        Cmd::Shaping(ShapingCmd::Check { file }) => spate::shaping::load(&file)
            .map(|rules| {
                println!(
                    "{}: ok ({} destination rules, {} provider rules)",
                    file.display(),
                    rules.destination_count(),
                    rules.provider_count()
                )
            })
            .map_err(|e| e.to_string()),
        Cmd::Shaping(ShapingCmd::Explain {
            domain,
            tenant,
            serve,
        }) => serve
            .config()
            .and_then(|cfg| spate::shaping::explain::print(&cfg, &domain, tenant.as_deref())),
        Cmd::Bench(cmd) => bench(cmd),
        Cmd::Ctl(args) => spate::ctl::run(args),
        Cmd::Top(args) => spate::top::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(cmd: BenchCmd) -> Result<(), String> {
    use spate::bench::{inject, peak, sink};
    match cmd {
        BenchCmd::Sink(a) => sink::run(sink::SinkSpec {
            listen: a.listen,
            cores: a.cores.max(1),
            faults: a.faults.faults()?,
            check_bodies: a.check_bodies,
            exit_after: a.exit_after,
        }),
        BenchCmd::Inject(a) => {
            let l = a.load;
            let spec = inject::InjectSpec {
                target: a.target,
                messages: l.messages,
                concurrency: l.concurrency,
                size: l.size,
                domains: l.domains,
                recipients: l.recipients.max(1),
                rate: a.rate,
                progress: true,
            };
            inject::run(spec).map(|report| report.print())
        }
        BenchCmd::Peak(a) => {
            let faults = FaultArgs {
                tempfail: a.tempfail,
                permfail: a.permfail,
                banner_421: 0.0,
                drop: 0.0,
                latency: a.latency,
            }
            .faults()?;
            let l = a.load;
            peak::run(peak::PeakSpec {
                messages: l.messages,
                concurrency: l.concurrency,
                size: l.size,
                domains: l.domains,
                recipients: l.recipients.max(1),
                cores: a.cores,
                faults,
            })
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
