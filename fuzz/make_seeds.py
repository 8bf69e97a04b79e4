#!/usr/bin/env python3
"""Writes the hand-made seed inputs of every fuzz target into fuzz/corpus/<target>/seed-*.

    python3 fuzz/make_seeds.py fuzz/corpus

Key stores and certificates are made here with openssl and keytool (fresh keys each run);
everything else is written out below. The corpus is committed, so this runs only to add or
change seeds. The input layout of each target is described in its `fuzzing::` function.
"""
import base64, hashlib, hmac, json, os, subprocess, sys, tempfile, urllib.parse

out = sys.argv[1]             # fuzz/corpus
keys = tempfile.mkdtemp()

def sh(*cmd):
    subprocess.run(cmd, cwd=keys, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rsa.key", "-out", "rsa.pem", "-days", "3650",
   "-subj", "/CN=client.example", "-addext", "extendedKeyUsage=clientAuth")
sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ec.key", "-out", "ec.pem",
   "-days", "3650", "-subj", "/CN=ec.example")
sh("openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", "ed.key", "-out", "ed.pem", "-days", "3650", "-subj", "/CN=ed.example")
sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
   "-days", "3650", "-subj", "/CN=Test CA")
sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=leaf.example")
sh("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "leaf.pem", "-days", "365")
p12 = lambda *a: sh("openssl", "pkcs12", "-export", *a)
p12("-in", "rsa.pem", "-inkey", "rsa.key", "-out", "rsa_aes.p12", "-passout", "pass:changeit")
p12("-legacy", "-in", "rsa.pem", "-inkey", "rsa.key", "-out", "rsa_legacy.p12", "-passout", "pass:changeit")
p12("-in", "ec.pem", "-inkey", "ec.key", "-out", "ec.p12", "-passout", "pass:changeit")
p12("-in", "leaf.pem", "-inkey", "leaf.key", "-certfile", "ca.pem", "-out", "chain.p12", "-passout", "pass:changeit")
p12("-in", "ed.pem", "-inkey", "ed.key", "-out", "ed.p12", "-passout", "pass:")
p12("-in", "ec.pem", "-inkey", "ec.key", "-out", "ec_nomac.p12", "-passout", "pass:changeit", "-nomac")
p12("-nokeys", "-in", "ca.pem", "-out", "trust.p12", "-passout", "pass:changeit")
for c in ("rsa", "leaf", "ed"):
    sh("openssl", "x509", "-in", f"{c}.pem", "-outform", "der", "-out", f"{c}.der")
sh("keytool", "-importkeystore", "-srckeystore", "ec.p12", "-srcstoretype", "PKCS12", "-srcstorepass", "changeit",
   "-destkeystore", "ec.jks", "-deststoretype", "JKS", "-deststorepass", "changeit", "-noprompt")
sh("keytool", "-importkeystore", "-srckeystore", "rsa_aes.p12", "-srcstoretype", "PKCS12", "-srcstorepass", "changeit",
   "-destkeystore", "keytool.p12", "-deststoretype", "PKCS12", "-deststorepass", "changeit", "-noprompt")
sh("keytool", "-importcert", "-alias", "ca", "-file", "ca.pem", "-keystore", "trust.jks", "-storetype", "JKS", "-storepass", "changeit", "-noprompt")

def put(target, name, data):
    d = os.path.join(out, target); os.makedirs(d, exist_ok=True)
    if isinstance(data, str): data = data.encode()
    open(os.path.join(d, "seed-" + name), "wb").write(data)
def f(name): return open(os.path.join(keys, name), "rb").read()

# --- key stores: first byte picks the password (0: changeit, 1: empty, 2: wrong)
stores = ["rsa_aes.p12", "rsa_legacy.p12", "ec.p12", "chain.p12", "ec_nomac.p12", "keytool.p12", "ec.jks", "trust.p12", "trust.jks"]
for s in stores:
    for t in ("keystore", "p12test"):
        put(t, s, b"\x00" + f(s))
for t in ("keystore", "p12test"):
    put(t, "ed.p12", b"\x01" + f("ed.p12"))
    put(t, "rsa_aes.p12-wrong", b"\x02" + f("rsa_aes.p12"))

# --- certificates
for d in ("rsa.der", "leaf.der", "ed.der"):
    put("certinfo", d, f(d))

# --- trust certificates: mode byte even = text as sent, odd = binary sent as base64
put("trust_bundle", "ca.pem", b"\x00" + f("ca.pem"))
put("trust_bundle", "chain.pem", b"\x00" + f("leaf.pem") + f("ca.pem"))
put("trust_bundle", "der-b64", b"\x00" + base64.b64encode(f("rsa.der")))
for s in ("rsa.der", "trust.jks", "trust.p12", "chain.p12"):
    put("trust_bundle", s, b"\x01" + f(s))

# --- multipart uploads: Content-Type line, then the body
def multipart(boundary, fields):
    body = b""
    for name, filename, value in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if filename: body += b"Content-Type: application/x-pkcs12\r\n"
        body += b"\r\n" + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()
ct = lambda b: f"multipart/form-data; boundary={b}\n".encode()
meta = json.dumps({"name": "partner", "password": "changeit", "displayName": "Partner"}).encode()
put("upload", "by-file", ct("XyZ") + multipart("XyZ", [("file", "c.p12", f("ec.p12")), ("certificate", None, meta)]))
put("upload", "by-file-update", ct("b") + multipart("b", [("certificate", None, json.dumps({"name": "p", "password": "changeit", "id": 3}).encode()), ("file", "c.p12", f("chain.p12"))]))
put("upload", "p12-test", ct("----WebKitFormBoundary7MA4YWxkTrZu0gW") + multipart("----WebKitFormBoundary7MA4YWxkTrZu0gW", [("file", "c.p12", f("rsa_aes.p12")), ("password", None, b"changeit")]))
put("upload", "twice", ct("q") + multipart("q", [("file", "a", b"x"), ("file", "b", b"y"), ("other", None, b"z")]))

# --- JSON certificate bodies: P12 as base64 or as (Java's signed) bytes
put("certificates_json", "base64", json.dumps([{"name": "a", "p12": base64.b64encode(f("ec.p12")).decode(), "password": "changeit"}]))
signed = [b - 256 if b > 127 else b for b in f("ec.p12")]
put("certificates_json", "bytes", json.dumps([{"name": "b", "p12": signed, "password": "changeit", "id": "7", "displayName": "B"}]))

# --- credential bodies
mutual = {"name": "m", "type": "mutualAuthentication", "keyCertificate": base64.b64encode(f("chain.p12")).decode(),
          "keyCertificatePassword": "changeit", "trustCertificate": f("ca.pem").decode(), "protocols": ["TLSv1.2", "TLSv1.3"]}
put("credential", "mutual", json.dumps(mutual))
put("credential", "mutual-jks", json.dumps({"name": "j", "type": "mutualAuthentication", "keyCertificate": base64.b64encode(f("ec.jks")).decode(),
    "keyCertificatePassword": "changeit", "trustCertificate": base64.b64encode(f("trust.jks")).decode(), "trustCertificatePassword": "changeit"}))
put("credential", "client-credentials", json.dumps({"name": "o", "type": "oauth2ClientCredentials", "clientId": "id", "clientSecret": "s",
    "scope": "read write", "tokenUrl": "https://auth.example/token", "clientAuthentication": "basic"}))
put("credential", "authorization-code", json.dumps({"name": "c", "type": "oauth2AuthorizationCode", "clientId": "id", "clientSecret": "s",
    "authUrl": "https://auth.example/authorize", "tokenUrl": "https://auth.example/token", "pkce": True}))
put("credential", "basic", json.dumps({"name": "b", "type": "basicAuthentication", "username": "u", "password": "p"}))
put("credential", "access-token", json.dumps({"name": "t", "type": "accessToken", "token": "abc", "tokenType": "Bearer"}))
put("credential", "messaging", json.dumps({"name": "t", "type": "transferToMessaging", "clientId": "a", "clientSecret": "b"}))
put("credential", "nlu", json.dumps({"name": "n", "type": "thirdPartyNlu", "provider": "dialogflow", "credentials": {"k": "v"}}))
put("credential", "pre-auth", json.dumps({"name": "p", "type": "consumerPreAuthentication", "settings": {"a": 1}}))

# --- OAuth1: the header, method, authority, path, then a form body (RFC 5849 signatures
# with the fixture's AppKey: consumer ck/cs, token at/ts)
enc = lambda s: urllib.parse.quote(s, safe="-._~")
def oauth(method, scheme, authority, path, body=b"", extra=None, realm=True):
    p = {"oauth_consumer_key": "ck", "oauth_token": "at", "oauth_signature_method": "HMAC-SHA1",
         "oauth_timestamp": "1800000000", "oauth_nonce": "n0nce", "oauth_version": "1.0"}
    p.update(extra or {})
    pairs = list(p.items())
    path_only, _, query = path.partition("?")
    pairs += urllib.parse.parse_qsl(query, keep_blank_values=True) + urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    norm = "&".join(f"{k}={v}" for k, v in sorted((enc(k), enc(v)) for k, v in pairs))
    host = authority.lower()
    base = "&".join([method.upper(), enc(f"{scheme}://{host}{path_only or '/'}"), enc(norm)])
    sig = base64.b64encode(hmac.new(b"cs&ts", base.encode(), hashlib.sha1).digest()).decode()
    p["oauth_signature"] = sig
    hdr = ("OAuth realm=\"Example\", " if realm else "OAuth ") + ", ".join(f'{enc(k)}="{enc(v)}"' for k, v in p.items())
    return f"{hdr}\n{method}\n{authority}\n{path}\n".encode() + body
put("oauth1", "get", oauth("GET", "https", "gw.example", "/mtls/account/52653865"))
put("oauth1", "query", oauth("POST", "https", "gw.example:8443", "/mtls/mapping?v=2&a=%20b&c", realm=False))
put("oauth1", "form", oauth("POST", "https", "[::1]", "/r?b5=%3D%253D&a3=a&c%40=&a2=r%20b", b"c2&a3=2+q"))
put("oauth1", "rfc5849", b'OAuth realm="Example",oauth_consumer_key="9djdj82h48djs9d2",oauth_token="kkk9d7dh3k39sjv7",oauth_signature_method="HMAC-SHA1",oauth_timestamp="137131201",oauth_nonce="7d8f3e4a",oauth_signature="bYT5CMsGcbgUdFHObYMEfcx6bsw%3D"\nPOST\nexample.com\n/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b\nc2&a3=2+q')

# --- Bearer: mode 0 = the token as sent; mode 1 = header JSON \n claims JSON, signed by the target
hdr = json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "k1"})
claims = {"iss": "mtlsgate", "sub": "1", "acc": "52653865", "name": "alice", "adm": False,
          "privileges": ["forward", "check_mapping"], "iat": 1799999990, "exp": 1800000100, "jti": "j"}
