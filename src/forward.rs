//! The forward decision: given a request the listener received and the current snapshot,
//! either refuse it, pass it on untouched (not a path the filter serves), or rewrite it to
//! its target and name the cluster that carries the mapped client certificate.
//!
//! Pure: the glue hands in the method, path, headers and peer address, lends the host's state
//! through small traits ([`Throttle`], [`SnapshotSource`], [`NonceGuard`]), and applies what
//! comes back ([`on_request_headers`]).

use crate::audit::{redact_path, Audit};
use crate::auth::{self, Caller, NonceGuard, Signed};
use crate::check_mapping;
use crate::client_ip::client_ip;
use crate::config::Settings;
use crate::headers;
use crate::privilege;
use crate::refusal::Refusal;
use crate::service::Service;
use crate::snapshot::{Index, Route, SnapshotSource};
use crate::target::Target;
use crate::throttle::Throttle;

/// A request's headers as the host hands them over, before the filter has decided anything.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `:authority`.
    pub authority: &'a str,
    /// All request headers, lower-case names, repeated names as separate entries.
    pub headers: &'a [(String, String)],
    /// The downstream peer, Envoy's `source.address` (`1.2.3.4:5678`, `[::1]:5678`); empty
    /// when the host could not say.
    pub peer: &'a str,
}

/// What the glue lends [`on_request_headers`] besides the request: the compiled settings, the
/// clock, and the state that lives in the host.
pub struct Env<'a> {
    pub settings: &'a Settings,
    /// Unix milliseconds.
    pub now_ms: u64,
    pub throttle: &'a mut dyn Throttle,
    pub snapshots: &'a mut dyn SnapshotSource,
    pub nonces: &'a mut dyn NonceGuard,
}

/// A request as [`decide`] reads it: [`Incoming`] with its client IP worked out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// `:authority`: the caller signed its OAuth1 request for this host.
    pub authority: &'a str,
    /// All request headers, lower-case names, repeated names as separate entries.
    pub headers: &'a [(String, String)],
    /// The client's IP, for the audit log.
    pub client_ip: &'a str,
}

/// What [`decide`] may consult besides the request.
pub(crate) struct Context<'a> {
    /// `None` until a first snapshot has loaded.
    pub index: Option<&'a Index>,
    /// Unix seconds.
    pub now: u64,
    /// OAuth1 timestamp window.
    pub max_skew_secs: u64,
    /// Log target queries instead of redacting them.
    pub keep_query: bool,
    /// The scheme clients reach the gateway with, which OAuth1 signatures cover: `http`
    /// (Envoy's listener), or `https` behind a TLS-terminating load balancer.
    pub public_scheme: &'static str,
    pub nonces: &'a mut dyn NonceGuard,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a path the filter serves: let the router handle it, after removing these headers
    /// (the filter's own, which a caller must never set).
    PassThrough { remove: Vec<String> },
    /// Forward to the target.
    Forward(Box<Forward>),
    /// A check-mapping request, authenticated: answer it once the body is in. `remove` are
    /// the filter's own headers the caller sent: the request travels on through Envoy until
    /// the body is in, and must not carry them there (a caller-set cluster header once chose
    /// another account's cluster on this path).
    CheckMapping {
        remove: Vec<String>,
        account: String,
        version: check_mapping::Version,
        audit: Box<Audit>,
    },
    /// Answer locally.
    Refuse(Refusal, Box<Audit>),
    /// Answer locally and record no audit: the filter could not judge the request at all
    /// (its configuration is invalid), so there is no decision to record.
    RefuseUnaudited(Refusal),
}

/// The rewrite of a forwarded request. The glue removes `remove` first, then sets `set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub remove: Vec<String>,
    pub set: Vec<(&'static str, String)>,
    pub account: String,
    pub service: Service,
    /// The mapping's route; `None` for a plain-TLS fallback.
    pub route: Option<Route>,
    pub audit: Audit,
}

const FORWARD_PREFIX: &str = "/mtls/account/";
const CHECK_MAPPING_PATH: &str = "/mtls/mapping";

