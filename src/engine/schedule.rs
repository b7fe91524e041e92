//! Pending multicast answers, paced inside each request's leisure window (RFC 7252 s8.2).
//!
//! Every answer to a multicast request must leave at an independent, uniformly random time in
//! `[0, L)` after the request. Storing one timer per answer would cost a heap entry per device;
//! instead each request keeps its answering devices in random order and draws their send times
//! as the *order statistics* of `E` uniform samples, one at a time, already sorted:
//!
//! ```text
//!   t_0 = 0,   t_k = t_(k-1) + (L - t_(k-1)) * (1 - U_k ^ (1 / (E - k + 1))),   U_k ~ U(0, 1)
//! ```
//!
//! Assigning shuffled devices to sorted times gives exactly the joint distribution of `E`
//! independent uniform times. So the scheduler needs one heap entry per *request* (its next due
//! time) and 8 bytes per pending answer, and shedding a whole request is O(1).
//!
//! # Fair share (SPEC 7)
//!
//! Sources are spoofable, so no source may starve another: answers that are due leave by
//! **deficit round robin over sources** (Shreedhar and Varghese, 1995), then round robin over
//! each source's requests. Every source with an answer due sits in a ring; the source at the
//! front sends while its deficit covers its next answer's bytes, otherwise it gets a quantum
//! ([`QUANTUM`]) and goes to the back. So when the pacer is the bottleneck, each source with
//! answers due gets an equal share of the bytes that leave, whatever the others have pending,
//! and a new source's first due answer waits at most one round. Nothing is reserved ahead of
//! time: an answer that is shed, cancelled or expired takes no turn, and the others' turns come
//! sooner at once. The engine plans each request's window for the share it will get
//! (`limits::AnswerBudget`), and the schedule enforces it.
//!
//! The **pending bound** is shared the same way: at most `max_requests` requests and
//! `max_answers` answers pending. A new request may take whatever room is free plus its own
//! source's older answers (oldest first: a repeated discovery replaces its predecessor), or up
//! to its source's equal share of `max_answers` (`max_answers / sources`), taken from the
//! sources holding the most above their own share, largest first; so many sources cannot push
//! one out, and one source cannot hold the bound. A request beyond that is truncated (counted
//! as shed). When every request slot is taken, the oldest request of the source with the most
//! requests makes way.
//!
//! # No answer after its window (SPEC 4)
//!
//! Every request keeps its **deadline**, the end of its window (`now + closes` of
//! [`Schedule::insert`]), and no answer leaves after it: when an answer surfaces past its
//! request's deadline, because the send pacer held it (overlapping windows) or because the
//! driver's loop came late, the request's remaining answers are all **expired** at once
//! ([`Popped::Expired`]), counted by the engine as `answers_expired`, and never sent late.
//! So an answer leaves at most at the deadline, and the leisure window is a promise kept, not a
//! target.
//!
//! # The timer grain (SPEC 4)
//!
//! Each answer has its own random send time, but the engine's driver does not wake for each:
//! the engine rounds the wake-up it asks for up to a 10 ms grid (`TIMER_GRAIN`, the grain SPEC
//! 4 allows; the grid starts at the first datagram the engine handled, so it is shared by every
//! request), and every answer due by then leaves in that one wake-up, batched. So a discovery
//! costs at most one wake-up per 10 ms of its window, not one per answer. The rounding may put
//! an answer drawn in a window's last grain at the deadline's doorstep, and drivers wake late:
//! mio rounds its timeout up to a millisecond, the kernel adds timer slack, and a busy host
//! runs the loop later still. For neither to expire answers, send times are drawn at least
//! [`SEND_SLACK`] before the deadline: the grain plus [`LATE_ALLOWANCE`] (20 ms). Only
//! the grain was kept once, and a wake-up 1 ms late expired the last answers of about one
//! discovery of 1,000 answers in six in the lab (the engine test
//! `a_driver_waking_late_within_the_allowance_loses_no_answer` tries every phase):
//!
//! ```text
//! deadline = max(closes, min(MIN_SPAN, max(longest, closes)))
//! draws in [0, min(closes, deadline - min(SEND_SLACK, deadline / 2)))      after the request
//! ```
//!
//! The spread is kept: a 2 s window gives up its last 30 ms (1.5 %). Only a window shorter
//! than `MIN_SPAN` (60 ms: a configured leisure under 60 ms, e.g. leisure 0 and a small
//! request) has its deadline moved, to `MIN_SPAN` after the request (never past the longest
//! window the engine allows, `longest = max(leisure, max_window)`): its answers are still
//! drawn in the budget's short window, so "leisure 0" still answers at once, but a wake-up a
//! few milliseconds late sends them instead of expiring them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::fleet::DeviceId;
use crate::wire::coap::MAX_TOKEN_LEN;
use crate::wire::ocf::View;

