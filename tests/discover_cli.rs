//! `doxm-gate discover`, run as users run it, against a fake fleet on loopback.
//!
//! Multicast on loopback is unreliable, so the probe is pointed at the fake's discovery socket
//! with `--to`; the fake then answers from one socket per device, as a gate in port mode does,
//! and serves the unicast follow-ups (`/oic/res?rt=oic.r.doxm`, `/oic/d`) on those sockets.
//! Every datagram either way goes through the library's wire layer. The fake runs on one mio
//! thread and records what it received, so the tests check both what the probe printed and what
//! it sent.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use doxm_gate::wire::ocf::{self, DeviceInfo, Doxm, Link, View};
use doxm_gate::wire::{Code, Message, MessageType, Writer};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use uuid::Uuid;

/// How a fake device behaves.
#[derive(Debug, Clone)]
struct Device {
    uuid: Uuid,
    name: String,
    /// The anchor of its doxm link (the device's own UUID unless a test breaks it).
    anchor: Uuid,
    /// `di` of `/oic/d`.
    di: Uuid,
    /// Answers discovery twice (fresh Message IDs, same token).
    answer_twice: bool,
    /// Ignores the first `/oic/res` request, so that only the retransmission is answered.
    drop_first_res: bool,
    /// Answers `/oic/d` with an empty ACK and then a separate CON response.
    separate_d: bool,
    /// Answers `/oic/d` with 4.04.
    d_not_found: bool,
    /// Does not answer discovery at all.
    silent: bool,
}

impl Device {
    fn new(n: u128) -> Device {
        let uuid = Uuid::from_u128(0x0d0c_0000_0000_4000_8000_0000_0000_0000 | n);
        Device {
            uuid,
            name: format!("fake lamp {n}"),
            anchor: uuid,
            di: uuid,
            answer_twice: false,
            drop_first_res: false,
            separate_d: false,
            d_not_found: false,
            silent: false,
        }
    }

    fn eps(&self, addr: SocketAddr) -> [String; 2] {
        [format!("coap://{addr}"), format!("coaps://[fd00:b::1]:{}", 20_000 + addr.port() % 1000)]
    }
}

/// What a socket of the fake received.
#[derive(Debug, Clone)]
struct Received {
    /// `None` for the discovery socket, else the device index.
    device: Option<usize>,
    from: SocketAddr,
    datagram: Vec<u8>,
}

/// Noise the discovery socket sends along with the answers.
#[derive(Debug, Clone, Copy, Default)]
struct Noise {
    /// A 2.05 doxm with another token (not an answer to us: silently ignored).
    wrong_token: bool,
    /// A 4.00 with our token (a gate must not send it; the probe says it ignored it).
    error_reply: bool,
}

