//! The filter's plugin configuration, in two phases: [`FilterConfig`] is the JSON an operator
//! writes (camelCase, unknown fields refused, so a misspelt option is an error rather than a
//! silently ignored one), and [`Settings`] is what it compiles to, checked once at
//! `on_configure` and then read by every request.
//!
//! why: an invalid configuration does not stop the filter from loading. It compiles into
//! [`Settings::invalid`], whose only effect is a 503 `filter_misconfigured` on every request:
//! fail closed, and visible to callers, rather than a listener Envoy silently drops.

use serde::Deserialize;

use crate::throttle::{self, Limits, LimitsError};

/// The most proxies `xffTrustedHops` may name. More is a configuration mistake, not a network.
pub const MAX_XFF_TRUSTED_HOPS: u32 = 16;
/// The widest OAuth1 timestamp window `maxSkewSeconds` may name, seconds.
pub const MAX_SKEW_SECONDS: u64 = 3600;

/// The filter's plugin configuration, as written in Envoy's bootstrap (beside `"role":
/// "filter"`, which the glue reads to pick the role). Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterConfig {
    #[serde(default)]
    throttle: ThrottleConfig,
    /// How many proxies in front of Envoy append to `X-Forwarded-For`; 0 (the default) means
    /// the client IP is the downstream peer and the header is ignored.
    #[serde(default)]
    xff_trusted_hops: u32,
    /// Log target query strings in the audit log (they are redacted by default).
    #[serde(default)]
    log_query: bool,
    /// OAuth1 timestamp window, seconds.
    #[serde(default = "default_skew")]
    max_skew_seconds: u64,
    /// The scheme clients reach the gateway with; absent or `null` means `http`.
    #[serde(default)]
    public_scheme: Option<PublicScheme>,
}

fn default_skew() -> u64 {
    crate::oauth1::DEFAULT_MAX_SKEW_SECS
}

/// Per-client-IP throttling, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ThrottleConfig {
    #[serde(default = "default_rate")]
    rate_per_second: u32,
    // why: the burst defaults to the default *rate* (one second's worth), not to
    // `throttle::DEFAULT_BURST`; the two are equal today, and this is what operators got.
    #[serde(default = "default_rate")]
    burst: u32,
}

fn default_rate() -> u32 {
    throttle::DEFAULT_RATE_PER_SEC
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            rate_per_second: default_rate(),
            burst: default_rate(),
        }
    }
}

/// The scheme clients reach the gateway with. OAuth1 signatures cover it, so it must be what
/// the client used: `http` (Envoy's own listener), or `https` when a TLS-terminating load
/// balancer sits in front of Envoy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicScheme {
    #[default]
    Http,
    Https,
}

impl PublicScheme {
    /// The scheme as it appears in a URL (and in an OAuth1 base string).
    pub fn as_str(self) -> &'static str {
        match self {
            PublicScheme::Http => "http",
            PublicScheme::Https => "https",
        }
    }
}

/// Why a [`FilterConfig`] does not compile. (A value of the wrong type, an unknown
/// `publicScheme` or an unknown field is already refused when the JSON is read.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("throttle: {0}")]
    Throttle(#[from] LimitsError),
    #[error("xffTrustedHops must be at most {MAX_XFF_TRUSTED_HOPS}, not {0}")]
    XffTrustedHops(u32),
    #[error("maxSkewSeconds must be from 1 to {MAX_SKEW_SECONDS}, not {0}")]
    MaxSkewSeconds(u64),
}

/// The compiled configuration every request reads. Built only by [`TryFrom<FilterConfig>`]
/// or [`Settings::invalid`], so a `valid` one holds only checked values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `false`: refuse every request (see the module doc).
    pub(crate) valid: bool,
    pub(crate) limits: Limits,
    pub(crate) xff_trusted_hops: u32,
    pub(crate) log_query: bool,
    pub(crate) max_skew_secs: u64,
    pub(crate) public_scheme: PublicScheme,
}

impl TryFrom<FilterConfig> for Settings {
    type Error = ConfigError;

    fn try_from(cfg: FilterConfig) -> Result<Self, ConfigError> {
        let limits = Limits::new(cfg.throttle.rate_per_second, cfg.throttle.burst)?;
        if cfg.xff_trusted_hops > MAX_XFF_TRUSTED_HOPS {
            return Err(ConfigError::XffTrustedHops(cfg.xff_trusted_hops));
        }
        if !(1..=MAX_SKEW_SECONDS).contains(&cfg.max_skew_seconds) {
            return Err(ConfigError::MaxSkewSeconds(cfg.max_skew_seconds));
        }
        Ok(Settings {
            valid: true,
            limits,
            xff_trusted_hops: cfg.xff_trusted_hops,
            log_query: cfg.log_query,
            max_skew_secs: cfg.max_skew_seconds,
            public_scheme: cfg.public_scheme.unwrap_or_default(),
        })
    }
}

impl Settings {
    /// The settings of a filter whose configuration is invalid or unreadable: every request
    /// is refused with 503 `filter_misconfigured`. The other fields are never read.
    pub fn invalid() -> Settings {
        Settings {
            valid: false,
            limits: Limits::default(),
            xff_trusted_hops: 0,
            log_query: false,
            max_skew_secs: default_skew(),
            public_scheme: PublicScheme::Http,
        }
    }

    /// How long an OAuth1 nonce must be remembered: a timestamp is accepted up to
    /// `maxSkewSeconds` either side of now, so a nonce can be replayed for twice that.
    pub fn nonce_window_secs(&self) -> u64 {
        self.max_skew_secs.saturating_mul(2)
    }
}

#[cfg(test)]
mod tests;
