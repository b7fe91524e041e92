//! The mio event loop: a thin driver around the sans-IO [`Engine`].
//!
//! One thread owns the engine and every socket. It sleeps in `poll` until a socket is readable,
//! a signal arrives, or the engine's next answer comes due; it then drains the readable sockets
//! in batches (`recvmmsg`), hands each datagram to [`Engine::handle`] with the metadata the
//! kernel reported (source, destination, interface), and sends what [`Engine::poll_transmit`]
//! yields in batches (`sendmmsg`), each from its device's endpoint. Every few seconds it looks
//! at the interfaces again and joins the groups on any that appeared or changed address.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use tracing::{debug, info, warn};

use super::board::{Board, Published};
use super::claim::{self, Claim};
use super::net::{self, Interface};
use super::sys::{self, Outgoing, Received, BATCH, DATAGRAM_MAX};
use crate::engine::endpoint::EndpointPlan;
use crate::engine::{Engine, Meta, Transmit, Verdict};
use crate::fleet::DeviceId;

/// What the driver needs beyond the engine's own configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// Interface names to serve; empty: every interface that is up and not loopback.
    pub interfaces: Vec<String>,
    /// The groups to join.
    pub groups: Vec<IpAddr>,
    /// The CoAP port (5683).
    pub port: u16,
    /// How often to look for interfaces that appeared or changed.
    pub rejoin_every: Duration,
}

/// Counters of the driver itself (the engine counts everything else).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams longer than the receive buffer (dropped).
    pub truncated: u64,
    /// Datagrams the kernel dropped because a socket's receive buffer was full (SO_RXQ_OVFL).
    /// The kernel reports them with the next datagram that socket receives, so drops at the
    /// very end of a flood show up with the next datagram.
    pub receive_overflows: u64,
    /// Multicast datagrams that reached a device's own port (dropped: not discovery).
    pub multicast_on_device_port: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams the kernel refused (ENOBUFS, EHOSTUNREACH, ...), dropped and counted.
    pub send_failed: u64,
    /// Group joins done after start (interfaces that came back or appeared).
    pub rejoins: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    GroupV6,
    GroupV4,
    Device(DeviceId),
}

struct Bound {
    socket: UdpSocket,
    role: Role,
    port: u16,
    /// The socket's SO_RXQ_OVFL count at the last datagram that carried it.
    overflows: u32,
}

const SIGNAL: Token = Token(usize::MAX - 1);

/// The running gate: sockets, the engine and the loop.
pub struct Driver {
    poll: Poll,
    sockets: Vec<Bound>,
    /// Port mode: socket index by device id.
    device_socket: HashMap<u32, usize>,
    group_v6: Option<usize>,
    group_v4: Option<usize>,
    engine: Engine,
    config: DriverConfig,
    joined: Vec<Interface>,
    /// Interfaces (by index) already warned about a missing family: `[IPv6, IPv4]`. Cleared
    /// when the family shows up, so that losing it again warns again.
    missing_warned: HashMap<u32, [bool; 2]>,
    stats: DriverStats,
    /// Send buffers, one per datagram of a batch.
    scratch: Vec<[u8; DATAGRAM_MAX]>,
    /// Address mode: this gate's claims on its prefixes (held while it runs).
    claims: Vec<Claim>,
    /// Histograms kept here without locks and copied to the board twice a second.
    figures: Published,
    board: Option<Arc<Board>>,
}

