use wasm_bindgen_test::wasm_bindgen_test;

use super::*;
use crate::throttle::{MAX_BURST, MAX_RATE_PER_SEC};

/// Reads `json` as the glue does (its `role` key already taken off).
fn parse(json: &str) -> Result<FilterConfig, serde_json::Error> {
    serde_json::from_str(json)
}

/// Reads and compiles `json`, which must be well-formed.
fn compile(json: &str) -> Result<Settings, ConfigError> {
    Settings::try_from(parse(json).unwrap())
}

#[wasm_bindgen_test(unsupported = test)]
fn an_empty_configuration_gets_the_defaults() {
    let s = compile("{}").unwrap();
    assert_eq!(
        s,
        Settings {
            valid: true,
            limits: Limits::new(150, 150).unwrap(),
            xff_trusted_hops: 0,
            log_query: false,
            max_skew_secs: 300,
            public_scheme: PublicScheme::Http,
        }
    );
    assert_eq!(s.limits, Limits::default());
    assert_eq!(s.max_skew_secs, crate::oauth1::DEFAULT_MAX_SKEW_SECS);
    assert_eq!(s.nonce_window_secs(), 600);
    // A throttle object with nothing in it is the default throttle too.
    assert_eq!(
        compile(r#"{"throttle":{}}"#).unwrap().limits,
        Limits::default()
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn every_option_is_read() {
    let s = compile(
        r#"{"throttle":{"ratePerSecond":10,"burst":20},"xffTrustedHops":2,"logQuery":true,
            "maxSkewSeconds":60,"publicScheme":"https"}"#,
    )
    .unwrap();
    assert_eq!(
        s,
        Settings {
            valid: true,
            limits: Limits::new(10, 20).unwrap(),
            xff_trusted_hops: 2,
            log_query: true,
            max_skew_secs: 60,
            public_scheme: PublicScheme::Https,
        }
    );
    assert_eq!(s.nonce_window_secs(), 120);
}

#[wasm_bindgen_test(unsupported = test)]
fn throttle_limits_must_be_in_range() {
    let throttle = |rate: u64, burst: u64| {
        compile(&format!(
            r#"{{"throttle":{{"ratePerSecond":{rate},"burst":{burst}}}}}"#
        ))
    };
    let (max_rate, max_burst) = (u64::from(MAX_RATE_PER_SEC), u64::from(MAX_BURST));
    assert!(throttle(1, 1).is_ok());
    assert!(throttle(max_rate, max_burst).is_ok());
    assert_eq!(
        throttle(0, 1),
        Err(ConfigError::Throttle(LimitsError::Rate))
    );
    assert_eq!(
        throttle(max_rate + 1, 1),
        Err(ConfigError::Throttle(LimitsError::Rate))
    );
    assert_eq!(
        throttle(1, 0),
        Err(ConfigError::Throttle(LimitsError::Burst))
    );
    assert_eq!(
        throttle(1, max_burst + 1),
        Err(ConfigError::Throttle(LimitsError::Burst))
    );
    // One of the two alone: the other keeps its default.
    assert_eq!(
        compile(r#"{"throttle":{"ratePerSecond":7}}"#)
            .unwrap()
            .limits,
        Limits::new(7, throttle::DEFAULT_RATE_PER_SEC).unwrap()
    );
    assert_eq!(
        compile(r#"{"throttle":{"burst":7}}"#).unwrap().limits,
        Limits::new(throttle::DEFAULT_RATE_PER_SEC, 7).unwrap()
    );
    // Not a number of the right kind: refused when read.
    assert!(parse(r#"{"throttle":{"ratePerSecond":-1}}"#).is_err());
    assert!(parse(r#"{"throttle":{"ratePerSecond":1.5}}"#).is_err());
    assert!(parse(r#"{"throttle":{"ratePerSecond":4294967296}}"#).is_err());
}

#[wasm_bindgen_test(unsupported = test)]
fn xff_trusted_hops_is_at_most_16() {
    assert_eq!(
        compile(r#"{"xffTrustedHops":16}"#)
            .unwrap()
            .xff_trusted_hops,
        MAX_XFF_TRUSTED_HOPS
    );
    assert_eq!(
        compile(r#"{"xffTrustedHops":17}"#),
        Err(ConfigError::XffTrustedHops(17))
    );
    assert_eq!(
        compile(r#"{"xffTrustedHops":4294967295}"#),
        Err(ConfigError::XffTrustedHops(u32::MAX))
    );
    assert!(parse(r#"{"xffTrustedHops":-1}"#).is_err());
    assert!(parse(r#"{"xffTrustedHops":"1"}"#).is_err());
}

#[wasm_bindgen_test(unsupported = test)]
fn max_skew_seconds_is_from_1_to_3600() {
    assert_eq!(compile(r#"{"maxSkewSeconds":1}"#).unwrap().max_skew_secs, 1);
    assert_eq!(
        compile(r#"{"maxSkewSeconds":3600}"#).unwrap().max_skew_secs,
        MAX_SKEW_SECONDS
    );
    assert_eq!(
        compile(r#"{"maxSkewSeconds":0}"#),
        Err(ConfigError::MaxSkewSeconds(0))
    );
    assert_eq!(
        compile(r#"{"maxSkewSeconds":3601}"#),
        Err(ConfigError::MaxSkewSeconds(3601))
    );
    assert!(parse(r#"{"maxSkewSeconds":-5}"#).is_err());
}

#[wasm_bindgen_test(unsupported = test)]
fn public_scheme_is_http_or_https() {
    let scheme = |json: &str| compile(json).unwrap().public_scheme;
    assert_eq!(scheme("{}"), PublicScheme::Http);
    assert_eq!(scheme(r#"{"publicScheme":null}"#), PublicScheme::Http);
    assert_eq!(scheme(r#"{"publicScheme":"http"}"#), PublicScheme::Http);
    assert_eq!(scheme(r#"{"publicScheme":"https"}"#), PublicScheme::Https);
    for bad in [
        r#""HTTPS""#,
        r#""Https""#,
        r#""ftp""#,
        r#""""#,
        r#""https ""#,
        "1",
        "true",
    ] {
        assert!(
            parse(&format!(r#"{{"publicScheme":{bad}}}"#)).is_err(),
            "publicScheme {bad} must be refused"
        );
    }
    assert_eq!(PublicScheme::Http.as_str(), "http");
    assert_eq!(PublicScheme::Https.as_str(), "https");
}

#[wasm_bindgen_test(unsupported = test)]
fn unknown_fields_are_refused_not_ignored() {
    for bad in [
        r#"{"xffTrustedHop":1}"#,
        r#"{"xff_trusted_hops":1}"#,
        r#"{"throttle":{"rate":1}}"#,
        r#"{"throttle":{"ratePerSecond":1,"burst":1,"window":1}}"#,
        // `role` belongs to the glue's envelope, which takes it off before this type sees it.
        r#"{"role":"filter"}"#,
    ] {
        let e = parse(bad).unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{bad}: {e}");
    }
    assert!(parse("null").is_err());
    assert!(parse(r#"{"throttle":null}"#).is_err());
}

#[wasm_bindgen_test(unsupported = test)]
fn an_invalid_configuration_compiles_into_settings_that_refuse() {
    let s = Settings::invalid();
    assert!(!s.valid);
    assert!(compile("{}").unwrap().valid);
}

#[wasm_bindgen_test(unsupported = test)]
fn errors_name_the_option_for_the_log() {
    assert_eq!(
        ConfigError::XffTrustedHops(17).to_string(),
        "xffTrustedHops must be at most 16, not 17"
    );
    assert_eq!(
        ConfigError::MaxSkewSeconds(0).to_string(),
        "maxSkewSeconds must be from 1 to 3600, not 0"
    );
    assert_eq!(
        ConfigError::Throttle(LimitsError::Rate).to_string(),
        "throttle: the rate must be from 1 to 1000000 requests per second"
    );
}
