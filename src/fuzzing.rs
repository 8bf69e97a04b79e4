//! Entry points of the fuzz targets (`fuzz/`), not an API: each takes the fuzzer's bytes and
//! hands them to the production code that reads that input from the outside, then checks
//! what that code promises. The corpus replay (`control-plane/tests/fuzz_corpus.rs`) calls
//! the same functions, so a target and its replay cannot drift apart.
//!
//! A panic here is a finding: either the production code panicked on hostile input, or one
//! of the `assert!`s below caught it breaking a promise.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};

use crate::audit::Audit;
use crate::auth::{self, NonceGuard, Signed};
use crate::check_mapping::{self, Reply, Version};
use crate::config::{FilterConfig, Settings};
use crate::forward::{self, Decision, Env, Incoming};
use crate::oauth1::{self, Authorization, Secrets, Verified};
use crate::service::Service;
use crate::snapshot::{
    AppKeyEntry, FallbackEntry, Index, MappingEntry, Snapshot, SnapshotSource, TokenKey, UserRef,
};
use crate::target::Target;
use crate::throttle::{Limits, Throttle, Throttled};
use crate::token;

/// The account of the fixture snapshot.
pub const ACCOUNT: &str = "52653865";
/// The mapped URL of the fixture snapshot.
pub const URL: &str = "https://api.brand.example/oauth/token?x=1";
/// The fixture's clock (unix seconds).
pub const NOW: u64 = 1_800_000_000;
/// The key id of the fixture's token key.
pub const KID: &str = "k1";

/// The key that signs the fixture's login tokens (a constant: fuzzing must be repeatable).
fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// A snapshot with one mapping, one token key, one AppKey (`ck`/`at`, secrets `cs`/`ts`),
/// one user (id 1) and one plain-TLS fallback host, all in [`ACCOUNT`].
pub fn fixture() -> Index {
    Index::new(Snapshot {
        version: "1".into(),
        mappings: vec![MappingEntry {
            id: 11,
            account: ACCOUNT.into(),
            service: Service::Idp,
            url: URL.into(),
            cluster: "mtls_5_api.brand.example_443".into(),
            certificate_id: 5,
            certificate_serial: "0A".into(),
            authorization: None,
            override_allowed: false,
            unavailable: None,
        }],
        token_keys: vec![TokenKey {
            kid: KID.into(),
            public_key: URL_SAFE_NO_PAD.encode(signing_key().verifying_key().as_bytes()),
        }],
        app_keys: vec![AppKeyEntry {
            id: 3,
            account: ACCOUNT.into(),
            consumer_key: "ck".into(),
            access_token: "at".into(),
            consumer_secret: "cs".into(),
            access_token_secret: "ts".into(),
            privileges: vec![
                crate::privilege::CHECK_MAPPING.into(),
                crate::privilege::FORWARD.into(),
            ],
        }],
        users: vec![UserRef {
            account: ACCOUNT.into(),
            id: 1,
        }],
        fallback: vec![FallbackEntry {
            account: ACCOUNT.into(),
            host: "plain.example".into(),
            port: 443,
            cluster: "tls_plain.example_443".into(),
            unavailable: None,
        }],
    })
}

/// Every nonce is new: replay protection is not what these targets look at.
struct AllNew;

impl NonceGuard for AllNew {
    fn first_use(&mut self, _: &Verified, _: u64) -> bool {
        true
    }
}

