//! The services a mapping can be made for, as LivePerson's mTLS API "Overview" numbers them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A LivePerson service that sends traffic through the gateway.
///
/// LivePerson's mTLS API "Overview" defines them as a Java enum with string ids: `TEST_SERVICE("0")`, `IDP("1")`,
/// `WEBHOOKS("2")`. Callers may name a service either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Service {
    TestService,
    Idp,
    Webhooks,
}

/// The text named no known service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown service: expected TEST_SERVICE, IDP, WEBHOOKS or 0, 1, 2")]
pub struct UnknownService;

impl Service {
    pub const ALL: [Service; 3] = [Service::TestService, Service::Idp, Service::Webhooks];

    /// The numeric id used in mapping bodies (`serviceId`).
    pub fn id(self) -> u8 {
        match self {
            Service::TestService => 0,
            Service::Idp => 1,
            Service::Webhooks => 2,
        }
    }

    /// The id as LivePerson's documents write it in JSON and headers: `"0"`, `"1"`, `"2"`.
    pub fn id_text(self) -> &'static str {
        match self {
            Service::TestService => "0",
            Service::Idp => "1",
            Service::Webhooks => "2",
        }
    }

    /// The enum name used in `LP-service-name` and in check-mapping bodies.
    pub fn name(self) -> &'static str {
        match self {
            Service::TestService => "TEST_SERVICE",
            Service::Idp => "IDP",
            Service::Webhooks => "WEBHOOKS",
        }
    }

    pub fn from_id(id: u8) -> Result<Self, UnknownService> {
        Self::ALL
            .into_iter()
            .find(|s| s.id() == id)
            .ok_or(UnknownService)
    }
}

impl FromStr for Service {
    type Err = UnknownService;

    /// Accepts the enum name or the numeric id. Names are case sensitive, as LivePerson's documents'
    /// Java enum is.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|svc| svc.name() == s || svc.id_text() == s)
            .ok_or(UnknownService)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Service> for u8 {
    fn from(s: Service) -> u8 {
        s.id()
    }
}

impl TryFrom<u8> for Service {
    type Error = UnknownService;
    fn try_from(id: u8) -> Result<Self, Self::Error> {
        Self::from_id(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn names_and_ids_both_parse() {
        assert_eq!("IDP".parse(), Ok(Service::Idp));
        assert_eq!("1".parse(), Ok(Service::Idp));
        assert_eq!("WEBHOOKS".parse(), Ok(Service::Webhooks));
        assert_eq!("0".parse(), Ok(Service::TestService));
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn unknown_and_miscased_names_are_refused() {
        for bad in [
            "idp",
            "3",
            "01",
            "+1",
            "",
            " 1",
            "01x",
            "TEST SERVICE",
            "255",
        ] {
            assert_eq!(bad.parse::<Service>(), Err(UnknownService), "{bad:?}");
        }
    }

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn serializes_as_numeric_id() {
        assert_eq!(serde_json::to_string(&Service::Webhooks).unwrap(), "2");
        assert_eq!(serde_json::from_str::<Service>("1").unwrap(), Service::Idp);
        assert!(serde_json::from_str::<Service>("7").is_err());
    }
}
