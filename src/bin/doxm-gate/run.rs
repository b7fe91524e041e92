//! `doxm-gate run` and `doxm-gate demo`: the gate itself.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use doxm_gate::config::{EndpointMode, GateConfig};
use doxm_gate::control::api::{self, ApiConfig};
use doxm_gate::control::board::Board;
use doxm_gate::control::mutation::Mutation;
use doxm_gate::control::store::Store;
use doxm_gate::control::RestartPolicy;
use doxm_gate::engine::endpoint::EndpointPlan;
use doxm_gate::engine::Engine;
use doxm_gate::fleet::file::{demo_fleet, FleetFile};
use doxm_gate::fleet::Fleet;
use doxm_gate::io::Driver;
use tracing::info;

/// Options of `run`: a configuration file, and a flag for every key of it (flags win).
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serve this interface (repeat for several); default: every interface up, not loopback.
    #[arg(long = "iface")]
    interfaces: Vec<String>,
    /// Join this group (repeat for several); default: ff02::158, ff03::158, ff05::158, 224.0.1.187.
    #[arg(long = "group")]
    groups: Vec<IpAddr>,
    /// The CoAP port of the groups (and of the devices in address mode).
    #[arg(long)]
    port: Option<u16>,
    /// The fleet file (TOML, or JSON when named *.json).
    #[arg(long)]
    fleet: Option<PathBuf>,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long)]
    log_level: Option<String>,
    /// The control API's address, IP:PORT (default 127.0.0.1:8683; "" disables it).
    #[arg(long)]
    control: Option<String>,
    /// The bearer token the control API requires (also DOXM_GATE_TOKEN).
    #[arg(long, env = "DOXM_GATE_TOKEN", hide_env_values = true)]
    control_token: Option<String>,
    /// Journal acknowledged fleet changes in this directory (durable across crashes).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// After a restart: fail-closed (states unknown until re-reported) or resume.
    #[arg(long, value_parser = ["fail-closed", "resume"])]
    restart_policy: Option<String>,
    /// Endpoint mode: port (a port per device) or address (an address per device).
    #[arg(long, value_parser = ["port", "address"])]
    mode: Option<String>,
    /// Port mode: the port of device 0.
    #[arg(long)]
    port_base: Option<u16>,
    /// Port mode: how many device ports to open.
    #[arg(long)]
    port_count: Option<u16>,
    /// Address mode: the IPv6 prefix routed to the host, e.g. fd00:d0c::/64.
    #[arg(long)]
    v6_prefix: Option<String>,
    /// Address mode: the IPv4 prefix routed to the host, e.g. 10.77.0.0/16.
    #[arg(long)]
    v4_prefix: Option<String>,
    /// Default leisure window in milliseconds (RFC 7252 s8.2).
    #[arg(long)]
    leisure_ms: Option<u64>,
    /// Longest stretched leisure window in milliseconds.
    #[arg(long)]
    max_window_ms: Option<u64>,
    /// Budget time one source may hold while its earlier answers are pending, in milliseconds.
    #[arg(long)]
    source_window_ms: Option<u64>,
    /// Global budget for answers, bytes per second.
    #[arg(long)]
    answer_rate_bytes: Option<u64>,
    /// Answer-producing requests per second per source.
    #[arg(long)]
    source_rate: Option<f64>,
    /// Burst of answer-producing requests per source.
    #[arg(long)]
    source_burst: Option<f64>,
    /// Bound on pending answers.
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
        set(&mut c.control, self.control.clone());
        if self.control_token.is_some() {
            c.control_token.clone_from(&self.control_token);
        }
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

fn init_logs(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// `doxm-gate run`.
pub fn run(args: &RunArgs) -> ExitCode {
    let config = match args.merged() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let fleet_file = match &config.fleet {
        Some(path) => match FleetFile::load(path) {
            Ok(f) => f,
            Err(e) => return fail(&e.to_string()),
        },
        None => FleetFile::default(),
    };
    serve(&config, &fleet_file, None)
}

/// `doxm-gate demo`: the gate with the built-in demo fleet, on every multicast-capable
/// interface, with nothing to configure.
pub fn demo(args: &RunArgs) -> ExitCode {
    let mut config = match args.merged() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // The 1,001 demo devices plus room for 99 more registered through the control API (the
    // README's walkthrough adds some).
    if args.port_count.is_none() && config.endpoints.mode == EndpointMode::Port {
        config.endpoints.port_count = 1_100;
    }
    serve(&config, &demo_fleet(1_000), Some(()))
}

fn serve(config: &GateConfig, fleet_file: &FleetFile, demo: Option<()>) -> ExitCode {
    init_logs(&config.log_level);
    let engine_config = match config.engine() {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
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
                        eprintln!("doxm-gate: journal: {tail} (never acknowledged)");
                    }
                    store
                }
                Err(e) => return fail(&e),
            }
        }
        None => {
            if let Err(e) = fleet_file.apply(&fleet) {
                return fail(&e.to_string());
            }
            Store::in_memory(fleet.clone())
        }
    };
    let store = Arc::new(store);
    if fleet.len() > plan.capacity() {
        return fail(&format!(
            "the fleet has {} devices but the endpoint plan only {} endpoints",
            fleet.len(),
            plan.capacity()
        ));
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let engine = Engine::new(engine_config, fleet.clone(), seed);
    let mut driver = match Driver::new(engine, plan, config.driver()) {
        Ok(d) => d,
        Err(e) => return fail(&e.to_string()),
    };
    let board = Arc::new(Board::default());
    driver.publish_to(board.clone());
    let control = match config.control_addr() {
        Ok(addr) => addr,
        Err(e) => return fail(&e.to_string()),
    };
    let api = match control {
        Some(listen) => {
            let api_config =
                ApiConfig { listen, token: config.control_token.clone(), ..ApiConfig::default() };
            match api::spawn(api_config, store.clone(), board) {
                Ok(api) => {
                    info!(address = %api.addr(), durable = store.is_durable(), "control API listening");
                    Some(api)
                }
                Err(e) => return fail(&format!("control API on {listen}: {e}")),
            }
        }
        None => None,
    };
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
        return fail(&format!("event loop: {e}"));
    }
    if let Some(api) = api {
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
