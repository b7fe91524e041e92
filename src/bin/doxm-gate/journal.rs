//! `doxm-gate journal check|salvage`: the operator's tools for a state directory the gate
//! refuses to start from.
//!
//! ```text
//! doxm-gate journal check --state-dir /var/lib/doxm-gate
//! doxm-gate journal salvage --state-dir /var/lib/doxm-gate --into /var/lib/doxm-gate.salvaged
//! ```
//!
//! `check` prints what the directory holds and changes nothing; exit status 0 when a gate would
//! start from it (perhaps discarding a torn tail), 1 when it would refuse, 2 when the directory
//! cannot be read (missing, or locked by a running gate). `salvage` writes the snapshot and the
//! journal's valid prefix into a new directory and leaves the old one as it was; the operator
//! then chooses to start the gate on it. Exit status 0 when written, 2 otherwise.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use doxm_gate::control::journal;

/// What to do with a state directory.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Report what a state directory holds, and whether a gate would start from it. Changes
    /// nothing.
    Check {
        /// The gate's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Write what can be trusted (the snapshot and the journal up to the first damaged record)
    /// into a new directory. The old directory is not changed.
    Salvage {
        /// The damaged state directory.
        #[arg(long)]
        state_dir: PathBuf,
        /// A new (or empty) directory to write into.
        #[arg(long)]
        into: PathBuf,
    },
}

pub fn run(command: &JournalCommand) -> ExitCode {
    match command {
        JournalCommand::Check { state_dir } => match journal::check(state_dir) {
            Ok(report) => {
                print!("{report}");
                ExitCode::from(if report.would_start() { 0 } else { 1 })
            }
            Err(e) => {
                eprintln!("doxm-gate: journal check: {e}");
                ExitCode::from(2)
            }
        },
        JournalCommand::Salvage { state_dir, into } => match journal::salvage(state_dir, into) {
            Ok(salvaged) => {
                print!("{salvaged}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("doxm-gate: journal salvage: {e}");
                ExitCode::from(2)
            }
        },
    }
}