struct Fake {
    discovery: SocketAddr,
    devices: Vec<(Device, SocketAddr)>,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const DISCOVERY: Token = Token(usize::MAX);

impl Fake {
    fn start(ip: IpAddr, devices: Vec<Device>, noise: Noise) -> Fake {
        let bind = SocketAddr::new(ip, 0);
        let mut discovery = UdpSocket::bind(bind).unwrap();
        let mut sockets: Vec<UdpSocket> =
            devices.iter().map(|_| UdpSocket::bind(bind).unwrap()).collect();
        let poll = Poll::new().unwrap();
        poll.registry().register(&mut discovery, DISCOVERY, Interest::READABLE).unwrap();
        for (i, socket) in sockets.iter_mut().enumerate() {
            poll.registry().register(socket, Token(i), Interest::READABLE).unwrap();
        }
        let addrs: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();
        let mut fake = Fake {
            discovery: discovery.local_addr().unwrap(),
            devices: devices.iter().cloned().zip(addrs).collect(),
            received: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        let mut server = Server {
            poll,
            discovery,
            sockets,
            devices: fake.devices.clone(),
            noise,
            received: Arc::clone(&fake.received),
            res_seen: vec![0; devices.len()],
            next_mid: 0x4000,
            pending: VecDeque::new(),
        };
        let stop = Arc::clone(&fake.stop);
        fake.thread = Some(std::thread::spawn(move || server.run(&stop)));
        fake
    }

    fn to(&self) -> String {
        self.discovery.to_string()
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// What was received once `done` holds (the last datagrams the probe sent may still be
    /// queued at the fake when the probe exits), or after a second.
    fn received_when(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let until = Instant::now() + Duration::from_secs(1);
        loop {
            let received = self.received();
            if done(&received) || Instant::now() > until {
                return received;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Server {
    poll: Poll,
    discovery: UdpSocket,
    sockets: Vec<UdpSocket>,
    devices: Vec<(Device, SocketAddr)>,
    noise: Noise,
    received: Arc<Mutex<Vec<Received>>>,
    res_seen: Vec<u32>,
    next_mid: u16,
    /// Answers not sent yet: (device, datagram, destination).
    pending: VecDeque<(usize, Vec<u8>, SocketAddr)>,
}

/// Answers sent per millisecond: a paced burst, as a gate's leisure window spreads answers, so
/// that the probe's receive buffer (often 208 KiB) does not overflow.
const ANSWERS_PER_TICK: usize = 20;

impl Server {
    fn run(&mut self, stop: &AtomicBool) {
        let mut events = Events::with_capacity(256);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let tick = if self.pending.is_empty() { 20 } else { 1 };
            self.poll.poll(&mut events, Some(Duration::from_millis(tick))).unwrap();
            for _ in 0..ANSWERS_PER_TICK {
                let Some((i, answer, to)) = self.pending.pop_front() else { break };
                self.sockets[i].send_to(&answer, to).unwrap();
            }
            for event in &events {
                // Edge-triggered: drain the socket.
                loop {
                    let socket = if event.token() == DISCOVERY {
                        &self.discovery
                    } else {
                        &self.sockets[event.token().0]
                    };
                    let Ok((len, from)) = socket.recv_from(&mut buf) else { break };
                    let device = (event.token() != DISCOVERY).then_some(event.token().0);
                    let datagram = buf[..len].to_vec();
                    self.received.lock().unwrap().push(Received {
                        device,
                        from,
                        datagram: datagram.clone(),
                    });
                    let Ok(msg) = Message::parse(&datagram) else { continue };
                    match device {
                        None => self.discover(&msg, from),
                        Some(i) => self.unicast(i, &msg, from),
                    }
                }
            }
        }
    }

    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.wrapping_add(1);
        self.next_mid
    }

    fn discover(&mut self, msg: &Message<'_>, from: SocketAddr) {
        if !msg.path_is(&[b"oic", b"sec", b"doxm"]) {
            return;
        }
        let token = msg.token().to_vec();
        if self.noise.error_reply {
            let mut buf = [0u8; 32];
            let mid = self.mid();
            let w =
                Writer::new(&mut buf, MessageType::NonConfirmable, Code::BAD_REQUEST, mid, &token)
                    .unwrap();
            let len = w.finish();
            self.discovery.send_to(&buf[..len], from).unwrap();
        }
        for i in 0..self.devices.len() {
            let device = self.devices[i].0.clone();
            if device.silent {
                continue;
            }
            let copies = if device.answer_twice { 2 } else { 1 };
            for _ in 0..copies {
                let answer = self.doxm_answer(&device, &token);
                self.pending.push_back((i, answer, from));
            }
            if self.noise.wrong_token {
                let answer = self.doxm_answer(&device, b"other!!!");
                self.pending.push_back((i, answer, from));
            }
        }
    }

    fn doxm_answer(&mut self, device: &Device, token: &[u8]) -> Vec<u8> {
        let doxm = Doxm {
            oxms: &[ocf::oxm::JUST_WORKS, ocf::oxm::MANUFACTURER_CERTIFICATE],
            oxmsel: ocf::oxm::SELF,
            sct: ocf::sct::PAIRWISE_PSK | ocf::sct::CERTIFICATE,
            owned: false,
            devowneruuid: Uuid::nil(),
            deviceuuid: device.uuid,
            rowneruuid: Uuid::nil(),
        };
        let mut buf = [0u8; 512];
        let mid = self.mid();
        let len = ocf::write_response(
            &mut buf,
            MessageType::NonConfirmable,
            Code::CONTENT,
            mid,
            token,
            |out| doxm.encode(View::Default, out),
        )
        .unwrap();
        buf[..len].to_vec()
    }

    fn unicast(&mut self, i: usize, msg: &Message<'_>, from: SocketAddr) {
        if msg.ty() != MessageType::Confirmable || msg.code() != Code::GET {
            return;
        }
        let (device, addr) = self.devices[i].clone();
        let mut buf = [0u8; 1024];
        let (mid, token) = (msg.message_id(), msg.token());
        if msg.path_is(&[b"oic", b"res"]) {
            self.res_seen[i] += 1;
            if device.drop_first_res && self.res_seen[i] == 1 {
                return;
            }
            let eps = device.eps(addr);
            let eps: Vec<&str> = eps.iter().map(String::as_str).collect();
            let link = Link {
                anchor: device.anchor,
                href: "/oic/sec/doxm",
                rt: &[ocf::RT_DOXM],
                interfaces: &ocf::DOXM_INTERFACES,
                bm: 1,
                eps: &eps,
            };
            let len = ocf::write_response(
                &mut buf,
                MessageType::Acknowledgement,
                Code::CONTENT,
                mid,
                token,
                |out| ocf::encode_links(&[link], out),
            )
            .unwrap();
            self.sockets[i].send_to(&buf[..len], from).unwrap();
        } else if msg.path_is(&[b"oic", b"d"]) {
            if device.d_not_found {
                let w = Writer::new(
                    &mut buf,
                    MessageType::Acknowledgement,
                    Code::NOT_FOUND,
                    mid,
                    token,
                )
                .unwrap();
                let len = w.finish();
                self.sockets[i].send_to(&buf[..len], from).unwrap();
                return;
            }
            let ty = if device.separate_d {
                let mut ack = [0u8; 4];
                let w = Writer::new(&mut ack, MessageType::Acknowledgement, Code::EMPTY, mid, &[])
                    .unwrap();
                let len = w.finish();
                self.sockets[i].send_to(&ack[..len], from).unwrap();
                MessageType::Confirmable
            } else {
                MessageType::Acknowledgement
            };
            let mid = if device.separate_d { self.mid() } else { mid };
            let info = DeviceInfo {
                di: device.di,
                n: &device.name,
                rt: &[ocf::RT_DEVICE, "oic.d.virtual"],
                icv: "ocf.2.0.5",
                dmv: "ocf.res.1.3.0",
                piid: Uuid::nil(),
            };
            let len = ocf::write_response(&mut buf, ty, Code::CONTENT, mid, token, |out| {
                info.encode(View::Default, out)
            })
            .unwrap();
            self.sockets[i].send_to(&buf[..len], from).unwrap();
        }
    }
}

/// The soft limit on open files (Linux), or 0 when unknown.
fn open_file_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|soft| soft.parse().ok())
        .unwrap_or(0)
}

fn localhost6() -> IpAddr {
    IpAddr::V6(Ipv6Addr::LOCALHOST)
}

fn discover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_doxm-gate"))
        .arg("discover")
        .args(args)
        .output()
        .expect("the doxm-gate binary runs")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    let mut lines: Vec<String> =
        String::from_utf8(out.stdout.clone()).unwrap().lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).unwrap()
}

fn devices(n: u128) -> Vec<Device> {
    (1..=n).map(Device::new).collect()
}

/// The text line of an answer and, when `follow` is given, its follow-up.
fn text_line(device: &Device, addr: SocketAddr, follow: Option<&str>) -> String {
    let base = format!("{addr} {} owned=false oxms=0,2 sct=9", device.uuid);
    match follow {
        None => base,
        Some("ok") => {
            format!("{base} name=\"{}\" eps={} follow=ok", device.name, device.eps(addr).join(","))
        }
        Some(error) => format!("{base} eps= follow=\"{error}\""),
    }
}

#[test]
fn follow_prints_one_line_per_device_and_checks_the_request() {
    let fake = Fake::start(localhost6(), devices(3), Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.5", "--follow"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let mut want: Vec<String> =
        fake.devices.iter().map(|(d, addr)| text_line(d, *addr, Some("ok"))).collect();
    want.sort();
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(stderr(&out), "3 devices answered (3 follow-ups ok, 0 failed)\n");

    let received = fake.received_when(|r| r.len() >= 7);
    // The discovery: the OBT's NON GET, once.
    let requests: Vec<&Received> = received.iter().filter(|r| r.device.is_none()).collect();
    assert_eq!(requests.len(), 1);
    let request = Message::parse(&requests[0].datagram).unwrap();
    assert_eq!(request.ty(), MessageType::NonConfirmable);
    assert_eq!(request.code(), Code::GET);
    assert!(request.path_is(&[b"oic", b"sec", b"doxm"]));
    assert_eq!(request.uri_query().collect::<Vec<_>>(), [b"owned=FALSE"]);
    assert_eq!(request.accept(), Some(10_000));
    assert_eq!(request.ocf_accept_content_format_version(), Some(2048));
    assert_eq!(request.token().len(), 8);
    assert_eq!(request.first_unrecognised_critical(), None);
    // The follow-ups: per device, CON /oic/res?rt=oic.r.doxm then CON /oic/d, from the
    // discovery's source, without Accept.
    for (i, _) in fake.devices.iter().enumerate() {
        let seen: Vec<Message<'_>> = received
            .iter()
            .filter(|r| r.device == Some(i))
            .inspect(|r| assert_eq!(r.from, requests[0].from))
            .map(|r| Message::parse(&r.datagram).unwrap())
            .collect();
        assert_eq!(seen.len(), 2, "device {i}: {seen:?}");
        assert!(seen.iter().all(|m| m.ty() == MessageType::Confirmable && m.accept().is_none()));
        assert!(seen[0].path_is(&[b"oic", b"res"]));
        assert_eq!(seen[0].uri_query().collect::<Vec<_>>(), [b"rt=oic.r.doxm"]);
        assert!(seen[1].path_is(&[b"oic", b"d"]));
        assert_ne!(seen[0].token(), seen[1].token());
        assert_ne!(seen[0].token(), request.token());
    }
}

#[test]
fn json_lines_without_follow() {
    let fake = Fake::start(localhost6(), devices(2), Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.3", "--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let mut want: Vec<String> = fake
        .devices
        .iter()
        .map(|(d, addr)| {
            format!(
                r#"{{"source":"{addr}","deviceuuid":"{}","owned":false,"oxms":[0,2],"sct":9}}"#,
                d.uuid
            )
        })
        .collect();
    want.sort();
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(stderr(&out), "2 devices answered\n");
}

#[test]
fn json_lines_with_follow() {
    let fake = Fake::start(localhost6(), devices(1), Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.3", "--json", "--follow"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let (device, addr) = &fake.devices[0];
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        line,
        serde_json::json!({
            "source": addr.to_string(),
            "deviceuuid": device.uuid.to_string(),
            "owned": false,
            "oxms": [0, 2],
            "sct": 9,
            "name": device.name,
            "eps": device.eps(*addr),
            "follow": "ok",
        })
    );
}

#[test]
fn wrong_anchor_and_wrong_di_fail_the_follow_up() {
    let mut fleet = devices(3);
    fleet[0].anchor = Uuid::from_u128(0xbad);
    fleet[1].di = Uuid::from_u128(0xbad);
    let fake = Fake::start(localhost6(), fleet, Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.3", "--follow"]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let (bad_anchor, bad_anchor_addr) = &fake.devices[0];
    let (bad_di, bad_di_addr) = &fake.devices[1];
    let (good, good_addr) = &fake.devices[2];
    let bad = Uuid::from_u128(0xbad);
    let mut want = vec![
        text_line(
            bad_anchor,
            *bad_anchor_addr,
            Some(&format!("/oic/res: anchor ocf://{bad} is not ocf://{}", bad_anchor.uuid)),
        ),
        // /oic/res succeeded: its eps are printed with the /oic/d failure.
        format!(
            "{bad_di_addr} {} owned=false oxms=0,2 sct=9 eps={} follow=\"/oic/d: di {bad} is not {}\"",
            bad_di.uuid,
            bad_di.eps(*bad_di_addr).join(","),
            bad_di.uuid
        ),
        text_line(good, *good_addr, Some("ok")),
    ];
    want.sort();
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(stderr(&out), "3 devices answered (1 follow-ups ok, 2 failed)\n");

    let out = discover(&["--to", &fake.to(), "--wait", "0.3", "--follow", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let follows: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["deviceuuid"] == bad_anchor.uuid.to_string())
        .map(|v| v["follow"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(follows, [format!("/oic/res: anchor ocf://{bad} is not ocf://{}", bad_anchor.uuid)]);
}

#[test]
fn error_response_fails_the_follow_up() {
    let mut fleet = devices(1);
    fleet[0].d_not_found = true;
    let fake = Fake::start(localhost6(), fleet, Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.3", "--follow"]);
    assert_eq!(out.status.code(), Some(1));
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.trim_end().ends_with(r#"follow="/oic/d: 4.04 instead of 2.05""#), "{line}");
}

#[test]
fn duplicates_are_reported_once_and_noise_is_ignored() {
    let mut fleet = devices(2);
    fleet[0].answer_twice = true;
    let fake = Fake::start(localhost6(), fleet, Noise { wrong_token: true, error_reply: true });
    let out = discover(&["--to", &fake.to(), "--wait", "0.3"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let mut want: Vec<String> =
        fake.devices.iter().map(|(d, addr)| text_line(d, *addr, None)).collect();
    want.sort();
    assert_eq!(stdout_lines(&out), want);
    assert_eq!(
        stderr(&out),
        format!(
            "doxm-gate discover: ignored an answer from {}: 4.00 instead of 2.05\n\
             2 devices answered\n",
            fake.discovery
        )
    );
}

#[test]
fn ipv4_answers_print_plain_ipv4_sources() {
    let fake = Fake::start(IpAddr::V4(Ipv4Addr::LOCALHOST), devices(2), Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.3", "--follow"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = stdout_lines(&out);
    let mut want: Vec<String> =
        fake.devices.iter().map(|(d, addr)| text_line(d, *addr, Some("ok"))).collect();
    want.sort();
    assert_eq!(lines, want);
    assert!(lines.iter().all(|l| l.starts_with("127.0.0.1:")), "{lines:?}");
}

#[test]
fn retransmission_and_separate_response() {
    let mut fleet = devices(2);
    fleet[0].drop_first_res = true;
    fleet[1].separate_d = true;
    let fake = Fake::start(localhost6(), fleet, Noise::default());
    let started = Instant::now();
    let out = discover(&["--to", &fake.to(), "--wait", "0.2", "--follow"]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "2 devices answered (2 follow-ups ok, 0 failed)\n");
    // The retransmission comes after the 1 s ACK timeout.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");

    let received = fake.received_when(|r| r.len() >= 7);
    let of = |i: usize| -> Vec<Vec<u8>> {
        received.iter().filter(|r| r.device == Some(i)).map(|r| r.datagram.clone()).collect()
    };
    // Device 0: /oic/res twice, byte for byte the same (same Message ID and token), then /oic/d.
    let device0 = of(0);
    assert_eq!(device0.len(), 3);
    assert_eq!(device0[0], device0[1]);
    // Device 1: /oic/res, /oic/d, then the empty ACK of the separate CON response.
    let device1 = of(1);
    assert_eq!(device1.len(), 3);
    let ack = Message::parse(&device1[2]).unwrap();
    assert_eq!((ack.ty(), ack.code()), (MessageType::Acknowledgement, Code::EMPTY));
}

#[test]
fn owned_query_variants() {
    let fake = Fake::start(localhost6(), devices(1), Noise::default());
    for (owned, query) in [("true", vec![b"owned=TRUE".to_vec()]), ("none", vec![])] {
        let before = fake.received().len();
        let out = discover(&["--to", &fake.to(), "--wait", "0.2", "--owned", owned]);
        assert_eq!(out.status.code(), Some(0));
        let received = fake.received_when(|r| r.len() > before);
        let request = Message::parse(&received[before].datagram).unwrap();
        let got: Vec<Vec<u8>> = request.uri_query().map(<[u8]>::to_vec).collect();
        assert_eq!(got, query, "--owned {owned}");
    }
}

#[test]
fn no_answer_is_not_an_error() {
    let mut fleet = devices(1);
    fleet[0].silent = true;
    let fake = Fake::start(localhost6(), fleet, Noise::default());
    let out = discover(&["--to", &fake.to(), "--wait", "0.2", "--follow"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(stderr(&out), "0 devices answered (0 follow-ups ok, 0 failed)\n");
}

#[test]
fn a_thousand_devices_are_followed_in_a_few_seconds() {
    // A socket per device: fewer devices where the open-file limit is the common 1024.
    let n = if open_file_limit() >= 2048 { 1000 } else { 400 };
    let fake = Fake::start(localhost6(), devices(n), Noise::default());
    let started = Instant::now();
    let out = discover(&["--to", &fake.to(), "--wait", "1", "--follow", "--json"]);
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), format!("{n} devices answered ({n} follow-ups ok, 0 failed)\n"));
    assert_eq!(stdout_lines(&out).len(), n as usize);
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
}

#[test]
fn usage_errors_exit_2() {
    let cases: [(&[&str], &str); 6] = [
        (&["--group", "ff02::1"], "not an OCF group"),
        (&["--group", "all", "--to", "::1"], "cannot be used with"),
        (&["--iface", "no-such-if0"], "no such interface: no-such-if0"),
        (&["--wait=-1"], "not a number of seconds"),
        (&["--to", "ff02::158"], "use --group for groups"),
        (&["--to", "fe80::1"], "link-local"),
    ];
    for (args, message) in cases {
        let out = discover(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
}

/// `--device UUID` adds `deviceuuid=UUID` (hyphenated, lower case, whatever spelling
/// was given) as a Uri-Query option of its own; a value that is not a UUID is a usage error.
#[test]
fn device_sends_deviceuuid() {
    let fake = Fake::start(localhost6(), devices(1), Noise::default());
    let named = "deviceuuid=0d0c0000-0000-4000-8000-000000000001".as_bytes().to_vec();
    let cases = [
        (vec!["--device", "0d0c0000-0000-4000-8000-000000000001"], vec![b"owned=FALSE".to_vec()]),
        (vec!["--device", "0D0C0000000040008000000000000001"], vec![b"owned=FALSE".to_vec()]),
        (vec!["--device", "0d0c0000-0000-4000-8000-000000000001", "--owned", "none"], vec![]),
    ];
    let to = fake.to();
    for (args, owned) in cases {
        let before = fake.received().len();
        let mut all = vec!["--to", to.as_str(), "--wait", "0.2"];
        all.extend(&args);
        let out = discover(&all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        let received = fake.received_when(|r| r.len() > before);
        let request = Message::parse(&received[before].datagram).unwrap();
        let got: Vec<Vec<u8>> = request.uri_query().map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> = owned.into_iter().chain([named.clone()]).collect();
        assert_eq!(got, want, "{args:?}");
        assert!(request.path_is(&[b"oic", b"sec", b"doxm"]));
        assert_eq!(request.accept(), Some(10_000));
    }
    let out = discover(&["--to", &to, "--device", "lamp-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--device"), "{}", stderr(&out));
}
