//! The `sosrouter` command: `run` the proxy, `check` rules files, ask where a call would `route`.

use clap::{Parser, Subcommand, ValueEnum};

use sosrouter::app;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "sosrouter",
    version,
    about = "SIP failover proxy for emergency calls"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy in the foreground until SIGINT or SIGTERM.
    Run {
        /// The routing rules file (TOML).
        #[arg(long)]
        rules: PathBuf,
        /// Listen address, `udp:IP:PORT`, `tcp:IP:PORT` or `tls:IP:PORT`; repeatable. Default: the rules file's.
        #[arg(long)]
        listen: Vec<String>,
        /// Append undelivered emergency calls to this JSON-lines file (synced per record).
        #[arg(long, default_value = "undelivered.jsonl")]
        undelivered: PathBuf,
        /// Admin HTTP address (status, enable/disable), loopback only; `off` disables it.
        #[arg(long, default_value = "127.0.0.1:9060")]
        admin: String,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// Do not reload the rules file when it changes (SIGHUP and POST /reload still reload).
        #[arg(long)]
        no_watch: bool,
        /// File holding the admin bearer token; POSTs must then carry `Authorization: Bearer`.
        /// Required for a non-loopback --admin. Default: the SOSROUTER_ADMIN_TOKEN variable, if set.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// With an admin token: reads (/status, /events, /metrics) need it too. `false` leaves
        /// reads open (they carry callers' numbers and locations: personal data).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        admin_token_for_reads: bool,
        /// POST every alert event (health, operator, reload, undelivered) as JSON to this
        /// `http://host:port/path` or `https://...`; bounded queue and retry, never slows the
        /// call path.
        #[arg(long)]
        webhook: Option<String>,
        /// PEM file of CA certificates the webhook trusts for an https receiver (beside the
        /// system's roots).
        #[arg(long)]
        webhook_ca: Option<PathBuf>,
    },
    /// Validate rules files without running: exit 0 when all are valid, 1 otherwise.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Where would this call go? Prints the matched route and why, and the ordered chain.
    Route {
        /// The routing rules file (TOML).
        #[arg(long)]
        rules: PathBuf,
        /// The call's Request-URI, e.g. `urn:service:sos` or `sip:911@127.0.0.1:5060`.
        #[arg(long, conflicts_with = "dialled", required_unless_present = "dialled")]
        uri: Option<String>,
        /// A dialled number: Request-URI `sip:NUMBER@<first listen address>`.
        #[arg(long)]
        dialled: Option<String>,
        /// The caller's number (as P-Asserted-Identity would give it).
        #[arg(long)]
        caller: Option<String>,
        /// The address the call comes from (trunk). Default 127.0.0.1.
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// A header of the call, `Name: value`; repeatable.
        #[arg(long)]
        header: Vec<String>,
        /// Suppose this target is down (not ready); repeatable.
        #[arg(long)]
        down: Vec<String>,
        /// Suppose the operator disabled this target; repeatable.
        #[arg(long)]
        disabled: Vec<String>,
        /// Read readiness from a running proxy's admin endpoint, e.g. http://127.0.0.1:9060.
        #[arg(long)]
        admin: Option<String>,
        /// File holding the admin bearer token, for a proxy whose reads need it. Default: the
        /// SOSROUTER_ADMIN_TOKEN variable, if set.
        #[arg(long)]
        admin_token_file: Option<PathBuf>,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Check { files } => {
            let (ok, report) = sosrouter::routing::check_files_with(&files, &app::check_tls);
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Route {
            rules,
            uri,
            dialled,
            caller,
            source,
            header,
            down,
            disabled,
            admin,
            admin_token_file,
            json,
        } => {
            let args = app::route::RouteArgs {
                admin_token_file,
                uri,
                dialled,
                caller,
                source,
                headers: header,
                down,
                disabled,
                admin,
            };
            route(&rules, &args, json)
        }
        Cmd::Run {
            rules,
            listen,
            undelivered,
            admin,
            log_format,
            no_watch,
            webhook,
            webhook_ca,
            admin_token_file,
            admin_token_for_reads,
        } => {
            init_logs(log_format);
            let admin = match admin.as_str() {
                "off" | "none" => None,
                a => match a.parse() {
                    Ok(a) => Some(a),
                    Err(_) => {
                        eprintln!("error: --admin `{a}`: expected IP:PORT or `off`");
                        return ExitCode::from(2);
                    }
                },
            };
            let listen = match listen.iter().map(|s| app::parse_listen(s)).collect() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let opts = app::RunOptions {
                rules_path: rules,
                listen,
                undelivered_path: Some(undelivered),
                admin,
                watch_rules: (!no_watch).then(app::WatchSettings::default),
                webhook,
                webhook_ca,
                admin_token_file,
                admin_token_for_reads: Some(admin_token_for_reads),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(app::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// `sosrouter route`: exit 0 with the answer, 1 when the rules are refused or the question is bad.
fn route(rules: &std::path::Path, args: &app::route::RouteArgs, json: bool) -> ExitCode {
    let rules = match app::reload::read_rules(rules).result {
        Ok((rules, warnings)) => {
            for w in warnings {
                eprintln!("{w}");
            }
            rules
        }
        Err(refused) => {
            eprintln!("{refused}");
            return ExitCode::from(1);
        }
    };
    let answer = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(app::route::route(&rules, args)),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match answer {
        Ok(w) if json => match serde_json::to_string_pretty(&w) {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Ok(w) => {
            print!("{}", sosrouter::routing::render_text(&w));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
