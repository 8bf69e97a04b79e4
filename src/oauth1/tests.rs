use wasm_bindgen_test::wasm_bindgen_test;

use super::*;

// RFC 5849 §1.2: the photo printing example's final, authenticated request.
const PHOTOS_HEADER: &str = r#"OAuth realm="Photos",
    oauth_consumer_key="dpf43f3p2l4k3l03",
    oauth_token="nnch734d00sl2jdk",
    oauth_signature_method="HMAC-SHA1",
    oauth_timestamp="137131202",
    oauth_nonce="chapoH",
    oauth_signature="MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D""#;
const PHOTOS_BASE_STRING: &str = "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3DchapoH%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131202%26oauth_token%3Dnnch734d00sl2jdk%26size%3Doriginal";
const PHOTOS_TIME: u64 = 137_131_202;

fn photos_request() -> Request<'static> {
    Request {
        method: "GET",
        scheme: "http",
        authority: "photos.example.net",
        path: "/photos?file=vacation.jpg&size=original",
        form_body: None,
    }
}

fn photos_lookup(key: &str, token: Option<&str>) -> Option<Secrets> {
    (key == "dpf43f3p2l4k3l03" && token == Some("nnch734d00sl2jdk"))
        .then(|| Secrets::new("kd94hf93k423kf44", "pfkkdhi9sl3r4s00"))
}

fn verify_photos(req: &Request<'_>, header: &str, now: u64) -> Result<Verified, OAuthError> {
    let auth = Authorization::parse(header)?;
    verify(req, &auth, now, DEFAULT_MAX_SKEW_SECS, photos_lookup)
}

/// Builds an `Authorization` value from parameters, signing them for `req` with `secrets`.
fn signed_header(req: &Request<'_>, params: &[(&str, &str)], secrets: &Secrets) -> String {
    let unsigned = params
        .iter()
        .map(|(n, v)| format!("{}=\"{}\"", encode(n.as_bytes()), encode(v.as_bytes())))
        .collect::<Vec<_>>()
        .join(", ");
    let auth = Authorization::parse(&format!(
        "OAuth {unsigned}, oauth_signature=\"placeholder\""
    ))
    .unwrap();
    let sig = signature(&base_string(req, &auth).unwrap(), secrets);
    format!(
        "OAuth {unsigned}, oauth_signature=\"{}\"",
        encode(sig.as_bytes())
    )
}

fn photos_params(timestamp: &str, nonce: &str) -> Vec<(&'static str, String)> {
    vec![
        ("oauth_consumer_key", "dpf43f3p2l4k3l03".into()),
        ("oauth_token", "nnch734d00sl2jdk".into()),
        ("oauth_signature_method", "HMAC-SHA1".into()),
        ("oauth_timestamp", timestamp.into()),
        ("oauth_nonce", nonce.into()),
        ("oauth_version", "1.0".into()),
    ]
}

fn sign_photos(req: &Request<'_>, timestamp: &str, nonce: &str) -> String {
    let params = photos_params(timestamp, nonce);
    let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    signed_header(
        req,
        &params,
        &Secrets::new("kd94hf93k423kf44", "pfkkdhi9sl3r4s00"),
    )
}

