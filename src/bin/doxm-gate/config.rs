//! The daemon's configuration file (TOML), validated into the engine's and the driver's
//! configurations. Every key also has a command-line flag (see `doxm-gate run --help`).
//!
//! ```toml
//! interfaces = ["eth0"]          # default: every interface that is up and not loopback
//! groups = ["ff02::158", "ff03::158", "ff05::158", "224.0.1.187"]
//! port = 5683
//! fleet = "fleet.toml"
//! log_level = "info"            # error|warn|info|debug|trace|off, or target=level,... (below)
//! log_format = "text"            # or "json": one JSON object a line (journald, Loki)
//! control = "127.0.0.1:8683"      # the control API; "" for none
//! control_token_file = "/run/credentials/doxm-gate.service/token" # or control_token (not both)
//! control_insecure_no_token = false # needed to serve a non-loopback address without a token
//! control_header_timeout_ms = 10000 # a request's head, from its first byte
//! control_body_timeout_ms = 30000   # a request's body, from the end of its head (408); a reply
//! control_idle_timeout_ms = 30000   # a keep-alive connection without a request
//! control_max_connections = 256     # at the cap the longest-idle connection is closed
//! control_max_body_bytes = 134217728 # 128 MiB: a 100,000-device batch is about 11 MB
//! state_dir = "/var/lib/doxm-gate" # journal of acknowledged changes
//! restart_policy = "fail-closed"  # or "resume"
//!
//! [endpoints]
//! mode = "port"                  # or "address"
//! port_base = 40000              # port mode: device i listens on port_base + i
//! port_count = 1000
//! v6_prefix = "fd00:d0c::/64"     # address mode: device i is prefix + i + 1
//! v4_prefix = "10.77.0.0/16"
//!
//! [limits]
//! leisure_ms = 2000
//! max_window_ms = 60000
//! source_window_ms = 10000     # budget one source may hold while its answers are pending
//! answer_rate_bytes = 2000000
//! source_rate = 1.0
//! source_burst = 5.0
//! max_pending_answers = 2000000
//! ```
//!
//! Unknown keys are rejected with their name, so a typo never silently falls back to a default.
//! So are limits under which the gate could never answer: `max_window_ms = 0` (no answer fits
//! a window of nothing, whatever `leisure_ms` says), or an `answer_rate_bytes` that plans for
//! less than one answer within `max_window_ms` at the engine's 4/5 headroom
//! ([`one_answer_bytes`], `engine::plannable_bytes`).
//! The same holds for values: `log_level = "loud"` is refused (see [`LogLevel`]), not read as a
//! filter that lets nothing through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use doxm_gate::control::transport::TransportConfig;
use doxm_gate::control::RestartPolicy;
use doxm_gate::engine::endpoint::EndpointPlan;
use doxm_gate::engine::Config as EngineConfig;
use doxm_gate::io::net::DEFAULT_GROUPS;
use doxm_gate::io::DriverConfig;
use doxm_gate::wire::coap::MAX_TOKEN_LEN;
use doxm_gate::wire::ocf::View;

/// The configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateConfig {
    /// Interface names; empty: every interface that is up and not loopback.
    pub interfaces: Vec<String>,
    /// Groups to join.
    pub groups: Vec<IpAddr>,
    /// The CoAP port.
    pub port: u16,
    /// The fleet file, if any.
    pub fleet: Option<PathBuf>,
    /// The log filter (see [`LogLevel`]).
    pub log_level: LogLevel,
    /// How log lines are written: `text` (colour only on a terminal) or `json`.
    pub log_format: LogFormat,
    /// The control API's address (loopback by default); empty string: no API.
    pub control: String,
    /// The bearer token the API requires (the environment's `DOXM_GATE_TOKEN` also sets it).
    pub control_token: Option<String>,
    /// A file holding the token (systemd credentials, Kubernetes secrets): one trailing newline
    /// is ignored; re-read on SIGHUP.
    pub control_token_file: Option<PathBuf>,
    /// Serve a non-loopback control address without a token (refused otherwise).
    pub control_insecure_no_token: bool,
    /// Control API: from a request's first byte to the end of its head (ms).
    pub control_header_timeout_ms: u64,
    /// Control API: from the end of a request's head to the end of its body (ms; then 408), and
    /// for a client to take a reply (then the connection is closed).
    pub control_body_timeout_ms: u64,
    /// Control API: a keep-alive connection without a request (ms).
    pub control_idle_timeout_ms: u64,
    /// Control API: connections open at once (the open-file limit may lower it).
    pub control_max_connections: usize,
    /// Control API: the largest request body (bytes; larger: 413).
    pub control_max_body_bytes: usize,
    /// Where acknowledged fleet changes are journaled; none: changes are not durable.
    pub state_dir: Option<PathBuf>,
    /// After a restart: `fail-closed` (states unknown until re-reported) or `resume`.
    pub restart_policy: RestartPolicy,
    /// How devices get their discovery endpoints.
    pub endpoints: EndpointsConfig,
    /// Abuse limits and pacing.
    pub limits: LimitsConfig,
}

