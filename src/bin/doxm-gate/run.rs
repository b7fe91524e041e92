//! `doxm-gate run` and `doxm-gate demo`: the gate itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use crate::config::{read_token_file, ControlApi, EndpointMode, GateConfig, LogFormat, LogLevel};
use clap::Args;
use doxm_gate::control::api::{self, Api, ApiConfig, ApiHandle};
use doxm_gate::control::fleet_file::{demo_fleet, FleetFile};
use doxm_gate::control::mutation::Mutation;
use doxm_gate::control::store::Store;
use doxm_gate::control::RestartPolicy;
use doxm_gate::engine::endpoint::EndpointPlan;
use doxm_gate::engine::Engine;
use doxm_gate::fleet::Fleet;
use doxm_gate::io::board::Board;
use doxm_gate::io::sys::raise_nofile_limit;
use doxm_gate::io::Driver;
use signal_hook::consts::SIGHUP;
use signal_hook::iterator::Signals;
use tracing::{debug, info, warn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Options of `run`: a configuration file, and a flag for every key of it (flags win).
///
/// The flags have no clap defaults, so that a flag left out keeps the configuration file's value;
/// the `[default: ..]` in their help is `GateConfig::default()` (a test keeps the two equal).
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve this interface (repeat for several) [default: every interface that is up, not
    /// loopback].
    #[arg(long = "iface")]
    interfaces: Vec<String>,
    /// Join this group (repeat for several) [default: ff02::158, ff03::158, ff05::158, 224.0.1.187]
    #[arg(long = "group")]
    groups: Vec<IpAddr>,
    /// The CoAP port of the groups (and of the devices in address mode) [default: 5683]
    #[arg(long)]
    port: Option<u16>,
    /// The fleet file (TOML, or JSON when named *.json).
    #[arg(long)]
    fleet: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace or off, or directives such as
    /// warn,doxm_gate::control=debug (RUST_LOG, when set, replaces it) [default: info]
    #[arg(long)]
    log_level: Option<LogLevel>,
    /// Log lines as text (coloured only on a terminal, never with NO_COLOR set) or as one JSON
    /// object a line [default: text]
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// The control API's address, IP:PORT; "" disables it [default: 127.0.0.1:8683]
    #[arg(long)]
    control: Option<String>,
    /// The bearer token the control API requires (also DOXM_GATE_TOKEN); empty is an error.
    #[arg(long, env = "DOXM_GATE_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Read the control API's token from this file (systemd credentials, Kubernetes secrets):
    /// one trailing newline is ignored, an empty file is an error; re-read on SIGHUP.
    #[arg(long, value_name = "PATH")]
    control_token_file: Option<PathBuf>,
    /// Serve a non-loopback --control address without a token: anyone who reaches it can change
    /// the fleet. Without this flag such a configuration is refused at startup.
    #[arg(long)]
    control_insecure_no_token: bool,
    /// Control API: time from a request's first byte to the end of its head, in milliseconds
    /// (then the connection is closed) [default: 10000]
    #[arg(long)]
    control_header_timeout_ms: Option<u64>,
    /// Control API: time from the end of a request's head to the end of its body (then 408 and
    /// the connection is closed), and for a client to take a reply (then the connection is
    /// closed), in milliseconds [default: 30000]
    #[arg(long)]
    control_body_timeout_ms: Option<u64>,
    /// Control API: how long a keep-alive connection may wait for a request, in milliseconds
    /// [default: 30000]
    #[arg(long)]
    control_idle_timeout_ms: Option<u64>,
    /// Control API: connections open at once; at the cap the longest-idle one is closed for a
    /// new one (the open-file limit may lower it: see the startup log) [default: 256]
    #[arg(long)]
    control_max_connections: Option<usize>,
    /// Control API: the largest request body, in bytes (larger: 413) [default: 134217728]
    #[arg(long)]
    control_max_body_bytes: Option<usize>,
    /// Journal acknowledged fleet changes in this directory (durable across crashes).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// After a restart: fail-closed (states unknown until re-reported) or resume
    /// [default: fail-closed]
    #[arg(long, value_parser = ["fail-closed", "resume"])]
    restart_policy: Option<String>,
    /// Endpoint mode: port (a port per device) or address (an address per device)
    /// [default: port]
    #[arg(long, value_parser = ["port", "address"])]
    mode: Option<String>,
    /// Port mode: the port of device 0 [default: 40000]
    #[arg(long)]
    port_base: Option<u16>,
    /// Port mode: how many device ports to open [default: 1024; demo: 1100]
    #[arg(long)]
    port_count: Option<u16>,
    /// Address mode: the IPv6 prefix routed to the host, e.g. fd00:d0c::/64.
    #[arg(long)]
    v6_prefix: Option<String>,
    /// Address mode: the IPv4 prefix routed to the host, e.g. 10.77.0.0/16.
    #[arg(long)]
    v4_prefix: Option<String>,
    /// Default leisure window in milliseconds (RFC 7252 s8.2) [default: 2000]
    #[arg(long)]
    leisure_ms: Option<u64>,
    /// Longest stretched leisure window in milliseconds [default: 60000]
    #[arg(long)]
    max_window_ms: Option<u64>,
    /// Budget time one source may hold while its earlier answers are pending, in milliseconds
    /// [default: 10000]
    #[arg(long)]
    source_window_ms: Option<u64>,
    /// Global budget for answers, bytes per second [default: 2000000]
    #[arg(long)]
    answer_rate_bytes: Option<u64>,
    /// Answer-producing requests per second per source [default: 1]
    #[arg(long)]
    source_rate: Option<f64>,
    /// Burst of answer-producing requests per source [default: 5]
    #[arg(long)]
    source_burst: Option<f64>,
    /// Bound on pending answers [default: 2000000]
    #[arg(long)]
    max_pending_answers: Option<usize>,
}

impl RunArgs {
    /// The file's configuration (or the defaults) with the flags applied.
    fn merged(&self) -> Result<GateConfig, String> {
        let mut c = match &self.config {
            Some(path) => GateConfig::load(path)?,
            None => GateConfig::default(),
        };
        if !self.interfaces.is_empty() {
            c.interfaces.clone_from(&self.interfaces);
        }
        if !self.groups.is_empty() {
            c.groups.clone_from(&self.groups);
        }
        set(&mut c.port, self.port);
        if self.fleet.is_some() {
            c.fleet.clone_from(&self.fleet);
        }
        set(&mut c.log_level, self.log_level.clone());
        if let Some(format) = &self.log_format {
            c.log_format = if format == "json" { LogFormat::Json } else { LogFormat::Text };
        }
        set(&mut c.control, self.control.clone());
        if self.control_token.is_some() {
            c.control_token.clone_from(&self.control_token);
        }
        if self.control_token_file.is_some() {
            c.control_token_file.clone_from(&self.control_token_file);
        }
        c.control_insecure_no_token |= self.control_insecure_no_token;
        set(&mut c.control_header_timeout_ms, self.control_header_timeout_ms);
        set(&mut c.control_body_timeout_ms, self.control_body_timeout_ms);
        set(&mut c.control_idle_timeout_ms, self.control_idle_timeout_ms);
        set(&mut c.control_max_connections, self.control_max_connections);
        set(&mut c.control_max_body_bytes, self.control_max_body_bytes);
        if self.state_dir.is_some() {
            c.state_dir.clone_from(&self.state_dir);
        }
        if let Some(policy) = &self.restart_policy {
            c.restart_policy =
                if policy == "resume" { RestartPolicy::Resume } else { RestartPolicy::FailClosed };
        }
        if let Some(mode) = &self.mode {
            c.endpoints.mode =
                if mode == "address" { EndpointMode::Address } else { EndpointMode::Port };
        }
        set(&mut c.endpoints.port_base, self.port_base);
        set(&mut c.endpoints.port_count, self.port_count);
        if self.v6_prefix.is_some() {
            c.endpoints.v6_prefix.clone_from(&self.v6_prefix);
        }
        if self.v4_prefix.is_some() {
            c.endpoints.v4_prefix.clone_from(&self.v4_prefix);
        }
        set(&mut c.limits.leisure_ms, self.leisure_ms);
        set(&mut c.limits.max_window_ms, self.max_window_ms);
        set(&mut c.limits.source_window_ms, self.source_window_ms);
        set(&mut c.limits.answer_rate_bytes, self.answer_rate_bytes);
        set(&mut c.limits.source_rate, self.source_rate);
        set(&mut c.limits.source_burst, self.source_burst);
        set(&mut c.limits.max_pending_answers, self.max_pending_answers);
        Ok(c)
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// Logs to stderr: `RUST_LOG` (when set and not empty) or the configured filter, as text or
/// JSON. Text is coloured only when stderr is a terminal and `NO_COLOR` is unset or empty
/// (<https://no-color.org>), so that files, pipes and journald get no escape codes.
fn init_logs(level: &LogLevel, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&directives)
                .map_err(|e| format!("RUST_LOG={directives:?} is not a log filter: {e}"))?
        }
        _ => level.filter(),
    };
    // The filter sits in a reload layer, so that SIGHUP can replace it ([`on_hangup`]).
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(logs.with_ansi(colour_logs())).try_init(),
        LogFormat::Json => registry.with(logs.json()).try_init(),
    };
    if installed.is_ok() {
        let _ = LOG_FILTER.set(handle);
    }
    Ok(())
}

