//! The global answer byte-rate budget (SPEC sections 4 and 7) and the leisure window it gives
//! each request (RFC 7252 section 8.2): it bounds the bytes the fleet's answers may take per
//! second by spreading them in time, and says how many answers fit at all.

use std::time::{Duration, Instant};

/// The global answer byte-rate budget, and the leisure window it implies for each request
/// (SPEC sections 4 and 7): a request that would exceed the budget stretches its window
/// instead of bursting, and what cannot fit even in the longest window is shed.
///
/// # The math
///
/// ```text
/// R  rate budget (bytes/s)      D  default leisure      W  max window
/// Ws source window: the share of W a source may hold while its earlier answers are pending
/// c  cursor: the instant by which every byte admitted so far is paid for at rate R
///
/// request at `now` from a source holding h (Grant::held), E answers of S bytes each:
///   q  = max(0, c - now)                 backlog, as time (q x R bytes not yet paid for)
///   n  = ceil(E x S / R)                 time the budget needs for this request
///   room = W - q                         if h = 0 (an idle source may take all that is left)
///        = min(W - q, Ws - h)            otherwise (a busy source only up to its share)
///   if n <= room:  a = E                 all admitted
///   else:          a = min(E, floor(room x R / S)),  n = ceil(a x S / R)
///   start     = q
///   length    = max(D, q + n)            the window closes `length` after the request
///   stretched = q + n > D
///   cost      = n                        charged to the source (SourceLimiter::charge)
///   c'        = now + q + n
/// ```
///
/// With no backlog this is SPEC 4's `L = max(D, E x S / R)`: E = 10000 answers of S = 200
/// bytes at R = 100 kB/s give 20 s. Because requests overlap, the cursor accounts for bytes
/// already scheduled: a second such request at once gets the window `[20 s, 40 s)`, after the
/// first's bytes.
///
/// The engine draws each answer uniformly in `[start, length)` ([`Window::offset`]). Then the
/// budget's slices `[now + q, now + q + n)` of successive requests are disjoint, every window
/// has density `a x S / (length - start) <= R`, a stretched window is exactly its slice, and a
/// window of the default length closes `D` after its request. So over **any** interval of length `x`, the
/// bytes scheduled (in expectation, each answer being a uniform draw) are at most
/// `R x (x + 2 D)`: the burst allowance is `2 R D`, set by the default leisure. And nothing is
/// ever scheduled more than `max(D, W)` ahead, which bounds pending answers too.
///
/// Drawing in `[0, length)` instead, as SPEC 4 reads literally, keeps the average over each
/// whole window within `R`, but `k` stretched requests arriving together then overlap at the
/// start, up to about `R x (1 + ln k)` over short intervals.
///
/// # Unicast replies
///
/// Unicast replies on device endpoints take the same budget (SPEC 7). They leave at once, so
/// they have no window: [`AnswerBudget::charge`] adds their budget time to the cursor, `c' =
/// max(c, now) + bytes / R`, and later requests' windows open after them like after earlier
/// answers. Whether a reply may leave at all is the pacer's call (`super::SendPacer`).
///
/// # The source share
///
/// Without `Ws`, one client repeating its discovery (a looping OBT, a script within its request
/// rate) keeps adding `n` to the backlog until it reaches `W`, and every other OBT's window then
/// opens up to `W` late, or is shed. With it, a source's repeats while its answers are pending
/// can hold at most `Ws` of budget time (its `h`, a GCRA over its own admitted bytes at rate `R`,
/// drains as time passes), so another OBT's window opens at most `max(n1, Ws)` late per such
/// source, where `n1` is that source's first request. The first request of an idle source is
/// not capped by the share: a lone OBT discovering a big fleet still gets everything that fits
/// in `W`. The share is not a limit on senders with many addresses (each brings `h = 0`); the
/// global `W` bounds those.
///
/// Integer nanoseconds and bytes throughout (no float drift); admitted bytes round the budget
/// time up, so rounding never exceeds the rate.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    default_leisure: Duration,
    rate: u64,
    max_window: Duration,
    source_window: Duration,
    /// `c`; `None` until the first request.
    cursor: Option<Instant>,
}