/// One answer owed by a device: which slot, and which incarnation of it (so that an answer
/// never leaves for a device that replaced the one it was scheduled for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// The device slot.
    pub device: DeviceId,
    /// The slot's incarnation when the answer was scheduled.
    pub incarnation: u32,
}

/// What every answer to one request shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Where the request came from: answers go back there.
    pub peer: SocketAddr,
    /// The interface the request arrived on.
    pub interface: u32,
    /// The request's token, echoed in each answer.
    pub token: [u8; MAX_TOKEN_LEN],
    /// The token length.
    pub token_len: u8,
    /// Default or baseline doxm view.
    pub view: View,
}

impl RequestInfo {
    /// The token bytes.
    pub fn token(&self) -> &[u8] {
        &self.token[..usize::from(self.token_len)]
    }
}

#[derive(Debug)]
struct Pending {
    info: RequestInfo,
    /// Devices still owed an answer, in random order, consumed from the end.
    owed: Vec<Owed>,
    start: Instant,
    window: Duration,
    /// Offset of the last drawn send time, in seconds since `start`.
    last: f64,
    /// The due time of the next answer.
    next_due: Instant,
    /// Arrival order, for oldest-first shedding.
    sequence: u64,
    /// The end of the window: no answer of this request leaves after it.
    deadline: Instant,
    /// Its source, an index into [`Schedule`]'s sources.
    source: usize,
    /// The bytes of one answer (the engine's estimate): what the round robin counts.
    size: u32,
    /// Its place in its source's list of requests with an answer due, when it is in it.
    ready: Option<Link>,
}

/// Neighbours in a source's list of requests with an answer due.
#[derive(Debug, Clone, Copy)]
struct Link {
    prev: Option<usize>,
    next: Option<usize>,
}

/// One source address with answers pending.
#[derive(Debug)]
struct Source {
    ip: IpAddr,
    /// Its requests and answers pending.
    requests: usize,
    answers: usize,
    /// Its requests with an answer due, oldest turn first (an intrusive list through
    /// [`Pending::ready`], so that steady state allocates nothing).
    head: Option<usize>,
    tail: Option<usize>,
    /// Bytes it may still send in this round.
    deficit: u32,
    /// Whether its turn at the front of the ring has begun (its quantum added).
    turn: bool,
    /// Whether it is in the ring (exactly when it has a request due, but for the moment a
    /// request is moved to the back of its list).
    in_ring: bool,
}

/// What [`Schedule::pop_due`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Popped {
    /// An answer that is due, inside its window.
    Due(Due),
    /// This many answers of one request whose window ended before they could leave: dropped,
    /// never sent late (see the module docs).
    Expired(usize),
}

/// How late a driver may wake, after the grain's rounding, and still send every answer inside
/// its window (see the module docs).
pub const LATE_ALLOWANCE: Duration = Duration::from_millis(20);

/// The end of every window kept free of send times (see the module docs): the timer grain
/// SPEC 4 allows (the wake-up's rounding) plus [`LATE_ALLOWANCE`] (the wake-up's lateness).
pub const SEND_SLACK: Duration = super::TIMER_GRAIN.saturating_add(LATE_ALLOWANCE);

/// The least room between a window's opening and its deadline (see the module docs): the
/// slack after a draw at the window's opening, so that a short window tolerates a late
/// wake-up as much as a long one.
pub const MIN_SPAN: Duration = SEND_SLACK.saturating_add(SEND_SLACK);

/// The bytes a source gets per round of the round robin: at least one typical answer (about
/// 200 bytes), so that a round usually sends one answer per source.
pub const QUANTUM: u32 = 256;

/// One answer that is due now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The request it answers.
    pub info: RequestInfo,
    /// The device that answers.
    pub owed: Owed,
    /// When it was due (for lateness metrics).
    pub due: Instant,
}

