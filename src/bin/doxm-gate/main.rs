//! The `doxm-gate` command line.
//!
//! Run `doxm-gate --help` for the subcommands. Each subcommand lives in its own module and is a
//! thin driver over the library.

#![forbid(unsafe_code)]

mod client;
mod config;
mod decode;
mod discover;
mod explain;
mod journal;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// doxm-gate: answers OCF multicast doxm discovery for a fleet of devices behind a bridge.
#[derive(Debug, Parser)]
#[command(name = "doxm-gate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gate with the built-in demo fleet (one owned bridge, 1,000 virtual devices),
    /// on every multicast-capable interface, with nothing to configure.
    Demo(run::RunArgs),
    /// Run the gate: join the groups and answer discovery for the fleet.
    Run(run::RunArgs),
    /// Decode one CoAP datagram given in hex and print it as one JSON object.
    ///
    /// Exit status: 0 for a well-formed message, 1 for a malformed one (the JSON names the
    /// reason), 2 when the argument is not hex.
    Decode {
        /// The datagram as hex digits (whitespace and a leading 0x are ignored).
        hex: String,
    },
    /// Would a device in the given state answer this datagram, and if not, why not?
    ///
    /// The datagram: --hex, or --request obt|plgd for a real client's discovery.
    ///
    /// Prints {"outcome":..,"reason":..}: outcome is answer, ignore, empty-ack or a response
    /// code (2.05, 4.00, 4.01, 4.02, 4.04, 4.06); reason is ok, a drop reason, or the decode
    /// error of a malformed datagram.
    Explain(explain::ExplainArgs),
    /// Send the multicast doxm discovery an OBT sends, and list the devices that answer.
    Discover(discover::DiscoverArgs),
    /// Print a running gate's counters and latency percentiles (from its control API).
    Stats(client::Endpoint),
    /// Move a fleet between a file and a running gate.
    #[command(subcommand)]
    Fleet(client::FleetCommand),
    /// Inspect a state directory, or salvage a corrupt one into a new directory.
    #[command(subcommand)]
    Journal(journal::JournalCommand),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo(args) => run::demo(&args),
        Command::Run(args) => run::run(&args),
        Command::Decode { hex } => decode::run(&hex),
        Command::Explain(args) => explain::run(&args),
        Command::Discover(args) => discover::run(&args),
        Command::Stats(endpoint) => client::stats(&endpoint),
        Command::Fleet(command) => client::fleet(&command),
        Command::Journal(command) => journal::run(&command),
    }
}

/// `run --help` and `demo --help` show every default, and the defaults they show are the real
/// ones (a flag's default is written into its help text, so that the configuration file can
/// still set it: a clap default would always override the file).
#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    use super::Cli;
    use crate::config::GateConfig;

    /// The long help of `command`, its white space folded.
    fn help(command: &str) -> String {
        let mut cli = Cli::command();
        let sub = cli.find_subcommand_mut(command).expect("the subcommand exists");
        sub.render_long_help().to_string().split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// The paragraph of `flag` in `help` (from `--flag <` to the next `--`) shows `value`.
    fn assert_default(help: &str, flag: &str, value: &str) {
        let at = help.find(&format!("{flag} <")).unwrap_or_else(|| panic!("{flag}: {help}"));
        let paragraph = help[at + 2..].split(" --").next().unwrap_or_default();
        let want = format!("[default: {value}");
        assert!(paragraph.contains(&want), "{flag}: want {want}: {paragraph}");
    }

    #[test]
    fn test_help_shows_the_defaults() {
        let d = GateConfig::default();
        let (l, e) = (&d.limits, &d.endpoints);
        for command in ["run", "demo"] {
            let help = help(command);
            for (flag, value) in [
                ("--port", d.port.to_string()),
                ("--port-base", e.port_base.to_string()),
                ("--port-count", e.port_count.to_string()),
                ("--leisure-ms", l.leisure_ms.to_string()),
                ("--max-window-ms", l.max_window_ms.to_string()),
                ("--source-window-ms", l.source_window_ms.to_string()),
                ("--answer-rate-bytes", l.answer_rate_bytes.to_string()),
                ("--source-rate", l.source_rate.to_string()),
                ("--source-burst", l.source_burst.to_string()),
                ("--max-pending-answers", l.max_pending_answers.to_string()),
                ("--log-level", d.log_level.as_str().to_owned()),
                ("--control", d.control.clone()),
                ("--control-header-timeout-ms", d.control_header_timeout_ms.to_string()),
                ("--control-body-timeout-ms", d.control_body_timeout_ms.to_string()),
                ("--control-idle-timeout-ms", d.control_idle_timeout_ms.to_string()),
                ("--control-max-connections", d.control_max_connections.to_string()),
                ("--control-max-body-bytes", d.control_max_body_bytes.to_string()),
            ] {
                assert_default(&help, flag, &value);
            }
            for flag in ["--control-token-file <PATH>", "--control-insecure-no-token"] {
                assert!(help.contains(flag), "{command} {flag}: {help}");
            }
        }
    }
}
