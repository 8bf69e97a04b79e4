//! OAuth 1.0 (RFC 5849) request verification, server side, HMAC-SHA1 only: how the gateway
//! checks requests signed with an AppKey.
//!
//! Pure: the glue hands in the request's method, scheme, authority, path, the
//! `Authorization` header and (when it is a form) the body; the caller looks up secrets and
//! supplies the time. Replay protection is the separate [`NonceCache`], so that the caller
//! decides where it lives.
//!
//! The signature base string follows the RFC to the byte: any "tolerance" here would be a
//! difference between what the client signed and what we check, that is a bad signature for
//! an honest client or an accepted one for a dishonest request.

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The only signature method accepted. PLAINTEXT sends the secrets themselves and RSA-SHA1
/// needs per-client public keys; AppKeys use neither.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";

/// How far `oauth_timestamp` may be from the gateway's clock, either way, by default.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;

/// How many nonces a [`NonceCache`] remembers by default, at most.
pub const DEFAULT_NONCE_CAPACITY: usize = 100_000;

/// The longest `Authorization` value parsed. Seven parameters need a few hundred bytes.
pub const MAX_HEADER_LEN: usize = 8 * 1024;

/// Why a request's OAuth signature was not accepted. Never carries a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    #[error("the Authorization header does not use the OAuth scheme")]
    NotOAuth,
    #[error("the OAuth Authorization header is malformed: {0}")]
    MalformedHeader(&'static str),
    #[error("the OAuth parameter {0} appears more than once")]
    DuplicateParameter(String),
    #[error("the OAuth parameter {0} is missing")]
    MissingParameter(&'static str),
    #[error("oauth_signature_method must be HMAC-SHA1")]
    UnsupportedSignatureMethod,
    #[error("oauth_version must be 1.0 when present")]
    UnsupportedVersion,
    #[error("oauth_timestamp must be a number of seconds since 1970")]
    InvalidTimestamp,
    #[error("oauth_timestamp is too far in the past")]
    StaleTimestamp,
    #[error("oauth_timestamp is too far in the future")]
    FutureTimestamp,
    #[error("the request URI cannot be signed: {0}")]
    InvalidUri(&'static str),
    #[error("the query string is not valid percent-encoding")]
    InvalidQuery,
    #[error("the form body is not valid percent-encoding")]
    InvalidBody,
    #[error("unknown consumer key or token")]
    UnknownCredentials,
    #[error("the OAuth signature does not match the request")]
    BadSignature,
}

/// The parameters of an `Authorization: OAuth …` header (RFC 5849 §3.5.1), decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Every parameter but `realm`, in header order, names and values percent-decoded.
    params: Vec<(String, String)>,
}

/// The parts of the request that are signed.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `http` or `https`, any case.
    pub scheme: &'a str,
    /// `host[:port]` (Envoy's `:authority`).
    pub authority: &'a str,
    /// `:path`: the path as sent, query included.
    pub path: &'a str,
    /// The entity-body, only when §3.4.1.3.1 says it is signed: single part,
    /// `Content-Type: application/x-www-form-urlencoded`. The caller checks those conditions;
    /// anything passed here is parsed as a form.
    pub form_body: Option<&'a [u8]>,
}

/// The shared secrets of a consumer key and token. `Debug` does not show them.
#[derive(Clone)]
pub struct Secrets {
    consumer_secret: String,
    token_secret: String,
}

/// Who signed an accepted request: what replay protection and auditing need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub consumer_key: String,
    pub token: Option<String>,
    pub nonce: String,
    pub timestamp: u64,
}

