//! P12 files made by other people's tools (the JDK's keytool, the openssl CLI), as users make
//! them. Each returns the file and the DER of the certificates an upstream must trust and
//! will see.

use std::path::Path;
use std::process::Command;

pub fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (part of the base toolchain): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).expect("tool output")
}

/// A P12 as LivePerson's Bot Accounts "Credentials" page makes it: `keytool -genkeypair -keyalg RSA
/// -keysize 2048 -storetype PKCS12`. Self-signed: the upstream trusts the certificate itself.
/// Answers (p12, certificate DER).
pub fn keytool_p12(dir: &Path, password: &str) -> (Vec<u8>, Vec<u8>) {
    run(
        dir,
        "keytool",
        &[
            "-genkeypair",
            "-alias",
            "client",
            "-keyalg",
            "RSA",
            "-keysize",
            "2048",
            "-storetype",
            "PKCS12",
            "-keystore",
            "client.p12",
            "-storepass",
            password,
            "-keypass",
            password,
            "-validity",
            "30",
            "-dname",
            "CN=keytool-client, O=Brand",
            "-ext",
            "EKU=clientAuth",
        ],
    );
    run(
        dir,
        "keytool",
        &[
            "-exportcert",
            "-alias",
            "client",
            "-keystore",
            "client.p12",
            "-storepass",
            password,
            "-file",
            "client.der",
        ],
    );
    (read(dir, "client.p12"), read(dir, "client.der"))
}

/// A P12 as LivePerson's MTLS "Onboarding" recipe makes it: an openssl CA signs a client certificate,
/// then `openssl pkcs12 -export` (with `-legacy`: RC2/3DES and a SHA-1 MAC, as older tools and
/// Windows do). Answers (p12, CA DER, client certificate DER).
pub fn openssl_p12(dir: &Path, password: &str, legacy: bool) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let days = ["-days", "30"];
    run(
        dir,
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=openssl CA",
            days[0],
            days[1],
        ],
    );
    run(
        dir,
        "openssl",
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "client.csr",
            "-subj",
            "/CN=openssl-client/O=Brand",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "extendedKeyUsage=clientAuth\n").expect("ext");
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-req",
            "-in",
            "client.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.pem",
            "-extfile",
            "ext.cnf",
            days[0],
            days[1],
        ],
    );
    let pass = format!("pass:{password}");
    let mut args = vec![
        "pkcs12",
        "-export",
        "-in",
        "client.pem",
        "-inkey",
        "client.key",
        "-certfile",
        "ca.pem",
        "-out",
        "client.p12",
        "-passout",
        &pass,
    ];
    if legacy {
        args.push("-legacy");
    }
    run(dir, "openssl", &args);
    run(
        dir,
        "openssl",
        &["x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der"],
    );
    run(
        dir,
        "openssl",
        &[
            "x509",
            "-in",
            "client.pem",
            "-outform",
            "DER",
            "-out",
            "client.der",
        ],
    );
    (
        read(dir, "client.p12"),
        read(dir, "ca.der"),
        read(dir, "client.der"),
    )
}