/// A validated log filter: a level (`error`, `warn`, `info`, `debug`, `trace` or `off`, any
/// case), or comma-separated `tracing` directives in which every directive names its level:
/// `LEVEL` (the default) or `TARGET=LEVEL`, e.g. `warn,doxm_gate::control=debug`.
///
/// A bare word that is not a level is refused: `tracing`'s own filter syntax would read
/// `verbose` as "everything of target `verbose`", which turns all of the gate's logs off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogLevel(String);

/// The levels a log filter may name.
pub const LOG_LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// Why a log filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogLevelError {
    /// A word that is not one of [`LOG_LEVELS`].
    #[error("{0:?} is not a log level (error, warn, info, debug, trace, off)")]
    UnknownLevel(String),
    /// A directive `tracing` cannot parse.
    #[error("{directive:?} is not a log directive: {reason}")]
    BadDirective {
        /// The directive.
        directive: String,
        /// The parser's reason.
        reason: String,
    },
}

impl LogLevel {
    /// The filter text, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter `tracing_subscriber` applies.
    pub fn filter(&self) -> tracing_subscriber::EnvFilter {
        // Validated in `try_from`, so the fallback is never taken.
        tracing_subscriber::EnvFilter::try_new(&self.0)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    }
}

impl Default for LogLevel {
    fn default() -> LogLevel {
        LogLevel("info".to_owned())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = LogLevelError;

    /// Normalised: directives trimmed, levels in lower case (`" warn, a=DEBUG"` is
    /// `warn,a=debug`), so that `tracing` reads exactly what was checked.
    fn from_str(text: &str) -> Result<LogLevel, LogLevelError> {
        let mut normal = Vec::new();
        for directive in text.split(',').map(str::trim) {
            let (target, level) = match directive.rsplit_once('=') {
                Some((target, level)) => (Some(target.trim()), level.trim()),
                None => (None, directive),
            };
            let Some(level) = LOG_LEVELS.iter().find(|l| l.eq_ignore_ascii_case(level)) else {
                return Err(LogLevelError::UnknownLevel(level.to_owned()));
            };
            let directive = target.map_or_else(|| (*level).to_owned(), |t| format!("{t}={level}"));
            tracing_subscriber::filter::Directive::from_str(&directive).map_err(|e| {
                LogLevelError::BadDirective { directive: directive.clone(), reason: e.to_string() }
            })?;
            normal.push(directive);
        }
        Ok(LogLevel(normal.join(",")))
    }
}

impl TryFrom<String> for LogLevel {
    type Error = LogLevelError;

    fn try_from(text: String) -> Result<LogLevel, LogLevelError> {
        text.parse()
    }
}

impl From<LogLevel> for String {
    fn from(level: LogLevel) -> String {
        level.0
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines; coloured only when stderr is a terminal and `NO_COLOR` is unset.
    #[default]
    Text,
    /// One JSON object a line (`timestamp`, `level`, `fields`, `target`).
    Json,
}

/// `[endpoints]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EndpointsConfig {
    /// `port` or `address`.
    pub mode: EndpointMode,
    /// Port mode: the port of device 0.
    pub port_base: u16,
    /// Port mode: how many device ports to open.
    pub port_count: u16,
    /// Address mode: the IPv6 prefix routed to the host (`ip -6 route add local P dev lo`).
    pub v6_prefix: Option<String>,
    /// Address mode: the IPv4 prefix routed to the host.
    pub v4_prefix: Option<String>,
}

/// The endpoint modes of SPEC section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    /// A UDP port per device.
    #[default]
    Port,
    /// An address per device in a prefix routed to the host.
    Address,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Default leisure window (ms).
    pub leisure_ms: u64,
    /// Longest stretched window (ms).
    pub max_window_ms: u64,
    /// Budget time one source may hold while its earlier answers are pending (ms).
    pub source_window_ms: u64,
    /// Global answer budget (bytes/s).
    pub answer_rate_bytes: u64,
    /// Answer-producing requests per second per source.
    pub source_rate: f64,
    /// Burst of answer-producing requests per source.
    pub source_burst: f64,
    /// Bound on pending answers.
    pub max_pending_answers: usize,
}