impl Secrets {
    /// `token_secret` is empty for a request that carries no token (RFC 5849 §3.4.2).
    pub fn new(consumer_secret: impl Into<String>, token_secret: impl Into<String>) -> Self {
        Secrets {
            consumer_secret: consumer_secret.into(),
            token_secret: token_secret.into(),
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

impl Authorization {
    /// Parses the value of an `Authorization` header: the `OAuth` scheme (any case), then
    /// comma-separated `name="value"` pairs, whitespace allowed around each, names and values
    /// percent-encoded (§3.6). `realm` is dropped (it is not signed). A repeated parameter, a
    /// missing `oauth_consumer_key`, `oauth_signature_method` or `oauth_signature`, or bad
    /// syntax is an error. `oauth_timestamp` and `oauth_nonce` are required by [`verify`],
    /// since only the method decides whether they must be there.
    pub fn parse(value: &str) -> Result<Self, OAuthError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(OAuthError::MalformedHeader("the header is too long"));
        }
        let value = value.trim_matches(is_lws);
        let (scheme, rest) = match value.find(is_lws) {
            Some(i) => (&value[..i], &value[i..]),
            None => (value, ""),
        };
        if !scheme.eq_ignore_ascii_case("OAuth") {
            return Err(OAuthError::NotOAuth);
        }
        let mut params: Vec<(String, String)> = Vec::new();
        let mut seen_realm = false;
        let mut p = HeaderParser {
            bytes: rest.as_bytes(),
            at: 0,
        };
        loop {
            // why: RFC 7235 lists allow empty elements, so "a, , b" and a trailing comma pass.
            p.skip(|b| is_lws_byte(b) || b == b',');
            if p.done() {
                break;
            }
            let raw_name = p.take_while(|b| !matches!(b, b'=' | b',' | b'"') && !is_lws_byte(b));
            if raw_name.is_empty() {
                return Err(OAuthError::MalformedHeader("expected a parameter name"));
            }
            let name = decode_header_part(raw_name)?;
            let is_realm = name.eq_ignore_ascii_case("realm");
            p.skip(is_lws_byte);
            if !p.eat(b'=') {
                return Err(OAuthError::MalformedHeader("expected '=' after a name"));
            }
            p.skip(is_lws_byte);
            if !p.eat(b'"') {
                return Err(OAuthError::MalformedHeader("values must be quoted"));
            }
            let raw_value = p.quoted(is_realm)?;
            p.skip(is_lws_byte);
            if !p.done() && !p.eat(b',') {
                return Err(OAuthError::MalformedHeader(
                    "expected ',' between parameters",
                ));
            }
            if is_realm {
                if seen_realm {
                    return Err(OAuthError::DuplicateParameter("realm".into()));
                }
                seen_realm = true;
                continue;
            }
            let value = decode_header_part(raw_value)?;
            if params.iter().any(|(n, _)| *n == name) {
                return Err(OAuthError::DuplicateParameter(name));
            }
            params.push((name, value));
        }
        let auth = Authorization { params };
        for required in [
            "oauth_consumer_key",
            "oauth_signature_method",
            "oauth_signature",
        ] {
            if auth.get(required).is_none() {
                return Err(OAuthError::MissingParameter(required));
            }
        }
        Ok(auth)
    }

    /// A decoded parameter (never `realm`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn consumer_key(&self) -> &str {
        self.get("oauth_consumer_key").unwrap_or_default()
    }

    pub fn token(&self) -> Option<&str> {
        self.get("oauth_token")
    }
}

