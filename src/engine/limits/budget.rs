//! The global answer byte-rate budget (SPEC sections 4 and 7) and the leisure window it gives
//! each request (RFC 7252 section 8.2): how long a request's answers may take and how many of
//! them fit, given the rate and the other sources sharing it.

use std::time::Duration;

/// The answer byte-rate budget as each request sees it: its **fair share** of the rate, the
/// leisure window that share implies, and how many answers fit (SPEC sections 4 and 7).
///
/// # The policy
///
/// The budget `R` is shared **equally among the sources that have answers pending** (SPEC 7):
/// the scheduler sends due answers by deficit round robin over sources
/// (`super::super::schedule`), so with `k` such sources each gets at least `R / k`. A request
/// is planned at the share it will get:
///
/// ```text
/// R  rate budget (bytes/s)      D  default leisure      W  max window
/// k  sources with answers pending, counting the requester
/// Ws source window: what a source with answers pending may still add, as budget time at R
/// h  what the source's earlier admitted answers still hold (Grant::held)
///
/// request of E answers of S bytes each:
/// Q  answers the source already has pending (its earlier requests)
///
///   r     = 4/5 x R / k                    the share, with headroom (below)
///   fair  = floor(W x r / S) - Q           answers that fit in W at the share, after Q
///   own   = floor((Ws - h) x R / S)        if h > 0: a busy source's cap; else unbounded
///   a     = min(E, fair, own)              admitted; the engine sheds the rest, counted
///   L     = max(D, (Q + a) x S / r)        the window: the share's time for Q and the admitted
///   stretched = L > D
///   cost  = a x S / R                      charged to the source (SourceLimiter::charge)
/// ```
///
/// A source's requests share its one share (round robin over them, inside its turn), so a
/// request is planned behind its source's earlier answers (`Q`), not beside them: a repeated
/// discovery gets a longer window instead of answers that cannot leave in time.
///
/// With one source (`k = 1`, `Q = 0`) this is SPEC 4's `L = max(D, E x S / R)` planned at 4/5 of `R`:
/// E = 10000 answers of S = 200 bytes at R = 100 kB/s give 25 s. The **headroom**: answers
/// are drawn at random, so over a window planned at exactly the rate they run ahead of it by a
/// random walk (about `sqrt(E)` answers), and since no answer leaves after its window (SPEC 4)
/// those still queued at its end would expire (about 1 % did, before the headroom). At 4/5 of
/// the share the queue drains as it forms, and the window's last 30 ms (drawn empty, see
/// `schedule`) absorb the rest. The window always **opens at once**: there is no
/// queue of earlier requests' bytes to wait behind (the budget it replaces placed each window
/// after every byte admitted before, so 70 spoofed discoveries could push a legitimate OBT's
/// first answer 70 s out). Nothing is reserved either: an answer that is shed, cancelled or
/// expired never takes the rate, and what it would have taken goes to the others at once.
///
/// # The case it must survive
///
/// 999 eligible devices, `R` = 200,000 B/s (about 1,000 answers per second), 200 sources each
/// sending one discovery within a second, then a legitimate OBT. The OBT is source 201: its
/// window is `min(W, 999 x 201 / 1,000 s)` = 60 s with 300 admitted, so about 5 answers per
/// second are due, and round robin over 201 sources serves each source with due answers about
/// 5 times a second: its first answer leaves within a round of its first draw (well inside 2 s)
/// and it gets its fair share from then on. The attackers' earlier windows were planned for
/// fewer sources, so more of their answers come due than their share can send; those expire at
/// their window's end (`answers_expired`), never late and never at the OBT's expense.
///
/// # The source share
///
/// Round robin bounds what a source *sends*; `Ws` bounds what it may *hold*: one client
/// repeating its discovery (a looping OBT, a script within its request rate) would otherwise
/// keep `W` worth of answers pending. While its answers are pending, a source may add at most
/// `Ws - h` of budget time (`h`, a GCRA over its own admitted bytes at rate `R`, drains as time
/// passes). The first request of an idle source is not capped by the share: a lone OBT
/// discovering a big fleet still gets everything that fits in `W`.
///
/// Integer nanoseconds and bytes throughout (no float drift); admitted bytes round the budget
/// time up, so rounding never exceeds the rate.
#[derive(Debug, Clone)]
pub struct AnswerBudget {
    default_leisure: Duration,
    rate: u64,
    max_window: Duration,
    source_window: Duration,
}

