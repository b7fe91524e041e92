//! `doxm-gate discover`: send the multicast doxm discovery an OBT sends, list who answers, and
//! optionally do what the OBT does next.
//!
//! ```text
//! $ doxm-gate discover --wait 2
//! [fe80::fc:ff:fe00:1%eth0]:40001 2f0ab3c4-0d1e-4f5a-8b6c-7d8e9fa0b1c2 owned=false oxms=0 sct=9
//! 192.0.2.2:40002 5d2c... owned=false oxms=0,2 sct=9
//! 2 devices answered                                                   (on stderr)
//! ```
//!
//! The request is the IoTivity-Lite OBT's, byte for byte in shape (SPEC section 4): NON GET
//! `/oic/sec/doxm?owned=FALSE`, Accept 10000, OCF-Accept-Content-Format-Version 2048, a fresh
//! 8-byte token and Message ID. `--group all` (the default) sends it to ff02::158 and
//! 224.0.1.187 with the *same* token and Message ID, as that OBT does, once per interface.
//! `--device UUID` adds a second Uri-Query option, `deviceuuid=UUID` (the query parameter of
//! OCF's published `oic.sec.doxm` schema), so that only that device answers. Every
//! 2.05 with our token that arrives within `--wait` is an answer; the same device answering
//! twice from the same endpoint is reported once (SPEC section 1.1 says a gate answers an
//! exchange once; a second endpoint for one device is printed, with a warning).
//!
//! Output: one line per answer on stdout (`--json`: one JSON object per line), as answers arrive
//! or, with `--follow`, as each follow-up ends; warnings and the summary
//! `N devices answered (M follow-ups ok, K failed)` on stderr. Exit status: 0; 1 when a
//! follow-up failed; 2 for a usage or setup error (bad group, no such interface, no socket,
//! nothing could be sent). No answer at all is not an error: `0 devices answered`, status 0.

mod cbor;
mod follow;
mod net;
mod read;

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use doxm_gate::wire::ocf::{CONTENT_FORMAT_OCF_CBOR, OCF_VERSION_1_0_0};
use doxm_gate::wire::{option, Code, Message, MessageType, WriteError, Writer};
use serde::Serialize;
use uuid::Uuid;

use follow::{Finished, Follower, Ids, Job, Timing};
use net::{Copy, Group, Interface, Names, Probe};
use read::DoxmAnswer;

/// Discovery options.
#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct DiscoverArgs {
    /// Interface to send on (name). Default: every interface that is up, multicast-capable and
    /// not loopback and has an address of the group's family, one copy each.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Group: ff02::158, ff03::158, ff05::158, 224.0.1.187, or all (ff02::158 and 224.0.1.187
    /// with the same token and Message ID, as the IoTivity-Lite OBT sends).
    #[arg(long, value_name = "G|all", default_value = "all", value_parser = net::parse_group)]
    group: Group,
    /// The `owned` query: false sends `owned=FALSE` (what an OBT sends), true `owned=TRUE`,
    /// none no query at all.
    #[arg(long, value_enum, default_value = "false")]
    owned: OwnedArg,
    /// Ask one device: adds the query `deviceuuid=UUID` (OCF's doxm schema; sent as hyphenated
    /// lower-case text), so that only the device with this UUID answers, if it may.
    #[arg(long, value_name = "UUID")]
    device: Option<Uuid>,
    /// How long to collect answers, in seconds (fractions allowed, e.g. 0.5).
    #[arg(long, value_name = "SECS", default_value = "3", value_parser = parse_wait)]
    wait: Duration,
    /// For each answer, do what the OBT does next at the answer's source endpoint: CON
    /// `GET /oic/res?rt=oic.r.doxm` (the doxm link must be anchored at `ocf://DEVICEUUID`) and
    /// CON `GET /oic/d` (`di` must be the deviceuuid); print the name and eps. Exit status 1
    /// when a follow-up fails.
    #[arg(long)]
    follow: bool,
    /// One JSON object per answer and line instead of text.
    #[arg(long)]
    json: bool,
    /// The destination port.
    #[arg(long, default_value_t = 5683)]
    port: u16,
    /// Send to one address instead of the groups: for testing a gate on a known address.
    /// `IP`, `IP:PORT`, `[IPv6]:PORT` or `[IPv6%IF]:PORT`; the port defaults to --port.
    #[arg(long, value_name = "ADDR", conflicts_with = "group")]
    to: Option<String>,
}

