//! The `sosrouter` command: `run` the proxy, `check` rules files.

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
        /// Listen address, `udp:IP:PORT` or `tcp:IP:PORT`; repeatable. Default: the rules file's.
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
    },
    /// Validate rules files without running: exit 0 when all are valid, 1 otherwise.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
            let (ok, report) = sosrouter::routing::check_files(&files);
            print!("{report}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Cmd::Run {
            rules,
            listen,
            undelivered,
            admin,
            log_format,
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
                // `--admin-token-file PATH` to be wired here; SOSROUTER_ADMIN_TOKEN works meanwhile.
                admin_token_file: None,
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