/// The installed log filter, replaced when SIGHUP re-reads the log level.
static LOG_FILTER: OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = OnceLock::new();

fn colour_logs() -> bool {
    use std::io::IsTerminal;
    colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

/// Colour on a terminal, unless `NO_COLOR` is set to anything but the empty string.
fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `doxm-gate run`.
pub fn run(args: &RunArgs) -> ExitCode {
    let hangups = match hangup_signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let config = match configured(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let fleet_file = match &config.fleet {
        Some(path) => match FleetFile::load(path) {
            Ok(f) => f,
            Err(e) => return fatal(&config, &e.to_string()),
        },
        None => FleetFile::default(),
    };
    let hangups = Hangups { signals: hangups, log_level_from: log_level_source(args) };
    serve(&config, &fleet_file, None, hangups)
}

/// `doxm-gate demo`: the gate with the built-in demo fleet, on every multicast-capable
/// interface, with nothing to configure.
pub fn demo(args: &RunArgs) -> ExitCode {
    let hangups = match hangup_signals() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut config = match configured(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The 1,001 demo devices plus room for 99 more registered through the control API (the
    // README's walkthrough adds some).
    if args.port_count.is_none() && config.endpoints.mode == EndpointMode::Port {
        config.endpoints.port_count = 1_100;
    }
    let hangups = Hangups { signals: hangups, log_level_from: log_level_source(args) };
    serve(&config, &demo_fleet(1_000), Some(()), hangups)
}

/// What SIGHUP reloads besides the token file.
struct Hangups {
    signals: Signals,
    /// The configuration file whose `log_level` SIGHUP re-reads: only when the level comes from
    /// it (no `--log-level`, no `RUST_LOG`).
    log_level_from: Option<PathBuf>,
}

fn log_level_source(args: &RunArgs) -> Option<PathBuf> {
    let rust_log = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    args.config.clone().filter(|_| args.log_level.is_none() && !rust_log)
}

/// SIGHUP handled from the first instant (its default action kills the process without a
/// word); [`on_hangup`] acts on it once the gate runs, and until then it waits.
fn hangup_signals() -> Result<Signals, ExitCode> {
    Signals::new([SIGHUP]).map_err(|e| fail(&format!("SIGHUP handler: {e}")))
}

/// The configuration, with logging set up as it says; from here on errors go out in the
/// configured log format ([`fatal`]).
fn configured(args: &RunArgs) -> Result<GateConfig, ExitCode> {
    let config = args.merged().map_err(|e| fail(&e))?;
    init_logs(&config.log_level, config.log_format).map_err(|e| fail(&e))?;
    Ok(config)
}

fn serve(
    config: &GateConfig,
    fleet_file: &FleetFile,
    demo: Option<()>,
    hangups: Hangups,
) -> ExitCode {
    if let Err(e) = check_interfaces(&config.interfaces) {
        return fatal(config, &e);
    }
    let engine_config = match config.engine() {
        Ok(c) => c,
        Err(e) => return fatal(config, &e.to_string()),
    };
    let control = match config.control_api() {
        Ok(c) => c,
        Err(e) => return fatal(config, &e.to_string()),
    };
    // Room for the device ports, the API's connections and the rest (journal, netlink, ..).
    let files = plan_files(plan_ports(&engine_config.endpoints), control.as_ref());
    let nofile = match raise_nofile_limit(files) {
        Ok(limit) => limit,
        Err(e) => return fatal(config, &format!("open-file limit: {e}")),
    };
    let plan = engine_config.endpoints;
    let fleet = Arc::new(Fleet::with_capacity(plan.capacity().clamp(1, 4 << 20)));
    let store = match &config.state_dir {
        Some(dir) => {
            // The journal is the truth; the fleet file only seeds an empty one.
            let seed: Vec<Mutation> = fleet_file
                .device
                .iter()
                .cloned()
                .map(|device| Mutation::Upsert { device })
                .collect();
            let seed = (!seed.is_empty()).then_some(seed);
            match Store::open(dir, fleet.clone(), config.restart_policy, seed) {
                Ok((store, recovery)) => {
                    if let Some(tail) = &recovery.torn_tail {
                        report(config, "WARN", &format!("journal: {tail} (never acknowledged)"));
                    }
                    store
                }
                Err(e) => return fatal(config, &e),
            }
        }
        None => {
            if let Err(e) = fleet_file.apply(&fleet) {
                return fatal(config, &e.to_string());
            }
            Store::in_memory(fleet.clone())
        }
    };
    warn_missing_bridges(&fleet);
    let store = Arc::new(store);
    if fleet.len() > plan.capacity() {
        return fatal(
            config,
            &format!(
                "the fleet has {} devices but the endpoint plan only {} endpoints",
                fleet.len(),
                plan.capacity()
            ),
        );
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let engine = Engine::new(engine_config, fleet.clone(), seed);
    let mut driver = match Driver::new(engine, plan, config.driver()) {
        Ok(d) => d,
        Err(e) => return fatal(config, &e.to_string()),
    };
    let board = Arc::new(Board::default());
    driver.publish_to(board.clone());
    let api = match control {
        Some(control) => {
            let listen = control.listen;
            let mut transport = control.transport;
            transport.max_connections = connections_allowed(transport.max_connections, nofile);
            let api_config = ApiConfig {
                listen,
                token: control.token,
                max_body: control.max_body,
                transport,
                ..ApiConfig::default()
            };
            match api::spawn(api_config, store.clone(), board) {
                Ok(api) => {
                    info!(
                        address = %api.addr(),
                        durable = store.is_durable(),
                        token = config.control_token.is_some() || config.control_token_file.is_some(),
                        max_connections = transport.max_connections,
                        open_file_limit = nofile,
                        "control API listening"
                    );
                    Some(api)
                }
                Err(e) => return fatal(config, &format!("control API on {listen}: {e}")),
            }
        }
        None => None,
    };
    on_hangup(hangups, config, api.as_ref().map(Api::handle));
    let names: Vec<&str> = driver.interfaces().iter().map(|i| i.name.as_str()).collect();
    info!(
        devices = fleet.len(),
        eligible = fleet.eligible_count(),
        ipv6_endpoints = plan.capacity_in(true),
        ipv4_endpoints = plan.capacity_in(false),
        interfaces = ?names,
        "doxm-gate serving"
    );
    if demo.is_some() {
        print_demo_banner(&fleet, plan, &names, config.port);
    }
    if let Err(e) = driver.run() {
        return fatal(config, &format!("event loop: {e}"));
    }
    if let Some(api) = api {
        // Idle and stalled connections close at once; calls in progress get a few seconds.
        api.stop();
    }
    let s = driver.engine().stats();
    let d = driver.stats();
    info!(
        datagrams = s.datagrams,
        answers_sent = s.answers_sent,
        responses_sent = s.responses_sent,
        send_failed = d.send_failed,
        received = d.received,
        truncated = d.truncated,
        receive_overflows = d.receive_overflows,
        duplicates =
            s.get(doxm_gate::engine::Verdict::Engine(doxm_gate::engine::EngineDrop::Duplicate)),
        no_eligible =
            s.get(doxm_gate::engine::Verdict::Engine(doxm_gate::engine::EngineDrop::NoEligible)),
        "stopped"
    );
    ExitCode::SUCCESS
}

/// Files the gate needs besides the API's connections: its device ports and a margin for the
/// rest (group sockets, the journal, netlink, the runtime).
const FILES_BESIDES_API: u64 = 256;

/// Device ports of a plan (port mode; address mode shares the group sockets).
fn plan_ports(plan: &EndpointPlan) -> u64 {
    match plan {
        EndpointPlan::Ports { count, .. } => u64::from(*count),
        EndpointPlan::Addresses { .. } => 0,
    }
}

/// The open-file limit the gate asks for.
fn plan_files(ports: u64, control: Option<&ControlApi>) -> u64 {
    ports + FILES_BESIDES_API + control.map_or(0, |c| c.transport.max_connections as u64)
}

/// The API's connection cap under the open-file limit `nofile`, counting the files open now
/// (after the device ports) and keeping a margin for the journal and the rest: lowered, with a
/// warning, when the limit leaves less room than configured, so that the API's connections never
/// take the last descriptors (the accept back-off handles the rest).
fn connections_allowed(wanted: usize, nofile: u64) -> usize {
    const MARGIN: u64 = 64;
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let room = nofile.saturating_sub(open + MARGIN).max(1);
    if room < wanted as u64 {
        warn!(
            wanted,
            allowed = room,
            open_file_limit = nofile,
            open_files = open,
            "the open-file limit leaves room for fewer control API connections than \
             control_max_connections: raise it (ulimit -n, systemd LimitNOFILE=)"
        );
        return room as usize;
    }
    wanted
}

/// SIGHUP re-reads the token file (`--control-token-file`), and the log level from the
/// configuration file (`--config`) when the level came from there (no `--log-level`, no
/// `RUST_LOG`); a file that is unreadable or invalid keeps what was in force. With neither, it
/// is logged and ignored. It never stops the gate.
fn on_hangup(hangups: Hangups, config: &GateConfig, api: Option<ApiHandle>) {
    let Hangups { mut signals, log_level_from } = hangups;
    let token_file = config.control_token_file.clone().filter(|_| api.is_some());
    let spawned = std::thread::Builder::new().name("sighup".into()).spawn(move || {
        for _ in signals.forever() {
            if let (Some(path), Some(api)) = (&token_file, &api) {
                match read_token_file(path) {
                    Ok(token) => {
                        api.set_token(Some(token));
                        info!(file = %path.display(), "SIGHUP: control API token re-read");
                    }
                    Err(e) => warn!("SIGHUP: {e}; keeping the current token"),
                }
            }
            if let Some(path) = &log_level_from {
                reload_log_level(path);
            }
            if token_file.is_none() && log_level_from.is_none() {
                info!(
                    "SIGHUP: nothing to reload (SIGHUP re-reads --control-token-file, and the \
                     log level of --config when no --log-level or RUST_LOG sets it); ignored"
                );
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "no SIGHUP thread: SIGHUP is ignored");
    }
}

/// Applies the `log_level` of the configuration file at `path` (SIGHUP).
fn reload_log_level(path: &std::path::Path) {
    let level = match GateConfig::load(path) {
        Ok(config) => config.log_level,
        Err(e) => return warn!("SIGHUP: {e}; keeping the log level"),
    };
    let Some(handle) = LOG_FILTER.get() else { return };
    // Said before the change, so that the line shows whatever the new level.
    info!(level = level.as_str(), file = %path.display(), "SIGHUP: log level re-read");
    if let Err(e) = handle.reload(level.filter()) {
        warn!(error = %e, "SIGHUP: the log level could not be changed");
    }
    debug!("SIGHUP: debug lines are now shown");
}

/// Warns of every VOD whose bridge is not in the fleet (the first few by name): such a VOD
/// never answers, and nothing else would say so.
fn warn_missing_bridges(fleet: &Fleet) {
    const NAMED: usize = 16;
    let orphans = fleet.missing_bridges();
    for (vod, bridge) in orphans.iter().take(NAMED) {
        warn!(%vod, %bridge, "the VOD's bridge is not in the fleet: the VOD answers nothing until the bridge is added and owned");
    }
    if orphans.len() > NAMED {
        warn!(more = orphans.len() - NAMED, "more VODs whose bridge is not in the fleet");
    }
}

/// Checks the interfaces named by `--iface` (or the `interfaces` key) against those that have
/// an address here, and says which are missing, listing those that exist. None there: an error
/// (the driver could only say that nothing joined). Some there: a warning, since the driver
/// joins the others when they appear (it looks again every 2 s).
fn check_interfaces(named: &[String]) -> Result<(), String> {
    if named.is_empty() {
        return Ok(());
    }
    let mut here: Vec<String> = match if_addrs::get_if_addrs() {
        Ok(addrs) => addrs.into_iter().map(|a| a.name).collect(),
        // The driver reports a failing interface listing itself.
        Err(_) => return Ok(()),
    };
    here.sort();
    here.dedup();
    let missing: Vec<String> =
        named.iter().filter(|n| !here.contains(n)).map(|n| format!("{n:?}")).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let text = format!(
        "no interface named {} here; the interfaces with an address are: {}",
        missing.join(" or "),
        here.join(", ")
    );
    if named.iter().all(|n| !here.contains(n)) {
        return Err(format!("--iface: {text}"));
    }
    warn!("--iface: {text} (serving the others; joining those when they appear)");
    Ok(())
}

fn print_demo_banner(fleet: &Fleet, plan: EndpointPlan, interfaces: &[&str], port: u16) {
    println!(
        "doxm-gate demo: {} devices ({} eligible for discovery) on {}",
        fleet.len(),
        fleet.eligible_count(),
        interfaces.join(", ")
    );
    if let EndpointPlan::Ports { base, count } = plan {
        println!(
            "  device endpoints: UDP ports {base}..{} on each interface address",
            u32::from(base) + u32::from(count) - 1
        );
    }
    println!("  groups: ff02::158, ff03::158, ff05::158, 224.0.1.187 port {port}");
    let iface = interfaces.first().copied().unwrap_or("eth0");
    println!("discover them from this or another host on the link:");
    println!("  cargo run --release -- discover --iface {iface} --follow");
    println!("stop with Ctrl-C");
}

fn fail(message: &str) -> ExitCode {
    eprintln!("doxm-gate: {message}");
    ExitCode::from(2)
}

/// A fatal error once logging is set up: exit status 2, and the message on stderr whatever the
/// log filter, in the log format ([`report`]).
fn fatal(config: &GateConfig, message: &str) -> ExitCode {
    report(config, "ERROR", message);
    ExitCode::from(2)
}

/// A message that no log filter may hide: `doxm-gate: MESSAGE`, or with `--log-format json` a
/// JSON line shaped like the log's (`level`, `fields.message`, `target`), so that a log
/// pipeline that parses every line also parses this one.
fn report(config: &GateConfig, level: &str, message: &str) {
    match config.log_format {
        LogFormat::Text => eprintln!("doxm-gate: {message}"),
        LogFormat::Json => eprintln!(
            "{}",
            serde_json::json!({"level": level, "fields": {"message": message}, "target": "doxm_gate"})
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn test_colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None), "a pipe or a file gets no escape codes");
    }
}