/// The pending answers of all requests; see the [module docs](self).
#[derive(Debug)]
pub struct Schedule {
    slots: Vec<Option<Pending>>,
    /// Free slot numbers.
    free: Vec<usize>,
    /// (next due, sequence, slot): one entry per request whose next answer is not due yet.
    /// `sequence` breaks ties and tells a stale entry (slot reused) from a live one.
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    /// Sources with requests pending, by index; `source_of` finds them by address.
    sources: Vec<Option<Source>>,
    free_sources: Vec<usize>,
    source_of: HashMap<IpAddr, usize>,
    /// Sources with an answer due, in round-robin order.
    ring: VecDeque<usize>,
    answers: usize,
    max_answers: usize,
    /// The longest window the engine allows, after the request (`max(leisure, max_window)`):
    /// [`MIN_SPAN`] never widens a window past it.
    longest: Duration,
    next_sequence: u64,
    /// Spare device lists, reused so that steady state allocates nothing.
    spare: Vec<Vec<Owed>>,
}

impl Schedule {
    /// An empty schedule for at most `max_requests` requests and `max_answers` answers, whose
    /// windows close at most `longest` after their request.
    pub fn new(max_requests: usize, max_answers: usize, longest: Duration) -> Schedule {
        let max_requests = max_requests.max(1);
        Schedule {
            slots: (0..max_requests).map(|_| None).collect(),
            free: (0..max_requests).rev().collect(),
            heap: BinaryHeap::with_capacity(max_requests),
            sources: (0..max_requests).map(|_| None).collect(),
            free_sources: (0..max_requests).rev().collect(),
            source_of: HashMap::with_capacity(max_requests),
            ring: VecDeque::with_capacity(max_requests),
            answers: 0,
            max_answers: max_answers.max(1),
            longest,
            next_sequence: 0,
            spare: Vec::new(),
        }
    }

    /// The number of pending answers.
    pub fn pending_answers(&self) -> usize {
        self.answers
    }

