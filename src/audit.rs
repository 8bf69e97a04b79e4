//! What the filter knows about a decision, for the access log. Envoy adds what it knows
//! (time, request id, client IP, method, upstream status, bytes, duration); see the access log
//! format in `envoy/bootstrap.yaml`. Nothing here is ever a secret.

/// One decision's audit fields. The glue writes each as a filter-state property
/// `mtlsgate.<field>` that the access log prints.
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
    /// The fields by name, for the glue.
    pub fn fields(&self) -> [(&'static str, &str); 11] {
        [
            ("decision", self.decision),
            ("code", self.code),
            ("account", &self.account),
            ("service", &self.service),
            ("caller", &self.caller),
            ("target_host", &self.target_host),
            ("target_path", &self.target_path),
            ("mapping_id", &self.mapping_id),
            ("certificate_id", &self.certificate_id),
            ("certificate_serial", &self.certificate_serial),
            ("client_ip", &self.client_ip),
        ]
    }
}

/// The path to record: with its query unless `keep_query`.
pub fn redact_path(path: &str, keep_query: bool) -> String {
    match path.split_once('?') {
        Some((p, _)) if !keep_query => format!("{p}?<redacted>"),
        _ => path.to_owned(),
    }
}