/// How long one request's answers may take, and how many of them fit the budget (the rest are
/// shed by the engine and counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use]
pub struct Window {
    /// When it closes, after the request: the leisure `L` of SPEC section 4 at the request's
    /// fair share. Answers are drawn uniformly in `[0, length)`.
    pub length: Duration,
    /// Whether the budget made the window longer than the configured leisure.
    pub stretched: bool,
    /// How many of the request's answers fit (`<= answers`); the engine sheds the rest.
    pub admitted: usize,
    /// The budget time the admitted answers take at the full rate, to charge to the source.
    pub cost: Duration,
    /// Whether the source's share, not the global window, cut the request short.
    pub share_limited: bool,
}

/// The fraction of its share a request's window is planned at (4/5): see the type's docs.
const HEADROOM: (u128, u128) = (4, 5);

/// The answer bytes a budget of `rate_bytes_per_sec` plans into a window of `window` for one
/// source alone (4/5 of the rate, the answer budget's headroom): a configuration under which
/// this is less than one answer answers nothing, and is refused at start.
pub fn plannable_bytes(rate_bytes_per_sec: u64, window: Duration) -> u128 {
    window.as_nanos() * u128::from(rate_bytes_per_sec) * HEADROOM.0 / (HEADROOM.1 * NANOS_PER_SEC)
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
        }
    }

    /// Plans a request's `answers` answers of `bytes_per_answer` bytes each at the fair share
    /// of `sharing` sources (those with answers pending, counting the requester; at least 1),
    /// behind the `queued` answers its source already has pending; `held` is what the source's
    /// earlier answers still hold ([`Grant::held`]). See the type's
    /// docs for the math. O(1), no allocation.
    ///
    /// [`Grant::held`]: super::source::Grant::held
    pub fn window(
        &self,
        answers: usize,
        bytes_per_answer: usize,
        held: Duration,
        sharing: usize,
        queued: usize,
    ) -> Window {
        let size = bytes_per_answer as u128;
        let queued = queued as u128;
        // The share with headroom, r = R x num / den, as a fraction of R.
        let (num, den) = (HEADROOM.0, HEADROOM.1 * sharing.max(1) as u128);
        // Answers of `size` bytes that fit in `time` at `num / den` of the rate.
        let fit = |time: Duration, num: u128, den: u128| {
            let bytes = time.as_nanos() * u128::from(self.rate) * num / NANOS_PER_SEC;
            bytes.checked_div(size.saturating_mul(den)).unwrap_or(u128::MAX)
        };
        let fair = fit(self.max_window, num, den).saturating_sub(queued);
        let own = if held.is_zero() {
            u128::MAX
        } else {
            fit(self.source_window.saturating_sub(held), 1, 1)
        };
        let admitted = (answers as u128).min(fair).min(own) as usize;
        let bytes = (admitted as u128).saturating_mul(size);
        // Nothing admitted, nothing to place: the default window, not stretched.
        let behind =
            if admitted == 0 { 0 } else { (admitted as u128 + queued).saturating_mul(size) };
        let at_share = self.budget_time(behind.saturating_mul(den).div_ceil(num));
        let length = at_share.min(self.max_window);
        Window {
            length: length.max(self.default_leisure),
            stretched: length > self.default_leisure,
            admitted,
            cost: self.budget_time(bytes),
            share_limited: own < fair && own < answers as u128,
        }
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
    use std::time::Instant;

    const DEFAULT: Duration = Duration::from_secs(2);
    /// What an idle source holds.
    const IDLE: Duration = Duration::ZERO;

    /// A window the source share did not cut.
    fn window(length: Duration, stretched: bool, admitted: usize, cost: Duration) -> Window {
        Window { length, stretched, admitted, cost, share_limited: false }
    }

    #[test]
    fn test_budget_small_request_gets_default_leisure() {
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        // 2000 bytes at 100 kB/s: 20 ms of budget.
        assert_eq!(budget.window(10, 200, IDLE, 1, 0), window(DEFAULT, false, 10, ms(20)));
    }

    #[test]
    fn test_budget_ten_thousand_answers_stretch_to_25_s() {
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        // 20 s of budget, planned at 4/5 of the rate.
        let w = budget.window(10_000, 200, IDLE, 1, 0);
        assert_eq!(w, window(secs(25), true, 10_000, secs(20)));
    }

    #[test]
    fn test_budget_shares_the_rate_among_pending_sources() {
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        // With a second source pending, the same request gets half the rate: twice as long.
        let w = budget.window(10_000, 200, IDLE, 2, 0);
        assert_eq!(w, window(secs(50), true, 10_000, secs(20)));
        // With 201 sources, 60 s at 4/5 x R / 201 fit 119 answers of 200 B; the window never
        // waits for anyone's earlier answers.
        let w = budget.window(999, 200, IDLE, 201, 0);
        assert_eq!((w.admitted, w.stretched), (119, true));
        assert!(w.length <= secs(60) && w.length > secs(59), "{w:?}");
        // A small request still gets the default leisure while its share's time is shorter;
        // with a thousand sharing, even 3 answers take 7.5 s of it.
        let w = budget.window(3, 200, IDLE, 10, 0);
        assert_eq!((w.admitted, w.length), (3, DEFAULT));
        let w = budget.window(3, 200, IDLE, 1_000, 0);
        assert_eq!((w.admitted, w.length), (3, ms(7_500)));
    }

    #[test]
    fn test_budget_plans_a_request_behind_its_sources_earlier_answers() {
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(60));
        // 400 answers of 200 B are 1 s at 4/5 of the rate: alone, the default leisure...
        assert_eq!(budget.window(400, 200, IDLE, 1, 0).length, DEFAULT);
        // ...behind 1,200 of its own, 4 s: they share the source's one share.
        let w = budget.window(400, 200, IDLE, 1, 1_200);
        assert_eq!((w.admitted, w.length, w.stretched), (400, secs(4), true));
        // Behind 23,900 (59.75 s), only 100 more fit in the 60 s window.
        assert_eq!(budget.window(400, 200, IDLE, 1, 23_900).admitted, 100);
    }

    #[test]
    fn test_budget_sheds_past_max_window() {
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(30), secs(30));
        // 30 s at 4/5 of 100 kB/s: 2.4 MB, 12,000 answers of 200 bytes.
        assert_eq!(budget.window(1_000_000, 200, IDLE, 1, 0).admitted, 12_000);
        assert_eq!(budget.window(1_000_000, 200, IDLE, 3, 0).admitted, 4_000);
    }

    #[test]
    fn test_budget_zero_answers_or_zero_bytes() {
        let budget = AnswerBudget::new(DEFAULT, 1_000, secs(10), secs(10));
        assert_eq!(budget.window(0, 200, IDLE, 1, 0), window(DEFAULT, false, 0, Duration::ZERO));
        let w = budget.window(7, 0, IDLE, 4, 0);
        assert_eq!(w.admitted, 7);
        assert_eq!(w.length, DEFAULT);
    }

    /// Whatever the sizes and the sharing, a window's density stays within the share it was
    /// planned for, and within the window bounds.
    #[test]
    fn test_budget_window_density_within_the_share() {
        let rate = 50_000u64;
        let budget = AnswerBudget::new(DEFAULT, rate, secs(40), secs(40));
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..10_000 {
            let answers = if rng.bool() { rng.usize(0..40) } else { rng.usize(0..200_000) };
            let size = rng.usize(1..1_200);
            let sharing = rng.usize(1..300);
            let w = budget.window(answers, size, IDLE, sharing, 0);
            assert!(w.admitted <= answers);
            assert!(w.length >= DEFAULT && w.length <= secs(40), "{w:?}");
            let density = (w.admitted * size) as f64 / w.length.as_secs_f64();
            let share = 0.8 * rate as f64 / sharing as f64;
            assert!(density <= share + 1.0, "{w:?} {sharing}");
            if w.admitted < answers {
                // Cut only when one more answer at the share would not fit in the window.
                let one = Duration::from_secs_f64(size as f64 / share);
                assert!(w.length + one >= secs(40), "{w:?}");
            }
        }
    }

    #[test]
    fn test_budget_busy_source_held_to_its_share() {
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), secs(10));
        // An idle source may take more than its share: 10,000 x 200 B is 20 s of budget.
        let first = budget.window(10_000, 200, IDLE, 1, 0);
        assert_eq!((first.admitted, first.cost, first.share_limited), (10_000, secs(20), false));
        // While those 20 s are held, its next request gets nothing...
        let second = budget.window(10_000, 200, secs(19), 1, 0);
        assert_eq!((second.admitted, second.cost, second.share_limited), (0, Duration::ZERO, true));
        // ...and once it holds 6 s, 4 s more (2,000 answers).
        let third = budget.window(10_000, 200, secs(6), 1, 0);
        assert_eq!((third.admitted, third.cost, third.share_limited), (2_000, secs(4), true));
        // A request within its share is not cut.
        let small = budget.window(100, 200, secs(6), 1, 0);
        assert_eq!((small.admitted, small.share_limited), (100, false));
        // Where the global window is the tighter limit, the cut is not the share's.
        let tight = AnswerBudget::new(DEFAULT, 100_000, secs(5), secs(5));
        let cut = tight.window(10_000, 200, ms(1), 2, 0);
        assert_eq!((cut.admitted, cut.share_limited), (1_000, false));
    }

    /// A looping source (every 500 ms, 5 s of budget each, within its request rate): what it
    /// holds with and without a share.
    fn looped(source_window: Duration) -> usize {
        let t0 = Instant::now();
        let mut limiter = SourceLimiter::new(2.0, 2.0, 16);
        let budget = AnswerBudget::new(DEFAULT, 100_000, secs(60), source_window);
        let mut looped = 0;
        for i in 0..60 {
            let now = t0 + ms(500 * i);
            let grant = limiter.allow(now, ip("fe80::bad")).expect("within the request rate");
            let window = budget.window(2_500, 200, grant.held, 1, 0);
            limiter.charge(now, grant, window.cost);
            looped += window.admitted;
        }
        looped
    }

    #[test]
    fn test_budget_share_bounds_what_a_looping_source_holds() {
        // With the share as wide as the window the loop holds up to 60 s ahead of the rate
        // (about 45,000 answers in 30 s); with a 10 s share, at most 10 s ahead: the rate's
        // 15,000 answers in 30 s plus 10 s held.
        let unshared = looped(secs(60));
        assert!(unshared > 40_000, "{unshared}");
        let shared = looped(secs(10));
        assert!((15_000..=20_000).contains(&shared), "{shared}");
    }

    #[test]
    fn test_budget_huge_request_does_not_overflow() {
        let budget = AnswerBudget::new(DEFAULT, 1, Duration::MAX, Duration::MAX);
        let w = budget.window(usize::MAX, usize::MAX, IDLE, usize::MAX, usize::MAX);
        assert_eq!(w.admitted, 0);
        assert_eq!(w.length, DEFAULT);
        let w = budget.window(usize::MAX, 1, IDLE, 1, 0);
        assert_eq!(w.admitted, 69_120, "4/5 byte per second for the 24-hour cap");
        assert_eq!(w.length, secs(86_400));
    }

    #[test]
    #[should_panic(expected = "positive")]
    fn test_budget_zero_rate_panics() {
        let _ = AnswerBudget::new(DEFAULT, 0, secs(10), secs(10));
    }
}