    /// The number of requests with pending answers.
    #[cfg(test)]
    pub fn pending_requests(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Where `ip` stands if it sends a request now: how many sources then share the answer
    /// budget (those with answers pending, counting `ip`), and how many answers `ip` already
    /// has pending. One lookup.
    pub fn standing(&self, ip: IpAddr) -> (usize, usize) {
        match self.source_of.get(&ip).and_then(|&s| self.sources[s].as_ref()) {
            Some(source) => (self.source_of.len(), source.answers),
            None => (self.source_of.len() + 1, 0),
        }
    }

    /// The number of sources with answers pending.
    pub fn sources(&self) -> usize {
        self.source_of.len()
    }

    /// The earliest due time, if any answer is pending (in the past when answers are due now).
    pub fn next_due(&self) -> Option<Instant> {
        let waiting = self.heap.peek().map(|Reverse((due, _, _))| *due);
        let ready = self.ring.front().and_then(|&s| {
            let head = self.sources[s].as_ref()?.head?;
            Some(self.slots[head].as_ref()?.next_due)
        });
        match (waiting, ready) {
            (Some(w), Some(r)) => Some(w.min(r)),
            (w, r) => w.or(r),
        }
    }

    /// A cleared device list to fill for [`Schedule::insert`] (reused, so usually no allocation).
    pub fn take_list(&mut self) -> Vec<Owed> {
        self.spare.pop().unwrap_or_default()
    }

    /// Schedules answers of `size` bytes each from `owed` (in any order; shuffled here with
    /// `rng`) uniformly over `[now, now + closes - slack)`, none to leave after `now + closes`
    /// (see the module docs). Returns how many answers were shed to make room (this request's
    /// own beyond its share, or others' above theirs).
    pub fn insert(
        &mut self,
        now: Instant,
        info: RequestInfo,
        mut owed: Vec<Owed>,
        closes: Duration,
        size: usize,
        rng: &mut fastrand::Rng,
    ) -> usize {
        let ip = info.peer.ip();
        let mut shed = 0;
        // The pending bound's share: the free room and the source's own older answers, or its
        // equal share of the bound, whichever is more.
        let existing = self.source_of.get(&ip).copied();
        let (sharing, own) = self.standing(ip);
        let share = self.max_answers / sharing;
        let room = self.max_answers - self.answers;
        let cap = self.max_answers.min((room + own).max(share));
        if owed.len() > cap {
            shed += owed.len() - cap;
            owed.truncate(cap);
        }
        while self.answers + owed.len() > self.max_answers {
            let over = self.answers + owed.len() - self.max_answers;
            // The source holding the most gives way: the requester's new answers count as its.
            let largest = self.largest(|src| src.answers);
            let own_now = existing.and_then(|s| self.sources[s].as_ref()).map_or(0, |s| s.answers);
            let cut = match largest {
                Some((s, held)) if held > own_now + owed.len() && Some(s) != existing => {
                    self.cut_oldest(s, over.min(held.saturating_sub(share).max(1)))
                }
                // The requester holds the most: its own oldest answers go first.
                _ if own_now > 0 => self.cut_oldest(existing.expect("it holds answers"), over),
                _ => {
                    owed.truncate(owed.len() - over.min(owed.len()));
                    over
                }
            };
            if cut == 0 {
                // Unreachable by the arithmetic above; never loop on it.
                shed += owed.len();
                owed.clear();
            }
            shed += cut;
        }
        if owed.is_empty() {
            self.recycle(owed);
            return shed;
        }
        if self.free.is_empty() {
            shed += self.shed_for_slot();
        }
        let Some(slot) = self.free.pop() else {
            shed += owed.len();
            self.recycle(owed);
            return shed;
        };
        if self.heap.len() >= 2 * self.slots.len() {
            // Entries of shed requests surface within their window; under a storm of sheds,
            // compact instead of letting them pile up.
            let slots = &self.slots;
            self.heap.retain(|Reverse((_, seq, slot))| {
                slots[*slot].as_ref().is_some_and(|p| p.sequence == *seq && p.ready.is_none())
            });
        }
        let source = match self.source_of.get(&ip) {
            Some(&s) => s,
            None => {
                let s = self.free_sources.pop().expect("a source per request slot at most");
                self.sources[s] = Some(Source {
                    ip,
                    requests: 0,
                    answers: 0,
                    head: None,
                    tail: None,
                    deficit: 0,
                    turn: false,
                    in_ring: false,
                });
                self.source_of.insert(ip, s);
                s
            }
        };
        rng.shuffle(&mut owed);
        self.answers += owed.len();
        if let Some(src) = self.sources[source].as_mut() {
            src.requests += 1;
            src.answers += owed.len();
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let (window, closes) = draw_span(closes, self.longest);
        let mut pending = Pending {
            info,
            owed,
            start: now,
            window,
            last: 0.0,
            next_due: now,
            sequence,
            deadline: now + closes,
            source,
            size: u32::try_from(size).unwrap_or(u32::MAX),
            ready: None,
        };
        draw_next(&mut pending, rng);
        self.heap.push(Reverse((pending.next_due, sequence, slot)));
        self.slots[slot] = Some(pending);
        shed
    }

    /// The next answer due at or before `now`, chosen by deficit round robin over sources (see
    /// the module docs); or the remaining answers of a request whose window ended before they
    /// could leave (expired).
    pub fn pop_due(&mut self, now: Instant, rng: &mut fastrand::Rng) -> Option<Popped> {
        self.promote(now);
        loop {
            let &s = self.ring.front()?;
            let source = self.sources[s].as_mut().expect("a source in the ring is live");
            let slot = source.head.expect("a source in the ring has a request due");
            let pending = self.slots[slot].as_mut().expect("a listed request is live");
            if now > pending.deadline {
                let expired = pending.owed.len();
                self.remove(slot);
                return Some(Popped::Expired(expired));
            }
            if !source.turn {
                // Its turn begins: one quantum more to send with.
                source.turn = true;
                source.deficit = source.deficit.saturating_add(QUANTUM);
            }
            if source.deficit < pending.size {
                // Its turn ends; what is left of the deficit waits for the next.
                source.turn = false;
                self.ring.rotate_left(1);
                continue;
            }
            source.deficit -= pending.size;
            source.answers -= 1;
            self.answers -= 1;
            let owed = pending.owed.pop().expect("a pending request owes an answer");
            let out = Due { info: pending.info, owed, due: pending.next_due };
            if pending.owed.is_empty() {
                self.remove(slot);
            } else {
                draw_next(pending, rng);
                if pending.next_due <= now {
                    // Still due: its source's next turn goes to its next request.
                    self.unlink_keeping(slot, true);
                    self.link(slot);
                } else {
                    let entry = Reverse((pending.next_due, pending.sequence, slot));
                    self.unlink(slot);
                    self.heap.push(entry);
                }
            }
            return Some(Popped::Due(out));
        }
    }

    /// Drops every pending answer; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let dropped = self.answers;
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.remove(slot);
            }
        }
        self.heap.clear();
        dropped
    }

    /// Moves every request whose next answer is due at `now` into its source's list.
    fn promote(&mut self, now: Instant) {
        while let Some(&Reverse((due, sequence, slot))) = self.heap.peek() {
            if due > now {
                return;
            }
            self.heap.pop();
            let live = self.slots[slot]
                .as_ref()
                .is_some_and(|p| p.sequence == sequence && p.ready.is_none());
            if live {
                self.link(slot);
            }
        }
    }

    /// Appends request `slot` to its source's list of requests due (and the source to the
    /// ring, if it was not in it).
    fn link(&mut self, slot: usize) {
        let Some(pending) = self.slots[slot].as_mut() else { return };
        let s = pending.source;
        let source = self.sources[s].as_mut().expect("a pending request's source is live");
        pending.ready = Some(Link { prev: source.tail, next: None });
        match source.tail {
            Some(tail) => {
                if let Some(link) = self.slots[tail].as_mut().and_then(|p| p.ready.as_mut()) {
                    link.next = Some(slot);
                }
            }
            None => {
                source.head = Some(slot);
                if !source.in_ring {
                    source.in_ring = true;
                    self.ring.push_back(s);
                }
            }
        }
        source.tail = Some(slot);
    }

    /// Takes request `slot` out of its source's list of requests due, if it is in it (and the
    /// source out of the ring when that empties its list).
    fn unlink(&mut self, slot: usize) {
        self.unlink_keeping(slot, false);
    }

    /// [`Schedule::unlink`]; with `keep_turn`, a source whose list empties keeps its place in
    /// the ring and its deficit (the request is linked again at once).
    fn unlink_keeping(&mut self, slot: usize, keep_turn: bool) {
        let Some(pending) = self.slots[slot].as_mut() else { return };
        let Some(Link { prev, next }) = pending.ready.take() else { return };
        let s = pending.source;
        let set = |slots: &mut Vec<Option<Pending>>, at: usize, f: &dyn Fn(&mut Link)| {
            if let Some(link) = slots[at].as_mut().and_then(|p| p.ready.as_mut()) {
                f(link);
            }
        };
        if let Some(p) = prev {
            set(&mut self.slots, p, &|l| l.next = next);
        }
        if let Some(n) = next {
            set(&mut self.slots, n, &|l| l.prev = prev);
        }
        let source = self.sources[s].as_mut().expect("a pending request's source is live");
        if source.head == Some(slot) {
            source.head = next;
        }
        if source.tail == Some(slot) {
            source.tail = prev;
        }
        if source.head.is_none() && !keep_turn {
            // Its turns end with its due answers (DRR: an idle flow keeps no deficit).
            source.deficit = 0;
            source.turn = false;
            source.in_ring = false;
            if self.ring.front() == Some(&s) {
                self.ring.pop_front();
            } else {
                self.ring.retain(|&r| r != s);
            }
        }
    }

    /// Drops request `slot` and its remaining answers (and its source, if that was its last).
    fn remove(&mut self, slot: usize) {
        self.unlink(slot);
        let Some(pending) = self.slots[slot].take() else { return };
        let remaining = pending.owed.len();
        self.answers -= remaining;
        let s = pending.source;
        let source = self.sources[s].as_mut().expect("a pending request's source is live");
        source.answers -= remaining;
        source.requests -= 1;
        if source.requests == 0 {
            let ip = source.ip;
            self.sources[s] = None;
            self.source_of.remove(&ip);
            self.free_sources.push(s);
        }
        self.recycle(pending.owed);
        self.free.push(slot);
        // Its heap entry, if any, is now stale and skipped when it surfaces.
    }

    /// The source with the most of `what` (ties: the lowest index), and that amount.
    fn largest(&self, what: impl Fn(&Source) -> usize) -> Option<(usize, usize)> {
        self.sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, what(s))))
            .max_by_key(|&(i, amount)| (amount, Reverse(i)))
    }

    /// Cuts up to `n` answers from source `s`'s oldest request; returns how many were cut.
    fn cut_oldest(&mut self, s: usize, n: usize) -> usize {
        let Some(slot) = self.oldest_of(s) else { return 0 };
        let pending = self.slots[slot].as_mut().expect("live");
        let cut = n.min(pending.owed.len());
        let keep = pending.owed.len() - cut;
        pending.owed.truncate(keep);
        self.answers -= cut;
        if let Some(source) = self.sources[s].as_mut() {
            source.answers -= cut;
        }
        if keep == 0 {
            // No answers left to take off the counts: `remove` frees the slot (and the source,
            // if that was its last request).
            self.remove(slot);
        }
        cut
    }

    /// Frees a request slot: the oldest request of the source with the most requests; returns
    /// its remaining answers (shed).
    fn shed_for_slot(&mut self) -> usize {
        let Some((s, _)) = self.largest(|src| src.requests) else { return 0 };
        let Some(slot) = self.oldest_of(s) else { return 0 };
        let remaining = self.slots[slot].as_ref().map_or(0, |p| p.owed.len());
        self.remove(slot);
        remaining
    }

    /// The oldest pending request of source `s`.
    fn oldest_of(&self, s: usize) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().filter(|p| p.source == s).map(|p| (i, p.sequence)))
            .min_by_key(|&(_, sequence)| sequence)
            .map(|(i, _)| i)
    }

    /// Returns a list from [`Schedule::take_list`] that was not scheduled after all.
    pub fn give_back(&mut self, list: Vec<Owed>) {
        self.recycle(list);
    }

    fn recycle(&mut self, mut list: Vec<Owed>) {
        list.clear();
        if self.spare.len() < 64 {
            self.spare.push(list);
        }
    }
}

