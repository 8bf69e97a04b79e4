use ed25519_dalek::Signer as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

const NOW: u64 = 1_700_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn keys() -> KeySet {
    [
        ("k1", key(1).verifying_key()),
        ("k2", key(2).verifying_key()),
    ]
    .into_iter()
    .collect()
}

fn claims() -> Claims {
    Claims {
        iss: ISSUER.into(),
        sub: "u-42".into(),
        acc: "52653865".into(),
        name: "alice".into(),
        adm: false,
        privileges: vec!["MTLS_READ".into(), "MTLS_WRITE".into()],
        iat: NOW - 10,
        exp: NOW + 3600,
        jti: "j-1".into(),
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with the given header and payload JSON, signed by `k`.
fn forge(header: &str, payload: &str, k: &SigningKey) -> String {
    let signing_input = format!("{}.{}", b64(header), b64(payload));
    let sig = k.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(sig.to_bytes()))
}

fn payload_json(c: &Claims) -> String {
    serde_json::to_string(c).unwrap()
}

#[wasm_bindgen_test(unsupported = test)]
fn round_trip() {
    let token = sign(&claims(), "k1", &key(1));
    assert_eq!(token.split('.').count(), 3);
    assert!(!token.contains('='), "no padding");
    assert!(
        !token.contains('+') && !token.contains('/'),
        "url-safe alphabet"
    );
    assert_eq!(verify(&token, &keys(), NOW), Ok(claims()));

    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        header,
        serde_json::json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"})
    );
    let payload: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        payload["priv"],
        serde_json::json!(["MTLS_READ", "MTLS_WRITE"])
    );
    assert_eq!(payload["adm"], false);
    assert_eq!(payload.as_object().unwrap().len(), 9);

    // Signing is deterministic.
    assert_eq!(token, sign(&claims(), "k1", &key(1)));
    // The second key of the set works too.
    let token2 = sign(&claims(), "k2", &key(2));
    assert_eq!(verify(&token2, &keys(), NOW), Ok(claims()));
}

#[wasm_bindgen_test(unsupported = test)]
fn a_token_without_typ_is_accepted_and_one_with_another_typ_is_not() {
    let payload = payload_json(&claims());
    let t = forge(r#"{"alg":"EdDSA","kid":"k1"}"#, &payload, &key(1));
    assert_eq!(verify(&t, &keys(), NOW), Ok(claims()));
    let t = forge(
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1"}"#,
        &payload,
        &key(1),
    );
    assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::Malformed));
}

#[wasm_bindgen_test(unsupported = test)]
fn unknown_key_and_wrong_key() {
    let t = sign(&claims(), "k3", &key(3));
    assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::UnknownKey));
    // Signed by key 3 but claiming to be key 1.
    let t = sign(&claims(), "k1", &key(3));
    assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::BadSignature));
    assert_eq!(
        verify(&sign(&claims(), "k1", &key(1)), &KeySet::new(), NOW),
        Err(TokenError::UnknownKey)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn a_flipped_byte_breaks_the_signature() {
    let token = sign(&claims(), "k1", &key(1));
    let (header, rest) = token.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let mut bytes = payload.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{header}.{}.{sig}", String::from_utf8(bytes).unwrap());
    assert_eq!(
        verify(&flipped, &keys(), NOW),
        Err(TokenError::BadSignature)
    );

    // A payload re-encoded with different claims keeps the old signature: refused.
    let mut admin = claims();
    admin.adm = true;
    let escalated = format!("{header}.{}.{sig}", b64(payload_json(&admin)));
    assert_eq!(
        verify(&escalated, &keys(), NOW),
        Err(TokenError::BadSignature)
    );

    // A flipped signature byte.
    let mut sig_bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig_bytes[0] ^= 1;
    let t = format!("{header}.{payload}.{}", b64(&sig_bytes));
    assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::BadSignature));
}