/// Verifies a signed request: HMAC-SHA1, `oauth_version` absent or `1.0`, `oauth_timestamp`
/// within `max_skew_secs` of `now` (unix seconds), and the signature over the base string with
/// the secrets `lookup` finds for (consumer key, token). The signature is compared in
/// constant time. Replays are not checked here: pass the result to [`NonceCache`].
pub fn verify<F>(
    req: &Request<'_>,
    auth: &Authorization,
    now: u64,
    max_skew_secs: u64,
    lookup: F,
) -> Result<Verified, OAuthError>
where
    F: FnOnce(&str, Option<&str>) -> Option<Secrets>,
{
    if auth.get("oauth_signature_method") != Some(SIGNATURE_METHOD) {
        return Err(OAuthError::UnsupportedSignatureMethod);
    }
    if auth.get("oauth_version").is_some_and(|v| v != "1.0") {
        return Err(OAuthError::UnsupportedVersion);
    }
    let timestamp = auth
        .get("oauth_timestamp")
        .ok_or(OAuthError::MissingParameter("oauth_timestamp"))
        .and_then(parse_timestamp)?;
    let nonce = match auth.get("oauth_nonce") {
        Some(n) if !n.is_empty() => n,
        _ => return Err(OAuthError::MissingParameter("oauth_nonce")),
    };
    if timestamp.saturating_add(max_skew_secs) < now {
        return Err(OAuthError::StaleTimestamp);
    }
    if timestamp > now.saturating_add(max_skew_secs) {
        return Err(OAuthError::FutureTimestamp);
    }
    let base = base_string(req, auth)?;
    let secrets =
        lookup(auth.consumer_key(), auth.token()).ok_or(OAuthError::UnknownCredentials)?;
    let expected = hmac_sha1(&base, &secrets);
    let given = auth
        .get("oauth_signature")
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or(OAuthError::BadSignature)?;
    if !bool::from(expected.as_slice().ct_eq(given.as_slice())) {
        return Err(OAuthError::BadSignature);
    }
    Ok(Verified {
        consumer_key: auth.consumer_key().to_owned(),
        token: auth.token().map(str::to_owned),
        nonce: nonce.to_owned(),
        timestamp,
    })
}

/// The HMAC-SHA1 signature (§3.4.2) of a base string, base64-encoded as it travels in
/// `oauth_signature` (before that parameter's own percent-encoding). For clients and tests.
pub fn signature(base_string: &str, secrets: &Secrets) -> String {
    STANDARD.encode(hmac_sha1(base_string, secrets))
}

/// The signature base string (§3.4.1): `METHOD&enc(base URI)&enc(normalized parameters)`.
pub fn base_string(req: &Request<'_>, auth: &Authorization) -> Result<String, OAuthError> {
    let (path, query) = match req.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.path, None),
    };
    let uri = base_string_uri(req.scheme, req.authority, path)?;

    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut add = |name: &[u8], value: &[u8]| {
        // why: §3.4.1.3.2, whatever source it comes from.
        if name != b"oauth_signature" {
            pairs.push((encode(name), encode(value)));
        }
    };
    if let Some(query) = query {
        // why: a fragment is never sent, but if a caller passes one it is not the query.
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        for (n, v) in parse_form(query.as_bytes()).ok_or(OAuthError::InvalidQuery)? {
            add(&n, &v);
        }
    }
    for (n, v) in &auth.params {
        add(n.as_bytes(), v.as_bytes());
    }
    if let Some(body) = req.form_body {
        for (n, v) in parse_form(body).ok_or(OAuthError::InvalidBody)? {
            add(&n, &v);
        }
    }
    // why: §3.4.1.3.2 sorts the *encoded* names, then values, by byte value.
    pairs.sort_unstable();
    let mut normalized = String::new();
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            normalized.push('&');
        }
        normalized.push_str(n);
        normalized.push('=');
        normalized.push_str(v);
    }

    let mut out = encode(req.method.to_ascii_uppercase().as_bytes());
    out.push('&');
    out.push_str(&encode(uri.as_bytes()));
    out.push('&');
    out.push_str(&encode(normalized.as_bytes()));
    Ok(out)
}