/// Where one request's answers go in time, relative to the request, and how many of them fit
/// the budget (the rest are shed by the engine and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct Window {
    /// When the window opens: zero unless earlier requests' answers still hold the budget.
    pub start: Duration,
    /// When it closes: the leisure `L` of SPEC section 4, including any backlog. Answers are
    /// drawn uniformly in `[start, length)`.
    pub length: Duration,
    /// Whether the budget made the window longer than the configured leisure.
    pub stretched: bool,
    /// How many of the request's answers fit (`<= answers`); the engine sheds the rest.
    pub admitted: usize,
    /// The budget time the admitted answers take, to charge to the source.
    pub cost: Duration,
    /// Whether the source's share, not the global window, cut the request short.
    pub share_limited: bool,
}

impl Window {
    /// The delay of one answer: `random` (a uniform `u64` from the engine's seeded generator)
    /// mapped onto `[start, length)` without division, so that the engine's draws follow the
    /// distribution the budget accounted for. Returns `start` for an empty window.
    #[cfg(test)]
    pub fn offset(&self, random: u64) -> Duration {
        let span = self.length.saturating_sub(self.start).as_nanos();
        // `random / 2^64` in [0, 1) times `span`, which is below `span`; fits in u64 nanoseconds
        // because `length` does.
        let into = (u128::from(random) * span) >> 64;
        self.start + Duration::from_nanos(into as u64)
    }
}