#[wasm_bindgen_test(unsupported = test)]
fn alg_none_is_refused() {
    let payload = b64(payload_json(&claims()));
    for header in [
        r#"{"alg":"none","typ":"JWT","kid":"k1"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None","typ":"JWT","kid":"k1"}"#,
        r#"{"alg":"","kid":"k1"}"#,
        r#"{"alg":"eddsa","kid":"k1"}"#,
        r#"{"alg":"Ed25519","kid":"k1"}"#,
    ] {
        for t in [
            format!("{}.{payload}.", b64(header)),
            format!("{}.{payload}", b64(header)),
        ] {
            let got = verify(&t, &keys(), NOW);
            assert!(
                matches!(
                    got,
                    Err(TokenError::UnsupportedAlgorithm | TokenError::Malformed)
                ),
                "{header}: {got:?}"
            );
        }
    }
    let t = format!(
        "{}.{payload}.",
        b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#)
    );
    assert_eq!(
        verify(&t, &keys(), NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn hs256_with_the_public_key_as_secret_is_refused() {
    let public = key(1).verifying_key().to_bytes();
    let signing_input = format!(
        "{}.{}",
        b64(r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#),
        b64(payload_json(&claims()))
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&public).unwrap();
    mac.update(signing_input.as_bytes());
    let t = format!(
        "{signing_input}.{}",
        b64(mac.finalize().into_bytes().as_slice())
    );
    assert_eq!(
        verify(&t, &keys(), NOW),
        Err(TokenError::UnsupportedAlgorithm)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn header_extensions_are_refused() {
    let payload = payload_json(&claims());
    for header in [
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1","crit":["exp"]}"#,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1","jwk":{"kty":"OKP"}}"#,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1","jku":"https://evil.example/"}"#,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","typ":"JWT"}"#,
        r#"["EdDSA"]"#,
    ] {
        let t = forge(header, &payload, &key(1));
        assert_eq!(
            verify(&t, &keys(), NOW),
            Err(TokenError::Malformed),
            "{header}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn malformed_structure() {
    let good = sign(&claims(), "k1", &key(1));
    let (header, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    for t in [
        String::new(),
        "..".into(),
        "abc".into(),
        format!("{header}.{payload}"),
        format!("{header}.{payload}.{sig}.x"),
        format!("{header}.{payload}.{sig}="),
        format!("{header}=.{payload}.{sig}"),
        format!("{header}.{payload}.{}", &sig[1..]),
        format!("{header}.{payload}.{}", b64([0u8; 63])),
        format!("{header}.{payload}.{sig}AA"),
        format!("{header}+.{payload}.{sig}"),
        format!("{} .{payload}.{sig}", header),
        format!("{}.{payload}.{sig}", b64("not json")),
    ] {
        let got = verify(&t, &keys(), NOW);
        assert!(
            matches!(got, Err(TokenError::Malformed | TokenError::BadSignature)),
            "{t}: {got:?}"
        );
    }
    // A validly signed payload that is not the claims.
    for payload in [
        "not json",
        "{}",
        r#"{"iss":"mtlsgate"}"#,
        r#"{"iss":"mtlsgate","sub":"u","acc":"a","name":"n","adm":"yes","priv":[],"iat":1,"exp":2,"jti":"j"}"#,
        r#"{"iss":"mtlsgate","sub":"u","acc":"a","name":"n","adm":false,"priv":[],"iat":-1,"exp":2,"jti":"j"}"#,
    ] {
        let t = forge(
            r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#,
            payload,
            &key(1),
        );
        assert_eq!(
            verify(&t, &keys(), NOW),
            Err(TokenError::Malformed),
            "{payload}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn expiry_issuer_and_issued_at() {
    let ks = keys();
    let at = |c: &Claims, now| verify(&sign(c, "k1", &key(1)), &ks, now);
    let c = claims();
    assert_eq!(at(&c, c.exp - 1), Ok(c.clone()));
    assert_eq!(at(&c, c.exp), Err(TokenError::Expired));
    assert_eq!(at(&c, c.exp + 1), Err(TokenError::Expired));

    let mut future = claims();
    future.iat = NOW + MAX_IAT_SKEW_SECS;
    assert!(at(&future, NOW).is_ok());
    future.iat = NOW + MAX_IAT_SKEW_SECS + 1;
    assert_eq!(at(&future, NOW), Err(TokenError::NotYetValid));

    let mut other = claims();
    other.iss = "someone-else".into();
    assert_eq!(at(&other, NOW), Err(TokenError::WrongIssuer));
    other.iss = "MTLSGATE".into();
    assert_eq!(at(&other, NOW), Err(TokenError::WrongIssuer));
}

#[wasm_bindgen_test(unsupported = test)]
fn oversized_tokens_are_refused_before_parsing() {
    let mut big = claims();
    big.privileges = (0..1000).map(|i| format!("PRIVILEGE_{i}")).collect();
    let t = sign(&big, "k1", &key(1));
    assert!(t.len() > MAX_TOKEN_LEN);
    assert_eq!(verify(&t, &keys(), NOW), Err(TokenError::TooLarge));
    assert_eq!(
        verify(&"a".repeat(MAX_TOKEN_LEN + 1), &keys(), NOW),
        Err(TokenError::TooLarge)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn key_set_replaces_a_key_with_the_same_id() {
    let mut ks = keys();
    assert_eq!(ks.len(), 2);
    ks.insert("k1", key(3).verifying_key());
    assert_eq!(ks.len(), 2);
    assert_eq!(
        verify(&sign(&claims(), "k1", &key(1)), &ks, NOW),
        Err(TokenError::BadSignature)
    );
    assert_eq!(
        verify(&sign(&claims(), "k1", &key(3)), &ks, NOW),
        Ok(claims())
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn errors_do_not_echo_the_token() {
    let t = sign(&claims(), "k1", &key(1));
    let err = verify(&t, &KeySet::new(), NOW).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&t[..20]) && !shown.contains("k1"));
}
