//! What the filter knows about a decision, for the access log. Envoy adds what it knows
//! (time, request id, client IP, method, upstream status, bytes, duration); see the access log
//! format in `envoy/bootstrap.yaml`. Nothing here is ever a secret.

/// One decision's audit fields. The glue writes them all at once, as one JSON object in the
/// filter-state property `mtlsgate_audit` that the access log prints (see [`Audit::to_json`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// `forwarded`, `forwarded_plain_tls`, `refused`, `throttled` or `checked`.
    pub decision: &'static str,
    /// The refusal's code, when refused.
    pub code: &'static str,
    pub account: String,
    pub service: String,
    /// `user:<id>:<name>` or `appkey:<id>`.
    pub caller: String,
    pub target_host: String,
    /// The target path; its query is replaced by `?<redacted>` unless the operator asked to log
    /// it (queries carry tokens often enough).
    pub target_path: String,
    pub mapping_id: String,
    pub certificate_id: String,
    pub certificate_serial: String,
    pub client_ip: String,
}

impl Audit {
    /// This record, for a request refused with `code`.
    pub(crate) fn refused(mut self, code: &'static str) -> Audit {
        self.decision = "refused";
        self.code = code;
        self
    }

    /// The fields by their access-log name (camelCase).
    pub fn fields(&self) -> [(&'static str, &str); 11] {
        [
            ("decision", self.decision),
            ("code", self.code),
            ("account", &self.account),
            ("service", &self.service),
            ("caller", &self.caller),
            ("targetHost", &self.target_host),
            ("targetPath", &self.target_path),
            ("mappingId", &self.mapping_id),
            ("certificateId", &self.certificate_id),
            ("certificateSerial", &self.certificate_serial),
            ("clientIp", &self.client_ip),
        ]
    }

    /// The record as one JSON object of its non-empty fields, e.g.
    /// `{"decision":"forwarded","account":"123",…}`.
    ///
    /// why: one filter-state property per request instead of one per field. Each
    /// `set_property` crosses the VM boundary and creates an Envoy filter-state object, and the
    /// access log looked each one up again (docs/benchmarks.md).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push('{');
        for (name, value) in self.fields() {
            if value.is_empty() {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            push_json_string(&mut out, value);
        }
        out.push('}');
        out
    }
}

/// Appends `value` as a JSON string. Hand-written: `serde_json::to_string` per field cost more
/// than everything else the decision does (an allocation and a copy per field).
fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    let mut plain = 0;
    for (i, b) in value.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&value[plain..i]);
        plain = i + 1;
        if escaped.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escaped);
        }
    }
    out.push_str(&value[plain..]);
    out.push('"');
}

/// The path to record: with its query unless `keep_query`.
pub fn redact_path(path: &str, keep_query: bool) -> String {
    match path.split_once('?') {
        Some((p, _)) if !keep_query => format!("{p}?<redacted>"),
        _ => path.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[wasm_bindgen_test::wasm_bindgen_test(unsupported = test)]
    fn a_forward_record_starts_with_its_decision() {
        // envoy/bootstrap.yaml routes a forward only when this record starts with
        // `{"decision":"forwarded`; no other decision (or caller-chosen field) may.
        let mut a = Audit {
            account: "{\"decision\":\"forwarded".into(),
            target_path: "/x".into(),
            ..Audit::default()
        };
        for d in ["forwarded", "forwarded_plain_tls"] {
            a.decision = d;
            assert!(a.to_json().starts_with("{\"decision\":\"forwarded"), "{d}");
        }
        for d in ["refused", "checked", "throttled", ""] {
            a.decision = d;
            assert!(!a.to_json().starts_with("{\"decision\":\"forwarded"), "{d}");
        }
    }
    use wasm_bindgen_test::wasm_bindgen_test;

    #[wasm_bindgen_test(unsupported = test)]
    fn json_holds_the_non_empty_fields_escaped() {
        let audit = Audit {
            decision: "refused",
            code: "no_mtls_mapping",
            account: "123".into(),
            caller: "user:7:ann \"the\" admin\\ \u{1}\n\té".into(),
            target_path: "/a?<redacted>".into(),
            client_ip: "10.0.0.1".into(),
            ..Audit::default()
        };
        let v: serde_json::Value = serde_json::from_str(&audit.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "decision": "refused",
                "code": "no_mtls_mapping",
                "account": "123",
                "caller": "user:7:ann \"the\" admin\\ \u{1}\n\té",
                "targetPath": "/a?<redacted>",
                "clientIp": "10.0.0.1",
            })
        );
        assert_eq!(Audit::default().to_json(), "{}");
    }
}