impl Default for GateConfig {
    fn default() -> GateConfig {
        let transport = TransportConfig::default();
        GateConfig {
            interfaces: Vec::new(),
            groups: DEFAULT_GROUPS.to_vec(),
            port: 5683,
            fleet: None,
            log_level: LogLevel::default(),
            log_format: LogFormat::Text,
            control: "127.0.0.1:8683".to_owned(),
            control_token: None,
            control_token_file: None,
            control_insecure_no_token: false,
            control_header_timeout_ms: transport.header_timeout.as_millis() as u64,
            control_body_timeout_ms: transport.body_timeout.as_millis() as u64,
            control_idle_timeout_ms: transport.idle_timeout.as_millis() as u64,
            control_max_connections: transport.max_connections,
            control_max_body_bytes: doxm_gate::control::api::ApiConfig::default().max_body,
            state_dir: None,
            restart_policy: RestartPolicy::FailClosed,
            endpoints: EndpointsConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for EndpointsConfig {
    fn default() -> EndpointsConfig {
        EndpointsConfig {
            mode: EndpointMode::Port,
            port_base: 40_000,
            port_count: 1_024,
            v6_prefix: None,
            v4_prefix: None,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        let engine = EngineConfig::default();
        LimitsConfig {
            leisure_ms: engine.leisure.as_millis() as u64,
            max_window_ms: engine.max_window.as_millis() as u64,
            source_window_ms: engine.source_window.as_millis() as u64,
            answer_rate_bytes: engine.answer_rate_bytes,
            source_rate: engine.source_rate,
            source_burst: engine.source_burst,
            max_pending_answers: engine.max_pending_answers,
        }
    }
}

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    /// The offending key.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

fn error(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { key, reason: reason.into() }
}

impl GateConfig {
    /// Reads a TOML configuration file.
    ///
    /// # Errors
    /// A message naming the file and the bad key or line.
    pub fn load(path: &Path) -> Result<GateConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The endpoint plan.
    ///
    /// # Errors
    /// A bad prefix, an empty range, or a range past port 65535.
    pub fn plan(&self) -> Result<EndpointPlan, ConfigError> {
        let e = &self.endpoints;
        match e.mode {
            EndpointMode::Port => {
                if e.port_count == 0 {
                    return Err(error("endpoints.port_count", "must be at least 1"));
                }
                if u32::from(e.port_base) + u32::from(e.port_count) > 65_536 {
                    return Err(error("endpoints.port_count", "the port range passes 65535"));
                }
                if (e.port_base..e.port_base.saturating_add(e.port_count)).contains(&self.port) {
                    return Err(error(
                        "endpoints.port_base",
                        "the device ports overlap the group port",
                    ));
                }
                Ok(EndpointPlan::Ports { base: e.port_base, count: e.port_count })
            }
            EndpointMode::Address => {
                let v6 = e.v6_prefix.as_deref().map(parse_v6_prefix).transpose()?;
                let v4 = e.v4_prefix.as_deref().map(parse_v4_prefix).transpose()?;
                if v6.is_none() && v4.is_none() {
                    return Err(error(
                        "endpoints.v6_prefix",
                        "address mode needs a v6 or v4 prefix",
                    ));
                }
                Ok(EndpointPlan::Addresses { v6, v4, port: self.port })
            }
        }
    }

    /// The engine's configuration.
    ///
    /// # Errors
    /// An invalid endpoint plan or limit.
    pub fn engine(&self) -> Result<EngineConfig, ConfigError> {
        let l = &self.limits;
        if l.answer_rate_bytes == 0 {
            return Err(error("limits.answer_rate_bytes", "must be positive"));
        }
        if !(l.source_rate > 0.0 && l.source_rate.is_finite()) {
            return Err(error("limits.source_rate", "must be a positive number"));
        }
        if !(l.source_burst >= 1.0 && l.source_burst.is_finite()) {
            return Err(error("limits.source_burst", "must be at least 1"));
        }
        if l.max_window_ms == 0 {
            return Err(error(
                "limits.max_window_ms",
                "must be positive: no answer fits a window of 0 ms, so the gate would answer nothing",
            ));
        }
        // The byte budget admits an answer when it fits the window at the rate the engine plans
        // with (`engine::plannable_bytes`: 4/5 of R, its headroom): it must hold one answer, or
        // every request is shed.
        let answer = one_answer_bytes();
        let window = Duration::from_millis(l.max_window_ms);
        let budget = doxm_gate::engine::plannable_bytes(l.answer_rate_bytes, window);
        if budget < u128::from(answer) {
            return Err(error(
                "limits.answer_rate_bytes",
                format!(
                    "{} bytes/s over max_window_ms = {} ms plans for {budget} bytes (4/5 of the \
                     rate), less than one answer ({answer} bytes): the gate would answer nothing",
                    l.answer_rate_bytes, l.max_window_ms
                ),
            ));
        }
        if l.max_window_ms < l.leisure_ms {
            return Err(error("limits.max_window_ms", "must be at least leisure_ms"));
        }
        if l.source_window_ms > l.max_window_ms {
            return Err(error("limits.source_window_ms", "must be at most max_window_ms"));
        }
        Ok(EngineConfig {
            leisure: Duration::from_millis(l.leisure_ms),
            max_window: Duration::from_millis(l.max_window_ms),
            source_window: Duration::from_millis(l.source_window_ms),
            answer_rate_bytes: l.answer_rate_bytes,
            source_rate: l.source_rate,
            source_burst: l.source_burst,
            max_pending_answers: l.max_pending_answers.max(1),
            endpoints: self.plan()?,
            ..EngineConfig::default()
        })
    }

    /// The control API's address, if it is enabled.
    ///
    /// # Errors
    /// Not an `IP:PORT` address.
    pub fn control_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        if self.control.is_empty() {
            return Ok(None);
        }
        self.control
            .parse()
            .map(Some)
            .map_err(|_| error("control", format!("{:?} is not IP:PORT", self.control)))
    }

    /// The control API's settings, checked: `None` when it is disabled.
    ///
    /// # Errors
    /// A bad address; an empty token; both a token and a token file; a token file that cannot
    /// be read or is empty; a non-loopback address without a token and without
    /// `control_insecure_no_token`; a zero timeout or connection cap.
    pub fn control_api(&self) -> Result<Option<ControlApi>, ConfigError> {
        let Some(listen) = self.control_addr()? else { return Ok(None) };
        let token = match (&self.control_token, &self.control_token_file) {
            (Some(_), Some(_)) => {
                return Err(error(
                    "control_token_file",
                    "set either control_token (--control-token, DOXM_GATE_TOKEN) or \
                     control_token_file, not both",
                ))
            }
            (Some(token), None) => Some(check_token(token, "control_token")?),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => None,
        };
        if token.is_none() && !listen.ip().is_loopback() && !self.control_insecure_no_token {
            return Err(error(
                "control",
                format!(
                    "{listen} is reachable from the network and no token is set: anyone there \
                     could change the fleet. Set control_token_file (--control-token-file) or \
                     control_token (DOXM_GATE_TOKEN), or accept the risk with \
                     control_insecure_no_token (--control-insecure-no-token)"
                ),
            ));
        }
        let ms = |key: &'static str, value: u64| match value {
            0 => Err(error(key, "must be positive")),
            ms => Ok(Duration::from_millis(ms)),
        };
        if self.control_max_connections == 0 {
            return Err(error("control_max_connections", "must be at least 1"));
        }
        if self.control_max_body_bytes == 0 {
            return Err(error("control_max_body_bytes", "must be at least 1"));
        }
        Ok(Some(ControlApi {
            listen,
            token,
            max_body: self.control_max_body_bytes,
            transport: TransportConfig {
                header_timeout: ms("control_header_timeout_ms", self.control_header_timeout_ms)?,
                body_timeout: ms("control_body_timeout_ms", self.control_body_timeout_ms)?,
                idle_timeout: ms("control_idle_timeout_ms", self.control_idle_timeout_ms)?,
                max_connections: self.control_max_connections,
                ..TransportConfig::default()
            },
        }))
    }

    /// The driver's configuration.
    pub fn driver(&self) -> DriverConfig {
        DriverConfig {
            interfaces: self.interfaces.clone(),
            groups: self.groups.clone(),
            port: self.port,
            rejoin_every: Duration::from_secs(2),
        }
    }
}

/// The control API's checked settings ([`GateConfig::control_api`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlApi {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The bearer token, if any.
    pub token: Option<String>,
    /// The largest request body (bytes).
    pub max_body: usize,
    /// Connection cap and timeouts.
    pub transport: TransportConfig,
}

/// Reads a token file: the whole file, less one trailing newline (`\n` or `\r\n`, as `echo`
/// and editors leave), checked as [`GateConfig::control_api`] checks a token.
///
/// # Errors
/// The file cannot be read, is empty, or holds whitespace or control characters.
pub fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    const KEY: &str = "control_token_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| error(KEY, format!("cannot read {}: {e}", path.display())))?;
    let token =
        text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    check_token(token, KEY).map_err(|e| error(KEY, format!("{}: {}", path.display(), e.reason)))
}