put("bearer", "signed", b"\x01" + f"{hdr}\n{json.dumps(claims)}".encode())
put("bearer", "signed-admin", b"\x01" + f"{hdr}\n{json.dumps(dict(claims, adm=True, sub='99'))}".encode())
b64 = lambda s: base64.urlsafe_b64encode(s.encode()).rstrip(b"=").decode()
put("bearer", "raw", b"\x00" + f"{b64(hdr)}.{b64(json.dumps(claims))}.{'A' * 86}".encode())

# --- LP-forward-url
for i, u in enumerate(["https://api.brand.example/oauth/token?x=1", "https://[2001:db8::1]:8443/p", "HTTPS://10.0.0.1",
                       "https://a_b.example.:443/?q=1&r=%20", "https://host.example:65535", "https://xn--bcher-kva.example/a/b/../c"]):
    put("forward_url", str(i), u)

# --- check mapping: the request path, then the body
trip = [{"serviceName": "IDP", "accountId": "52653865", "url": "https://api.brand.example/oauth/token?x=1"},
        {"serviceName": "0", "accountId": "52653865", "url": "https://other.example"}]
put("check_mapping", "v1", "/mtls/mapping\n" + json.dumps(trip))
put("check_mapping", "v2", "/mtls/mapping?v=2.0\n" + json.dumps(trip))
put("check_mapping", "other-account", "/mtls/mapping?v=1\n" + json.dumps([dict(trip[0], accountId="1")]))

