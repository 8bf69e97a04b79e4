//! TLS protocol versions an upstream cluster may negotiate: what Envoy's BoringSSL speaks,
//! and the range a cluster is given (Envoy takes a minimum and a maximum, not a list).

use serde::{Deserialize, Serialize};

/// One TLS protocol version, named as LivePerson's Bot Accounts documents name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) enum TlsVersion {
    #[serde(rename = "TLSv1.0")]
    V1_0,
    #[serde(rename = "TLSv1.1")]
    V1_1,
    #[serde(rename = "TLSv1.2")]
    V1_2,
    #[serde(rename = "TLSv1.3")]
    V1_3,
}

impl TlsVersion {
    pub(crate) const ALL: [TlsVersion; 4] = [
        TlsVersion::V1_0,
        TlsVersion::V1_1,
        TlsVersion::V1_2,
        TlsVersion::V1_3,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_0 => "TLSv1.0",
            TlsVersion::V1_1 => "TLSv1.1",
            TlsVersion::V1_2 => "TLSv1.2",
            TlsVersion::V1_3 => "TLSv1.3",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TlsVersion> {
        TlsVersion::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// 0 for TLS 1.0 … 3 for TLS 1.3: how cluster names spell a non-default range.
    pub(crate) fn digit(self) -> u8 {
        match self {
            TlsVersion::V1_0 => 0,
            TlsVersion::V1_1 => 1,
            TlsVersion::V1_2 => 2,
            TlsVersion::V1_3 => 3,
        }
    }
}

/// Why a list of protocols cannot be a cluster's range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolsError {
    #[error("name at least one protocol")]
    Empty,
    #[error("{0:?} is not a protocol Envoy can speak; use TLSv1.0, TLSv1.1, TLSv1.2, TLSv1.3")]
    Unknown(String),
    #[error("Envoy uses a range of versions: name consecutive ones (e.g. TLSv1.2 and TLSv1.3)")]
    NotConsecutive,
}

/// The versions a cluster may negotiate, `min <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TlsRange {
    pub(crate) min: TlsVersion,
    pub(crate) max: TlsVersion,
}

impl TlsRange {
    /// TLS 1.2 to 1.3: what every mapping without a Mutual Authentication credential uses.
    pub(crate) const DEFAULT: TlsRange = TlsRange {
        min: TlsVersion::V1_2,
        max: TlsVersion::V1_3,
    };

    /// The range a credential's list names. The list must be one: `["TLSv1.0", "TLSv1.3"]`
    /// without the two between is refused rather than silently widened.
    pub(crate) fn from_names(names: &[String]) -> Result<TlsRange, ProtocolsError> {
        let versions = names
            .iter()
            .map(|n| TlsVersion::parse(n).ok_or_else(|| ProtocolsError::Unknown(n.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        TlsRange::from_versions(&versions)
    }

    /// The range of a list of versions, which must be consecutive (repeats allowed).
    pub(crate) fn from_versions(versions: &[TlsVersion]) -> Result<TlsRange, ProtocolsError> {
        let mut sorted = versions.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
            return Err(ProtocolsError::Empty);
        };
        if usize::from(max.digit() - min.digit()) + 1 != sorted.len() {
            return Err(ProtocolsError::NotConsecutive);
        }
        Ok(TlsRange { min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_range_is_consecutive_known_versions() {
        assert_eq!(
            TlsRange::from_names(&names(&["TLSv1.3", "TLSv1.2", "TLSv1.2"])),
            Ok(TlsRange::DEFAULT)
        );
        assert_eq!(
            TlsRange::from_names(&names(&["TLSv1.0"])),
            Ok(TlsRange {
                min: TlsVersion::V1_0,
                max: TlsVersion::V1_0
            })
        );
        assert_eq!(TlsRange::from_names(&[]), Err(ProtocolsError::Empty));
        assert_eq!(
            TlsRange::from_names(&names(&["TLSv1.0", "TLSv1.3"])),
            Err(ProtocolsError::NotConsecutive)
        );
        assert_eq!(
            TlsRange::from_names(&names(&["SSLv3"])),
            Err(ProtocolsError::Unknown("SSLv3".into()))
        );
    }

    #[test]
    fn versions_serialize_as_their_documented_names() {
        for v in TlsVersion::ALL {
            assert_eq!(
                serde_json::to_value(v).unwrap(),
                serde_json::json!(v.as_str())
            );
            assert_eq!(TlsVersion::parse(v.as_str()), Some(v));
        }
    }
}
