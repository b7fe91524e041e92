//! The `doxm-gate` command line.
//!
//! Run `doxm-gate --help` for the subcommands. Each subcommand lives in its own module and is a
//! thin driver over the library.

#![forbid(unsafe_code)]

mod decode;

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
    /// Decode one CoAP datagram given in hex and print it as one JSON object.
    ///
    /// Exit status: 0 for a well-formed message, 1 for a malformed one (the JSON names the
    /// reason), 2 when the argument is not hex.
    Decode {
        /// The datagram as hex digits (whitespace and a leading 0x are ignored).
        hex: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Decode { hex } => decode::run(&hex),
    }
}