#[wasm_bindgen_test(unsupported = test)]
fn rfc5849_1_2_base_string_and_signature() {
    let auth = Authorization::parse(PHOTOS_HEADER).unwrap();
    assert_eq!(
        base_string(&photos_request(), &auth).unwrap(),
        PHOTOS_BASE_STRING
    );
    assert_eq!(
        signature(
            PHOTOS_BASE_STRING,
            &Secrets::new("kd94hf93k423kf44", "pfkkdhi9sl3r4s00")
        ),
        "MdpQcU8iPSUjWoN/UDMsK2sui9I="
    );
    let verified = verify_photos(&photos_request(), PHOTOS_HEADER, PHOTOS_TIME).unwrap();
    assert_eq!(
        verified,
        Verified {
            consumer_key: "dpf43f3p2l4k3l03".into(),
            token: Some("nnch734d00sl2jdk".into()),
            nonce: "chapoH".into(),
            timestamp: PHOTOS_TIME,
        }
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn rfc5849_3_4_1_1_base_string() {
    let header = r#"OAuth realm="Example",
                oauth_consumer_key="9djdj82h48djs9d2",
                oauth_token="kkk9d7dh3k39sjv7",
                oauth_signature_method="HMAC-SHA1",
                oauth_timestamp="137131201",
                oauth_nonce="7d8f3e4a",
                oauth_signature="bYT5CMsGcbgUdFHObYMEfcx6bsw%3D""#;
    let req = Request {
        method: "POST",
        scheme: "http",
        authority: "example.com",
        path: "/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
        form_body: Some(b"c2&a3=2+q"),
    };
    let auth = Authorization::parse(header).unwrap();
    assert_eq!(
        base_string(&req, &auth).unwrap(),
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
         %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
         key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
         ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
         9d7dh3k39sjv7"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn rfc5849_3_4_1_2_base_string_uri() {
    assert_eq!(
        base_string_uri("HTTP", "EXAMPLE.COM:80", "/r%20v/X").unwrap(),
        "http://example.com/r%20v/X"
    );
    assert_eq!(
        base_string_uri("https", "www.example.net:8080", "/").unwrap(),
        "https://www.example.net:8080/"
    );
    assert_eq!(
        base_string_uri("https", "example.com:443", "").unwrap(),
        "https://example.com/"
    );
    assert_eq!(
        base_string_uri("http", "example.com:443", "/a").unwrap(),
        "http://example.com:443/a"
    );
    assert_eq!(
        base_string_uri("https", "[::1]:8443", "/a").unwrap(),
        "https://[::1]:8443/a"
    );
    assert_eq!(
        base_string_uri("https", "[::1]", "/a").unwrap(),
        "https://[::1]/a"
    );
    for (scheme, authority) in [
        ("ftp", "example.com"),
        ("https", ""),
        ("https", "user@example.com"),
        ("https", "example.com:x"),
        ("https", "example.com:70000"),
        ("https", "[::1"),
    ] {
        assert!(
            matches!(
                base_string_uri(scheme, authority, "/"),
                Err(OAuthError::InvalidUri(_))
            ),
            "{scheme}://{authority}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn encoding_is_rfc3986_unreserved_with_upper_case_hex() {
    assert_eq!(encode(b"abcXYZ019-._~"), "abcXYZ019-._~");
    assert_eq!(encode(b" !*'()+/=&%"), "%20%21%2A%27%28%29%2B%2F%3D%26%25");
    assert_eq!(encode("é".as_bytes()), "%C3%A9");
    assert_eq!(encode(&[0x00, 0xff]), "%00%FF");
}

#[wasm_bindgen_test(unsupported = test)]
fn plus_is_a_space_in_query_and_body_but_not_in_the_header() {
    // §3.4.1.3.1 parses both the query and a form body as application/x-www-form-urlencoded.
    let auth = Authorization::parse(
        r#"OAuth oauth_consumer_key="a+b", oauth_signature_method="HMAC-SHA1", oauth_signature="x""#,
    )
    .unwrap();
    assert_eq!(auth.consumer_key(), "a+b");
    let req = Request {
        method: "post",
        scheme: "https",
        authority: "h",
        path: "/p?q=1+2&r=%2B",
        form_body: Some(b"s=3+4"),
    };
    assert_eq!(
        base_string(&req, &auth).unwrap(),
        "POST&https%3A%2F%2Fh%2Fp&oauth_consumer_key%3Da%252Bb\
         %26oauth_signature_method%3DHMAC-SHA1%26q%3D1%25202%26r%3D%252B%26s%3D3%25204"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn sorting_is_by_encoded_name_then_value() {
    let auth = Authorization::parse(
        r#"OAuth oauth_consumer_key="k", oauth_signature_method="HMAC-SHA1", oauth_signature="x""#,
    )
    .unwrap();
    // '~' (0x7E) stays itself and sorts after the '%' of an encoded 0x80.
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "h",
        path: "/?a=2&a=10&~=1&%80=1&a=1",
        form_body: None,
    };
    assert_eq!(
        base_string(&req, &auth).unwrap(),
        "GET&https%3A%2F%2Fh%2F&%2580%3D1%26a%3D1%26a%3D10%26a%3D2\
         %26oauth_consumer_key%3Dk%26oauth_signature_method%3DHMAC-SHA1%26~%3D1"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn oauth_signature_is_excluded_from_every_source() {
    let auth = Authorization::parse(
        r#"OAuth oauth_consumer_key="k", oauth_signature_method="HMAC-SHA1", oauth_signature="x""#,
    )
    .unwrap();
    let req = Request {
        method: "GET",
        scheme: "https",
        authority: "h",
        path: "/?oauth_signature=y&b",
        form_body: Some(b"oauth_signature=z"),
    };
    assert_eq!(
        base_string(&req, &auth).unwrap(),
        "GET&https%3A%2F%2Fh%2F&b%3D%26oauth_consumer_key%3Dk%26oauth_signature_method%3DHMAC-SHA1"
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn bad_percent_encoding_in_query_or_body_is_refused() {
    let auth = Authorization::parse(PHOTOS_HEADER).unwrap();
    let mut req = photos_request();
    req.path = "/photos?file=%zz";
    assert_eq!(base_string(&req, &auth), Err(OAuthError::InvalidQuery));
    req.path = "/photos?file=%4";
    assert_eq!(base_string(&req, &auth), Err(OAuthError::InvalidQuery));
    req.path = "/photos";
    req.form_body = Some(b"a=%");
    assert_eq!(base_string(&req, &auth), Err(OAuthError::InvalidBody));
}

#[wasm_bindgen_test(unsupported = test)]
fn header_parsing_is_whitespace_and_case_tolerant() {
    let auth = Authorization::parse(
        "oauth\toauth_consumer_key = \"k%20ey\" ,oauth_signature_method=\"HMAC-SHA1\",,  \
         Realm=\"a \\\" b\",oauth_signature=\"s%3D\",  ",
    )
    .unwrap();
    assert_eq!(auth.consumer_key(), "k ey");
    assert_eq!(auth.get("oauth_signature"), Some("s="));
    assert_eq!(auth.get("Realm"), None);
    assert_eq!(auth.token(), None);
}

#[wasm_bindgen_test(unsupported = test)]
fn header_errors() {
    let ok = r#"oauth_consumer_key="k", oauth_signature_method="HMAC-SHA1", oauth_signature="s""#;
    let cases: Vec<(String, OAuthError)> = vec![
        ("Bearer abc".into(), OAuthError::NotOAuth),
        (format!("OAuthx {ok}"), OAuthError::NotOAuth),
        (
            format!("OAuth {ok}, oauth_consumer_key=\"k\""),
            OAuthError::DuplicateParameter("oauth_consumer_key".into()),
        ),
        (
            format!("OAuth realm=\"a\", {ok}, realm=\"b\""),
            OAuthError::DuplicateParameter("realm".into()),
        ),
        (
            "OAuth oauth_consumer_key=\"k\", oauth_signature=\"s\"".into(),
            OAuthError::MissingParameter("oauth_signature_method"),
        ),
        (
            "OAuth oauth_signature_method=\"HMAC-SHA1\", oauth_signature=\"s\"".into(),
            OAuthError::MissingParameter("oauth_consumer_key"),
        ),
        (
            "OAuth oauth_consumer_key=\"k\", oauth_signature_method=\"HMAC-SHA1\"".into(),
            OAuthError::MissingParameter("oauth_signature"),
        ),
        (
            "OAuth".into(),
            OAuthError::MissingParameter("oauth_consumer_key"),
        ),
    ];
    for (header, want) in cases {
        assert_eq!(Authorization::parse(&header), Err(want), "{header}");
    }
    for header in [
        format!("OAuth {ok}, oauth_nonce=abc"),
        format!("OAuth {ok}, oauth_nonce=\"abc"),
        format!("OAuth {ok} oauth_nonce=\"abc\""),
        format!("OAuth {ok}, =\"abc\""),
        format!("OAuth {ok}, oauth_nonce"),
        format!("OAuth {ok}, oauth_nonce=\"%G0\""),
        format!("OAuth {ok}, oauth_nonce=\"%FF\""),
        format!("OAuth {ok}, oauth_nonce=\"{}\"", "a".repeat(MAX_HEADER_LEN)),
    ] {
        assert!(
            matches!(
                Authorization::parse(&header),
                Err(OAuthError::MalformedHeader(_))
            ),
            "{header}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_fresh_signature_with_version_verifies() {
    let req = photos_request();
    let header = sign_photos(&req, "1700000000", "n1");
    let v = verify_photos(&req, &header, 1_700_000_000).unwrap();
    assert_eq!(v.nonce, "n1");
    assert_eq!(v.timestamp, 1_700_000_000);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_form_body_is_signed() {
    let req = Request {
        method: "POST",
        scheme: "https",
        authority: "api.example",
        path: "/x",
        form_body: Some(b"a=1&b=two+words"),
    };
    let header = sign_photos(&req, "1700000000", "n1");
    assert!(verify_photos(&req, &header, 1_700_000_000).is_ok());
    let tampered = Request {
        form_body: Some(b"a=1&b=other+words"),
        ..req
    };
    assert_eq!(
        verify_photos(&tampered, &header, 1_700_000_000),
        Err(OAuthError::BadSignature)
    );
    let dropped = Request {
        form_body: None,
        ..req
    };
    assert_eq!(
        verify_photos(&dropped, &header, 1_700_000_000),
        Err(OAuthError::BadSignature)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn tampering_with_the_request_breaks_the_signature() {
    let good = photos_request();
    let tampered = [
        Request {
            method: "POST",
            ..good
        },
        Request {
            path: "/photos2?file=vacation.jpg&size=original",
            ..good
        },
        Request {
            path: "/photos?file=vacation.jpg&size=large",
            ..good
        },
        Request {
            path: "/photos?file=vacation.jpg&size=original&extra=1",
            ..good
        },
        Request {
            path: "/photos?file=vacation.jpg",
            ..good
        },
        Request {
            authority: "photos.example.org",
            ..good
        },
        Request {
            authority: "photos.example.net:8080",
            ..good
        },
        Request {
            scheme: "https",
            ..good
        },
    ];
    for req in tampered {
        assert_eq!(
            verify_photos(&req, PHOTOS_HEADER, PHOTOS_TIME),
            Err(OAuthError::BadSignature),
            "{req:?}"
        );
    }
    // Equivalent spellings of the same URI are the same request.
    let same = Request {
        method: "get",
        scheme: "HTTP",
        authority: "Photos.Example.NET:80",
        ..good
    };
    assert!(verify_photos(&same, PHOTOS_HEADER, PHOTOS_TIME).is_ok());
}

#[wasm_bindgen_test(unsupported = test)]
fn tampering_with_a_parameter_breaks_the_signature() {
    let req = photos_request();
    for (from, to) in [
        ("oauth_nonce=\"chapoH\"", "oauth_nonce=\"chapoI\""),
        (
            "oauth_timestamp=\"137131202\"",
            "oauth_timestamp=\"137131203\"",
        ),
        ("oauth_signature=\"MdpQ", "oauth_signature=\"NdpQ"),
        (
            "oauth_nonce=\"chapoH\"",
            "oauth_nonce=\"chapoH\", extra=\"1\"",
        ),
    ] {
        let header = PHOTOS_HEADER.replace(from, to);
        assert_ne!(header, PHOTOS_HEADER);
        assert_eq!(
            verify_photos(&req, &header, PHOTOS_TIME),
            Err(OAuthError::BadSignature),
            "{to}"
        );
    }
    // realm is not signed.
    let header = PHOTOS_HEADER.replace("realm=\"Photos\"", "realm=\"Other\"");
    assert!(verify_photos(&req, &header, PHOTOS_TIME).is_ok());
    // A signature that is not base64, or not 20 bytes, is simply wrong.
    for sig in ["!!!!", "AAAA"] {
        let header = PHOTOS_HEADER.replace("MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D", sig);
        assert_eq!(
            verify_photos(&req, &header, PHOTOS_TIME),
            Err(OAuthError::BadSignature)
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn wrong_or_unknown_credentials() {
    let req = photos_request();
    let auth = Authorization::parse(PHOTOS_HEADER).unwrap();
    for secrets in [
        Secrets::new("kd94hf93k423kf45", "pfkkdhi9sl3r4s00"),
        Secrets::new("kd94hf93k423kf44", "pfkkdhi9sl3r4s01"),
        Secrets::new("kd94hf93k423kf44", ""),
    ] {
        assert_eq!(
            verify(&req, &auth, PHOTOS_TIME, 300, |_, _| Some(secrets.clone())),
            Err(OAuthError::BadSignature)
        );
    }
    assert_eq!(
        verify(&req, &auth, PHOTOS_TIME, 300, |_, _| None),
        Err(OAuthError::UnknownCredentials)
    );
    let header = PHOTOS_HEADER.replace("dpf43f3p2l4k3l03", "someone-else");
    assert_eq!(
        verify_photos(&req, &header, PHOTOS_TIME),
        Err(OAuthError::UnknownCredentials)
    );
}

#[wasm_bindgen_test(unsupported = test)]
fn timestamps_outside_the_window_are_refused() {
    let req = photos_request();
    let ts = PHOTOS_TIME;
    assert!(verify_photos(&req, PHOTOS_HEADER, ts + 300).is_ok());
    assert!(verify_photos(&req, PHOTOS_HEADER, ts - 300).is_ok());
    assert_eq!(
        verify_photos(&req, PHOTOS_HEADER, ts + 301),
        Err(OAuthError::StaleTimestamp)
    );
    assert_eq!(
        verify_photos(&req, PHOTOS_HEADER, ts - 301),
        Err(OAuthError::FutureTimestamp)
    );
    let auth = Authorization::parse(PHOTOS_HEADER).unwrap();
    assert_eq!(
        verify(&req, &auth, ts + 11, 10, photos_lookup),
        Err(OAuthError::StaleTimestamp)
    );
    assert!(verify(&req, &auth, ts + 10, 10, photos_lookup).is_ok());
}

#[wasm_bindgen_test(unsupported = test)]
fn unsupported_method_version_and_bad_timestamps() {
    let req = photos_request();
    let cases = [
        (
            PHOTOS_HEADER.replace("HMAC-SHA1", "PLAINTEXT"),
            OAuthError::UnsupportedSignatureMethod,
        ),
        (
            PHOTOS_HEADER.replace("HMAC-SHA1", "hmac-sha1"),
            OAuthError::UnsupportedSignatureMethod,
        ),
        (
            PHOTOS_HEADER.replace("HMAC-SHA1", "RSA-SHA1"),
            OAuthError::UnsupportedSignatureMethod,
        ),
        (
            PHOTOS_HEADER.replace("oauth_nonce=", "oauth_version=\"2.0\", oauth_nonce="),
            OAuthError::UnsupportedVersion,
        ),
        (
            PHOTOS_HEADER.replace("137131202", "+137131202"),
            OAuthError::InvalidTimestamp,
        ),
        (
            PHOTOS_HEADER.replace("137131202", "1371312.2"),
            OAuthError::InvalidTimestamp,
        ),
        (
            PHOTOS_HEADER.replace("137131202", "99999999999999999999"),
            OAuthError::InvalidTimestamp,
        ),
        (
            PHOTOS_HEADER.replace("oauth_timestamp=\"137131202\",", ""),
            OAuthError::MissingParameter("oauth_timestamp"),
        ),
        (
            PHOTOS_HEADER.replace("oauth_nonce=\"chapoH\",", ""),
            OAuthError::MissingParameter("oauth_nonce"),
        ),
        (
            PHOTOS_HEADER.replace("chapoH", ""),
            OAuthError::MissingParameter("oauth_nonce"),
        ),
    ];
    for (header, want) in cases {
        assert_eq!(
            verify_photos(&req, &header, PHOTOS_TIME),
            Err(want),
            "{header}"
        );
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn secrets_never_show() {
    let s = Secrets::new("kd94hf93k423kf44", "pfkkdhi9sl3r4s00");
    let debug = format!("{s:?}");
    assert!(!debug.contains("kd94hf93k423kf44") && !debug.contains("pfkkdhi9sl3r4s00"));
    let auth = Authorization::parse(PHOTOS_HEADER).unwrap();
    let wrong = Secrets::new("kd94hf93k423kf45", "pfkkdhi9sl3r4s00");
    let err = verify(&photos_request(), &auth, PHOTOS_TIME, 300, |_, _| {
        Some(wrong.clone())
    })
    .unwrap_err();
    assert!(!format!("{err} {err:?}").contains("kd94hf93k423kf4"));
}

fn verified(key: &str, token: Option<&str>, nonce: &str, timestamp: u64) -> Verified {
    Verified {
        consumer_key: key.into(),
        token: token.map(Into::into),
        nonce: nonce.into(),
        timestamp,
    }
}

#[wasm_bindgen_test(unsupported = test)]
fn a_replayed_nonce_is_refused() {
    let mut cache = NonceCache::default();
    let req = photos_request();
    let v = verify_photos(&req, PHOTOS_HEADER, PHOTOS_TIME).unwrap();
    assert_eq!(cache.check_and_insert(&v, PHOTOS_TIME), Ok(()));
    let again = verify_photos(&req, PHOTOS_HEADER, PHOTOS_TIME + 5).unwrap();
    assert_eq!(
        cache.check_and_insert(&again, PHOTOS_TIME + 5),
        Err(Replay::Seen)
    );
    // The same nonce with another timestamp, key or token is another request (§3.3).
    let now = PHOTOS_TIME + 5;
    for other in [
        verified("dpf43f3p2l4k3l03", Some("nnch734d00sl2jdk"), "chapoH", now),
        verified(
            "dpf43f3p2l4k3l04",
            Some("nnch734d00sl2jdk"),
            "chapoH",
            PHOTOS_TIME,
        ),
        verified("dpf43f3p2l4k3l03", None, "chapoH", PHOTOS_TIME),
        verified("dpf43f3p2l4k3l03", Some(""), "chapoH", PHOTOS_TIME),
        verified(
            "dpf43f3p2l4k3l0",
            Some("3nnch734d00sl2jdk"),
            "chapoH",
            PHOTOS_TIME,
        ),
    ] {
        assert_eq!(cache.check_and_insert(&other, now), Ok(()), "{other:?}");
    }
    assert_eq!(cache.len(), 6);
}

#[wasm_bindgen_test(unsupported = test)]
fn expired_nonces_are_forgotten_and_their_timestamps_refused() {
    let mut cache = NonceCache::new(300, 10);
    let v = verified("k", None, "n", 1000);
    assert_eq!(cache.check_and_insert(&v, 1000), Ok(()));
    assert_eq!(cache.check_and_insert(&v, 1300), Err(Replay::Seen));
    cache.evict_expired(1300);
    assert_eq!(cache.len(), 1);
    cache.evict_expired(1301);
    assert!(cache.is_empty());
    // Forgotten, so too old to be vouched for (verify refuses it as stale anyway).
    assert_eq!(cache.check_and_insert(&v, 1301), Err(Replay::TooOld));
}

#[wasm_bindgen_test(unsupported = test)]
fn the_cache_never_exceeds_its_capacity() {
    let mut cache = NonceCache::new(300, 3);
    for (i, ts) in [1000, 1001, 1002].into_iter().enumerate() {
        let v = verified("k", None, &format!("n{i}"), ts);
        assert_eq!(cache.check_and_insert(&v, 1002), Ok(()));
    }
    assert_eq!(cache.len(), 3);
    assert_eq!(
        cache.check_and_insert(&verified("k", None, "n3", 1003), 1003),
        Ok(())
    );
    assert_eq!(cache.len(), 3);
    // The oldest (n0 at 1000) went; it must not become replayable, nor anything as old.
    assert_eq!(
        cache.check_and_insert(&verified("k", None, "n0", 1000), 1003),
        Err(Replay::TooOld)
    );
    assert_eq!(
        cache.check_and_insert(&verified("k", None, "fresh", 1000), 1003),
        Err(Replay::TooOld)
    );
    // Newer ones are still remembered, and newer timestamps still accepted.
    assert_eq!(
        cache.check_and_insert(&verified("k", None, "n2", 1002), 1003),
        Err(Replay::Seen)
    );
    assert_eq!(
        cache.check_and_insert(&verified("k", None, "n4", 1001), 1003),
        Ok(())
    );
    assert_eq!(cache.len(), 3);

    let mut big = NonceCache::new(300, 1000);
    for i in 0..5000u64 {
        let v = verified("k", Some("t"), &i.to_string(), 10_000 + i / 10);
        assert_eq!(big.check_and_insert(&v, 10_000 + i / 10), Ok(()));
        assert!(big.len() <= 1000);
    }
    assert_eq!(big.len(), 1000);
}

#[wasm_bindgen_test(unsupported = test)]
fn a_zero_capacity_cache_still_works() {
    let mut cache = NonceCache::new(300, 0);
    let v = verified("k", None, "n", 1000);
    assert_eq!(cache.check_and_insert(&v, 1000), Ok(()));
    assert_eq!(cache.check_and_insert(&v, 1000), Err(Replay::Seen));
    assert_eq!(cache.len(), 1);
}
