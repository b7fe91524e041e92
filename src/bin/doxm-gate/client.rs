//! `doxm-gate stats` and `doxm-gate fleet export|import`: clients of a running gate's control API.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use doxm_gate::control::fleet_file::FleetFile;

/// Where the gate's control API is.
#[derive(Debug, Args)]
pub struct Endpoint {
    /// The control API, IP:PORT.
    #[arg(long, default_value = "127.0.0.1:8683")]
    control: String,
    /// The bearer token (also DOXM_GATE_TOKEN).
    #[arg(long, env = "DOXM_GATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// `fleet` subcommands.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Write the running gate's fleet to a file (JSON when it ends in .json, else TOML) or stdout.
    Export {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The file to write; stdout (JSON) when absent.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Add or replace every device of a fleet file in the running gate, in one all-or-nothing batch.
    Import {
        #[command(flatten)]
        endpoint: Endpoint,
        /// The fleet file.
        file: PathBuf,
    },
}

fn call(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<String, String> {
    let url = format!("http://{}{path}", endpoint.control);
    let mut request = ureq::request(method, &url);
    if let Some(token) = &endpoint.token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = match body {
        Some(body) => request.set("Content-Type", "application/json").send_string(body),
        None => request.call(),
    };
    match response {
        Ok(r) => r.into_string().map_err(|e| e.to_string()),
        Err(ureq::Error::Status(code, r)) => {
            Err(format!("{url}: HTTP {code}: {}", r.into_string().unwrap_or_default()))
        }
        // A transport error's own text starts with the URL already: name it once.
        Err(ureq::Error::Transport(t)) => {
            let mut text = format!("{url}: {}", t.kind());
            for detail in [
                t.message().map(str::to_owned),
                std::error::Error::source(&t).map(|s| s.to_string()),
            ]
            .into_iter()
            .flatten()
            {
                text = format!("{text}: {detail}");
            }
            if t.kind() == ureq::ErrorKind::ConnectionFailed {
                text.push_str(&format!(
                    " (is a gate running with its control API on {}?)",
                    endpoint.control
                ));
            }
            Err(text)
        }
    }
}

/// `doxm-gate stats`: the gate's counters and histograms, as JSON.
pub fn stats(endpoint: &Endpoint) -> ExitCode {
    match call(endpoint, "GET", "/v1/stats", None) {
        Ok(body) => {
            let pretty = serde_json::from_str::<serde_json::Value>(&body)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(body);
            println!("{pretty}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// `doxm-gate fleet ...`.
pub fn fleet(command: &FleetCommand) -> ExitCode {
    match command {
        FleetCommand::Export { endpoint, output } => {
            let body = match call(endpoint, "GET", "/v1/export", None) {
                Ok(b) => b,
                Err(e) => return fail(&e),
            };
            let Some(path) = output else {
                println!("{body}");
                return ExitCode::SUCCESS;
            };
            let text = if path.extension().is_some_and(|e| e == "json") {
                Ok(body)
            } else {
                serde_json::from_str::<FleetFile>(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|f| toml::to_string(&f).map_err(|e| e.to_string()))
            };
            match text.and_then(|t| std::fs::write(path, t).map_err(|e| e.to_string())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{}: {e}", path.display())),
            }
        }
        FleetCommand::Import { endpoint, file } => {
            let fleet = match FleetFile::load(file) {
                Ok(f) => f,
                Err(e) => return fail(&e.to_string()),
            };
            let body = serde_json::json!({ "upserts": fleet.device }).to_string();
            match call(endpoint, "POST", "/v1/devices:batch", Some(&body)) {
                Ok(_) => {
                    eprintln!("imported {} devices", fleet.device.len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("doxm-gate: {message}");
    ExitCode::from(1)
}