# --- the runtime snapshot, as the control plane serves it
snap = {"version": "42", "mappings": [
    {"id": 1, "account": "52653865", "service": 1, "url": "https://api.brand.example/oauth/token?x=1", "cluster": "mtls_5_api",
     "certificateId": 5, "certificateSerial": "0A", "authorization": "Bearer x", "overrideAllowed": True},
    {"id": 2, "account": "52653865", "service": 2, "url": "https://h.example", "cluster": "c", "certificateId": 6, "unavailable": "certificateUnavailable"}],
  "tokenKeys": [{"kid": "k1", "publicKey": "6g4Yb6bJLVXJp0dNbB_gD1lY0Zg7Q1VNnX1Iq6kE9kA"}],
  "appKeys": [{"id": 3, "account": "52653865", "consumerKey": "ck", "accessToken": "at", "consumerSecret": "cs", "accessTokenSecret": "ts", "privileges": ["forward"]}],
  "users": [{"account": "52653865", "id": 1}],
  "fallback": [{"account": "52653865", "host": "plain.example", "port": 443, "cluster": "tls_plain"}]}
put("snapshot", "full", json.dumps(snap))
put("snapshot", "empty", json.dumps({"version": "0", "mappings": []}))

# --- whole requests: method, path, authority, peer, then headers
req = lambda m, p, hs: (f"{m}\n{p}\ngw.example\n10.1.2.3:5555\n" + "\n".join(f"{k}: {v}" for k, v in hs)).encode()
o = oauth("GET", "http", "gw.example", "/mtls/account/52653865").split(b"\n")[0].decode()
fwd = [("authorization", o), ("lp-forward-url", "https://api.brand.example/oauth/token?x=1"), ("lp-service-name", "IDP"),
       ("x-mtlsgate-cluster", "evil"), ("connection", "keep-alive, x-foo"), ("x-forwarded-for", "1.1.1.1, 2.2.2.2")]
put("request", "forward-oauth1", req("GET", "/mtls/account/52653865", fwd))
put("request", "fallback", req("GET", "/mtls/account/52653865", fwd[:1] + [("lp-forward-url", "https://plain.example/x"), ("lp-service-name", "2"), ("lp-authorization-override", "Basic eA==")]))
put("request", "check", req("POST", "/mtls/mapping?v=2", [("authorization", "Bearer a.b.c"), ("x-mtlsgate-cluster", "x")]))
put("request", "pass", req("GET", "/mtls/account/52653865/certificates", [("x-mtlsgate-forward", "1")]))
