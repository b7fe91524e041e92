//! `--follow`: what the IoTivity-Lite OBT does after each doxm answer (SPEC section 5).
//!
//! For every answer, two confirmable exchanges with the answer's source endpoint, one after the
//! other: `GET /oic/res?rt=oic.r.doxm` (the doxm link must be anchored at `ocf://<deviceuuid>`;
//! its `eps` are kept) and `GET /oic/d` (`di` must be the deviceuuid; `n` is kept). Neither
//! carries Accept, as the OBT's `/oic/res` request does not.
//!
//! Reliability is RFC 7252 section 4.2, simplified: a CON is retransmitted with the same Message
//! ID and token after [`Timing::ack_timeout`], doubling each time, at most
//! [`Timing::max_retransmit`] times; the exchange fails when the last wait ends. An ACK is
//! matched by Message ID and must come from the endpoint the request went to: a piggybacked
//! response must also carry the request's token; an empty ACK stops retransmission and the
//! separate response (CON, which gets an empty ACK back, or NON) is matched by token. A RST fails
//! the exchange.
//!
//! Up to [`Follower::window`] exchanges are outstanding at once on the one socket, so that a
//! thousand devices are followed in a few round trips rather than a thousand.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use doxm_gate::wire::{option, Code, Message, MessageType, Writer};
use uuid::Uuid;

use super::net::{unmap, Probe};
use super::read;

/// Retransmission parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first wait for an ACK; each retransmission doubles it.
    pub ack_timeout: Duration,
    /// Retransmissions after the first transmission.
    pub max_retransmit: u32,
}

impl Timing {
    /// 1 s, doubling, 3 retransmissions: transmissions at 0, 1, 3 and 7 s, failure at 15 s.
    pub const DEFAULT: Timing = Timing { ack_timeout: Duration::from_secs(1), max_retransmit: 3 };

    /// From the first transmission to giving up: `ack_timeout * (2^(max_retransmit + 1) - 1)`.
    fn lifetime(self) -> Duration {
        self.ack_timeout * ((2u32 << self.max_retransmit.min(16)) - 1)
    }
}

/// Fresh Message IDs (sequential from a random start) and tokens (8 random bytes).
#[derive(Debug)]
pub struct Ids {
    rng: fastrand::Rng,
    next_mid: u16,
}

impl Ids {
    /// Seeded from the OS-seeded std hasher, through fastrand.
    pub fn new() -> Ids {
        let mut rng = fastrand::Rng::new();
        let next_mid = rng.u16(..);
        Ids { rng, next_mid }
    }

    /// The next Message ID.
    pub fn mid(&mut self) -> u16 {
        let mid = self.next_mid;
        self.next_mid = mid.wrapping_add(1);
        mid
    }

    /// A fresh 8-byte token.
    pub fn token(&mut self) -> [u8; 8] {
        self.rng.u64(..).to_be_bytes()
    }
}

/// The follow-up of one answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The caller's handle for the answer.
    pub answer: usize,
    /// The answer's source endpoint: where both requests go.
    pub target: SocketAddr,
    /// The answer's deviceuuid, which the anchor and `di` must match.
    pub deviceuuid: Uuid,
}

/// A successful follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Followed {
    /// `n` from `/oic/d`.
    pub name: String,
    /// The doxm link's `eps`.
    pub eps: Vec<String>,
}

/// A failed follow-up: what failed, and what was learnt before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// E.g. `/oic/res: anchor ocf://... is not ocf://...`.
    pub error: String,
    /// The `eps`, when `/oic/res` succeeded.
    pub eps: Vec<String>,
}

/// A finished follow-up, for [`Job::answer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The job's answer handle.
    pub answer: usize,
    /// The outcome.
    pub result: Result<Followed, Failed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Res,
    Device,
}

impl Step {
    fn path(self) -> &'static str {
        match self {
            Step::Res => "/oic/res",
            Step::Device => "/oic/d",
        }
    }
}

/// One outstanding CON exchange.
#[derive(Debug)]
struct Exchange {
    job: Job,
    step: Step,
    /// The `eps` learnt at [`Step::Res`].
    eps: Vec<String>,
    mid: u16,
    token: [u8; 8],
    datagram: Vec<u8>,
    transmissions: u32,
    /// The current wait (doubles on each retransmission).
    timeout: Duration,
    /// When to retransmit, or give up after the last transmission.
    next_at: Instant,
    /// An empty ACK came: no more retransmissions, wait for the separate response.
    acked: bool,
    give_up_at: Instant,
    last_send_error: Option<String>,
}