/// `data` split at its first `\n`: the line (lossy UTF-8) and the rest.
fn line(data: &[u8]) -> (String, &[u8]) {
    let (head, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    (String::from_utf8_lossy(head).into_owned(), rest)
}

/// The OAuth1 `Authorization` header and the signature base string.
///
/// Input: the header value, then `\n`-separated method, authority and path; the rest is a
/// form body. Calls [`auth::authenticate`] (what the filter does with the header),
/// [`Authorization::parse`], [`oauth1::base_string`] and [`oauth1::verify`].
pub fn oauth1(data: &[u8]) {
    let (header, rest) = line(data);
    let (method, rest) = line(rest);
    let (authority, rest) = line(rest);
    let (path, body) = line(rest);
    let index = fixture();
    for scheme in ["http", "https"] {
        let signed = Signed {
            scheme,
            method: &method,
            authority: &authority,
            path: &path,
        };
        let _ = auth::authenticate(Some(&header), signed, &index, NOW, 300, &mut AllNew);
    }
    let Ok(parsed) = Authorization::parse(&header) else {
        return;
    };
    assert!(
        !parsed.consumer_key().is_empty() || parsed.get("oauth_consumer_key") == Some(""),
        "a parsed header has an oauth_consumer_key"
    );
    let req = oauth1::Request {
        method: &method,
        scheme: "https",
        authority: &authority,
        path: &path,
        form_body: Some(body),
    };
    if let Ok(base) = oauth1::base_string(&req, &parsed) {
        // §3.4.1.1: three percent-encoded parts joined by '&'; nothing else is unescaped.
        assert_eq!(base.matches('&').count(), 2, "base string {base:?}");
        assert!(
            base.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%&".contains(&b)),
            "base string {base:?}"
        );
    }
    // Accept the request's own timestamp, so the parts after the clock check run too.
    let now = parsed
        .get("oauth_timestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(NOW);
    if let Ok(v) = oauth1::verify(&req, &parsed, now, 300, |_, _| {
        Some(Secrets::new("cs", "ts"))
    }) {
        assert_eq!(v.consumer_key, parsed.consumer_key());
    }
}

/// The Bearer token (a login token the control plane signed).
///
/// First byte even: the rest is the token as a caller sends it. Odd: the rest is a JWT
/// header and payload (JSON, split at the first `\n`) that this function signs with the
/// fixture's key, so the fuzzer reaches the claims parser behind the signature check. Calls
/// [`auth::authenticate`] (what the filter does with `Authorization: Bearer …`) and
/// [`token::verify`].
pub fn bearer(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let mut t = URL_SAFE_NO_PAD.encode(header);
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = signing_key().sign(t.as_bytes());
        t.push('.');
        t.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        t
    };
    let index = fixture();
    if let Ok(claims) = token::verify(&token, index.token_keys(), NOW) {
        assert_eq!(claims.iss, token::ISSUER);
        assert!(claims.exp > NOW, "an expired token verified");
    }
    let signed = Signed {
        scheme: "http",
        method: "GET",
        authority: "gw",
        path: "/",
    };
    let header = format!("Bearer {token}");
    // Twice: the second answer comes from the index's cache of verified tokens.
    let first = auth::authenticate(Some(&header), signed, &index, NOW, 300, &mut AllNew);
    let second = auth::authenticate(Some(&header), signed, &index, NOW, 300, &mut AllNew);
    assert_eq!(
        first.is_ok(),
        second.is_ok(),
        "the cache changed the answer"
    );
}

/// `LP-forward-url` (and a mapping's `url`): [`Target::parse`]. A URL it accepts is given
/// back byte for byte, and its parts put together again parse to the same parts.
pub fn forward_url(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let Ok(t) = Target::parse(&raw) else {
        return;
    };
    assert_eq!(t.as_str(), raw);
    assert_eq!(t.to_string(), raw);
    assert!(!t.host().is_empty());
    assert_ne!(t.port(), 0);
    assert!(t.path().starts_with(['/', '?']), "path {:?}", t.path());
    assert!(!t.authority().contains(['/', '?', '@', '#']));
    let _ = t.host_is_ip();
    let again = format!(
        "https://{}{}",
        t.authority(),
        if t.path() == "/" && !raw.ends_with('/') {
            ""
        } else {
            t.path()
        }
    );
    let t2 = Target::parse(&again);
    assert!(t2.is_ok(), "{again:?} does not parse again: {t2:?}");
    if let Ok(t2) = t2 {
        assert_eq!(
            (t.host(), t.port(), t.authority(), t.path()),
            (t2.host(), t2.port(), t2.authority(), t2.path())
        );
    }
}

/// `POST /mtls/mapping?v=…`: the first line is the request path (its `v` parameter read by
/// [`Version::from_query`]), the rest the body given to [`check_mapping::reply`]. An answer
/// is JSON.
pub fn check_mapping(data: &[u8]) {
    let (path, body) = line(data);
    let version = Version::from_query(&path).unwrap_or(Version::V1);
    let index = fixture();
    for version in [version, Version::V2] {
        match check_mapping::reply(Some(&index), body, version, ACCOUNT, Audit::default()) {
            Reply::Answer { json, .. } => {
                let parsed = serde_json::from_slice::<serde_json::Value>(&json);
                assert!(parsed.is_ok(), "the answer is not JSON");
            }
            Reply::Refuse(r, _) => assert!(r.status >= 400, "a refusal with {}", r.status),
        }
    }
}

/// The runtime snapshot the filter polls from the control plane: parsed as the poller does
/// (`Snapshot`), compiled as the filter does ([`Index::from_json`]). What parses serialises
/// back to the same snapshot (the control plane writes what the filter reads), and every
/// mapping in it can be looked up.
pub fn snapshot(data: &[u8]) {
    let _ = Index::from_json(data);
    let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    let wire = serde_json::to_vec(&snapshot);
    assert!(wire.is_ok(), "a parsed snapshot does not serialise");
    if let Ok(wire) = wire {
        let back = serde_json::from_slice::<Snapshot>(&wire);
        assert!(
            back.as_ref().is_ok_and(|b| *b == snapshot),
            "round trip: {back:?}"
        );
    }
    let index = Index::new(snapshot.clone());
    assert!(index.len() <= snapshot.mappings.len());
    for m in &snapshot.mappings {
        assert!(
            index.lookup(&m.account, m.service, &m.url).is_some(),
            "mapping {} not found",
            m.id
        );
    }
    for f in &snapshot.fallback {
        let _ = index.fallback(&f.account, &f.host, f.port);
    }
}

/// Lets every request through.
struct Unlimited;

impl Throttle for Unlimited {
    fn take(&mut self, _: &str, _: &Limits, _: u64) -> Result<(), Throttled> {
        Ok(())
    }
}

struct Fixed(Index);

impl SnapshotSource for Fixed {
    fn current(&mut self) -> Option<&Index> {
        Some(&self.0)
    }
}

/// A whole request's headers through [`forward::on_request_headers`], the filter's decision
/// per request. Lines: method, path, authority, peer address, then `name: value` headers
/// (names lower-cased, as Envoy hands them over). Whatever the decision, a request that
/// travels on never carries a header of the filter's own (`x-mtlsgate-*`) the caller set,
/// and a forwarded one carries none of the gateway's (`authorization`, `lp-*`) but the ones
/// the filter sets.
pub fn request(data: &[u8]) {
    let (method, rest) = line(data);
    let (path, rest) = line(rest);
    let (authority, rest) = line(rest);
    let (peer, mut rest) = line(rest);
    let mut headers: Vec<(String, String)> = Vec::new();
    while !rest.is_empty() {
        let (h, r) = line(rest);
        rest = r;
        if let Some((n, v)) = h.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let Ok(config) = serde_json::from_str::<FilterConfig>(r#"{"xffTrustedHops": 1}"#) else {
        return;
    };
    let Ok(settings) = Settings::try_from(config) else {
        return;
    };
    let incoming = Incoming {
        method: &method,
        path: &path,
        authority: &authority,
        headers: &headers,
        peer: &peer,
    };
    let mut env = Env {
        settings: &settings,
        now_ms: NOW * 1000,
        throttle: &mut Unlimited,
        snapshots: &mut Fixed(fixture()),
        nonces: &mut AllNew,
    };
    let own = |n: &str| n.starts_with("x-mtlsgate-");
    match forward::on_request_headers(&incoming, &mut env) {
        Decision::PassThrough { remove } | Decision::CheckMapping { remove, .. } => {
            for (n, _) in &headers {
                assert!(!own(n) || remove.contains(n), "{n} travels on");
            }
        }
        Decision::Forward(f) => {
            for (n, _) in &headers {
                let gateway = own(n) || n == "authorization" || n.starts_with("lp-");
                assert!(!gateway || f.remove.contains(n), "{n} is forwarded");
            }
            assert!(f.set.iter().any(|(n, _)| *n == crate::headers::CLUSTER));
        }
        Decision::Refuse(..) | Decision::RefuseUnaudited(_) => {}
    }
}