/// The span the send times are drawn in, and the deadline, after the request (see the module
/// docs).
fn draw_span(closes: Duration, longest: Duration) -> (Duration, Duration) {
    let widest = longest.max(closes);
    let deadline = closes.max(MIN_SPAN.min(widest));
    let span = closes.min(deadline - SEND_SLACK.min(deadline / 2));
    (span, deadline)
}

/// Draws the next sorted uniform send time of `pending` (see the module docs).
fn draw_next(pending: &mut Pending, rng: &mut fastrand::Rng) {
    let remaining = pending.owed.len().max(1) as f64;
    let window = pending.window.as_secs_f64();
    let u = rng.f64();
    let step = (window - pending.last) * (1.0 - u.powf(1.0 / remaining));
    pending.last = (pending.last + step).min(window);
    // Clamped: float rounding never moves a send time past the span (nor so past the deadline).
    let offset = Duration::from_secs_f64(pending.last).min(pending.window);
    pending.next_due = pending.start + offset;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RequestInfo {
        RequestInfo {
            peer: "[fe80::1]:5683".parse().unwrap(),
            interface: 2,
            token: [1, 2, 3, 4, 0, 0, 0, 0],
            token_len: 4,
            view: View::Default,
        }
    }

    const LONGEST: Duration = Duration::from_secs(60);

    /// The next due answer; panics on an expiry (these tests drain inside the windows).
    fn due_now(s: &mut Schedule, now: Instant, rng: &mut fastrand::Rng) -> Option<Due> {
        match s.pop_due(now, rng)? {
            Popped::Due(due) => Some(due),
            Popped::Expired(n) => panic!("{n} answers expired"),
        }
    }

    fn owed(n: u32) -> Vec<Owed> {
        (0..n).map(|i| Owed { device: DeviceId(i), incarnation: 1 }).collect()
    }

    #[test]
    fn test_every_answer_inside_window_in_time_order() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut s = Schedule::new(16, 100_000, LONGEST);
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        assert_eq!(s.insert(t0, info(), owed(10_000), window, 200, &mut rng), 0);
        assert_eq!(s.pending_answers(), 10_000);
        let mut seen = vec![false; 10_000];
        let mut last = t0;
        let mut buckets = [0u32; 4];
        while let Some(due) = due_now(&mut s, t0 + window, &mut rng) {
            // Drawn before the window's end by the send slack.
            assert!(due.due >= last && due.due < t0 + window - SEND_SLACK);
            last = due.due;
            let i = due.owed.device.0 as usize;
            assert!(!seen[i], "device {i} answered twice");
            seen[i] = true;
            let quarter = ((due.due - t0).as_secs_f64() / 0.5) as usize;
            buckets[quarter.min(3)] += 1;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(s.pending_answers(), 0);
        // Uniform: each quarter of the window gets about 2,500 (+- 5 sigma).
        for b in buckets {
            assert!((2_250..=2_750).contains(&b), "{buckets:?}");
        }
    }

    #[test]
    fn test_nothing_before_due() {
        let mut rng = fastrand::Rng::with_seed(1);
        let mut s = Schedule::new(4, 100, LONGEST);
        let t0 = Instant::now();
        s.insert(t0, info(), owed(3), Duration::from_secs(2), 200, &mut rng);
        let first = s.next_due().unwrap();
        assert!(s.pop_due(first - Duration::from_nanos(1), &mut rng).is_none());
        assert!(s.pop_due(first, &mut rng).is_some());
    }

    fn from(ip: &str) -> RequestInfo {
        RequestInfo { peer: SocketAddr::new(ip.parse().unwrap(), 5683), ..info() }
    }

    #[test]
    fn test_pending_bound_shared_by_sources() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut s = Schedule::new(8, 100, LONGEST);
        let t0 = Instant::now();
        let w = Duration::from_secs(2);
        let (a, b, c) = (from("fe80::a"), from("fe80::b"), from("fe80::c"));
        assert_eq!(s.insert(t0, a, owed(60), w, 200, &mut rng), 0);
        assert_eq!(s.insert(t0, a, owed(30), w, 200, &mut rng), 0);
        // A holds 90 of 100. B's 20 fit its share (50): 10 are cut from A, not from B.
        assert_eq!(s.insert(t0, b, owed(20), w, 200, &mut rng), 10);
        assert_eq!(s.pending_answers(), 100);
        // A's new request takes the room of its own older answers (80 of 150 kept, its two
        // older requests shed), never B's.
        assert_eq!(s.insert(t0, a, owed(150), w, 200, &mut rng), 70 + 50 + 30);
        // C gets its share of three (33), taken from A (80 -> 47); B keeps its 20.
        assert_eq!(s.insert(t0, c, owed(100), w, 200, &mut rng), 67 + 33);
        let mut by = HashMap::new();
        while let Some(due) = due_now(&mut s, t0 + w, &mut rng) {
            *by.entry(due.info.peer.ip()).or_insert(0) += 1;
        }
        let count = |r: RequestInfo| by.get(&r.peer.ip()).copied().unwrap_or(0);
        assert_eq!((count(a), count(b), count(c)), (47, 20, 33));
        // Many newcomers cannot push one out below its share: 1 + 4 sources of 100 each.
        let mut s = Schedule::new(64, 100, LONGEST);
        assert_eq!(s.insert(t0, a, owed(100), w, 200, &mut rng), 0);
        for i in 0..4 {
            let _ = s.insert(t0, from(&format!("fe80::1:{i}")), owed(100), w, 200, &mut rng);
        }
        let mut a_left = 0;
        while let Some(due) = due_now(&mut s, t0 + w, &mut rng) {
            a_left += usize::from(due.info.peer == a.peer);
        }
        assert_eq!(a_left, 20, "its share of five");
    }

    /// Sends at most `per_tick` answers every 10 ms (a pacer that is the bottleneck); returns
    /// the answers each source got by `until`, and when each source's first one left.
    fn drain_paced(
        s: &mut Schedule,
        t0: Instant,
        until: Duration,
        per_tick: usize,
        rng: &mut fastrand::Rng,
    ) -> HashMap<IpAddr, (usize, Duration)> {
        let mut got: HashMap<IpAddr, (usize, Duration)> = HashMap::new();
        let mut at = Duration::ZERO;
        while at <= until {
            let mut sent = 0;
            // Like the engine: an expiry takes no send.
            while sent < per_tick {
                match s.pop_due(t0 + at, rng) {
                    Some(Popped::Due(due)) => {
                        got.entry(due.info.peer.ip()).or_insert((0, at)).0 += 1;
                        sent += 1;
                    }
                    Some(Popped::Expired(_)) => {}
                    None => break,
                }
            }
            at += Duration::from_millis(10);
        }
        got
    }

    #[test]
    fn test_due_answers_leave_by_round_robin_over_sources() {
        let mut rng = fastrand::Rng::with_seed(21);
        let mut s = Schedule::new(1_024, 2_000_000, LONGEST);
        let t0 = Instant::now();
        // 200 sources with 999 answers each over 2 s, then a newcomer with 100 over 2 s: far
        // more due than 5 per 10 ms can send.
        for i in 0..200 {
            let src = from(&format!("fe80::{:x}", i + 1));
            let _ = s.insert(t0, src, owed(999), Duration::from_secs(2), 200, &mut rng);
        }
        let obt = from("fe80::900d");
        let two = Duration::from_secs(2);
        let _ = s.insert(t0 + Duration::from_millis(500), obt, owed(100), two, 200, &mut rng);
        let got = drain_paced(&mut s, t0, Duration::from_secs(10), 5, &mut rng);
        let (obt_got, first) = got[&obt.peer.ip()];
        // The newcomer's first answer waits at most about one round (201 sources at 5 answers
        // per 10 ms: 0.4 s) behind its draw (about 20 ms into its window).
        assert!(first < Duration::from_millis(1_000), "first answer at {first:?}");
        // No attacker got much more than an equal share of the 5 x 200 ticks' output.
        let max_attacker = got.iter().filter(|(ip, _)| **ip != obt.peer.ip()).map(|g| g.1 .0).max();
        assert!(max_attacker.unwrap() <= 2 * 1_000 / 201 + 2, "{max_attacker:?}");
        // Once the attackers' windows end (2 s), the newcomer's due answers leave before its
        // own window ends (2.5 s): it gets everything it is owed, nothing is pending.
        assert_eq!((obt_got, s.pending_answers()), (100, 0));
    }

    #[test]
    fn test_round_robin_counts_bytes() {
        let mut rng = fastrand::Rng::with_seed(4);
        let mut s = Schedule::new(16, 10_000, LONGEST);
        let t0 = Instant::now();
        let (small, big) = (from("fe80::5"), from("fe80::b1"));
        let _ = s.insert(t0, small, owed(1_000), Duration::from_millis(100), 100, &mut rng);
        let _ = s.insert(t0, big, owed(1_000), Duration::from_millis(100), 400, &mut rng);
        let mut sent = HashMap::new();
        for _ in 0..500 {
            if let Some(Popped::Due(due)) = s.pop_due(t0 + Duration::from_millis(100), &mut rng) {
                *sent.entry(due.info.peer.ip()).or_insert(0usize) += 1;
            }
        }
        // Equal bytes: four 100-byte answers per 400-byte one.
        let (a, b) = (sent[&small.peer.ip()], sent[&big.peer.ip()]);
        assert!((390..=410).contains(&a) && (90..=110).contains(&b), "{a} {b}");
    }

    #[test]
    fn test_request_slots_bounded() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut s = Schedule::new(2, 1_000, LONGEST);
        let t0 = Instant::now();
        for _ in 0..5 {
            s.insert(t0, info(), owed(1), Duration::from_secs(1), 200, &mut rng);
        }
        assert_eq!(s.pending_requests(), 2);
        assert_eq!(s.clear(), 2);
        assert_eq!(s.pending_answers(), 0);
    }

    #[test]
    fn test_answers_past_the_deadline_expire_never_leave_late() {
        let mut rng = fastrand::Rng::with_seed(5);
        let mut s = Schedule::new(4, 1_000, LONGEST);
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        s.insert(t0, info(), owed(100), window, 200, &mut rng);
        // On time for the first half of the window: some answers leave.
        let mut sent = 0;
        while due_now(&mut s, t0 + Duration::from_secs(1), &mut rng).is_some() {
            sent += 1;
        }
        assert!((30..=70).contains(&sent), "{sent}");
        // At the deadline itself, everything due still leaves.
        let mut at_end = 0;
        let mut probe = Schedule::new(4, 1_000, LONGEST);
        probe.insert(t0, info(), owed(10), window, 200, &mut rng);
        while due_now(&mut probe, t0 + window, &mut rng).is_some() {
            at_end += 1;
        }
        assert_eq!(at_end, 10);
        // The loop comes back 1 ns after the window's end: the rest expire at once, in one pop.
        assert_eq!(
            s.pop_due(t0 + window + Duration::from_nanos(1), &mut rng),
            Some(Popped::Expired(100 - sent))
        );
        assert_eq!((s.pending_answers(), s.pending_requests()), (0, 0));
        assert_eq!(s.pop_due(t0 + LONGEST, &mut rng), None);
    }

    #[test]
    fn test_draw_span_keeps_slack_and_widens_tiny_windows() {
        let ms = Duration::from_millis;
        // A 2 s window: drawn in its first 1.97 s, closes at 2 s.
        assert_eq!(draw_span(ms(2_000), LONGEST), (ms(1_970), ms(2_000)));
        // Leisure 0 and a small request: drawn in its 100 us, the deadline moved to 60 ms.
        let tiny = Duration::from_micros(100);
        assert_eq!(draw_span(tiny, LONGEST), (tiny, ms(60)));
        // A window of 45 ms: 60 ms of room, drawn up to 30 ms before the deadline.
        assert_eq!(draw_span(ms(45), LONGEST), (ms(30), ms(60)));
        // Never moved past the longest window: half of the room is slack.
        assert_eq!(draw_span(ms(4), ms(8)), (ms(4), ms(8)));
        assert_eq!(draw_span(ms(0), ms(0)), (ms(0), ms(0)));
    }

    #[test]
    fn test_tiny_window_survives_a_late_wake_up() {
        // Leisure 0: the window of a one-answer request is a few microseconds of budget; a
        // driver waking 5 ms late (mio rounds to milliseconds) still sends it.
        let mut rng = fastrand::Rng::with_seed(9);
        let mut s = Schedule::new(4, 100, LONGEST);
        let t0 = Instant::now();
        s.insert(t0, info(), owed(3), Duration::from_micros(10), 200, &mut rng);
        let late = s.next_due().unwrap() + Duration::from_millis(5);
        let mut sent = 0;
        while due_now(&mut s, late.max(t0 + Duration::from_millis(10)), &mut rng).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 3);
    }
}