/// Runs the follow-ups; see the [module docs](self).
#[derive(Debug)]
pub struct Follower {
    queue: VecDeque<Job>,
    inflight: Vec<Exchange>,
    window: usize,
    timing: Timing,
    ids: Ids,
}

/// What a datagram did to an exchange.
enum Event<'m> {
    /// A response to the exchange's request (piggybacked or separate).
    Response(Message<'m>),
    /// An empty ACK: a separate response will follow.
    EmptyAck,
    /// The exchange failed.
    Failure(String),
}

impl Follower {
    /// A follower with at most `window` outstanding exchanges.
    pub fn new(window: usize, timing: Timing, ids: Ids) -> Follower {
        Follower {
            queue: VecDeque::new(),
            inflight: Vec::new(),
            window: window.max(1),
            timing,
            ids,
        }
    }

    /// Queues the follow-up of one answer; it starts at the next [`Follower::poll`].
    pub fn push(&mut self, job: Job) {
        self.queue.push_back(job);
    }

    /// When [`Follower::poll`] next has something to do (a retransmission or a give-up);
    /// `None` once every queued job has finished (after a poll has started what was queued).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.inflight.iter().map(|x| x.next_at).min()
    }

    /// Starts queued jobs while the window has room, retransmits and gives up what is due.
    pub fn poll(&mut self, now: Instant, probe: &Probe, finished: &mut Vec<Finished>) {
        let mut i = 0;
        while i < self.inflight.len() {
            let x = &mut self.inflight[i];
            if now < x.next_at {
                i += 1;
                continue;
            }
            if x.acked || x.transmissions > self.timing.max_retransmit || now >= x.give_up_at {
                let x = self.inflight.swap_remove(i);
                let error = match (x.acked, &x.last_send_error) {
                    (true, _) => "no separate response after an empty ACK".to_owned(),
                    (false, None) => format!("no response after {} transmissions", x.transmissions),
                    (false, Some(err)) => format!(
                        "no response after {} transmissions (send error: {err})",
                        x.transmissions
                    ),
                };
                finished.push(fail(x, error));
                continue;
            }
            x.timeout *= 2;
            transmit(x, now, probe);
            i += 1;
        }
        while self.inflight.len() < self.window {
            let Some(job) = self.queue.pop_front() else { break };
            let x = self.exchange(job, Step::Res, Vec::new(), now);
            self.start(x, now, probe);
        }
    }

    /// Offers a received datagram; returns whether it belonged to a follow-up exchange.
    pub fn on_datagram(
        &mut self,
        now: Instant,
        msg: &Message<'_>,
        source: SocketAddr,
        probe: &Probe,
        finished: &mut Vec<Finished>,
    ) -> bool {
        let Some((i, event)) = self.classify(msg, source) else { return false };
        match event {
            Event::EmptyAck => {
                let x = &mut self.inflight[i];
                x.acked = true;
                x.next_at = x.give_up_at;
            }
            Event::Failure(error) => {
                let x = self.inflight.swap_remove(i);
                finished.push(fail(x, error));
            }
            Event::Response(response) => {
                if response.ty() == MessageType::Confirmable {
                    // A separate response that came as CON (RFC 7252 section 5.2.2).
                    super::ack(probe, response.message_id(), source);
                }
                let x = self.inflight.swap_remove(i);
                self.advance(x, &response, now, probe, finished);
            }
        }
        true
    }

    /// Finds the exchange `msg` belongs to, and what it means for it.
    fn classify<'m>(&self, msg: &Message<'m>, source: SocketAddr) -> Option<(usize, Event<'m>)> {
        let i = match msg.ty() {
            MessageType::Acknowledgement | MessageType::Reset => {
                self.inflight.iter().position(|x| x.mid == msg.message_id())?
            }
            MessageType::Confirmable | MessageType::NonConfirmable => {
                self.inflight.iter().position(|x| x.token == msg.token())?
            }
        };
        let x = &self.inflight[i];
        let (from, to) = (unmap(source), unmap(x.job.target));
        if (from.ip(), from.port()) != (to.ip(), to.port()) {
            let error = format!("{} from {from}, not from {to}", msg.ty().as_str());
            return Some((i, Event::Failure(error)));
        }
        let event = match msg.ty() {
            MessageType::Reset => Event::Failure("reset (RST)".to_owned()),
            MessageType::Acknowledgement if msg.code() == Code::EMPTY => Event::EmptyAck,
            MessageType::Acknowledgement if msg.token() != x.token => Event::Failure(format!(
                "piggybacked response with token {}, not {}",
                hex::encode(msg.token()),
                hex::encode(x.token)
            )),
            _ if !msg.code().is_request() && msg.code() != Code::EMPTY => Event::Response(*msg),
            // A request or a bare CON/NON with our token: not a response.
            _ => return None,
        };
        Some((i, event))
    }

    /// Checks a response and moves the job on: `/oic/res` leads to `/oic/d`, `/oic/d` ends it.
    fn advance(
        &mut self,
        x: Exchange,
        response: &Message<'_>,
        now: Instant,
        probe: &Probe,
        finished: &mut Vec<Finished>,
    ) {
        match x.step {
            Step::Res => match read::doxm_link(response, &x.job.deviceuuid) {
                Ok(link) => {
                    let next = self.exchange(x.job, Step::Device, link.eps, now);
                    self.start(next, now, probe);
                }
                Err(error) => finished.push(fail(x, error)),
            },
            Step::Device => match read::device_name(response, &x.job.deviceuuid) {
                Ok(name) => finished.push(Finished {
                    answer: x.job.answer,
                    result: Ok(Followed { name, eps: x.eps }),
                }),
                Err(error) => finished.push(fail(x, error)),
            },
        }
    }

    fn exchange(&mut self, job: Job, step: Step, eps: Vec<String>, now: Instant) -> Exchange {
        let mid = self.ids.mid();
        let token = self.ids.token();
        Exchange {
            datagram: request(step, mid, &token),
            job,
            step,
            eps,
            mid,
            token,
            transmissions: 0,
            timeout: self.timing.ack_timeout,
            next_at: now,
            acked: false,
            give_up_at: now + self.timing.lifetime(),
            last_send_error: None,
        }
    }

    fn start(&mut self, mut x: Exchange, now: Instant, probe: &Probe) {
        transmit(&mut x, now, probe);
        self.inflight.push(x);
    }
}

