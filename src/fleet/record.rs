//! The descriptive record of one device: what its answers say about it.
//!
//! Records change rarely (registration, owner transfer) and are replaced whole, RCU-style, so a
//! reader holds either the old record or the new one. The hot onboarding state lives apart, in
//! the device's [`StateWord`](super::state::StateWord).

use std::sync::Arc;

use uuid::Uuid;

use crate::wire::ocf::{Doxm, Link, DOXM_INTERFACES, RT_DOXM};

/// Why a record is refused. The control plane reports these with the field name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// An endpoint that is not a `coap://` or `coaps://` URI with a host.
    #[error("eps: {0:?} is not a coap:// or coaps:// endpoint URI")]
    BadEndpoint(String),
    /// `coaps://` endpoints listed before a `coap://` one (SPEC section 5 wants coap first).
    #[error("eps: coap:// endpoints must come before coaps:// ones")]
    EndpointOrder,
    /// An empty or over-long name (`n`), or one with a line break.
    #[error("n: a device name is 1 to 64 bytes, on one line")]
    BadName,
    /// No owner-transfer method.
    #[error("oxms: at least one owner-transfer method is needed")]
    NoOxm,
    /// Newline inside an endpoint (records keep eps newline-separated).
    #[error("eps: an endpoint URI cannot contain whitespace")]
    WhitespaceInEndpoint,
}

/// One device's descriptive fields (SPEC section 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device UUID (`di`, `deviceuuid`).
    pub uuid: Uuid,
    /// The protocol-independent ID (`/oic/d` `piid`).
    pub piid: Uuid,
    /// Device types (`/oic/d` `rt`), shared between devices of the same kind.
    pub device_types: Arc<[Box<str>]>,
    /// The bridge that created this device, for a VOD.
    pub bridge: Option<Uuid>,
    /// Supported owner-transfer methods, shared between devices of the same kind.
    pub oxms: Arc<[i32]>,
    /// The selected owner-transfer method.
    pub oxmsel: i32,
    /// Supported credential types.
    pub sct: u32,
    /// The owner's UUID (nil while unowned).
    pub devowneruuid: Uuid,
    /// The resource owner's UUID.
    pub rowneruuid: Uuid,
    /// The name `n`, then the advertised endpoints at the bridge in the registered order, each
    /// on its own line: one allocation per device instead of one per string (a million devices
    /// with two endpoints each save about 80 bytes per device).
    text: Box<str>,
}

impl DeviceRecord {
    /// A record; `eps` are validated (`coap://` and `coaps://` URIs, `coap://` first).
    ///
    /// # Errors
    /// [`RecordError`] naming the bad field.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        uuid: Uuid,
        piid: Uuid,
        name: &str,
        device_types: Arc<[Box<str>]>,
        bridge: Option<Uuid>,
        oxms: Arc<[i32]>,
        oxmsel: i32,
        sct: u32,
        devowneruuid: Uuid,
        rowneruuid: Uuid,
        eps: &[&str],
    ) -> Result<DeviceRecord, RecordError> {
        if name.is_empty() || name.len() > 64 || name.contains('\n') {
            return Err(RecordError::BadName);
        }
        if oxms.is_empty() {
            return Err(RecordError::NoOxm);
        }
        let mut seen_secure = false;
        for ep in eps {
            if ep.contains(char::is_whitespace) {
                return Err(RecordError::WhitespaceInEndpoint);
            }
            let secure = match (ep.strip_prefix("coap://"), ep.strip_prefix("coaps://")) {
                (Some(host), _) if !host.is_empty() => false,
                (_, Some(host)) if !host.is_empty() => true,
                _ => return Err(RecordError::BadEndpoint((*ep).to_owned())),
            };
            if seen_secure && !secure {
                return Err(RecordError::EndpointOrder);
            }
            seen_secure |= secure;
        }
        let mut text =
            String::with_capacity(name.len() + eps.iter().map(|e| e.len() + 1).sum::<usize>());
        text.push_str(name);
        for ep in eps {
            text.push('\n');
            text.push_str(ep);
        }
        Ok(DeviceRecord {
            uuid,
            piid,
            device_types,
            bridge,
            oxms,
            oxmsel,
            sct,
            devowneruuid,
            rowneruuid,
            text: text.into_boxed_str(),
        })
    }

    /// The name `n`.
    pub fn name(&self) -> &str {
        self.text.split('\n').next().unwrap_or_default()
    }

    /// The advertised endpoints, in order.
    pub fn eps(&self) -> impl Iterator<Item = &str> + '_ {
        self.text.split('\n').skip(1)
    }

    /// The advertised endpoints of one IP family, in order: an OBT connects over the family it
    /// discovered on (SPEC section 5). IPv6 endpoints are the ones with a bracketed host.
    pub fn eps_for(&self, v6: bool) -> impl Iterator<Item = &str> + '_ {
        self.eps().filter(move |ep| {
            let host = ep.split_once("://").map_or(*ep, |(_, rest)| rest);
            host.starts_with('[') == v6
        })
    }

    /// The doxm representation; `owned` comes from the state word the decision was made on.
    pub fn doxm(&self, owned: bool) -> Doxm<'_> {
        Doxm {
            oxms: &self.oxms,
            oxmsel: self.oxmsel,
            sct: self.sct,
            owned,
            devowneruuid: self.devowneruuid,
            deviceuuid: self.uuid,
            rowneruuid: self.rowneruuid,
        }
    }

    /// The `/oic/res` link to this device's doxm, with `eps` the given endpoints.
    pub fn doxm_link<'a>(&self, eps: &'a [&'a str]) -> Link<'a> {
        Link {
            anchor: self.uuid,
            href: "/oic/sec/doxm",
            rt: &[RT_DOXM],
            interfaces: &DOXM_INTERFACES,
            bm: 1,
            eps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(eps: &[&str]) -> Result<DeviceRecord, RecordError> {
        DeviceRecord::new(
            Uuid::from_u128(1),
            Uuid::from_u128(2),
            "lamp",
            Arc::from(vec![Box::from("oic.wk.d")]),
            None,
            Arc::from(vec![0]),
            4,
            9,
            Uuid::nil(),
            Uuid::nil(),
            eps,
        )
    }

    #[test]
    fn test_eps_validated_and_kept_in_order() {
        let r = record(&["coap://[fe80::1]:5683", "coaps://[fe80::1]:5684"]).unwrap();
        assert_eq!(
            r.eps().collect::<Vec<_>>(),
            ["coap://[fe80::1]:5683", "coaps://[fe80::1]:5684"]
        );
        assert_eq!(record(&[]).unwrap().eps().count(), 0);
        let both =
            record(&["coap://[fd00::1]:1", "coap://10.0.0.1:1", "coaps://[fd00::1]:2"]).unwrap();
        assert_eq!(
            both.eps_for(true).collect::<Vec<_>>(),
            ["coap://[fd00::1]:1", "coaps://[fd00::1]:2"]
        );
        assert_eq!(both.eps_for(false).collect::<Vec<_>>(), ["coap://10.0.0.1:1"]);
        assert_eq!(
            record(&["coaps://[fe80::1]:5684", "coap://[fe80::1]:5683"]),
            Err(RecordError::EndpointOrder)
        );
        assert!(matches!(record(&["http://x"]), Err(RecordError::BadEndpoint(_))));
        assert!(matches!(record(&["coap://"]), Err(RecordError::BadEndpoint(_))));
        assert_eq!(record(&["coap://a\nb"]), Err(RecordError::WhitespaceInEndpoint));
    }
}
