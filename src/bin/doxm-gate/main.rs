//! The `doxm-gate` command line.
//!
//! Run `doxm-gate --help` for the subcommands. Each subcommand lives in its own module and is a
//! thin driver over the library.

#![forbid(unsafe_code)]

mod client;
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
