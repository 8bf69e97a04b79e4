//! `Prefer: wait=N` (RFC 7240) on management writes: read your writes, when asked.
//!
//! A write that carries the preference answers only once every connected gateway enforces it,
//! or after `N` seconds naming the gateways that did not, so a script can create an AppKey or
//! a mapping and use it at once. Without the header nothing changes.
//!
//! "Enforces" is proven, never assumed (see [`crate::xds::acks`]): after the write the
//! handler takes a ticket from the reconciler, which rebuilds at once; the first desired state
//! that covers the ticket has an epoch `E`. A gateway enforces the write once
//! - its Envoy has acknowledged, over a live ADS stream, the clusters and secrets of a desired
//!   state of epoch `E` or later (a new certificate is presented only once its secret is
//!   held), and
//! - its filter has applied a complete snapshot of epoch `E` or later — no mapping held back
//!   for an acknowledgement — which its next poll proves: the filter publishes a snapshot to
//!   its workers before it polls again with that snapshot's version.
//!
//! A gateway is connected while it has an ADS stream or a snapshot poll open (or one ended
//! less than [`crate::xds::acks::FEED_GRACE`] ago). With none connected, the answer is
//! immediate once the rebuild is done.
//!
//! Nothing is held while waiting: the write has committed, its transaction and the store's
//! lock are gone; the wait is on watch channels, woken only when something changes.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::error::ApiError;
use super::AppState;
use crate::reconciler::Published;
use crate::xds::acks::{Acks, FEED_GRACE};

/// Longest wait honoured, in seconds; a larger `wait` is taken as this (RFC 7240 lets a
/// server honour less than asked, and `Preference-Applied` says what was applied).
pub(crate) const MAX_WAIT_SECS: u64 = 60;

/// The answer's header naming the connected gateways that did not enforce the write in time.
pub(crate) const NOT_ENFORCED_BY: &str = "x-mtlsgate-not-enforced-by";

/// Why a `Prefer` header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PreferError {
    #[error("Prefer: wait takes a number of seconds (digits only), not {0:?}")]
    InvalidWait(String),
    #[error("Prefer: wait has an unterminated quoted value")]
    Unterminated,
}

/// The `wait` preference of a request's `Prefer` headers, in seconds (at most
/// [`MAX_WAIT_SECS`]); `None` when there is none.
///
/// RFC 7240: preferences other than `wait` are ignored, as are their parameters; only the
/// first `wait` counts (later ones are ignored without error, §2); an empty value is no
/// value, so `wait` without one is ignored too. A `wait` whose value is not delta-seconds is
/// refused rather than ignored: a script that mistyped it would otherwise race its own write.
pub(crate) fn parse(headers: &HeaderMap) -> Result<Option<u64>, PreferError> {
    for value in headers.get_all("prefer") {
        let text = String::from_utf8_lossy(value.as_bytes());
        for pref in split_top_level(&text, ',') {
            let head = match split_top_level(pref, ';').into_iter().next() {
                Some(h) => h,
                None => continue,
            };
            let (name, value) = match head.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (head.trim(), None),
            };
            if !name.eq_ignore_ascii_case("wait") {
                continue;
            }
            let value = match value.map(unquote).transpose()? {
                None => return Ok(None),
                Some(v) if v.is_empty() => return Ok(None),
                Some(v) => v,
            };
            return seconds(&value).map(Some);
        }
    }
    Ok(None)
}

/// Delta-seconds (RFC 9111 §1.2.2: digits; a value too large to represent is taken as the
/// largest), capped at [`MAX_WAIT_SECS`].
fn seconds(value: &str) -> Result<u64, PreferError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PreferError::InvalidWait(value.chars().take(32).collect()));
    }
    Ok(value.parse::<u64>().unwrap_or(u64::MAX).min(MAX_WAIT_SECS))
}

/// A word's value: a token as it is, a quoted-string without its quotes and escapes.
fn unquote(word: &str) -> Result<String, PreferError> {
    let Some(inner) = word.strip_prefix('"') else {
        return Ok(word.to_owned());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(out),
            '\\' => out.push(chars.next().ok_or(PreferError::Unterminated)?),
            c => out.push(c),
        }
    }
    Err(PreferError::Unterminated)
}

/// Splits on `sep` outside quoted strings.
fn split_top_level(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Whether a request is a write (the methods that change something).
fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Middleware of the management routes: honours `Prefer: wait=N` on writes (see the module).
/// Sits outside the request deadline, so the wait never turns a committed write into 503.
pub(crate) async fn wait(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !is_write(req.method()) {
        return next.run(req).await;
    }
    let secs = match parse(req.headers()) {
        Ok(Some(secs)) => secs,
        Ok(None) => return next.run(req).await,
        Err(e) => {
            return ApiError::bad_request("invalid_preference", e.to_string()).into_response()
        }
    };
    let mut resp = next.run(req).await;
    // A refused write changed nothing: nothing to wait for.
    if !resp.status().is_success() {
        return resp;
    }
    // After the handler: the write has committed and told the in-memory directories.
    let ticket = state.reconciler.ticket();
    let deadline = Instant::now() + Duration::from_secs(secs);
    match enforced(state.reconciler.published(), &state.acks, ticket, deadline).await {
        Ok(()) => {
            resp.headers_mut().insert(
                "preference-applied",
                HeaderValue::from_str(&format!("wait={secs}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("wait")),
            );
        }
        Err(nodes) => {
            tracing::info!(nodes = %nodes.join(", "), wait = secs, "write not enforced by every connected gateway in time");
            // Node ids are letters, digits, '.', '-' and '_' (`pki::valid_node_id`).
            if let Ok(v) = HeaderValue::from_str(&nodes.join(", ")) {
                resp.headers_mut().insert(NOT_ENFORCED_BY, v);
            }
        }
    }
    resp
}

/// Waits until every connected gateway enforces the first desired state that covers
/// `ticket`, or `deadline`; answers the connected gateways that do not (sorted) if it passes.
pub(crate) async fn enforced(
    mut published: watch::Receiver<Published>,
    acks: &Acks,
    ticket: u64,
    deadline: Instant,
) -> Result<(), Vec<String>> {
    let built = tokio::time::timeout_at(deadline, published.wait_for(|p| p.covers >= ticket))
        .await
        .ok()
        .and_then(|r| r.ok().map(|p| p.epoch));
    let Some(epoch) = built else {
        // Not even rebuilt in time: no gateway is proven to enforce it.
        let all = acks.not_enforcing(u64::MAX);
        return if all.is_empty() { Ok(()) } else { Err(all) };
    };
    epoch_enforced(acks, epoch, deadline).await
}

/// Waits until every connected gateway enforces the desired state of `epoch` (or a later
/// one), or `deadline`; answers the connected gateways that do not (sorted) if it passes.
pub(crate) async fn epoch_enforced(
    acks: &Acks,
    epoch: u64,
    deadline: Instant,
) -> Result<(), Vec<String>> {
    let mut changes = acks.subscribe_enforcement();
    loop {
        changes.borrow_and_update();
        let missing = acks.not_enforcing(epoch);
        if missing.is_empty() {
            return Ok(());
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Err(missing);
                }
            }
            // A gateway that went away stops counting once its feed grace ends; look again
            // then, even if nothing else changed.
            _ = tokio::time::sleep(FEED_GRACE) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let missing = acks.not_enforcing(epoch);
                return if missing.is_empty() { Ok(()) } else { Err(missing) };
            }
        }
    }
}

#[cfg(test)]
mod tests;
