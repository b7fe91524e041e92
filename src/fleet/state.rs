//! The hot state of one device, packed into one `u64` so that a reader sees all of it at once.
//!
//! The data path decides eligibility from this word alone: one atomic load gives `known`,
//! `dos.s`, `owned`, DOC and the bridge's ownership together, so a reader can never combine a new
//! `owned` with an old `dos` (no torn device). The control thread computes a new word and stores
//! it with one atomic store.
//!
//! ```text
//!  bit 0      present      the slot holds a device
//!  bit 1      known        the bridge reported the state since start (else: fail closed)
//!  bits 2..5  dos          dos.s, 0..=4
//!  bit 5      owned        doxm.owned
//!  bit 6      doc_open     a Device Onboarding Connection is open
//!  bit 7      has_bridge   the device is a VOD of a bridge
//!  bit 8      bridge_owned the bridge is known and owned (meaningful with has_bridge)
//!  bits 32..  incarnation  bumped whenever the slot gets a new device or loses one
//! ```
//!
//! The incarnation lets the engine tell, when an answer comes due, that the slot it scheduled
//! for still holds the same device.

use uuid::Uuid;

use crate::policy::{self, Bridge, DeviceFacts, Dos};

const PRESENT: u64 = 1 << 0;
const KNOWN: u64 = 1 << 1;
const DOS_SHIFT: u32 = 2;
const DOS_MASK: u64 = 0b111 << DOS_SHIFT;
const OWNED: u64 = 1 << 5;
const DOC_OPEN: u64 = 1 << 6;
const HAS_BRIDGE: u64 = 1 << 7;
const BRIDGE_OWNED: u64 = 1 << 8;
const INCARNATION_SHIFT: u32 = 32;

/// The onboarding state the bridge reports for a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnboardingState {
    /// `dos.s`.
    pub dos: Dos,
    /// `doxm.owned`.
    pub owned: bool,
    /// Whether a Device Onboarding Connection is open.
    pub doc_open: bool,
}

/// A snapshot of one device's hot state; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StateWord(u64);

impl StateWord {
    /// The word of an empty slot.
    pub const EMPTY: StateWord = StateWord(0);

    /// The word from its raw bits.
    pub const fn from_bits(bits: u64) -> StateWord {
        StateWord(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// A present device: `state` is `None` until the bridge reports it.
    pub fn new(
        incarnation: u32,
        state: Option<OnboardingState>,
        has_bridge: bool,
        bridge_owned: bool,
    ) -> StateWord {
        let mut bits = PRESENT | u64::from(incarnation) << INCARNATION_SHIFT;
        if let Some(s) = state {
            bits |= KNOWN | (s.dos as u64) << DOS_SHIFT;
            bits |= if s.owned { OWNED } else { 0 } | if s.doc_open { DOC_OPEN } else { 0 };
        }
        if has_bridge {
            bits |= HAS_BRIDGE | if bridge_owned { BRIDGE_OWNED } else { 0 };
        }
        StateWord(bits)
    }

    /// Whether the slot holds a device.
    pub const fn is_present(self) -> bool {
        self.0 & PRESENT != 0
    }

    /// The slot's incarnation (see the [module docs](self)).
    pub const fn incarnation(self) -> u32 {
        (self.0 >> INCARNATION_SHIFT) as u32
    }

    /// The reported onboarding state, `None` while unknown.
    pub fn state(self) -> Option<OnboardingState> {
        if self.0 & KNOWN == 0 {
            return None;
        }
        Some(OnboardingState {
            // Only `new` writes the dos bits, from a `Dos`; an impossible value reads as RESET,
            // which is never eligible.
            dos: Dos::from_u8(((self.0 & DOS_MASK) >> DOS_SHIFT) as u8).unwrap_or(Dos::Reset),
            owned: self.0 & OWNED != 0,
            doc_open: self.0 & DOC_OPEN != 0,
        })
    }

    /// Whether the device is a VOD of a bridge.
    pub const fn has_bridge(self) -> bool {
        self.0 & HAS_BRIDGE != 0
    }

    /// Whether the device's bridge is known and owned (meaningful with [`StateWord::has_bridge`]).
    pub const fn bridge_owned(self) -> bool {
        self.0 & BRIDGE_OWNED != 0
    }

    /// The same word with the bridge's ownership replaced (the bridge cascade).
    pub const fn with_bridge_owned(self, bridge_owned: bool) -> StateWord {
        if bridge_owned {
            StateWord(self.0 | BRIDGE_OWNED)
        } else {
            StateWord(self.0 & !BRIDGE_OWNED)
        }
    }

    /// The facts the policy needs, for device `uuid`.
    pub fn facts(self, uuid: Uuid) -> DeviceFacts {
        let state = self.state();
        let bridge = match (self.has_bridge(), self.bridge_owned()) {
            (false, _) => Bridge::None,
            (true, true) => Bridge::Owned,
            (true, false) => Bridge::Unowned,
        };
        DeviceFacts {
            uuid,
            known: state.is_some(),
            dos: state.map_or(Dos::Reset, |s| s.dos),
            owned: state.is_some_and(|s| s.owned),
            doc_open: state.is_some_and(|s| s.doc_open),
            bridge,
        }
    }

    /// `eligible(v)` of SPEC section 1.1, from this word alone. An empty slot is not eligible.
    pub fn is_eligible(self) -> bool {
        self.is_present() && policy::eligibility(&self.facts(Uuid::nil())).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_roundtrip_every_state() {
        for dos in Dos::ALL {
            for bits in 0..16u8 {
                let (owned, doc_open, has_bridge, bridge_owned) =
                    (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0, bits & 8 != 0);
                let state = OnboardingState { dos, owned, doc_open };
                let word = StateWord::new(0xdead_beef, Some(state), has_bridge, bridge_owned);
                assert!(word.is_present());
                assert_eq!(word.incarnation(), 0xdead_beef);
                assert_eq!(word.state(), Some(state));
                assert_eq!(word.has_bridge(), has_bridge);
                let eligible =
                    dos == Dos::Rfotm && !owned && !doc_open && (!has_bridge || bridge_owned);
                assert_eq!(word.is_eligible(), eligible, "{state:?} {has_bridge} {bridge_owned}");
            }
        }
    }

    #[test]
    fn test_unknown_and_empty_never_eligible() {
        assert!(!StateWord::EMPTY.is_eligible());
        let unknown = StateWord::new(1, None, false, false);
        assert_eq!(unknown.state(), None);
        assert!(!unknown.is_eligible());
    }

    #[test]
    fn test_bridge_cascade_flag() {
        let state = OnboardingState { dos: Dos::Rfotm, owned: false, doc_open: false };
        let word = StateWord::new(3, Some(state), true, false);
        assert!(!word.is_eligible());
        assert!(word.with_bridge_owned(true).is_eligible());
        assert!(!word.with_bridge_owned(true).with_bridge_owned(false).is_eligible());
    }
}
