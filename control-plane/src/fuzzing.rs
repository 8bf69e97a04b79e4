//! Entry points of the fuzz targets (`fuzz/`), not an API: each takes the fuzzer's bytes and
//! hands them to the production code that reads that input from a user, then checks what
//! that code promises. The corpus replay (`tests/fuzz_corpus.rs`) calls the same functions,
//! so a target and its replay cannot drift apart.
//!
//! A panic here is a finding: either the production code panicked on hostile input, or one
//! of the `assert!`s below caught it breaking a promise.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::extract::{FromRequest, Multipart, Request};

use crate::address_policy::AddressPolicy;
use crate::api::{certificates, credentials, extract, p12test as p12test_api};
use crate::certinfo::CertInfo;
use crate::keystore;
use crate::p12test;

/// The passwords a key-store target tries: what `openssl` and `keytool` users type most
/// (the seeds use `changeit`), and none. The first input byte picks one.
const PASSWORDS: [&str; 3] = ["changeit", "", "wrong"];

/// The largest upload the targets accept: the control plane's default `--max-upload-bytes`.
const MAX_UPLOAD_BYTES: usize = 1024 * 1024;

/// When the P12 tester is asked (unix seconds, 2027-01-15): fixed, so runs repeat.
const NOW: i64 = 1_800_000_000;

/// The first byte picks a password, the rest is the file.
fn password_and_file(data: &[u8]) -> Option<(&'static str, &[u8])> {
    let (&pick, file) = data.split_first()?;
    Some((PASSWORDS[usize::from(pick) % PASSWORDS.len()], file))
}

/// Runs a future whose input is all in memory (a request body already read) to its end.
/// `None` if it waits for something anyway, which nothing here should.
fn block_on<F: Future>(f: F) -> Option<F::Output> {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
    }
    None
}

/// A key store of a Mutual Authentication credential or a certificate upload:
/// [`keystore::open`] (PKCS#12 through `p12::open`, or JKS). What opens has a PEM chain and a
/// PEM key.
pub fn keystore(data: &[u8]) {
    let Some((password, file)) = password_and_file(data) else {
        return;
    };
    if let Ok(opened) = keystore::open(file, password) {
        assert!(opened
            .material
            .chain_pem
            .starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(opened
            .material
            .key_pem
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(opened.info.sha256_fingerprint.len(), 64);
    }
}

/// A trust certificate of a Mutual Authentication credential: [`keystore::trust_bundle`].
/// First byte even: the rest is the text as sent (PEM, or base64). Odd: the rest is binary
/// (DER, JKS, PKCS#12) and is sent base64-encoded, as a client would. What is accepted is
/// PEM whose every certificate parses.
pub fn trust_bundle(data: &[u8]) {
    use base64::Engine;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = if mode % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        base64::engine::general_purpose::STANDARD.encode(rest)
    };
    let password = PASSWORDS[usize::from(mode / 2) % PASSWORDS.len()];
    if let Ok(pem) = keystore::trust_bundle(&text, password) {
        assert!(pem.contains("-----BEGIN"), "{pem:?}");
    }
}

/// A certificate's DER: [`CertInfo::from_der`].
pub fn certinfo(data: &[u8]) {
    if let Ok(info) = CertInfo::from_der(data) {
        assert_eq!(info.sha256_fingerprint.len(), 64);
        assert!(info.serial_number.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

/// The P12 key tester's analysis: [`p12test::analyze`]. Its report serialises (the handler
/// answers it as JSON), and it is usable exactly when no finding is an error, which needs
/// the password to open the file.
pub fn p12test(data: &[u8]) {
    let Some((password, file)) = password_and_file(data) else {
        return;
    };
    let report = p12test::analyze(file, password, NOW);
    assert_eq!(
        report.usable,
        !report
            .findings
            .iter()
            .any(|f| f.severity == p12test::Severity::Error)
    );
    assert!(!report.usable || report.password_opens_file);
    assert!(serde_json::to_value(&report).is_ok());
}

/// A `multipart/form-data` request: the first line is its `Content-Type`, the rest its body.
fn multipart_request(data: &[u8]) -> Option<Request> {
    let (content_type, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    Request::builder()
        .method("POST")
        .uri("/")
        .header("content-type", content_type)
        .body(axum::body::Body::from(body.to_vec()))
        .ok()
}

/// The multipart uploads: the certificate upload (`POST`/`PUT …/certificates/by-file`:
/// `certificates::read_upload`, then the P12 opened as the handlers do) and the P12
/// tester's (`p12test::read_upload`, then [`p12test::analyze`]). Input: the `Content-Type`
/// line, then the body.
pub fn upload(data: &[u8]) {
    let Some(request) = multipart_request(data) else {
        return;
    };
    let parsed = block_on(async {
        let multipart = Multipart::from_request(request, &()).await;
        certificates::read_upload(multipart, MAX_UPLOAD_BYTES).await
    });
    assert!(parsed.is_some(), "an in-memory body did not finish");
    if let Some(Ok(upload)) = parsed {
        assert!(upload.file.len() <= MAX_UPLOAD_BYTES);
        let _ = certificates::open_here(&upload.file, &upload.meta.password);
    }

    let Some(request) = multipart_request(data) else {
        return;
    };
    let parsed = block_on(async {
        let multipart = Multipart::from_request(request, &()).await;
        p12test_api::read_upload(multipart, MAX_UPLOAD_BYTES).await
    });
    assert!(parsed.is_some(), "an in-memory body did not finish");
    if let Some(Ok((file, password))) = parsed {
        let _ = p12test::analyze(&file, password.expose(), NOW);
    }
}

/// The JSON certificate bodies (`POST`/`PUT …/certificates`, P12 as an array of bytes or
/// base64): parsed with the API's JSON rules, then every item checked and opened as the
/// handlers do (`certificates::open_all_with`, each file opened on this thread rather than
/// on the CPU pool).
pub fn certificates_json(data: &[u8]) {
    let Ok(items) = extract::parse_json::<Vec<certificates::CertificateJson>>(data) else {
        return;
    };
    for updating in [false, true] {
        let opened = block_on(certificates::open_all_with(
            &items,
            updating,
            MAX_UPLOAD_BYTES,
            |file, password| async move { certificates::open_here(&file, &password) },
        ));
        assert!(opened.is_some(), "opening in memory did not finish");
    }
}

/// A credential body (`POST`/`PUT …/credentials`): parsed with the API's JSON rules and
/// checked by type (`credentials::parse`, with the default address policy: no
/// `--egress-allow`/`--egress-deny`), which opens key stores and trust certificates and
/// checks URLs.
pub fn credential(data: &[u8]) {
    let Ok(body) = extract::parse_json::<serde_json::Value>(data) else {
        return;
    };
    let _ = credentials::parse(body, AddressPolicy::default());
}
