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
//! Bounds: at most `max_requests` requests and `max_answers` answers pending. A new request
//! that does not fit sheds the *oldest* requests first (their remaining answers are counted as
//! shed); a request larger than the whole bound is truncated.
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
//! A punctual driver still wakes a little after the instant it asked for (mio rounds its
//! timeout up to a millisecond, and the kernel adds timer slack). So that this wake-up slack
//! does not expire answers, send times are drawn at least `slack` before the deadline:
//!
//! ```text
//! deadline = max(closes, min(opens + MIN_SPAN, max(longest, closes)))
//! room     = deadline - opens
//! draws in [opens, opens + min(closes - opens, room - min(SEND_SLACK, room / 2)))
//! ```
//!
//! A driver up to `SEND_SLACK` (10 ms, the timer grain SPEC 4 allows) late still sends inside
//! the window, and the spread is kept: a 2 s window gives up its last 10 ms (0.5 %). Only a
//! window shorter than `MIN_SPAN` (20 ms: a configured leisure under 20 ms, e.g. leisure 0 and
//! a small request) has its deadline moved, to `MIN_SPAN` after it opens (never past the
//! longest window the engine allows, `longest = max(leisure, max_window)`): its answers are
//! still drawn in the budget's short window, so "leisure 0" still answers at once, but a
//! wake-up a few milliseconds late sends them instead of expiring them. This is SPEC 4's timer
//! grain read as part of the window: a send time may be rounded up by at most 10 ms.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
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

/// How late a driver may wake and still send inside the window (see the module docs): the
/// timer grain SPEC 4 allows.
pub const SEND_SLACK: Duration = Duration::from_millis(10);