/// `--owned`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OwnedArg {
    /// `owned=FALSE`.
    False,
    /// `owned=TRUE`.
    True,
    /// No Uri-Query.
    #[value(name = "none")]
    Absent,
}

/// The end of `discover --help`: output and exit status.
const AFTER_HELP: &str = "\
Output: one line per answer on stdout, as answers arrive (with --follow, as each follow-up ends):
  SOURCE DEVICEUUID owned=BOOL oxms=LIST sct=N [name=\"NAME\" eps=LIST follow=ok|\"ERROR\"]
SOURCE is where the answer came from: 192.0.2.7:40001, [fd00::7]:40001, [fe80::7%eth0]:40001.
A device answering twice from one endpoint is listed once. With --json, one object per line:
  {\"source\",\"deviceuuid\",\"owned\",\"oxms\",\"sct\"[,\"name\",\"eps\",\"follow\"]}
Warnings and the summary (N devices answered [(M follow-ups ok, K failed)]) go to stderr.

Exit status: 0 (also when nobody answered), 1 when a follow-up failed, 2 for a usage or setup
error (bad group, no such interface, nothing could be sent).";

/// How many follow-up exchanges are outstanding at once.
const FOLLOW_WINDOW: usize = 32;
/// How many ignored answers are described on stderr before only counting them.
const MAX_IGNORED_SHOWN: usize = 20;

/// Runs the probe; returns the exit status.
pub fn run(args: &DiscoverArgs) -> ExitCode {
    let setup = match Setup::new(args) {
        Ok(setup) => setup,
        Err(message) => {
            eprintln!("doxm-gate discover: {message}");
            return ExitCode::from(2);
        }
    };
    let mut session = Session::new(args, setup.names, setup.ids);
    if let Err(message) = session.send(&setup.probe, &setup.copies, &setup.request) {
        eprintln!("doxm-gate discover: {message}");
        return ExitCode::from(2);
    }
    session.collect(&setup.probe, Instant::now() + args.wait);
    session.summary()
}

fn parse_wait(input: &str) -> Result<Duration, String> {
    input
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("not a number of seconds >= 0: {input:?}"))
}

/// Everything decided before the first datagram leaves.
struct Setup {
    probe: Probe,
    copies: Vec<Copy>,
    request: Request,
    names: Names,
    ids: Ids,
}

/// The discovery request and the identifiers its answers carry.
struct Request {
    datagram: Vec<u8>,
    token: [u8; 8],
}

impl Setup {
    fn new(args: &DiscoverArgs) -> Result<Setup, String> {
        let interfaces = net::interfaces().unwrap_or_else(|err| {
            eprintln!("doxm-gate discover: warning: cannot list interfaces: {err}");
            Vec::new()
        });
        let iface: Option<Interface> = match &args.iface {
            Some(name) => Some(
                net::find_interface(&interfaces, name)
                    .ok_or_else(|| format!("no such interface: {name}"))?,
            ),
            None => None,
        };
        let copies = match &args.to {
            Some(to) => vec![net::plan_to(to, args.port, iface.as_ref(), &interfaces)?],
            None => {
                let groups = args.group.addresses();
                let (copies, warnings) =
                    net::plan_groups(&groups, args.port, iface.as_ref(), &interfaces)?;
                for warning in warnings {
                    eprintln!("doxm-gate discover: warning: {warning}");
                }
                copies
            }
        };
        let need_v6 = copies.iter().any(|c| c.destination.is_ipv6());
        let probe =
            Probe::open(need_v6).map_err(|err| format!("cannot open a UDP socket: {err}"))?;
        let mut ids = Ids::new();
        let token = ids.token();
        let datagram = discovery_request(args.owned, args.device, ids.mid(), &token)
            .map_err(|err| format!("cannot encode the request: {err}"))?;
        Ok(Setup {
            probe,
            copies,
            request: Request { datagram, token },
            names: Names::new(&interfaces),
            ids,
        })
    }
}

/// NON GET `/oic/sec/doxm[?owned=FALSE|TRUE][&deviceuuid=UUID]` (one Uri-Query option each),
/// Accept 10000, 2049 = 2048 (SPEC section 4).
fn discovery_request(
    owned: OwnedArg,
    device: Option<Uuid>,
    mid: u16,
    token: &[u8],
) -> Result<Vec<u8>, WriteError> {
    let mut buf = [0u8; 128];
    let mut w = Writer::new(&mut buf, MessageType::NonConfirmable, Code::GET, mid, token)?;
    w.option(option::URI_PATH, b"oic")?;
    w.option(option::URI_PATH, b"sec")?;
    w.option(option::URI_PATH, b"doxm")?;
    match owned {
        OwnedArg::False => w.option(option::URI_QUERY, b"owned=FALSE")?,
        OwnedArg::True => w.option(option::URI_QUERY, b"owned=TRUE")?,
        OwnedArg::Absent => &mut w,
    };
    if let Some(device) = device {
        let mut text = [0u8; 11 + uuid::fmt::Hyphenated::LENGTH];
        text[..11].copy_from_slice(b"deviceuuid=");
        device.hyphenated().encode_lower(&mut text[11..]);
        w.option(option::URI_QUERY, &text)?;
    }
    w.uint_option(option::ACCEPT, u32::from(CONTENT_FORMAT_OCF_CBOR))?;
    w.uint_option(option::OCF_ACCEPT_CONTENT_FORMAT_VERSION, u32::from(OCF_VERSION_1_0_0))?;
    let len = w.finish();
    Ok(buf[..len].to_vec())
}

/// One reported answer.
struct Answer {
    source: SocketAddr,
    doxm: DoxmAnswer,
}

/// The probe's run: answers, follow-ups, output, counts.
struct Session {
    json: bool,
    names: Names,
    token: [u8; 8],
    follower: Option<Follower>,
    answers: Vec<Answer>,
    /// (source ip, port, zone, deviceuuid) of every reported answer.
    seen: HashSet<(IpAddr, u16, u32, Uuid)>,
    /// The first endpoint each device answered from.
    first_source: HashMap<Uuid, SocketAddr>,
    follow_ok: usize,
    follow_failed: usize,
    ignored: usize,
    duplicates: usize,
    out: io::Stdout,
}

impl Session {
    fn new(args: &DiscoverArgs, names: Names, ids: Ids) -> Session {
        Session {
            json: args.json,
            names,
            token: [0; 8],
            follower: args.follow.then(|| Follower::new(FOLLOW_WINDOW, Timing::DEFAULT, ids)),
            answers: Vec::new(),
            seen: HashSet::new(),
            first_source: HashMap::new(),
            follow_ok: 0,
            follow_failed: 0,
            ignored: 0,
            duplicates: 0,
            out: io::stdout(),
        }
    }

    /// Sends every copy; fails only when none could be sent.
    fn send(&mut self, probe: &Probe, copies: &[Copy], request: &Request) -> Result<(), String> {
        self.token = request.token;
        let mut sent = 0;
        let mut last_error = String::new();
        for copy in copies {
            match probe.send_copy(copy, &request.datagram) {
                Ok(()) => sent += 1,
                Err(err) => {
                    last_error = format!("cannot send to {}: {err}", copy.label);
                    eprintln!("doxm-gate discover: warning: {last_error}");
                }
            }
        }
        if sent == 0 {
            return Err(last_error);
        }
        Ok(())
    }

    /// Receives until `deadline`, and then until the last follow-up has ended.
    fn collect(&mut self, probe: &Probe, deadline: Instant) {
        let mut buf = vec![0u8; 65_536];
        let mut finished = Vec::new();
        let mut recv_errors = 0u32;
        loop {
            let now = Instant::now();
            if let Some(follower) = &mut self.follower {
                follower.poll(now, probe, &mut finished);
            }
            self.report_finished(&mut finished);
            let collecting = now < deadline;
            let follower_deadline = self.follower.as_ref().and_then(Follower::next_deadline);
            if !collecting && follower_deadline.is_none() {
                break;
            }
            let wake = match follower_deadline {
                Some(at) if !collecting || at < deadline => at,
                _ => deadline,
            };
            match probe.recv(&mut buf, wake.saturating_duration_since(now)) {
                Ok(Some((len, source))) => {
                    let now = Instant::now();
                    self.on_datagram(&buf[..len], source, now < deadline, probe, &mut finished);
                }
                Ok(None) => {}
                Err(err) => {
                    recv_errors += 1;
                    if recv_errors == 1 {
                        eprintln!("doxm-gate discover: warning: receive error: {err}");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    fn on_datagram(
        &mut self,
        datagram: &[u8],
        source: SocketAddr,
        collecting: bool,
        probe: &Probe,
        finished: &mut Vec<Finished>,
    ) {
        let Ok(msg) = Message::parse(datagram) else { return };
        if msg.token() == self.token
            && matches!(msg.ty(), MessageType::NonConfirmable | MessageType::Confirmable)
        {
            if msg.ty() == MessageType::Confirmable {
                ack(probe, msg.message_id(), source);
            }
            if collecting {
                self.on_answer(&msg, source);
            }
            return;
        }
        if let Some(follower) = &mut self.follower {
            follower.on_datagram(Instant::now(), &msg, source, probe, finished);
        }
    }

    fn on_answer(&mut self, msg: &Message<'_>, source: SocketAddr) {
        let doxm = match read::doxm(msg) {
            Ok(doxm) => doxm,
            Err(reason) => {
                self.ignored += 1;
                if self.ignored <= MAX_IGNORED_SHOWN {
                    let from = self.names.endpoint(source);
                    eprintln!("doxm-gate discover: ignored an answer from {from}: {reason}");
                }
                return;
            }
        };
        let zone = match source {
            SocketAddr::V6(v6) => v6.scope_id(),
            SocketAddr::V4(_) => 0,
        };
        if !self.seen.insert((source.ip(), source.port(), zone, doxm.deviceuuid)) {
            self.duplicates += 1;
            return;
        }
        match self.first_source.get(&doxm.deviceuuid) {
            Some(first) => eprintln!(
                "doxm-gate discover: warning: device {} answered from {} and from {}",
                doxm.deviceuuid,
                self.names.endpoint(*first),
                self.names.endpoint(source)
            ),
            None => {
                self.first_source.insert(doxm.deviceuuid, source);
            }
        }
        let index = self.answers.len();
        if let Some(follower) = &mut self.follower {
            follower.push(Job { answer: index, target: source, deviceuuid: doxm.deviceuuid });
        }
        self.answers.push(Answer { source, doxm });
        if self.follower.is_none() {
            self.print(&self.answers[index], None);
        }
    }

    fn report_finished(&mut self, finished: &mut Vec<Finished>) {
        for done in finished.drain(..) {
            match &done.result {
                Ok(_) => self.follow_ok += 1,
                Err(_) => self.follow_failed += 1,
            }
            if let Some(answer) = self.answers.get(done.answer) {
                self.print(answer, Some(&done));
            }
        }
    }

    fn print(&self, answer: &Answer, done: Option<&Finished>) {
        let line = self.render(answer, done);
        // A closed stdout (e.g. `| head`) is not an error worth dying for.
        let _ = writeln!(self.out.lock(), "{line}");
    }

    fn render(&self, answer: &Answer, done: Option<&Finished>) -> String {
        let source = self.names.endpoint(answer.source).to_string();
        let doxm = &answer.doxm;
        let (name, eps, follow): (Option<&str>, &[String], Option<&str>) = match done {
            None => (None, &[], None),
            Some(Finished { result: Ok(ok), .. }) => (Some(&ok.name), &ok.eps, Some("ok")),
            Some(Finished { result: Err(failed), .. }) => {
                (None, &failed.eps, Some(failed.error.as_str()))
            }
        };
        if self.json {
            let line = JsonLine {
                source,
                deviceuuid: doxm.deviceuuid,
                owned: doxm.owned,
                oxms: &doxm.oxms,
                sct: doxm.sct,
                follow: follow.map(|follow| JsonFollow { name, eps, follow }),
            };
            return serde_json::to_string(&line).unwrap_or_default();
        }
        let oxms: Vec<String> = doxm.oxms.iter().map(i64::to_string).collect();
        let mut line = format!(
            "{source} {} owned={} oxms={} sct={}",
            doxm.deviceuuid,
            doxm.owned,
            oxms.join(","),
            doxm.sct
        );
        if let Some(follow) = follow {
            if let Some(name) = name {
                line.push_str(&format!(" name={}", quoted(name)));
            }
            line.push_str(&format!(" eps={}", eps.join(",")));
            match follow {
                "ok" => line.push_str(" follow=ok"),
                error => line.push_str(&format!(" follow={}", quoted(error))),
            }
        }
        line
    }

    fn summary(&self) -> ExitCode {
        if self.ignored > MAX_IGNORED_SHOWN {
            eprintln!(
                "doxm-gate discover: {} more answers ignored",
                self.ignored - MAX_IGNORED_SHOWN
            );
        }
        let devices = self.first_source.len();
        let noun = if devices == 1 { "device" } else { "devices" };
        match self.follower {
            Some(_) => eprintln!(
                "{devices} {noun} answered ({} follow-ups ok, {} failed)",
                self.follow_ok, self.follow_failed
            ),
            None => eprintln!("{devices} {noun} answered"),
        }
        if self.follow_failed > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// `--json` line: the answer, and with `--follow` the name, eps and outcome.
#[derive(Serialize)]
struct JsonLine<'a> {
    source: String,
    deviceuuid: Uuid,
    owned: bool,
    oxms: &'a [i64],
    sct: u64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    follow: Option<JsonFollow<'a>>,
}

#[derive(Serialize)]
struct JsonFollow<'a> {
    name: Option<&'a str>,
    eps: &'a [String],
    follow: &'a str,
}

/// `text` as a JSON string literal: quoted, with quotes and control characters escaped.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// An empty ACK for a CON that needs one: an answer that (wrongly, for a multicast request)
/// came as CON, or a follow-up's separate response.
fn ack(probe: &Probe, mid: u16, to: SocketAddr) {
    let mut buf = [0u8; 4];
    if let Ok(w) = Writer::new(&mut buf, MessageType::Acknowledgement, Code::EMPTY, mid, &[]) {
        let len = w.finish();
        let _ = probe.send_to(&buf[..len], to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_request_matches_the_obt() {
        // SPEC section 4: the real OBT request, rebuilt with its token and Message ID.
        use doxm_gate::wire::fixtures::{OBT_REQUEST, OBT_TOKEN};
        let datagram = discovery_request(OwnedArg::False, None, 0xf1cd, &OBT_TOKEN).unwrap();
        assert_eq!(datagram, OBT_REQUEST);
    }

    #[test]
    fn test_request_owned_variants() {
        let queries = |owned, device| {
            let datagram = discovery_request(owned, device, 1, b"12345678").unwrap();
            let msg = Message::parse(&datagram).unwrap();
            assert!(msg.path_is(&[b"oic", b"sec", b"doxm"]));
            assert_eq!(msg.accept(), Some(10_000));
            assert_eq!(msg.ocf_accept_content_format_version(), Some(2048));
            msg.uri_query().map(<[u8]>::to_vec).collect::<Vec<_>>()
        };
        assert_eq!(queries(OwnedArg::True, None), [b"owned=TRUE".to_vec()]);
        assert!(queries(OwnedArg::Absent, None).is_empty());
        let device = Uuid::parse_str("50E1A3AE6A0C4AC07B4FD1D818AE3403").ok();
        let named = b"deviceuuid=50e1a3ae-6a0c-4ac0-7b4f-d1d818ae3403".to_vec();
        assert_eq!(queries(OwnedArg::False, device), [b"owned=FALSE".to_vec(), named.clone()]);
        assert_eq!(queries(OwnedArg::Absent, device), [named]);
    }

    #[test]
    fn test_parse_wait() {
        assert_eq!(parse_wait("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_wait("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_wait("0"), Ok(Duration::ZERO));
        assert!(parse_wait("-1").is_err());
        assert!(parse_wait("NaN").is_err());
        assert!(parse_wait("inf").is_err());
        assert!(parse_wait("soon").is_err());
    }
}