/// How often the figures are published for the control plane.
const PUBLISH_EVERY: Duration = Duration::from_millis(500);

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sockets", &self.sockets.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Driver {
    /// Opens the sockets for `engine`'s endpoint plan and joins the groups.
    ///
    /// # Errors
    /// A socket that cannot be opened or bound, or no interface to serve.
    pub fn new(engine: Engine, plan: EndpointPlan, config: DriverConfig) -> io::Result<Driver> {
        let address_mode = matches!(plan, EndpointPlan::Addresses { .. });
        let poll = Poll::new()?;
        let mut driver = Driver {
            poll,
            sockets: Vec::new(),
            device_socket: HashMap::new(),
            group_v6: None,
            group_v4: None,
            engine,
            joined: Vec::new(),
            missing_warned: HashMap::new(),
            stats: DriverStats::default(),
            scratch: vec![[0u8; DATAGRAM_MAX]; BATCH],
            figures: Published::default(),
            board: None,
            claims: Vec::new(),
            config,
        };
        let wants_v6 = driver.config.groups.iter().any(IpAddr::is_ipv6);
        let wants_v4 = driver.config.groups.iter().any(IpAddr::is_ipv4);
        if wants_v6 || matches!(plan, EndpointPlan::Addresses { v6: Some(_), .. }) {
            let s = net::group_socket_v6(driver.config.port, address_mode)?;
            driver.group_v6 = Some(driver.add(s, Role::GroupV6, driver.config.port)?);
        }
        if wants_v4 || matches!(plan, EndpointPlan::Addresses { v4: Some(_), .. }) {
            let s = net::group_socket_v4(driver.config.port, address_mode)?;
            driver.group_v4 = Some(driver.add(s, Role::GroupV4, driver.config.port)?);
        }
        match plan {
            EndpointPlan::Ports { base, count } => {
                let limit = sys::raise_nofile_limit(u64::from(count) + 256)?;
                if limit < u64::from(count) + 64 {
                    return Err(io::Error::other(format!(
                        "port mode needs {} open files for {count} device ports, the limit is {limit}: \
                         raise it (ulimit -n) or use address mode",
                        u64::from(count) + 64
                    )));
                }
                for id in 0..u32::from(count) {
                    let port = base + id as u16;
                    let s = net::device_socket(port)?;
                    let at = driver.add(s, Role::Device(DeviceId(id)), port)?;
                    driver.device_socket.insert(id, at);
                }
            }
            EndpointPlan::Addresses { port, .. } if port != driver.config.port => {
                return Err(io::Error::other(
                    "address mode serves devices on the group port: set the device port to it",
                ));
            }
            EndpointPlan::Addresses { v6, v4, port } => {
                let v6 = v6.map(|(ip, len)| (IpAddr::V6(ip), len));
                let v4 = v4.map(|(ip, len)| (IpAddr::V4(ip), len));
                for (prefix, len) in v6.into_iter().chain(v4) {
                    driver.claims.push(claim::claim_prefix(prefix, len, port)?);
                }
            }
        }
        driver.rejoin();
        if driver.joined.is_empty() && !driver.config.groups.is_empty() {
            return Err(io::Error::other(
                "no interface could join the groups (is an interface up? name it with --iface)",
            ));
        }
        Ok(driver)
    }

    /// Publishes counters and histograms to `board` twice a second (for `/metrics`).
    pub fn publish_to(&mut self, board: Arc<Board>) {
        self.board = Some(board);
    }

    /// The interfaces the groups are joined on.
    pub fn interfaces(&self) -> &[Interface] {
        &self.joined
    }

    /// The engine (for its counters).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// Runs until SIGINT or SIGTERM; pending answers are then dropped and counted.
    ///
    /// # Errors
    /// A failure of `poll` itself.
    pub fn run(&mut self) -> io::Result<()> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        self.poll.registry().register(&mut signals, SIGNAL, Interest::READABLE)?;
        let mut events = Events::with_capacity(1024);
        let mut bufs = vec![[0u8; DATAGRAM_MAX]; BATCH];
        let mut meta = [Received::EMPTY; BATCH];
        let mut next_rejoin = Instant::now() + self.config.rejoin_every;
        let mut next_publish = Instant::now();
        loop {
            let now = Instant::now();
            let timer = next_rejoin.min(next_publish);
            let wake = self.engine.poll_timeout().map_or(timer, |t| t.min(timer));
            if let Err(e) = self.poll.poll(&mut events, Some(wake.saturating_duration_since(now))) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in &events {
                if event.token() == SIGNAL {
                    if signals.pending().next().is_some() {
                        let dropped = self.engine.shutdown();
                        info!(dropped_answers = dropped, "stopping on signal");
                        return Ok(());
                    }
                    continue;
                }
                self.drain(event.token().0, &mut bufs, &mut meta);
            }
            self.flush(Instant::now());
            if Instant::now() >= next_rejoin {
                self.rejoin();
                next_rejoin = Instant::now() + self.config.rejoin_every;
            }
            if Instant::now() >= next_publish {
                self.publish();
                next_publish = Instant::now() + PUBLISH_EVERY;
            }
        }
    }

    fn publish(&mut self) {
        let Some(board) = &self.board else { return };
        self.figures.engine = self.engine.stats().clone();
        self.figures.driver = self.stats;
        self.figures.pending_answers = self.engine.pending_answers();
        self.figures.pending_sources = self.engine.pending_sources();
        board.publish(&self.figures);
    }

    fn add(&mut self, socket: socket2::Socket, role: Role, port: u16) -> io::Result<usize> {
        let mut socket = UdpSocket::from_std(socket.into());
        let token = Token(self.sockets.len());
        self.poll.registry().register(&mut socket, token, Interest::READABLE)?;
        self.sockets.push(Bound { socket, role, port, overflows: 0 });
        Ok(token.0)
    }

    /// Reads every waiting datagram of socket `at` and hands it to the engine.
    fn drain(&mut self, at: usize, bufs: &mut [[u8; DATAGRAM_MAX]], meta: &mut [Received]) {
        let Some(bound) = self.sockets.get(at) else { return };
        let (role, port) = (bound.role, bound.port);
        loop {
            let got = match sys::recv_batch(&self.sockets[at].socket, bufs, meta) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!(error = %e, "receive failed");
                    return;
                }
            };
            let now = Instant::now();
            for i in 0..got {
                self.stats.received += 1;
                let m = meta[i];
                if let Some(count) = m.overflows {
                    let seen = &mut self.sockets[at].overflows;
                    self.stats.receive_overflows += u64::from(count.wrapping_sub(*seen));
                    *seen = count;
                }
                if m.truncated {
                    self.stats.truncated += 1;
                    continue;
                }
                let destination_ip = m.destination.unwrap_or(match role {
                    Role::GroupV4 => IpAddr::from([0, 0, 0, 0]),
                    _ => IpAddr::from([0u16; 8]),
                });
                if matches!(role, Role::Device(_)) && destination_ip.is_multicast() {
                    self.stats.multicast_on_device_port += 1;
                    continue;
                }
                let meta = Meta {
                    source: m.source,
                    destination: SocketAddr::new(destination_ip, port),
                    interface: m.interface,
                };
                let started = Instant::now();
                let verdict = self.engine.handle(now, &meta, &bufs[i][..m.len]);
                let _ = self.figures.decision_ns.record(started.elapsed().as_nanos().max(1) as u64);
                if let Verdict::Answering(n) = verdict {
                    let _ = self.figures.answers_per_request.record(n.max(1) as u64);
                }
            }
            // Unicast responses are due at once; answer them before reading more.
            self.flush(now);
        }
    }

    /// Sends everything the engine has due, batching consecutive datagrams of one socket.
    fn flush(&mut self, now: Instant) {
        let mut data = std::mem::take(&mut self.scratch);
        let mut batch: [(usize, Option<Transmit>); BATCH] = [(0, None); BATCH];
        let mut len = 0;
        while let Some(t) = self.engine.poll_transmit(now, &mut data[len]) {
            if !t.late.is_zero() {
                let _ = self.figures.lateness_us.record(t.late.as_micros().max(1) as u64);
            }
            let Some(at) = self.socket_for(&t) else {
                self.stats.send_failed += 1;
                continue;
            };
            if len > 0 && batch[0].0 != at {
                // Another socket: send the batch, then start a new one with this datagram.
                self.send(&batch[..len], &data);
                data.swap(0, len);
                len = 0;
            }
            batch[len] = (at, Some(t));
            len += 1;
            if len == BATCH {
                self.send(&batch[..len], &data);
                len = 0;
            }
        }
        if len > 0 {
            self.send(&batch[..len], &data);
        }
        self.scratch = data;
    }

    fn socket_for(&self, t: &Transmit) -> Option<usize> {
        match t.source.ip {
            Some(IpAddr::V6(_)) => self.group_v6,
            Some(IpAddr::V4(_)) => self.group_v4,
            None => self.device_socket.get(&t.device.0).copied(),
        }
    }

    fn send(&mut self, batch: &[(usize, Option<Transmit>)], data: &[[u8; DATAGRAM_MAX]]) {
        let Some(&(at, _)) = batch.first() else { return };
        let dual_stack = matches!(self.sockets[at].role, Role::Device(_));
        let unused = Outgoing {
            data: &[],
            destination: SocketAddr::from(([0, 0, 0, 0], 0)),
            source_ip: None,
            interface: 0,
        };
        let mut out = [unused; BATCH];
        let mut n = 0;
        for (i, (_, t)) in batch.iter().enumerate() {
            if let Some(t) = t {
                out[n] = Outgoing {
                    data: &data[i][..t.len],
                    destination: t.destination,
                    source_ip: t.source.ip,
                    interface: t.interface,
                };
                n += 1;
            }
        }
        let out = &out[..n];
        let mut done = 0;
        let mut retries = 0;
        while done < out.len() {
            match sys::send_batch(&self.sockets[at].socket, &out[done..], dual_stack) {
                Ok(sent) => {
                    done += sent.max(1);
                    self.stats.sent += sent as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && retries < 3 => {
                    // The socket buffer is full: give the kernel a moment, then drop. A
                    // deliberate, bounded wait (at most 3 x 200 us per batch, and only while
                    // the 4 MB send buffer is full, i.e. the link is saturated) rather than
                    // writable interest and a queue of unsent answers: answers are paced far
                    // below a saturated link's rate, so this path means a burst the kernel
                    // could not take, and dropping (counted) after a short wait is the answer
                    // the leisure window's spread already allows.
                    retries += 1;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(e) => {
                    // ENOBUFS, EHOSTUNREACH, ENETUNREACH, ...: drop this one, keep going.
                    debug!(error = %e, destination = %out[done].destination, "send failed");
                    self.stats.send_failed += 1;
                    done += 1;
                }
            }
        }
    }

    /// Joins the groups on every configured interface that is new or changed.
    fn rejoin(&mut self) {
        let current = match net::interfaces(&self.config.interfaces) {
            Ok(list) => list,
            Err(e) => {
                warn!(error = %e, "cannot list interfaces");
                return;
            }
        };
        let first = self.joined.is_empty();
        for gone in self.joined.iter().filter(|i| !current.contains(i)) {
            info!(interface = %gone.name, index = gone.index, "interface down, gone or changed");
        }
        let mut joined = Vec::with_capacity(current.len());
        for interface in current {
            self.warn_missing_families(&interface);
            if self.joined.contains(&interface) {
                joined.push(interface);
                continue;
            }
            let mut ok = false;
            for &group in &self.config.groups {
                let socket = match group {
                    IpAddr::V6(_) if interface.ipv6 => self.group_v6,
                    IpAddr::V4(_) if interface.ipv4.is_some() => self.group_v4,
                    _ => None,
                };
                let Some(at) = socket else { continue };
                let raw = socket2::SockRef::from(&self.sockets[at].socket);
                match net::join(&raw, group, &interface) {
                    Ok(()) => ok = true,
                    Err(e) => {
                        debug!(%group, interface = %interface.name, error = %e, "join failed")
                    }
                }
            }
            if ok {
                if !first {
                    self.stats.rejoins += 1;
                }
                info!(
                    interface = %interface.name,
                    index = interface.index,
                    ipv4 = interface.ipv4.is_some(),
                    ipv6 = interface.ipv6,
                    "joined the groups"
                );
                joined.push(interface);
            }
        }
        self.joined = joined;
    }

    /// Logs at `warn`, once per interface, each family the groups need that `interface` lacks
    /// (SPEC 4 "Networks": never fatal while another family serves; the interface is looked at
    /// again every few seconds, and an address added later is joined then).
    fn warn_missing_families(&mut self, interface: &Interface) {
        let wants_v6 = self.config.groups.iter().any(IpAddr::is_ipv6);
        let wants_v4 = self.config.groups.iter().any(IpAddr::is_ipv4);
        let warned = self.missing_warned.entry(interface.index).or_default();
        for (slot, wanted, present, family) in
            [(0, wants_v6, interface.ipv6, "IPv6"), (1, wants_v4, interface.ipv4.is_some(), "IPv4")]
        {
            if !wanted || present {
                warned[slot] = false;
            } else if !warned[slot] {
                warned[slot] = true;
                warn!(
                    interface = %interface.name,
                    index = interface.index,
                    family,
                    "interface has no {family} address: its {family} groups are not joined \
                     (joined when an address appears)"
                );
            }
        }
    }
}
