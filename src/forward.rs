//! The forward decision: given a request the listener received and the current snapshot,
//! either refuse it, pass it on untouched (not a path the filter serves), or rewrite it to
//! its target and name the cluster that carries the mapped client certificate.
//!
//! Pure: the glue hands in the method, path and headers, and applies what comes back.

use crate::headers;
use crate::refusal::Refusal;
use crate::service::Service;
use crate::snapshot::{Index, Route};
use crate::target::Target;

/// What the glue reads off a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// `:path`, query included.
    pub path: &'a str,
    /// All request headers, lower-case names, repeated names as separate entries.
    pub headers: &'a [(String, String)],
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not a forward: let the router handle it, after removing these headers (the filter's
    /// own, which a caller must never set).
    PassThrough { remove: Vec<String> },
    /// Forward to the mapped target.
    Forward(Forward),
    /// Answer locally.
    Refuse(Refusal),
}

/// The rewrite of a forwarded request. The glue removes `remove` first, then sets `set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub remove: Vec<String>,
    pub set: Vec<(&'static str, String)>,
    pub account: String,
    pub service: Service,
    pub route: Route,
}

const FORWARD_PREFIX: &str = "/mtls/account/";
const ACCOUNT_MAX_LEN: usize = 64;

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

/// Decides what happens to `req`. `index` is `None` until a first snapshot has loaded.
pub fn decide(req: &Request<'_>, index: Option<&Index>) -> Decision {
    let own_headers: Vec<String> = req
        .headers
        .iter()
        .filter(|(name, _)| is_own_header(name))
        .map(|(name, _)| name.clone())
        .collect();
    let path = req.path.split('?').next().unwrap_or_default();
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
    match forward(req, account, index) {
        Ok(f) => Decision::Forward(f),
        Err(r) => Decision::Refuse(r),
    }
}

fn forward(req: &Request<'_>, account: &str, index: Option<&Index>) -> Result<Forward, Refusal> {
    if !valid_account(account) {
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
    let url = single_header(req.headers, headers::FORWARD_URL)?.ok_or_else(|| {
        Refusal::new(
            400,
            "missing_forward_url",
            "the LP-forward-url header is required",
        )
    })?;
    let target = Target::parse(url)
        .map_err(|e| Refusal::new(400, "invalid_forward_url", format!("LP-forward-url: {e}")))?;
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
    let override_auth = single_header(req.headers, headers::AUTHORIZATION_OVERRIDE)?;

    let index = index.ok_or_else(|| {
        Refusal::new(
            503,
            "snapshot_unavailable",
            "the gateway has not loaded its configuration yet; retry shortly",
        )
    })?;
    let route = index
        .lookup(account, service, target.as_str())
        .ok_or_else(|| {
            Refusal::new(
                400,
                "no_mtls_mapping",
                format!("no mTLS mapping for account {account}, service {service} and this URL"),
            )
        })?
        .clone();

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
        (headers::CLUSTER, route.cluster.clone()),
    ];
    if let Some(auth) = override_auth {
        set.push(("authorization", auth.to_owned()));
    }
    Ok(Forward {
        remove,
        set,
        account: account.to_owned(),
        service,
        route,
    })
}

fn is_own_header(name: &str) -> bool {
    name.starts_with("x-mtlsgate-")
}

fn valid_account(account: &str) -> bool {
    !account.is_empty()
        && account.len() <= ACCOUNT_MAX_LEN
        && account
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
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