/// Headers that describe one hop and must not travel past the gateway (RFC 9110 §7.6.1),
/// plus the proxy headers that would tell the target about the internal network.
///
/// Not `x-forwarded-proto`: Envoy finds no route at all for a request without it. The route
/// removes it after routing (`request_headers_to_remove` in `envoy/bootstrap.yaml`).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// The filter's whole answer to a request's headers, in this order:
/// 1. an invalid configuration refuses everything, 503 `filter_misconfigured`;
/// 2. the client's IP is the peer's, or the one trusted proxies put in `X-Forwarded-For`;
/// 3. an IP over its rate is refused, 429 `throttled` with `Retry-After`;
/// 4. then, against the current snapshot, what the request asks for: forward, check mappings,
///    pass through, or refuse.
pub fn on_request_headers(req: &Incoming<'_>, env: &mut Env<'_>) -> Decision {
    let settings = env.settings;
    if !settings.valid {
        return Decision::RefuseUnaudited(Refusal::new(
            503,
            "filter_misconfigured",
            "the gateway's filter configuration is invalid",
        ));
    }
    let ip = client_ip(req.peer, req.headers, settings.xff_trusted_hops);
    if let Err(throttled) = env.throttle.take(ip, &settings.limits, env.now_ms) {
        let audit = Audit {
            decision: "throttled",
            code: "throttled",
            client_ip: ip.to_owned(),
            ..Audit::default()
        };
        // why: `Retry-After: 0` would invite an immediate retry that is refused again.
        let r = Refusal::new(429, "throttled", "too many requests from this address")
            .with_header("retry-after", throttled.retry_after_secs.max(1).to_string());
        return Decision::Refuse(r, Box::new(audit));
    }
    let mut ctx = Context {
        index: env.snapshots.current(),
        now: env.now_ms / 1000,
        max_skew_secs: settings.max_skew_secs,
        keep_query: settings.log_query,
        public_scheme: settings.public_scheme.as_str(),
        nonces: &mut *env.nonces,
    };
    let req = Request {
        method: req.method,
        path: req.path,
        authority: req.authority,
        headers: req.headers,
        client_ip: ip,
    };
    decide(&req, &mut ctx)
}

/// Decides what happens to `req`, once it is known to be from a client under its rate.
pub(crate) fn decide(req: &Request<'_>, ctx: &mut Context<'_>) -> Decision {
    let own_headers: Vec<String> = req
        .headers
        .iter()
        .filter(|(name, _)| is_own_header(name))
        .map(|(name, _)| name.clone())
        .collect();
    let path = req.path.split('?').next().unwrap_or_default();
    let mut audit = Audit {
        client_ip: req.client_ip.to_owned(),
        ..Audit::default()
    };
    if path == CHECK_MAPPING_PATH {
        return match check(req, ctx, &mut audit) {
            Ok((account, version)) => {
                audit.decision = "checked";
                Decision::CheckMapping {
                    remove: own_headers,
                    account,
                    version,
                    audit: Box::new(audit),
                }
            }
            Err(r) => refuse(r, audit),
        };
    }
    let Some(account) = path.strip_prefix(FORWARD_PREFIX) else {
        return Decision::PassThrough {
            remove: own_headers,
        };
    };
    if account.contains('/') {
        // `/mtls/account/{id}/certificates` and the like belong to the control plane.
        return Decision::PassThrough {
            remove: own_headers,
        };
    }
    audit.account = account.to_owned();
    match forward(req, account, ctx, &mut audit) {
        Ok(mut f) => {
            f.audit = audit;
            Decision::Forward(Box::new(f))
        }
        Err(r) => refuse(r, audit),
    }
}

fn refuse(r: Refusal, audit: Audit) -> Decision {
    let audit = audit.refused(r.code);
    Decision::Refuse(r, Box::new(audit))
}

fn authenticated(
    req: &Request<'_>,
    ctx: &mut Context<'_>,
    audit: &mut Audit,
) -> Result<Caller, Refusal> {
    let index = ctx.index.ok_or_else(|| {
        Refusal::new(
            503,
            "snapshot_unavailable",
            "the gateway has not loaded its configuration yet; retry shortly",
        )
    })?;
    let authorization = single_header(req.headers, "authorization")?;
    let signed = Signed {
        scheme: ctx.public_scheme,
        method: req.method,
        authority: req.authority,
        path: req.path,
    };
    let caller = auth::authenticate(
        authorization,
        signed,
        index,
        ctx.now,
        ctx.max_skew_secs,
        &mut *ctx.nonces,
    )?;
    audit.caller = caller.id.to_string();
    Ok(caller)
}

fn check(
    req: &Request<'_>,
    ctx: &mut Context<'_>,
    audit: &mut Audit,
) -> Result<(String, check_mapping::Version), Refusal> {
    if req.method != "POST" {
        return Err(Refusal::new(
            405,
            "method_not_allowed",
            "check mapping accepts POST",
        ));
    }
    let version = check_mapping::Version::from_query(req.path)?;
    let caller = authenticated(req, ctx, audit)?;
    audit.account = caller.account.clone();
    caller.require(&caller.account, privilege::CHECK_MAPPING)?;
    Ok((caller.account, version))
}