/// The least room between a window's opening and its deadline (see the module docs): one late
/// wake-up after the last draw.
pub const MIN_SPAN: Duration = Duration::from_millis(20);

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
    /// (next due, sequence, slot): one entry per live request. `sequence` breaks ties and tells a
    /// stale entry (slot reused) from a live one.
    heap: BinaryHeap<Reverse<(Instant, u64, usize)>>,
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

    /// The earliest due time, if any answer is pending.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// A cleared device list to fill for [`Schedule::insert`] (reused, so usually no allocation).
    pub fn take_list(&mut self) -> Vec<Owed> {
        self.spare.pop().unwrap_or_default()
    }

    /// Schedules answers from `owed` (in any order; shuffled here with `rng`) uniformly over
    /// `[now + opens, now + closes - slack)`, none to leave after `now + closes` (see the module
    /// docs). Returns how many answers were shed to make room (older requests' answers, or this
    /// request's own beyond the bound).
    pub fn insert(
        &mut self,
        now: Instant,
        info: RequestInfo,
        mut owed: Vec<Owed>,
        (opens, closes): (Duration, Duration),
        rng: &mut fastrand::Rng,
    ) -> usize {
        let mut shed = 0;
        if owed.len() > self.max_answers {
            shed += owed.len() - self.max_answers;
            owed.truncate(self.max_answers);
        }
        while self.answers + owed.len() > self.max_answers || self.free.is_empty() {
            match self.shed_oldest() {
                Some(n) => shed += n,
                None => break,
            }
        }
        if owed.is_empty() {
            self.recycle(owed);
            return shed;
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
                slots[*slot].as_ref().is_some_and(|p| p.sequence == *seq)
            });
        }
        rng.shuffle(&mut owed);
        self.answers += owed.len();
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let (window, closes) = draw_span(opens, closes, self.longest);
        let start = now + opens;
        let deadline = now + closes;
        let mut pending =
            Pending { info, owed, start, window, last: 0.0, next_due: start, sequence, deadline };
        draw_next(&mut pending, rng);
        self.heap.push(Reverse((pending.next_due, sequence, slot)));
        self.slots[slot] = Some(pending);
        shed
    }

    /// The next answer due at or before `now`, if any; or the remaining answers of a request
    /// whose window ended before they could leave (expired, see the module docs).
    pub fn pop_due(&mut self, now: Instant, rng: &mut fastrand::Rng) -> Option<Popped> {
        loop {
            let &Reverse((due, sequence, slot)) = self.heap.peek()?;
            if due > now {
                return None;
            }
            self.heap.pop();
            let Some(pending) = self.slots[slot].as_mut().filter(|p| p.sequence == sequence) else {
                continue; // stale entry of a shed request
            };
            if now > pending.deadline {
                let expired = pending.owed.len();
                self.answers -= expired;
                self.release(slot);
                return Some(Popped::Expired(expired));
            }
            let Some(owed) = pending.owed.pop() else { continue };
            self.answers -= 1;
            let out = Due { info: pending.info, owed, due };
            if pending.owed.is_empty() {
                self.release(slot);
            } else {
                draw_next(pending, rng);
                self.heap.push(Reverse((pending.next_due, sequence, slot)));
            }
            return Some(Popped::Due(out));
        }
    }

    /// Drops every pending answer; returns how many there were.
    pub fn clear(&mut self) -> usize {
        let dropped = self.answers;
        for slot in 0..self.slots.len() {
            if self.slots[slot].is_some() {
                self.release(slot);
            }
        }
        self.heap.clear();
        self.answers = 0;
        dropped
    }

    /// Sheds the request that arrived first; returns its remaining answers.
    fn shed_oldest(&mut self) -> Option<usize> {
        let (slot, _) = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.sequence)))
            .min_by_key(|&(_, sequence)| sequence)?;
        let remaining = self.slots[slot].as_ref().map_or(0, |p| p.owed.len());
        self.answers -= remaining;
        self.release(slot);
        // Its heap entry is now stale and skipped when it surfaces.
        Some(remaining)
    }

    fn release(&mut self, slot: usize) {
        if let Some(pending) = self.slots[slot].take() {
            self.recycle(pending.owed);
            self.free.push(slot);
        }
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

/// The span the send times are drawn in, after `opens`, and the deadline, after the request
/// (see the module docs).
fn draw_span(opens: Duration, closes: Duration, longest: Duration) -> (Duration, Duration) {
    let widest = longest.max(closes);
    let deadline = closes.max((opens + MIN_SPAN).min(widest));
    let room = deadline.saturating_sub(opens);
    let span = closes.saturating_sub(opens).min(room - SEND_SLACK.min(room / 2));
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
        assert_eq!(s.insert(t0, info(), owed(10_000), (Duration::ZERO, window), &mut rng), 0);
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
        s.insert(t0, info(), owed(3), (Duration::ZERO, Duration::from_secs(2)), &mut rng);
        let first = s.next_due().unwrap();
        assert!(s.pop_due(first - Duration::from_nanos(1), &mut rng).is_none());
        assert!(s.pop_due(first, &mut rng).is_some());
    }

    #[test]
    fn test_oldest_request_shed_first() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut s = Schedule::new(8, 100, LONGEST);
        let t0 = Instant::now();
        let window = Duration::from_secs(2);
        let mut first = info();
        first.token_len = 1;
        assert_eq!(s.insert(t0, first, owed(60), (Duration::ZERO, window), &mut rng), 0);
        assert_eq!(s.insert(t0, info(), owed(30), (Duration::ZERO, window), &mut rng), 0);
        // 90 pending; 20 more need room: the first request (60 left) goes.
        assert_eq!(s.insert(t0, info(), owed(20), (Duration::ZERO, window), &mut rng), 60);
        assert_eq!(s.pending_answers(), 50);
        let mut count = 0;
        while let Some(due) = due_now(&mut s, t0 + window, &mut rng) {
            assert_eq!(due.info.token_len, 4, "no answer of the shed request leaves");
            count += 1;
        }
        assert_eq!(count, 50);
        // A request larger than the bound is truncated to it.
        assert_eq!(s.insert(t0, info(), owed(150), (Duration::ZERO, window), &mut rng), 50);
        assert_eq!(s.pending_answers(), 100);
    }

    #[test]
    fn test_request_slots_bounded() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut s = Schedule::new(2, 1_000, LONGEST);
        let t0 = Instant::now();
        for _ in 0..5 {
            s.insert(t0, info(), owed(1), (Duration::ZERO, Duration::from_secs(1)), &mut rng);
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
        s.insert(t0, info(), owed(100), (Duration::ZERO, window), &mut rng);
        // On time for the first half of the window: some answers leave.
        let mut sent = 0;
        while due_now(&mut s, t0 + Duration::from_secs(1), &mut rng).is_some() {
            sent += 1;
        }
        assert!((30..=70).contains(&sent), "{sent}");
        // At the deadline itself, everything due still leaves.
        let mut at_end = 0;
        let mut probe = Schedule::new(4, 1_000, LONGEST);
        probe.insert(t0, info(), owed(10), (Duration::ZERO, window), &mut rng);
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
        // A 2 s window: drawn in its first 1.99 s, closes at 2 s.
        assert_eq!(draw_span(ms(0), ms(2_000), LONGEST), (ms(1_990), ms(2_000)));
        // Opening late (budget backlog): the slack is taken from the end.
        assert_eq!(draw_span(ms(500), ms(2_000), LONGEST), (ms(1_490), ms(2_000)));
        // Leisure 0 and a small request: drawn in its 100 us, the deadline moved to 20 ms.
        let tiny = Duration::from_micros(100);
        assert_eq!(draw_span(ms(0), tiny, LONGEST), (tiny, ms(20)));
        // A window of 15 ms: 20 ms of room, drawn up to 10 ms before the deadline.
        assert_eq!(draw_span(ms(0), ms(15), LONGEST), (ms(10), ms(20)));
        // Never moved past the longest window: half of the room is slack.
        assert_eq!(draw_span(ms(59_990), ms(59_994), LONGEST), (ms(4), ms(60_000)));
        assert_eq!(draw_span(ms(59_980), ms(59_999), LONGEST), (ms(10), ms(60_000)));
        assert_eq!(draw_span(ms(60_000), ms(60_000), LONGEST), (ms(0), ms(60_000)));
    }

    #[test]
    fn test_tiny_window_survives_a_late_wake_up() {
        // Leisure 0: the window of a one-answer request is a few microseconds of budget; a
        // driver waking 5 ms late (mio rounds to milliseconds) still sends it.
        let mut rng = fastrand::Rng::with_seed(9);
        let mut s = Schedule::new(4, 100, LONGEST);
        let t0 = Instant::now();
        s.insert(t0, info(), owed(3), (Duration::ZERO, Duration::from_micros(10)), &mut rng);
        let late = s.next_due().unwrap() + Duration::from_millis(5);
        let mut sent = 0;
        while due_now(&mut s, late.max(t0 + Duration::from_millis(10)), &mut rng).is_some() {
            sent += 1;
        }
        assert_eq!(sent, 3);
    }
}