/// The longest window the budget accepts: keeps `now + window` far from `Instant` overflow.
const WINDOW_LIMIT: Duration = Duration::from_secs(24 * 60 * 60);

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl AnswerBudget {
    /// A budget of `rate_bytes_per_sec` for all answers together, with windows at least
    /// `default_leisure` long (SPEC 4's configured leisure, 2 s by default), no answer
    /// scheduled more than `max_window` after its request, and a source whose answers are
    /// pending held to `source_window` of budget time (see the type's docs).
    ///
    /// `default_leisure` and `max_window` are capped at 24 hours; `source_window` at
    /// `max_window`.
    ///
    /// # Panics
    ///
    /// If `rate_bytes_per_sec` is 0.
    pub fn new(
        default_leisure: Duration,
        rate_bytes_per_sec: u64,
        max_window: Duration,
        source_window: Duration,
    ) -> AnswerBudget {
        assert!(rate_bytes_per_sec > 0, "the answer rate budget must be positive");
        let max_window = max_window.min(WINDOW_LIMIT);
        AnswerBudget {
            default_leisure: default_leisure.min(WINDOW_LIMIT),
            rate: rate_bytes_per_sec,
            max_window,
            source_window: source_window.min(max_window),
            cursor: None,
        }
    }

    /// Places a request's `answers` answers of `bytes_per_answer` bytes each in time, charging
    /// the admitted bytes to the budget; `held` is what the source's earlier answers still hold
    /// ([`Grant::held`]). See the type's docs for the math. O(1), no allocation.
    pub fn window(
        &mut self,
        now: Instant,
        answers: usize,
        bytes_per_answer: usize,
        held: Duration,
    ) -> Window {
        let q = self.backlog(now);
        let global_room = self.max_window.saturating_sub(q);
        let room = if held.is_zero() {
            global_room
        } else {
            global_room.min(self.source_window.saturating_sub(held))
        };
        let size = bytes_per_answer as u128;
        let wanted = self.budget_time((answers as u128).saturating_mul(size));
        let (admitted, need) = if wanted <= room {
            (answers, wanted)
        } else {
            let room_bytes = room.as_nanos() * u128::from(self.rate) / NANOS_PER_SEC;
            let fit = room_bytes.checked_div(size).unwrap_or(u128::MAX);
            let admitted = (answers as u128).min(fit) as usize;
            (admitted, self.budget_time((admitted as u128).saturating_mul(size)))
        };
        let end = q + need;
        self.cursor = Some(now + end);
        Window {
            start: q,
            length: end.max(self.default_leisure),
            stretched: end > self.default_leisure,
            admitted,
            cost: need,
            share_limited: admitted < answers && room < global_room,
        }
    }

    /// Charges `bytes` sent at `now` outside any window (a unicast reply on a device endpoint:
    /// SPEC 7 counts those against the same byte budget), so that later windows open after
    /// them; returns their budget time. O(1).
    pub fn charge(&mut self, now: Instant, bytes: usize) -> Duration {
        let cost = self.budget_time(bytes as u128);
        let from = self.cursor.map_or(now, |c| c.max(now));
        self.cursor = Some(from + cost);
        cost
    }

    /// The budget time still owed at `now` by answers already admitted: a new request's window
    /// opens this late.
    pub fn backlog(&self, now: Instant) -> Duration {
        match self.cursor {
            Some(c) => c.saturating_duration_since(now),
            None => Duration::ZERO,
        }
    }

    /// The backlog in bytes (`backlog x R`), for metrics.
    #[cfg(test)]
    pub fn backlog_bytes(&self, now: Instant) -> u64 {
        let bytes = self.backlog(now).as_nanos() * u128::from(self.rate) / NANOS_PER_SEC;
        u64::try_from(bytes).unwrap_or(u64::MAX)
    }

    /// `ceil(bytes / R)` as a duration.
    fn budget_time(&self, bytes: u128) -> Duration {
        super::time_at(bytes, self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{ip, ms, secs};
    use super::super::SourceLimiter;
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(2);
    /// What an idle source holds.
    const IDLE: Duration = Duration::ZERO;

    /// A window the source share did not cut.
    fn window(
        start: Duration,
        length: Duration,
        stretched: bool,
        admitted: usize,
        cost: Duration,
    ) -> Window {
        Window { start, length, stretched, admitted, cost, share_limited: false }
    }

    #[test]
    fn test_budget_small_request_gets_default_leisure() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        let w = budget.window(t0, 10, 200, IDLE);
        assert_eq!(w, window(Duration::ZERO, DEFAULT, false, 10, ms(20)));
        // 2000 bytes at 100 kB/s: 20 ms of budget.
        assert_eq!(budget.backlog(t0), ms(20));
        assert_eq!(budget.backlog_bytes(t0), 2_000);
    }

    #[test]
    fn test_budget_ten_thousand_answers_stretch_to_20_s() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        let w = budget.window(t0, 10_000, 200, IDLE);
        assert_eq!(w, window(Duration::ZERO, secs(20), true, 10_000, secs(20)));
    }

    #[test]
    fn test_budget_back_to_back_second_after_first() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        let first = budget.window(t0, 10_000, 200, IDLE);
        let second = budget.window(t0 + ms(100), 10_000, 200, IDLE);
        assert_eq!(first.length, secs(20));
        // The first request's bytes hold the budget until t0 + 20 s, 19.9 s after the second.
        assert_eq!(second.start, ms(19_900));
        assert_eq!(second.length, ms(39_900));
        assert!(second.stretched);
        assert_eq!(second.admitted, 10_000);
        // A small request behind them opens after both.
        let small = budget.window(t0 + ms(100), 1, 200, IDLE);
        assert_eq!(small.start, ms(39_900));
        assert_eq!(small.length, ms(39_902));
    }

    #[test]
    fn test_budget_sheds_past_max_window() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(30), secs(30));
        let first = budget.window(t0, 10_000, 200, IDLE);
        assert_eq!(first.admitted, 10_000);
        // 10 s of room left: 1 MB, 5000 answers of 200 bytes.
        let second = budget.window(t0, 10_000, 200, IDLE);
        assert_eq!(second.admitted, 5_000);
        assert_eq!((second.start, second.length), (secs(20), secs(30)));
        // Nothing fits now.
        let third = budget.window(t0, 10, 200, IDLE);
        assert_eq!(third.admitted, 0);
        assert_eq!(budget.backlog(t0), secs(30), "shed answers cost nothing");
        // A single request larger than the whole window is cut down too.
        let mut fresh = AnswerBudget::new(DEFAULT, 100_000, secs(30), secs(30));
        assert_eq!(fresh.window(t0, 1_000_000, 200, IDLE).admitted, 15_000);
    }

    #[test]
    fn test_budget_backlog_drains() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(30), secs(30));
        let _ = budget.window(t0, 10_000, 200, IDLE);
        assert_eq!(budget.backlog(t0 + secs(5)), secs(15));
        assert_eq!(budget.backlog_bytes(t0 + secs(5)), 1_500_000);
        assert_eq!(budget.backlog(t0 + secs(25)), Duration::ZERO);
        let w = budget.window(t0 + secs(25), 10_000, 200, IDLE);
        assert_eq!(w, window(Duration::ZERO, secs(20), true, 10_000, secs(20)));
        // Half drained: half the room back.
        let w = budget.window(t0 + secs(35), 10_000, 200, IDLE);
        assert_eq!((w.start, w.admitted), (secs(10), 10_000));
    }

    #[test]
    fn test_budget_zero_answers_or_zero_bytes() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 1_000, secs(10), secs(10));
        let w = budget.window(t0, 0, 200, IDLE);
        assert_eq!(w, window(Duration::ZERO, DEFAULT, false, 0, Duration::ZERO));
        let w = budget.window(t0, 7, 0, IDLE);
        assert_eq!(w.admitted, 7);
        assert_eq!(budget.backlog(t0), Duration::ZERO);
    }

    #[test]
    fn test_budget_rate_never_exceeded_over_intervals() {
        // Requests of random sizes at random times, enough to stretch and to shed: over any
        // interval of length x, the bytes scheduled (each window's bytes spread evenly over
        // [start, length)) stay within R x (x + 2 D), the bound in the type's docs.
        let rate = 50_000u64;
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, rate, secs(40), secs(40));
        let mut x: u64 = 0x9e37_79b9;
        let mut windows = Vec::new();
        let (mut stretched, mut shed) = (0, 0);
        let mut now = t0;
        for _ in 0..400 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            now += ms(x % 700);
            let answers = (if x % 5 == 0 { (x >> 8) % 20_000 } else { (x >> 8) % 40 }) as usize;
            let w = budget.window(now, answers, 180, IDLE);
            assert!(w.admitted <= answers);
            assert!(w.start <= w.length);
            assert!(w.length <= secs(40));
            stretched += usize::from(w.stretched);
            shed += usize::from(w.admitted < answers);
            windows.push((now + w.start, now + w.length, (w.admitted * 180) as f64));
        }
        assert!(stretched > 20 && shed > 20, "stretched {stretched}, shed {shed}");
        let horizon = now + secs(60);
        for x_len in [ms(100), secs(1), secs(5), secs(20)] {
            let bound = rate as f64 * (x_len + 2 * DEFAULT).as_secs_f64();
            let mut u = t0;
            while u + x_len <= horizon {
                let v = u + x_len;
                let mut bytes = 0.0;
                for &(open, close, total) in &windows {
                    let (lo, hi) = (open.max(u), close.min(v));
                    if hi > lo {
                        bytes += total * (hi - lo).as_secs_f64() / (close - open).as_secs_f64();
                    }
                }
                assert!(bytes <= bound + 1.0, "{bytes} > {bound} over {x_len:?} at {u:?}");
                u += ms(100);
            }
        }
    }

    #[test]
    fn test_budget_busy_source_held_to_its_share() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(10));
        // An idle source may take more than its share: 10,000 x 200 B is 20 s of budget.
        let first = budget.window(t0, 10_000, 200, IDLE);
        assert_eq!((first.admitted, first.cost, first.share_limited), (10_000, secs(20), false));
        // While those 20 s are held, its next request gets nothing...
        let second = budget.window(t0 + secs(1), 10_000, 200, secs(19));
        assert_eq!((second.admitted, second.cost, second.share_limited), (0, Duration::ZERO, true));
        // ...and once it holds 6 s, 4 s more (2,000 answers) after the backlog.
        let third = budget.window(t0 + secs(14), 10_000, 200, secs(6));
        assert_eq!((third.admitted, third.cost, third.share_limited), (2_000, secs(4), true));
        assert_eq!(third.start, secs(6));
        // A request within its share is not cut.
        let small = budget.window(t0 + secs(14), 100, 200, secs(6));
        assert_eq!((small.admitted, small.share_limited), (100, false));
        // Where the global window is the tighter limit, the cut is not the share's.
        let mut tight = AnswerBudget::new(DEFAULT, 100_000, secs(5), secs(5));
        let _ = tight.window(t0, 1_000, 200, IDLE);
        let cut = tight.window(t0, 10_000, 200, ms(1));
        assert_eq!((cut.admitted, cut.share_limited), (1_500, false));
    }

    /// A looping source (every 500 ms, 5 s of budget each, within its request rate) and one
    /// discovery from another OBT at 30 s: when the newcomer's window opens.
    fn newcomer_start(source_window: Duration) -> (Window, usize) {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(2.0, 2.0, 16);
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), source_window);
        let mut request = |now, source, answers| {
            let grant = limiter.allow(now, ip(source)).expect("within the request rate");
            let window = budget.window(now, answers, 200, grant.held);
            limiter.charge(now, grant, window.cost);
            window
        };
        let mut looped = 0;
        for i in 0..60 {
            looped += request(t0 + ms(500 * i), "fe80::bad", 2_500).admitted;
        }
        (request(t0 + secs(30), "fe80::900d", 500), looped)
    }

    #[test]
    fn test_budget_share_keeps_a_looping_source_from_starving_a_newcomer() {
        // Without a share the loop fills the whole 60 s window: the newcomer waits for its end
        // and is mostly shed.
        let (unshared, looped_unshared) = newcomer_start(secs(60));
        assert!(unshared.start >= secs(59) && unshared.admitted < 500, "{unshared:?}");
        // With a 10 s share the loop holds at most 10 s of budget (each repeat is cut to what
        // has drained since the last), and the newcomer's window opens within it.
        let (shared, looped_shared) = newcomer_start(secs(10));
        assert_eq!(shared.admitted, 500, "{shared:?}");
        assert!(shared.start <= secs(10), "{shared:?}");
        assert!(!shared.share_limited);
        // The loop still got answers at the full rate: 30 s x 500 answers per second, plus
        // its share held ahead.
        assert!(looped_shared >= 15_000 && looped_shared < looped_unshared, "{looped_shared}");
    }

    #[test]
    fn test_window_offset_maps_onto_window() {
        let w = window(secs(20), secs(40), true, 1, Duration::ZERO);
        assert_eq!(w.offset(0), secs(20));
        assert_eq!(w.offset(1 << 63), secs(30));
        let last = w.offset(u64::MAX);
        assert!(last < secs(40) && last > secs(40) - ms(1));
        let empty = window(secs(3), secs(3), false, 0, Duration::ZERO);
        assert_eq!(empty.offset(u64::MAX), secs(3));
    }

    #[test]
    fn test_budget_huge_request_does_not_overflow() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 1, Duration::MAX, Duration::MAX);
        let w = budget.window(t0, usize::MAX, usize::MAX, IDLE);
        assert_eq!(w.admitted, 0);
        assert_eq!(w.length, DEFAULT);
        let w = budget.window(t0, usize::MAX, 1, IDLE);
        assert_eq!(w.admitted, 86_400, "one byte per second for the 24-hour cap");
        assert_eq!(w.length, secs(86_400));
    }

    #[test]
    #[should_panic(expected = "positive")]
    fn test_budget_zero_rate_panics() {
        let _ = AnswerBudget::new(DEFAULT, 0, secs(10), secs(10));
    }

    #[test]
    fn test_budget_reply_bytes_push_later_windows() {
        let t0 = Instant::now();
        let mut budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        // 5 kB of unicast replies at 100 kB/s: 50 ms of budget, paid from now.
        assert_eq!(budget.charge(t0, 5_000), ms(50));
        assert_eq!(budget.backlog(t0), ms(50));
        let w = budget.window(t0, 10, 200, IDLE);
        assert_eq!(w.start, ms(50), "a window opens after the replies' bytes");
        // Idle time is not banked: a reply after a pause is paid from then.
        assert_eq!(budget.charge(t0 + secs(10), 100), ms(1));
        assert_eq!(budget.backlog(t0 + secs(10)), ms(1));
    }
}