/// The base string URI (§3.4.1.2): scheme and host in lower case, the port only when it is
/// not the scheme's default, the path as sent (`/` when empty), no query.
fn base_string_uri(scheme: &str, authority: &str, path: &str) -> Result<String, OAuthError> {
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(OAuthError::InvalidUri("the scheme must be http or https")),
    };
    if authority.contains('@') {
        return Err(OAuthError::InvalidUri(
            "the authority must not carry user information",
        ));
    }
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(close) => (&authority[..=close], &authority[close + 1..]),
            None => return Err(OAuthError::InvalidUri("unterminated IPv6 literal")),
        }
    } else {
        match authority.find(':') {
            Some(colon) => (&authority[..colon], &authority[colon..]),
            None => (authority, ""),
        }
    };
    if host.is_empty() || host.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        return Err(OAuthError::InvalidUri(
            "the host is empty or not printable ASCII",
        ));
    }
    let port = match port {
        "" | ":" => None,
        p => match p.strip_prefix(':') {
            Some(digits)
                if !digits.is_empty()
                    && digits.len() <= 5
                    && digits.bytes().all(|b| b.is_ascii_digit()) =>
            {
                match digits.parse::<u16>() {
                    Ok(n) if n == default_port => None,
                    Ok(n) => Some(n),
                    Err(_) => return Err(OAuthError::InvalidUri("the port is not a number")),
                }
            }
            _ => return Err(OAuthError::InvalidUri("the port is not a number")),
        },
    };
    let mut uri = format!("{scheme}://{}", host.to_ascii_lowercase());
    if let Some(port) = port {
        uri.push(':');
        uri.push_str(&port.to_string());
    }
    uri.push_str(if path.is_empty() { "/" } else { path });
    Ok(uri)
}

fn hmac_sha1(base_string: &str, secrets: &Secrets) -> [u8; 20] {
    let mut key = encode(secrets.consumer_secret.as_bytes());
    key.push('&');
    key.push_str(&encode(secrets.token_secret.as_bytes()));
    // why: HMAC accepts keys of any length (longer ones are hashed), so this never fails;
    // the fallback key only keeps the code panic-free and matches no real signature.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key.as_bytes()) else {
        return [0; 20];
    };
    mac.update(base_string.as_bytes());
    mac.finalize().into_bytes().into()
}

fn parse_timestamp(s: &str) -> Result<u64, OAuthError> {
    // why: `u64::from_str` also takes a leading '+'; the RFC's value is digits only.
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OAuthError::InvalidTimestamp);
    }
    s.parse().map_err(|_| OAuthError::InvalidTimestamp)
}

/// Percent-encoding of §3.6: everything but ALPHA, DIGIT, `-`, `.`, `_`, `~` becomes `%XX`
/// with upper-case hex, byte by byte of the UTF-8 form.
fn encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Percent-decoding; `+` means a space only in `application/x-www-form-urlencoded` text.
/// `None` for a `%` not followed by two hex digits.
fn decode(input: &[u8], plus_is_space: bool) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        match b {
            b'%' => {
                let hi = hex_value(*input.get(i + 1)?)?;
                let lo = hex_value(*input.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Name/value pairs of an `application/x-www-form-urlencoded` string (HTML 4.01 §17.13.4),
/// which §3.4.1.3.1 applies to the query and to a form body alike. A pair without `=` has an
/// empty value; empty pairs (`a=1&&b=2`) are skipped.
fn parse_form(input: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut pairs = Vec::new();
    for part in input.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match part.iter().position(|&b| b == b'=') {
            Some(eq) => (&part[..eq], &part[eq + 1..]),
            None => (part, &[][..]),
        };
        pairs.push((decode(name, true)?, decode(value, true)?));
    }
    Some(pairs)
}

/// A header name or value: percent-decoded (a `+` stays a `+`), and text.
fn decode_header_part(raw: &[u8]) -> Result<String, OAuthError> {
    let bytes = decode(raw, false).ok_or(OAuthError::MalformedHeader(
        "a name or value is not valid percent-encoding",
    ))?;
    String::from_utf8(bytes)
        .map_err(|_| OAuthError::MalformedHeader("a name or value is not UTF-8"))
}

/// Spaces and tabs, and CR and LF so a header quoted with obsolete line folding (as in the
/// RFC's examples) parses too.
fn is_lws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_lws_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

struct HeaderParser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> HeaderParser<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        self.take_while(pred);
    }

    fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(|&b| pred(b)) {
            self.at += 1;
        }
        &self.bytes[start..self.at]
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.bytes.get(self.at) == Some(&b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// The rest of a quoted value, the opening quote already eaten; eats the closing one.
    /// Backslash escapes (RFC 7230 quoted-pair) only count in `realm`: OAuth values are
    /// percent-encoded and never contain a backslash or quote.
    fn quoted(&mut self, escapes: bool) -> Result<&'a [u8], OAuthError> {
        let start = self.at;
        loop {
            match self.bytes.get(self.at) {
                None => return Err(OAuthError::MalformedHeader("unterminated quoted value")),
                Some(b'"') => {
                    let value = &self.bytes[start..self.at];
                    self.at += 1;
                    return Ok(value);
                }
                Some(b'\\') if escapes => self.at += 2,
                Some(_) => self.at += 1,
            }
        }
    }
}