/// A token must be non-empty printable ASCII without spaces (it travels in a header as
/// `Bearer TOKEN`).
fn check_token(token: &str, key: &'static str) -> Result<String, ConfigError> {
    if token.is_empty() {
        return Err(error(
            key,
            "the token is empty (every call would be refused; --control-token, \
             DOXM_GATE_TOKEN and control_token_file set it)",
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error(key, "the token holds whitespace, control or non-ASCII characters"));
    }
    Ok(token.to_owned())
}

/// The bytes the engine's budget charges for one answer at most: a doxm answer with one oxm on
/// the baseline interface, with an 8-byte token (the engine's typical answer size plus the
/// token, as it budgets each request).
pub fn one_answer_bytes() -> u64 {
    (doxm_gate::engine::typical_answer_size(View::Baseline) + MAX_TOKEN_LEN) as u64
}

fn split_prefix(text: &str, key: &'static str) -> Result<(String, u8), ConfigError> {
    let (addr, len) =
        text.split_once('/').ok_or_else(|| error(key, format!("{text:?} is not ADDR/LEN")))?;
    let len: u8 = len.parse().map_err(|_| error(key, format!("{len:?} is not a prefix length")))?;
    Ok((addr.to_owned(), len))
}

fn parse_v6_prefix(text: &str) -> Result<(Ipv6Addr, u8), ConfigError> {
    const KEY: &str = "endpoints.v6_prefix";
    let (addr, len) = split_prefix(text, KEY)?;
    let addr: Ipv6Addr =
        addr.parse().map_err(|_| error(KEY, format!("{addr:?} is not an IPv6 address")))?;
    if !(8..=124).contains(&len) {
        return Err(error(KEY, "the prefix length must be 8..=124"));
    }
    Ok((addr, len))
}

fn parse_v4_prefix(text: &str) -> Result<(Ipv4Addr, u8), ConfigError> {
    const KEY: &str = "endpoints.v4_prefix";
    let (addr, len) = split_prefix(text, KEY)?;
    let addr: Ipv4Addr =
        addr.parse().map_err(|_| error(KEY, format!("{addr:?} is not an IPv4 address")))?;
    if !(8..=30).contains(&len) {
        return Err(error(KEY, "the prefix length must be 8..=30"));
    }
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_defaults_are_valid() {
        let config = GateConfig::default();
        assert!(config.engine().is_ok());
        assert_eq!(config.groups.len(), 4);
    }

    #[test]
    fn test_unknown_key_named() {
        let err = toml::from_str::<GateConfig>("prot = 5683\n").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
        let err = toml::from_str::<GateConfig>("[limits]\nleisure = 1\n").unwrap_err().to_string();
        assert!(err.contains("leisure"), "{err}");
    }

    #[test]
    fn test_log_level_typo_named() {
        for (good, normal) in [
            ("info", "info"),
            ("DEBUG", "debug"),
            ("off", "off"),
            ("warn,doxm_gate::control=debug", "warn,doxm_gate::control=debug"),
            (" warn , doxm_gate=TRACE", "warn,doxm_gate=trace"),
        ] {
            let level: LogLevel = good.parse().unwrap();
            assert_eq!(level.as_str(), normal);
            assert!(tracing_subscriber::EnvFilter::try_new(level.as_str()).is_ok(), "{good}");
        }
        for (bad, named) in [("verbose", "verbose"), ("", ""), ("info,loud", "loud")] {
            let err = bad.parse::<LogLevel>().unwrap_err();
            assert_eq!(err, LogLevelError::UnknownLevel(named.to_owned()), "{bad}");
        }
        let err = toml::from_str::<GateConfig>("log_level = \"loud\"\n").unwrap_err().to_string();
        assert!(err.contains("log_level") && err.contains("\"loud\" is not a log level"), "{err}");
        let config: GateConfig = toml::from_str("log_format = \"json\"\n").unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(toml::from_str::<GateConfig>("log_format = \"xml\"\n").is_err());
    }

    #[test]
    fn test_control_api_refusals_named() {
        let config = |toml: &str| toml::from_str::<GateConfig>(toml).unwrap().control_api();
        let ok = config("").unwrap().unwrap();
        assert_eq!((ok.token, ok.transport), (None, TransportConfig::default()));
        let err = config("control = \"0.0.0.0:8683\"\n").unwrap_err();
        assert!(
            err.key == "control" && err.reason.contains("--control-insecure-no-token"),
            "{err}"
        );
        assert!(config("control = \"0.0.0.0:8683\"\ncontrol_insecure_no_token = true\n").is_ok());
        assert!(config("control = \"[::]:8683\"\ncontrol_token = \"t\"\n").is_ok());
        assert_eq!(config("control_token = \"\"\n").unwrap_err().key, "control_token");
        assert_eq!(config("control_token = \"a b\"\n").unwrap_err().key, "control_token");
        assert_eq!(
            config("control_idle_timeout_ms = 0\n").unwrap_err().key,
            "control_idle_timeout_ms"
        );
        assert_eq!(
            config("control_max_connections = 0\n").unwrap_err().key,
            "control_max_connections"
        );
        assert_eq!(config("control = \"\"\ncontrol_token = \"\"\n").unwrap(), None);

        let dir = std::env::temp_dir().join(format!("doxm-gate-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        for (text, token) in
            [("s3cret\n", "s3cret"), ("s3cret", "s3cret"), ("s3cret\r\n", "s3cret")]
        {
            assert_eq!(read_token_file(&file("t", text)).unwrap(), token, "{text:?}");
        }
        for bad in ["", "\n", "a b\n", "s3cret\n\n"] {
            let err = read_token_file(&file("t", bad)).unwrap_err();
            assert!(
                err.key == "control_token_file" && err.reason.contains("/t:"),
                "{bad:?}: {err}"
            );
        }
        let path = file("t", "s3cret\n");
        let both = format!(
            "control_token = \"x\"\ncontrol_token_file = {:?}\n",
            path.display().to_string()
        );
        assert_eq!(config(&both).unwrap_err().key, "control_token_file");
        let one = format!(
            "control = \"0.0.0.0:1\"\ncontrol_token_file = {:?}\n",
            path.display().to_string()
        );
        assert_eq!(config(&one).unwrap().unwrap().token.as_deref(), Some("s3cret"));
        let missing = read_token_file(&dir.join("none")).unwrap_err();
        assert!(missing.reason.contains("cannot read"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn test_address_mode() {
        let config: GateConfig = toml::from_str(
            "[endpoints]\nmode = \"address\"\nv6_prefix = \"fd00:d0c::/64\"\nv4_prefix = \"10.77.0.0/16\"\n",
        )
        .unwrap();
        assert!(matches!(config.plan().unwrap(), EndpointPlan::Addresses { port: 5683, .. }));
        let bad: GateConfig =
            toml::from_str("[endpoints]\nmode = \"address\"\nv6_prefix = \"fd00::\"\n").unwrap();
        assert_eq!(bad.plan().unwrap_err().key, "endpoints.v6_prefix");
    }

    #[test]
    fn test_bad_limits_named() {
        let config: GateConfig = toml::from_str("[limits]\nanswer_rate_bytes = 0\n").unwrap();
        assert_eq!(config.engine().unwrap_err().key, "limits.answer_rate_bytes");
        let config: GateConfig = toml::from_str("[endpoints]\nport_base = 5600\n").unwrap();
        assert_eq!(config.engine().unwrap_err().key, "endpoints.port_base");
        let config: GateConfig =
            toml::from_str("[limits]\nmax_window_ms = 5000\nsource_window_ms = 5001\n").unwrap();
        assert_eq!(config.engine().unwrap_err().key, "limits.source_window_ms");
        let config: GateConfig = toml::from_str("[limits]\nsource_window_ms = 0\n").unwrap();
        assert_eq!(config.engine().unwrap().source_window, Duration::ZERO);
    }

    /// Limits under which the gate could never answer are refused, naming the key.
    #[test]
    fn test_limits_that_never_answer_are_refused() {
        let limits = |text: &str| -> Result<EngineConfig, ConfigError> {
            toml::from_str::<GateConfig>(&format!("[limits]\n{text}\n")).unwrap().engine()
        };
        let key = |text: &str| limits(text).map(|_| "ok").unwrap_or_else(|e| e.key);
        assert_eq!(
            key("leisure_ms = 0\nmax_window_ms = 0\nsource_window_ms = 0"),
            "limits.max_window_ms"
        );
        assert_eq!(key("max_window_ms = 0\nleisure_ms = 0"), "limits.max_window_ms");
        let answer = one_answer_bytes();
        assert!((150..300).contains(&answer), "{answer}");
        // One answer's bytes per second, at 4/5 of the rate, over a 1 s window: just enough;
        // one byte less is not.
        let least = (answer * 5).div_ceil(4);
        let exact = format!("answer_rate_bytes = {least}\nmax_window_ms = 1000\nleisure_ms = 1000\nsource_window_ms = 1000");
        assert_eq!(key(&exact), "ok");
        let short = format!("answer_rate_bytes = {}\nmax_window_ms = 1000\nleisure_ms = 1000\nsource_window_ms = 1000", least - 1);
        assert_eq!(key(&short), "limits.answer_rate_bytes");
        let e = limits(
            "answer_rate_bytes = 10\nmax_window_ms = 1000\nleisure_ms = 0\nsource_window_ms = 0",
        )
        .unwrap_err();
        let want = format!("10 bytes/s over max_window_ms = 1000 ms plans for 8 bytes (4/5 of the rate), less than one answer ({answer} bytes)");
        assert!(e.to_string().starts_with(&format!("limits.answer_rate_bytes: {want}")), "{e}");
        // Leisure 0 with a window is fine: answers are spread over the budget's time.
        assert_eq!(key("leisure_ms = 0"), "ok");
    }
}

/// examples/gate.toml stays true: it loads, is exactly the defaults, and names every key.
#[cfg(test)]
mod example_tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
    }

    /// The dotted names of every key in a TOML table (`port`, `limits.leisure_ms`, ...).
    fn keys(table: &toml::Table, prefix: &str, out: &mut BTreeSet<String>) {
        for (key, value) in table {
            let name = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => keys(inner, &format!("{name}."), out),
                _ => {
                    out.insert(name);
                }
            }
        }
    }

    /// A configuration with every key set, `Option`s included. Written without `..Default`, so a
    /// new key in `GateConfig` does not compile here until it is added (and to examples/gate.toml).
    fn every_key() -> GateConfig {
        GateConfig {
            interfaces: vec!["eth0".to_owned()],
            groups: vec!["ff02::158".parse().unwrap()],
            port: 5683,
            fleet: Some("fleet.toml".into()),
            log_level: "info".parse().unwrap(),
            log_format: LogFormat::Text,
            control: "127.0.0.1:8683".to_owned(),
            control_token: Some("t".to_owned()),
            control_token_file: Some("/run/credentials/doxm-gate.service/token".into()),
            control_insecure_no_token: false,
            control_header_timeout_ms: 10_000,
            control_body_timeout_ms: 30_000,
            control_idle_timeout_ms: 30_000,
            control_max_connections: 256,
            control_max_body_bytes: 128 << 20,
            state_dir: Some("/var/lib/doxm-gate".into()),
            restart_policy: RestartPolicy::FailClosed,
            endpoints: EndpointsConfig {
                mode: EndpointMode::Port,
                port_base: 40_000,
                port_count: 1_024,
                v6_prefix: Some("fd00:d0c::/64".to_owned()),
                v4_prefix: Some("10.77.0.0/16".to_owned()),
            },
            limits: LimitsConfig {
                leisure_ms: 2_000,
                max_window_ms: 60_000,
                source_window_ms: 10_000,
                answer_rate_bytes: 2_000_000,
                source_rate: 1.0,
                source_burst: 5.0,
                max_pending_answers: 2_000_000,
            },
        }
    }

    /// examples/gate.toml with its commented-out settings (`#key = value`, no space after the `#`)
    /// switched on; prose comments (`# text`) stay comments.
    fn with_every_setting_on(text: &str) -> String {
        let on = |line: &str| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest.to_owned(),
            _ => line.to_owned(),
        };
        text.lines().map(on).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn gate_toml_loads_and_is_the_defaults() {
        let config = GateConfig::load(&example("gate.toml")).unwrap();
        assert_eq!(config, GateConfig::default(), "examples/gate.toml must show the real defaults");
        config.engine().expect("the defaults are a valid configuration");
    }

    #[test]
    fn gate_toml_names_every_key() {
        let toml::Value::Table(want) = toml::Value::try_from(every_key()).unwrap() else {
            panic!("a configuration serializes to a table")
        };
        let mut want_keys = BTreeSet::new();
        keys(&want, "", &mut want_keys);

        let text = std::fs::read_to_string(example("gate.toml")).unwrap();
        let on = with_every_setting_on(&text);
        // Every commented-out setting is a real key with a valid value (unknown keys are refused).
        let config: GateConfig = toml::from_str(&on).unwrap_or_else(|e| panic!("{e}\n{on}"));
        config.engine().expect("the commented-out settings form a valid configuration");
        let mut have_keys = BTreeSet::new();
        keys(&on.parse::<toml::Table>().unwrap(), "", &mut have_keys);

        let missing: Vec<_> = want_keys.difference(&have_keys).collect();
        assert!(missing.is_empty(), "examples/gate.toml does not mention {missing:?}");
        assert_eq!(have_keys, want_keys);
    }
}

/// The smallest budget the configuration accepts is the engine's own bound.
#[cfg(test)]
mod limit_tests {
    use std::sync::Arc;
    use std::time::Instant;

    use doxm_gate::engine::{Config, Engine, Meta};
    use doxm_gate::fleet::{DeviceRecord, Fleet, OnboardingState};
    use doxm_gate::policy::Dos;
    use doxm_gate::wire::{option, Code, MessageType, Writer};
    use uuid::Uuid;

    use super::*;

    /// One eligible device with one oxm (the answer the engine budgets for).
    fn fleet() -> Arc<Fleet> {
        let fleet = Arc::new(Fleet::with_capacity(8));
        let record = DeviceRecord::new(
            Uuid::from_u128(0x0d0c_0000_0000_4000_8000_0000_0000_0001),
            Uuid::from_u128(1),
            "lamp",
            Arc::from(vec![Box::from("oic.wk.d")]),
            None,
            Arc::from(vec![0]),
            4,
            9,
            Uuid::nil(),
            Uuid::nil(),
            &[],
        )
        .unwrap();
        let rfotm = OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false };
        fleet.upsert(record, Some(rfotm)).unwrap();
        fleet
    }

    /// How many answers one baseline discovery with an 8-byte token gets under `limits`.
    fn answers(config: Config) -> usize {
        let mut engine = Engine::new(config, fleet(), 7);
        let mut buf = [0u8; 256];
        let mut w =
            Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, 1, &[9; 8]).unwrap();
        for p in ["oic", "sec", "doxm"] {
            w.option(option::URI_PATH, p.as_bytes()).unwrap();
        }
        w.option(option::URI_QUERY, b"if=oic.if.baseline").unwrap();
        let len = w.finish();
        let meta = Meta {
            source: "[fe80::1234]:49152".parse().unwrap(),
            destination: "[ff02::158]:5683".parse().unwrap(),
            interface: 3,
        };
        let start = Instant::now();
        engine.handle(start, &meta, &buf[..len]);
        let (mut sent, mut now, mut out) = (0, start, [0u8; 1500]);
        loop {
            while engine.poll_transmit(now, &mut out).is_some() {
                sent += 1;
            }
            match engine.poll_timeout() {
                Some(next) => now = now.max(next),
                None => return sent,
            }
        }
    }

    fn limits(rate: u64, window_ms: u64, leisure_ms: u64) -> GateConfig {
        let mut config = GateConfig::default();
        config.limits.answer_rate_bytes = rate;
        config.limits.max_window_ms = window_ms;
        config.limits.leisure_ms = leisure_ms;
        config.limits.source_window_ms = window_ms;
        config
    }

    /// The smallest budget the configuration accepts answers; below it (refused at startup) the
    /// same request would get nothing.
    #[test]
    fn the_smallest_accepted_budget_answers() {
        // One answer per second at 4/5 of the rate (the engine's headroom).
        let answer = one_answer_bytes();
        let least = (answer * 5).div_ceil(4);
        let accepted = limits(least, 1_000, 0).engine().expect("exactly one answer's budget");
        assert_eq!(answers(accepted.clone()), 1);
        let err = limits(least - 1, 1_000, 0).engine().unwrap_err();
        assert_eq!(err.key, "limits.answer_rate_bytes");
        assert_eq!(answers(Config { answer_rate_bytes: least - 1, ..accepted.clone() }), 0);
        // A window of nothing answers nothing, whatever the leisure.
        let err = limits(2_000_000, 0, 0).engine().unwrap_err();
        assert_eq!(err.key, "limits.max_window_ms");
        assert_eq!(answers(Config { max_window: std::time::Duration::ZERO, ..accepted }), 0);
    }
}
