//! `POST /mtls/mapping?v=1|2`: whether triplets are mapped, answered from the snapshot.

use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::refusal::Refusal;
use crate::service::Service;
use crate::snapshot::Index;

/// Most triplets in one request.
pub const MAX_TRIPLETS: usize = 100_000;

/// One triplet as callers send it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Triplet {
    pub service_name: String,
    pub account_id: String,
    pub url: String,
}

/// Which answer shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// From the `v` query parameter: absent means 1.
    pub fn from_query(path: &str) -> Result<Version, Refusal> {
        let query = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let v = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "v")
            .map(|(_, v)| v);
        match v {
            None | Some("1") | Some("1.0") => Ok(Version::V1),
            Some("2") | Some("2.0") => Ok(Version::V2),
            Some(_) => Err(Refusal::new(400, "invalid_version", "v must be 1 or 2")),
        }
    }
}

/// Parses the body: a JSON array of triplets.
pub fn parse(body: &[u8]) -> Result<Vec<Triplet>, Refusal> {
    let triplets: Vec<Triplet> = serde_json::from_slice(body).map_err(|_| {
        Refusal::new(
            400,
            "invalid_body",
            "the body must be a JSON array of {\"serviceName\", \"accountId\", \"url\"}",
        )
    })?;
    if triplets.len() > MAX_TRIPLETS {
        return Err(Refusal::new(
            400,
            "batch_too_large",
            format!("at most {MAX_TRIPLETS} triplets"),
        ));
    }
    Ok(triplets)
}

/// Whether a triplet is mapped. An unknown service name is simply not mapped.
fn exists(index: &Index, t: &Triplet) -> bool {
    t.service_name
        .parse::<Service>()
        .ok()
        .and_then(|s| index.lookup(&t.account_id, s, &t.url))
        .is_some()
}

/// The Java-style text the documented v1 answer is keyed by (misspelling included).
pub fn v1_key(t: &Triplet) -> String {
    format!(
        "CertificateMappingParamters{{serviceName='{}', accountId='{}', url='{}'}}",
        t.service_name, t.account_id, t.url
    )
}

/// The answer body. Every triplet must name `account` (the caller's).
pub fn answer(
    index: &Index,
    triplets: &[Triplet],
    version: Version,
    account: &str,
) -> Result<Vec<u8>, Refusal> {
    if let Some(other) = triplets.iter().find(|t| t.account_id != account) {
        return Err(Refusal::new(
            403,
            "forbidden_account",
            format!(
                "accountId {:?} is not the credential's account",
                other.account_id
            ),
        ));
    }
    let json = match version {
        Version::V1 => {
            let mut map = serde_json::Map::with_capacity(triplets.len());
            for t in triplets {
                map.insert(v1_key(t), serde_json::Value::Bool(exists(index, t)));
            }
            serde_json::to_vec(&map)
        }
        Version::V2 => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Answer<'a> {
                service_name: &'a str,
                account_id: &'a str,
                url: &'a str,
                do_exist: bool,
            }
            let out: Vec<Answer<'_>> = triplets
                .iter()
                .map(|t| Answer {
                    service_name: &t.service_name,
                    account_id: &t.account_id,
                    url: &t.url,
                    do_exist: exists(index, t),
                })
                .collect();
            serde_json::to_vec(&out)
        }
    };
    json.map_err(|_| Refusal::new(500, "internal", "cannot encode the answer"))
}

/// What to send back for a check-mapping request whose body is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// 200 with this JSON body.
    Answer { json: Vec<u8>, audit: Box<Audit> },
    /// Answer locally with this refusal.
    Refuse(Refusal, Box<Audit>),
}

/// The answer to an authenticated check-mapping request (`account` is the caller's, `audit`
/// what [`crate::forward::on_request_headers`] recorded) once its whole `body` is in, against
/// the snapshot current by then (`None`: none has loaded).
pub fn reply(
    index: Option<&Index>,
    body: &[u8],
    version: Version,
    account: &str,
    audit: Audit,
) -> Reply {
    let answered = index
        .ok_or_else(|| Refusal::new(503, "snapshot_unavailable", "no configuration loaded"))
        .and_then(|index| answer(index, &parse(body)?, version, account));
    match answered {
        Ok(json) => Reply::Answer {
            json,
            audit: Box::new(audit),
        },
        Err(r) => {
            let audit = audit.refused(r.code);
            Reply::Refuse(r, Box::new(audit))
        }
    }
}

#[cfg(test)]
mod tests;