/// A bounded memory of the nonces already used (RFC 5849 §3.3), so a captured request cannot
/// be sent again while its timestamp is still acceptable.
///
/// An entry is kept until its timestamp leaves the window (`timestamp + window < now`); a
/// request that old is refused by the timestamp check anyway. When the cache is full, the
/// entries with the oldest timestamps go first, and from then on the cache refuses every
/// timestamp at or below the newest one it had to drop before its time: it can no longer
/// vouch for those, and refusing is the only answer that cannot let a replay through. Honest
/// clients sign with the current time and are not affected unless the cache turns over
/// within one second.
///
/// Each entry is a SHA-256 of (consumer key, token, nonce) plus the timestamp: 40 bytes
/// whatever the client sends, so memory is bounded by the capacity alone.
#[derive(Debug, Clone)]
pub struct NonceCache {
    window_secs: u64,
    capacity: usize,
    entries: BTreeSet<(u64, [u8; 32])>,
    /// The newest timestamp evicted before it expired.
    floor: Option<u64>,
}

/// Why [`NonceCache::check_and_insert`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    #[error("this nonce was already used with this timestamp and these credentials")]
    Seen,
    #[error("the timestamp is older than the replay cache can vouch for")]
    TooOld,
}

impl Default for NonceCache {
    fn default() -> Self {
        NonceCache::new(DEFAULT_MAX_SKEW_SECS, DEFAULT_NONCE_CAPACITY)
    }
}

impl NonceCache {
    /// `window_secs` must be at least the `max_skew_secs` given to [`verify`]. A capacity of 0
    /// counts as 1.
    pub fn new(window_secs: u64, capacity: usize) -> Self {
        NonceCache {
            window_secs,
            capacity: capacity.max(1),
            entries: BTreeSet::new(),
            floor: None,
        }
    }

    /// Refuses a request whose (consumer key, token, nonce, timestamp) was seen before, or
    /// whose timestamp the cache can no longer vouch for; remembers it otherwise. Drops
    /// expired entries first.
    pub fn check_and_insert(&mut self, request: &Verified, now: u64) -> Result<(), Replay> {
        self.evict_expired(now);
        let timestamp = request.timestamp;
        if timestamp.saturating_add(self.window_secs) < now
            || self.floor.is_some_and(|floor| timestamp <= floor)
        {
            return Err(Replay::TooOld);
        }
        let entry = (timestamp, fingerprint(request));
        if self.entries.contains(&entry) {
            return Err(Replay::Seen);
        }
        while self.entries.len() >= self.capacity {
            match self.entries.pop_first() {
                Some((evicted, _)) => {
                    self.floor = Some(self.floor.map_or(evicted, |f| f.max(evicted)));
                }
                None => break,
            }
        }
        self.entries.insert(entry);
        Ok(())
    }

    /// Drops the entries whose timestamp has left the window.
    pub fn evict_expired(&mut self, now: u64) {
        while let Some(&(timestamp, _)) = self.entries.first() {
            if timestamp.saturating_add(self.window_secs) >= now {
                break;
            }
            self.entries.pop_first();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn fingerprint(request: &Verified) -> [u8; 32] {
    // why: length prefixes, so ("ab", "c") and ("a", "bc") differ.
    let mut h = Sha256::new();
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(request.consumer_key.as_bytes());
    match &request.token {
        Some(token) => {
            field(b"1");
            field(token.as_bytes());
        }
        None => field(b"0"),
    }
    field(request.nonce.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests;
