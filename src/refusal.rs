//! Refusals: the filter's error answers, each with a stable `code` clients can branch on.

use serde::Serialize;

/// An answer the filter gives instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Stable, machine-readable; see `docs/api.md`.
    pub code: &'static str,
    /// For a person; never contains a secret.
    pub message: String,
    /// Extra answer headers (`WWW-Authenticate`, `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

impl Refusal {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            status,
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    /// Adds an answer header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// 401 with the `WWW-Authenticate` challenge a LivePerson client reads as "the gateway
    /// refused the credential".
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Refusal::new(401, code, message).with_header(
            "www-authenticate",
            "OAuth realm=\"mtlsgate\", Bearer realm=\"mtlsgate\"",
        )
    }

    /// The JSON body: `{"code", "message", "requestId"}`.
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        serde_json::to_vec(&Body {
            code: self.code,
            message: &self.message,
            request_id,
        })
        // why: serializing three strings cannot fail; fall back to a fixed body rather than
        // panic inside the proxy if it somehow did.
        .unwrap_or_else(|_| {
            br#"{"code":"internal","message":"internal error","requestId":""}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn body_is_json_with_the_three_fields_escaped() {
        let r = Refusal::new(400, "no_mtls_mapping", "no \"mapping\"");
        let v: serde_json::Value = serde_json::from_slice(&r.body("req-1")).unwrap();
        assert_eq!(v["code"], "no_mtls_mapping");
        assert_eq!(v["message"], "no \"mapping\"");
        assert_eq!(v["requestId"], "req-1");
        assert_eq!(v.as_object().unwrap().len(), 3);
    }
}