fn forward(
    req: &Request<'_>,
    account: &str,
    ctx: &mut Context<'_>,
    audit: &mut Audit,
) -> Result<Forward, Refusal> {
    if !crate::account::is_valid(account) {
        return Err(Refusal::new(
            400,
            "invalid_account",
            "the account id in the path must be 1-64 letters, digits, '-' or '_'",
        ));
    }
    if !matches!(req.method, "GET" | "POST" | "PUT" | "DELETE") {
        return Err(Refusal::new(
            405,
            "method_not_allowed",
            "forward accepts GET, POST, PUT and DELETE",
        ));
    }
    let caller = authenticated(req, ctx, audit)?;
    caller.require(account, privilege::FORWARD)?;
    let index = ctx
        .index
        .ok_or_else(|| Refusal::new(503, "snapshot_unavailable", "no configuration loaded"))?;

    let url = single_header(req.headers, headers::FORWARD_URL)?.ok_or_else(|| {
        Refusal::new(
            400,
            "missing_forward_url",
            "the LP-forward-url header is required",
        )
    })?;
    let target = Target::parse(url)
        .map_err(|e| Refusal::new(400, "invalid_forward_url", format!("LP-forward-url: {e}")))?;
    audit.target_host = target.host().to_owned();
    audit.target_path = redact_path(target.path(), ctx.keep_query);
    let service = single_header(req.headers, headers::SERVICE_NAME)?
        .ok_or_else(|| {
            Refusal::new(
                400,
                "missing_service_name",
                "the LP-service-name header is required",
            )
        })?
        .parse::<Service>()
        .map_err(|e| Refusal::new(400, "invalid_service_name", format!("LP-service-name: {e}")))?;
    audit.service = service.name().to_owned();
    let override_auth = single_header(req.headers, headers::AUTHORIZATION_OVERRIDE)?;
    let stop = single_header(req.headers, headers::STOP_IF_NOT_FOUND)?
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));

    let no_mapping = || {
        Refusal::new(
            400,
            "no_mtls_mapping",
            format!("no mTLS mapping for account {account}, service {service} and this URL"),
        )
    };
    let (cluster, route) = match index.lookup(account, service, target.as_str()) {
        Some(route) => {
            audit.mapping_id = route.mapping_id.to_string();
            audit.certificate_id = route.certificate_id.to_string();
            audit.certificate_serial = route.certificate_serial.clone();
            if let Some(why) = route.unavailable {
                return Err(Refusal::new(why.status(), why.code(), why.message()));
            }
            audit.decision = "forwarded";
            (route.cluster.clone(), Some(route.clone()))
        }
        None if stop => return Err(no_mapping()),
        None => match index.fallback(account, target.host(), target.port()) {
            Some(f) => {
                if let Some(why) = f.unavailable {
                    return Err(Refusal::new(why.status(), why.code(), why.message()));
                }
                audit.decision = "forwarded_plain_tls";
                (f.cluster, None)
            }
            None => return Err(no_mapping()),
        },
    };

    let mut remove: Vec<String> = Vec::new();
    for (name, _) in req.headers {
        if (name == "authorization"
            || name.starts_with("lp-")
            || is_own_header(name)
            || HOP_BY_HOP.contains(&name.as_str())
            || name.starts_with("x-envoy-"))
            && !remove.contains(name)
        {
            remove.push(name.clone());
        }
    }
    // why: `Connection: foo` makes `foo` hop-by-hop too.
    for (name, value) in req.headers {
        if name == "connection" {
            for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                if !token.is_empty() && !remove.contains(&token) && !token.starts_with(':') {
                    remove.push(token);
                }
            }
        }
    }
    let mut set = vec![
        (":scheme", "https".to_owned()),
        (":authority", target.authority().to_owned()),
        (":path", target.path().to_owned()),
        (headers::CLUSTER, cluster),
    ];
    // The credential attached to the mapping authenticates to the target; the caller's
    // override is used where no credential is attached, or where the account lets it win.
    let attached = route
        .as_ref()
        .and_then(|r| r.authorization.as_deref().map(|a| (a, r.override_allowed)));
    let upstream_auth = match (attached, override_auth) {
        (Some((_, true)), Some(o)) | (None, Some(o)) => Some(o),
        (Some((a, _)), _) => Some(a),
        (None, None) => None,
    };
    if let Some(auth) = upstream_auth {
        set.push(("authorization", auth.to_owned()));
    }
    Ok(Forward {
        remove,
        set,
        account: account.to_owned(),
        service,
        route,
        audit: Audit::default(),
    })
}

fn is_own_header(name: &str) -> bool {
    name.starts_with("x-mtlsgate-")
}

/// The value of a header that must appear at most once. Two differing copies are ambiguous,
/// and an ambiguous target or credential is refused rather than guessed.
fn single_header<'h>(
    headers: &'h [(String, String)],
    name: &'static str,
) -> Result<Option<&'h str>, Refusal> {
    let mut found: Option<&str> = None;
    for (n, v) in headers {
        if n == name {
            if found.is_some() {
                return Err(Refusal::new(
                    400,
                    "duplicate_header",
                    format!("the {name} header must appear only once"),
                ));
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
