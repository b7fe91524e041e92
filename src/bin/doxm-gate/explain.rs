//! `doxm-gate explain`: would this device answer this datagram, and if not, why not?
//!
//! Runs one datagram through the same code the gate runs (wire parser and the policy's ladder,
//! multicast or unicast) for one device state given on the command line, and prints
//! one JSON object:
//!
//! ```text
//! {"outcome":"answer","reason":"ok"}
//! {"outcome":"ignore","reason":"doc-open"}
//! {"outcome":"4.01","reason":"not-rfotm"}
//! {"outcome":"ignore","reason":"reserved-tkl"}
//! ```
//!
//! Outcomes: `answer` (multicast: a 2.05 in the leisure window), a response code for unicast
//! (`2.05`, `4.00`, `4.01`, `4.02`, `4.04`, `4.06`), `empty-ack` (a unicast CON whose response
//! No-Response suppresses), or `ignore`.

use std::process::ExitCode;

use clap::{ArgGroup, Args, ValueEnum};
use doxm_gate::policy::{Bridge, Delivery, DeviceFacts, Dos, Outcome, RequestFacts};
use doxm_gate::wire::fixtures;
use doxm_gate::wire::Message;
use serde::Serialize;
use uuid::Uuid;

use crate::decode::parse_hex;

/// The device state and the datagram to explain.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("datagram").required(true).args(["hex", "request"])))]
pub struct ExplainArgs {
    /// The datagram as hex (or use --request).
    #[arg(long)]
    hex: Option<String>,
    /// A real client's discovery instead of --hex: obt (the IoTivity-Lite OBT's 45-byte
    /// `owned=FALSE` request of SPEC section 4) or plgd (the plgd client's `Owned=FALSE`).
    #[arg(long, value_enum)]
    request: Option<RequestPreset>,
    /// The datagram was sent to the device's own endpoint (default: to a multicast group).
    #[arg(long)]
    unicast: bool,
    /// `dos.s`: 0 RESET, 1 RFOTM, 2 RFPRO, 3 RFNOP, 4 SRESET.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=4))]
    dos: u8,
    /// `doxm.owned`.
    #[arg(long, action = clap::ArgAction::Set)]
    owned: bool,
    /// Whether a Device Onboarding Connection is open.
    #[arg(long, action = clap::ArgAction::Set)]
    doc: bool,
    /// The device's bridge: none, or a bridge that is owned or unowned.
    #[arg(long, value_enum, default_value = "none")]
    bridge: BridgeArg,
    /// Whether the bridge has reported the device's state (an unknown state never answers).
    #[arg(long, action = clap::ArgAction::Set, default_value = "true")]
    known: bool,
    /// The device UUID (what the `di` and `deviceuuid` queries are compared with).
    #[arg(long, default_value = "50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403")]
    uuid: Uuid,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RequestPreset {
    Obt,
    Plgd,
}

impl RequestPreset {
    /// The real datagram (SPEC section 4; `wire::fixtures`).
    fn datagram(self) -> &'static [u8] {
        match self {
            RequestPreset::Obt => &fixtures::OBT_REQUEST,
            RequestPreset::Plgd => &fixtures::PLGD_REQUEST,
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum BridgeArg {
    None,
    Owned,
    Unowned,
}

#[derive(Serialize)]
struct Explained {
    outcome: String,
    reason: &'static str,
}

/// Explains and prints; returns the exit status (0, or 2 for bad hex).
pub fn run(args: &ExplainArgs) -> ExitCode {
    // clap requires exactly one of --hex and --request.
    let datagram = match (args.request, &args.hex) {
        (Some(preset), _) => preset.datagram().to_vec(),
        (None, hex) => match parse_hex(hex.as_deref().unwrap_or_default()) {
            Ok(bytes) => bytes,
            Err(err) => {
                eprintln!("doxm-gate explain: --hex is not a hex string: {err}");
                return ExitCode::from(2);
            }
        },
    };
    let explained = explain(args, &datagram);
    println!("{}", serde_json::to_string(&explained).unwrap_or_default());
    ExitCode::SUCCESS
}

fn explain(args: &ExplainArgs, datagram: &[u8]) -> Explained {
    let msg = match Message::parse(datagram) {
        Ok(msg) => msg,
        Err(e) => return Explained { outcome: "ignore".into(), reason: e.as_str() },
    };
    let device = DeviceFacts {
        uuid: args.uuid,
        known: args.known,
        // The range is enforced by clap; RESET is never eligible if that ever failed.
        dos: Dos::from_u8(args.dos).unwrap_or(Dos::Reset),
        owned: args.owned,
        doc_open: args.doc,
        bridge: match args.bridge {
            BridgeArg::None => Bridge::None,
            BridgeArg::Owned => Bridge::Owned,
            BridgeArg::Unowned => Bridge::Unowned,
        },
    };
    let delivery = if args.unicast { Delivery::Unicast } else { Delivery::Multicast };
    let request = RequestFacts::from_message(&msg, delivery);
    // One ladder for both deliveries and every resource of the discovery endpoint: what the
    // engine runs.
    let decision = doxm_gate::policy::decide(&request, &device);
    let outcome = match decision.outcome {
        Outcome::Answer => "answer".to_owned(),
        Outcome::Respond(code) => code.to_string(),
        Outcome::EmptyAck => "empty-ack".to_owned(),
        Outcome::Ignore => "ignore".to_owned(),
    };
    Explained { outcome, reason: decision.reason.as_str() }
}
