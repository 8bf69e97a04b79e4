use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

const ACC: &str = "52653865";

/// What `on_request_headers` recorded for an authenticated check.
fn checked() -> Audit {
    Audit {
        decision: "checked",
        account: ACC.into(),
        caller: "appkey:3".into(),
        client_ip: "192.0.2.7".into(),
        ..Audit::default()
    }
}

fn refused(reply: Reply) -> (u16, &'static str, Audit) {
    match reply {
        Reply::Refuse(r, audit) => (r.status, r.code, *audit),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_good_body_is_answered_and_keeps_its_audit_record() {
    let index = Index::default();
    let body = format!(r#"[{{"serviceName":"IDP","accountId":"{ACC}","url":"https://a/"}}]"#);
    let reply = reply(Some(&index), body.as_bytes(), Version::V2, ACC, checked());
    let Reply::Answer { json, audit } = reply else {
        panic!("{reply:?}")
    };
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v[0]["doExist"], false);
    assert_eq!(*audit, checked());
}

#[wasm_bindgen_test(unsupported = test)]
fn refusals_mark_the_audit_record_refused_with_their_code() {
    let refused_as = |code: &'static str| Audit {
        decision: "refused",
        code,
        ..checked()
    };
    let body = format!(r#"[{{"serviceName":"IDP","accountId":"{ACC}","url":"https://a/"}}]"#);
    assert_eq!(
        refused(reply(None, body.as_bytes(), Version::V1, ACC, checked())),
        (
            503,
            "snapshot_unavailable",
            refused_as("snapshot_unavailable")
        )
    );
    let index = Index::default();
    assert_eq!(
        refused(reply(Some(&index), b"", Version::V1, ACC, checked())),
        (400, "invalid_body", refused_as("invalid_body"))
    );
    assert_eq!(
        refused(reply(
            Some(&index),
            body.as_bytes(),
            Version::V1,
            "other",
            checked()
        )),
        (403, "forbidden_account", refused_as("forbidden_account"))
    );
}