/// Sends (or re-sends) the exchange's request and arms its timer.
fn transmit(x: &mut Exchange, now: Instant, probe: &Probe) {
    x.transmissions += 1;
    x.next_at = now + x.timeout;
    if let Err(err) = probe.send_to(&x.datagram, x.job.target) {
        x.last_send_error = Some(err.to_string());
    }
}

fn fail(x: Exchange, error: String) -> Finished {
    Finished {
        answer: x.job.answer,
        result: Err(Failed { error: format!("{}: {error}", x.step.path()), eps: x.eps }),
    }
}

/// The CON GET of `step`: `/oic/res?rt=oic.r.doxm` or `/oic/d`, without Accept.
fn request(step: Step, mid: u16, token: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let written =
        Writer::new(&mut buf, MessageType::Confirmable, Code::GET, mid, token).and_then(|mut w| {
            w.option(option::URI_PATH, b"oic")?;
            match step {
                Step::Res => {
                    w.option(option::URI_PATH, b"res")?;
                    w.option(option::URI_QUERY, b"rt=oic.r.doxm")?;
                }
                Step::Device => {
                    w.option(option::URI_PATH, b"d")?;
                }
            }
            Ok(w.finish())
        });
    // 64 bytes hold either request (at most 36); an error would be a bug, sent as nothing.
    buf[..written.unwrap_or(0)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_requests() {
        let res = request(Step::Res, 0x1234, b"12345678");
        let msg = Message::parse(&res).unwrap();
        assert_eq!(msg.ty(), MessageType::Confirmable);
        assert_eq!(msg.code(), Code::GET);
        assert_eq!(msg.message_id(), 0x1234);
        assert_eq!(msg.token(), b"12345678");
        assert!(msg.path_is(&[b"oic", b"res"]));
        assert_eq!(msg.uri_query().collect::<Vec<_>>(), [b"rt=oic.r.doxm"]);
        assert_eq!(msg.accept(), None);
        let d = request(Step::Device, 7, b"abcdefgh");
        let msg = Message::parse(&d).unwrap();
        assert!(msg.path_is(&[b"oic", b"d"]));
        assert_eq!(msg.uri_query().count(), 0);
    }

    #[test]
    fn test_lifetime() {
        assert_eq!(Timing::DEFAULT.lifetime(), Duration::from_secs(15));
        let quick = Timing { ack_timeout: Duration::from_millis(100), max_retransmit: 0 };
        assert_eq!(quick.lifetime(), Duration::from_millis(100));
    }

    #[test]
    fn test_ids() {
        let mut ids = Ids::new();
        let first = ids.mid();
        assert_eq!(ids.mid(), first.wrapping_add(1));
        assert_ne!(ids.token(), ids.token());
    }
}
