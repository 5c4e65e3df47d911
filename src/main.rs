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
        /// The routing rules file (TOML). Not with --etcd: the rules come from etcd then.
        #[arg(long, required_unless_present_any = ["etcd", "cluster"], conflicts_with_all = ["etcd", "cluster"])]
        rules: Option<PathBuf>,
        /// Cluster mode: etcd client URLs (`http://host:port`, comma-separated). The node runs
        /// etcd's current rules version, publishes its version and health hints, and follows pushes.
        #[arg(long, value_delimiter = ',')]
        etcd: Vec<String>,
        /// This node's name in the cluster (1-64 of A-Z a-z 0-9 . _ -). Required with --etcd.
        #[arg(long)]
        node_id: Option<String>,
        /// A TOML file with a `[cluster]` section (etcd, node_id, prefix, cache, lease_ttl_s);
        /// the command-line flags override its keys.
        #[arg(long)]
        cluster: Option<PathBuf>,
        /// Cluster mode: the local cache of the last rules run (used when etcd is down at start).
        /// Default: sosrouter-rules-NODE.cache.json.
        #[arg(long)]
        rules_cache: Option<PathBuf>,
        /// Cluster mode: the etcd key prefix. Default /sosrouter.
        #[arg(long)]
        etcd_prefix: Option<String>,
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
        /// Runtime threads, which carry the calls. Default: one fewer than the CPUs, at least
        /// one (the prober, reloads and admin pages have threads of their own); the variable
        /// TOKIO_WORKER_THREADS, when set, is the default instead. See README "Threads".
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        workers: Option<u16>,
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
    /// Rules versions in etcd (cluster mode): push, history, rollback.
    Rules {
        #[command(subcommand)]
        cmd: RulesCmd,
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

#[derive(clap::Args)]
struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// The etcd key prefix.
    #[arg(long, default_value = sosrouter::cluster::keys::DEFAULT_PREFIX)]
    etcd_prefix: String,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Validate FILE as `check` does, store it as the next numbered version and make it current
    /// (compare-and-swap: exit 3, nothing changed, when another push won at the same time).
    Push {
        file: PathBuf,
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Every stored version, oldest first; `*` marks the current one.
    History {
        #[command(flatten)]
        etcd: EtcdArgs,
    },
    /// Make an existing VERSION current again (compare-and-swap, as push).
    Rollback {
        version: u64,
        #[command(flatten)]
        etcd: EtcdArgs,
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
        Cmd::Rules { cmd } => rules_cmd(cmd),
        Cmd::Run {
            rules,
            etcd,
            node_id,
            cluster,
            rules_cache,
            etcd_prefix,
            listen,
            undelivered,
            admin,
            log_format,
            no_watch,
            workers,
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
            let cluster = match cluster_settings(etcd, node_id, cluster, rules_cache, etcd_prefix) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let opts = app::RunOptions {
                rules_path: rules.unwrap_or_default(),
                cluster,
                listen,
                undelivered_path: Some(undelivered),
                admin,
                watch_rules: (!no_watch).then(app::WatchSettings::default),
                webhook,
                webhook_ca,
                admin_token_file,
                admin_token_for_reads: Some(admin_token_for_reads),
                prober_thread: true,
            };
            let rt = match run_runtime(run_workers(workers)) {
                Ok(rt) => rt,
                Err(code) => return code,
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
    let answer = match runtime() {
        Ok(rt) => rt.block_on(app::route::route(&rules, args)),
        Err(code) => return code,
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

/// The cluster settings from the flags and the `[cluster]` section of `--cluster FILE` (flags win).
fn cluster_settings(
    etcd: Vec<String>,
    node_id: Option<String>,
    file: Option<PathBuf>,
    cache: Option<PathBuf>,
    prefix: Option<String>,
) -> Result<Option<sosrouter::cluster::Settings>, String> {
    use sosrouter::cluster;
    let section = match &file {
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--cluster {}: {e}", f.display()))?;
            cluster::parse_section(&text).map_err(|e| format!("--cluster {}: {e}", f.display()))?
        }
        None if etcd.is_empty() => return Ok(None),
        None => cluster::Section::default(),
    };
    let endpoints = if etcd.is_empty() {
        section.etcd.clone().unwrap_or_default()
    } else {
        etcd
    };
    if endpoints.is_empty() {
        return Err("cluster mode needs etcd URLs (--etcd or `etcd = [...]` in [cluster])".into());
    }
    let Some(id) = node_id.or(section.node_id.clone()) else {
        return Err("cluster mode needs --node-id (or `node_id` in [cluster])".into());
    };
    if !cluster::keys::valid_node_id(&id) {
        return Err(format!(
            "node id `{id}`: 1-64 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    let mut s = cluster::Settings::new(endpoints, id);
    if let Some(p) = prefix.or(section.prefix) {
        s.prefix = p;
    }
    if let Some(c) = cache.or(section.cache) {
        s.cache = c;
    }
    if let Some(t) = section.lease_ttl_s {
        s.lease_ttl = std::time::Duration::from_secs(t.clamp(2, 300));
    }
    Ok(Some(s))
}

/// `sosrouter rules push|history|rollback`: 0 done, 1 refused or etcd error, 3 lost a race.
fn rules_cmd(cmd: RulesCmd) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(rules_async(cmd))
}

async fn rules_async(cmd: RulesCmd) -> ExitCode {
    use sosrouter::cluster::{etcd::Client, keys::Keys, keys::Version, versions};
    let connect = |a: &EtcdArgs| Client::new(&a.etcd).map(|c| (c, Keys::new(&a.etcd_prefix)));
    let told = |o: versions::Outcome, what: &str| match o {
        versions::Outcome::Done { from, to } => {
            let from = from.map_or("none".to_string(), |f| f.to_string());
            println!("{what}: current {from} -> {to}");
            ExitCode::SUCCESS
        }
        versions::Outcome::Lost { seen, now } => {
            let show = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
            eprintln!(
                "{what} NOT applied: another operator moved current from {} to {} at the same time; nothing was changed. Review version {} (`sosrouter rules history`) and push again.",
                show(seen),
                show(now),
                show(now)
            );
            ExitCode::from(3)
        }
    };
    match cmd {
        RulesCmd::Push { file, etcd } => {
            let (ok, report) = sosrouter::routing::check_files(std::slice::from_ref(&file));
            print!("{report}");
            if !ok {
                eprintln!("push refused: {} does not pass `check`", file.display());
                return ExitCode::from(1);
            }
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(1);
                }
            };
            let (client, keys) = match connect(&etcd) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            let record = Version {
                version: 0,
                hash: app::reload::content_hash(text.as_bytes()),
                text,
                pushed_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                by: format!("{user}@{}", host.trim()),
                source: file.display().to_string(),
            };
            let hash = record.hash.clone();
            match versions::push(&client, &keys, record).await {
                Ok(o) => told(o, &format!("pushed {} ({hash})", file.display())),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        RulesCmd::Rollback { version, etcd } => {
            let (client, keys) = match connect(&etcd) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            match versions::rollback(&client, &keys, version).await {
                Ok(o) => told(o, &format!("rollback to version {version}")),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        RulesCmd::History { etcd } => {
            let (client, keys) = match connect(&etcd) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(1);
                }
            };
            match versions::history(&client, &keys).await {
                Ok((cur, versions)) => {
                    for v in versions {
                        let mark = if Some(v.version) == cur { "*" } else { " " };
                        let when = sosrouter::events::rfc3339_utc(v.pushed_unix_ms);
                        println!(
                            "{mark} {:>4}  {}  {}  {}  {}",
                            v.version, v.hash, when, v.by, v.source
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Runtime threads for `run`: `--workers`, else TOKIO_WORKER_THREADS (None: tokio reads it),
/// else one fewer than the CPUs, at least one. Two runtime threads on two shared CPUs cost more
/// than they gave: each woke the other about four times per call (futex, 4.6 a call at 1 000
/// calls/s), and their threads waited for a CPU 88-98 % of the time against 21-24 % with one
/// (README "Threads").
fn run_workers(flag: Option<u16>) -> Option<usize> {
    if let Some(n) = flag {
        return Some(usize::from(n));
    }
    if std::env::var_os("TOKIO_WORKER_THREADS").is_some() {
        return None;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(cpus.saturating_sub(1).max(1))
}

/// The runtime of `run`: `workers` threads (None: tokio's default), or exit code 2.
fn run_runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        b.worker_threads(n);
    }
    build(b)
}

/// The one-thread runtime of the short clients (`route`, `rules`), or exit code 2.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    build(tokio::runtime::Builder::new_current_thread())
}

/// Builds `b` with I/O and time, or exit code 2 with the reason on stderr.
fn build(mut b: tokio::runtime::Builder) -> Result<tokio::runtime::Runtime, ExitCode> {
    b.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the runtime: {e}");
        ExitCode::from(2)
    })
}
