//! Starts the real components for one test and talks to them.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};

pub const TOKEN: &str = "e2e-admin-token";

/// Envoy's transport sockets for the bootstrap's `*_TRANSPORT` placeholders (YAML flow style;
/// `scripts/lib.sh` has the plain one too).
const RAW_TRANSPORT: &str = r#"{name: envoy.transport_sockets.raw_buffer, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}"#;
const DOWNSTREAM_TLS: &str = r#"{name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: {alpn_protocols: [h2, http/1.1], tls_certificate_sds_secret_configs: [{name: mtlsgate_gateway_listener, sds_config: {resource_api_version: V3, path_config_source: {path: SDS, watched_directory: {path: DIR}}}}]}}}"#;
const UPSTREAM_API_TLS: &str = r#"{name: envoy.transport_sockets.tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: mtlsgate-control-plane, common_tls_context: {alpn_protocols: [h2], validation_context: {trusted_ca: {filename: CA}, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: mtlsgate-control-plane}}]}}}}"#;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Path of a component: from its environment variable (set by `scripts/test`), else where
/// `scripts/setup` puts it. Missing means the test fails, never that it is skipped.
pub fn component(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(default));
    assert!(
        path.exists(),
        "{var}: {} does not exist; run scripts/test (or scripts/setup) to install and build it",
        path.display()
    );
    path
}

/// A loopback port nothing listens on. Ports come from a per-process counter starting at a
/// random point, so tests running in parallel never pick the same one (asking the OS for
/// port 0 and closing it again can hand the same port to two tests).
/// A server database for one stack.
#[derive(Debug, Clone, Copy)]
pub enum ServerDb {
    Postgres,
    MariaDb,
}

/// Makes a new database on the PostgreSQL or MariaDB server `scripts/db start` runs
/// (`MTLSGATE_TEST_POSTGRES_URL`, `MTLSGATE_TEST_MYSQL_URL`; missing is a failure, never a
/// skip) with the server's own client, and answers its URL.
pub fn server_database(kind: ServerDb) -> String {
    let var = match kind {
        ServerDb::Postgres => "MTLSGATE_TEST_POSTGRES_URL",
        ServerDb::MariaDb => "MTLSGATE_TEST_MYSQL_URL",
    };
    let admin = std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run `scripts/db start` and source .run/db/env (scripts/test does)"
        )
    });
    let name = format!("mtlsgate_e2e_{}", hex::encode(rand_bytes()));
    let mut url = reqwest::Url::parse(&admin).expect("database URL");
    let status = match kind {
        ServerDb::Postgres => Command::new("psql")
            .args([admin.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .status(),
        ServerDb::MariaDb => Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", url.host_str().expect("host")])
            .args(["-P", &url.port().expect("port").to_string()])
            .args(["-u", url.username()])
            .env("MYSQL_PWD", url.password().unwrap_or(""))
            .arg("-e")
            .arg(format!(
                "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
            ))
            .status(),
    }
    .expect("the database client runs");
    assert!(status.success(), "cannot create database {name}");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free ports (OpenBao's dev server also listens on port + 1).
fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // why: below Linux's ephemeral range (32768-60999), where outgoing connections of this
    // very test (and of anything else on the machine) take their source ports.
    let start = 20_000 + u16::from_le_bytes([rand_bytes()[0], rand_bytes()[1]]) % 12_000;
    let _ = NEXT.compare_exchange(0, start, Ordering::SeqCst, Ordering::SeqCst);
    loop {
        let base = NEXT.fetch_add(n, Ordering::SeqCst);
        if !(20_000..=32_000).contains(&base) {
            NEXT.store(20_000, Ordering::SeqCst);
            continue;
        }
        if (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
}

/// A scratch directory, removed when the test passes (kept, and named, when it fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("mtlsgate-e2e-{}", hex::encode(rand_bytes())));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

fn rand_bytes() -> [u8; 8] {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    b
}

/// A child process killed when dropped.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, dir: &Path, cmd: &mut Command) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc { name, child, log }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!(
                "---- last lines of {} ({}) ----",
                self.name,
                self.log.display()
            );
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// OpenBao + control plane + Envoy, on free loopback ports.
pub struct Stack {
    /// The link PKI of this stack (`mtlsgate pki init`): CA, control plane, gateways.
    pub pki: PathBuf,
    /// The runtime feed, `https://127.0.0.1:<port>` (mutual TLS).
    pub feed: String,
    /// The xDS server, `https://127.0.0.1:<port>` (mutual TLS).
    pub xds: String,
    /// Bearer tokens of an admin per account, made on first use by `forward`.
    tokens: tokio::sync::Mutex<std::collections::HashMap<String, String>>,
    pub gateway: String,
    /// OpenBao's address and root token (to change certificates behind mtlsgate's back).
    pub vault: (String, String),
    pub mtlsgate_bin: PathBuf,
    pub api: String,
    /// Envoy's admin address.
    #[allow(dead_code)]
    pub admin: String,
    pub client: reqwest::Client,
    // Dropped in reverse order of start: Envoy first.
    envoy: Proc,
    control_plane: Proc,
    bao: Proc,
    scratch: Scratch,
    database_url: Option<String>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.scratch.0);
        } else {
            eprintln!("e2e scratch directory kept: {}", self.scratch.0.display());
        }
    }
}

/// Options for a stack.
pub struct Options {
    pub max_connection_seconds: u64,
    /// Per-IP throttle (rate per second, burst); high by default so tests are not throttled.
    pub throttle: (u32, u32),
    /// The filter's whole configuration, replacing the default one (for invalid-config tests).
    pub filter_config: Option<String>,
    /// PEM written to a file and used as the "system" trust bundle (plain-TLS fallback).
    pub system_trust_pem: Option<String>,
    /// Extra trust roots for OAuth 2.0 token endpoints (`--token-endpoint-ca-file`).
    pub token_endpoint_ca_pem: Option<String>,
    /// `--vault-watch-seconds` (how often certificates changed directly in Vault are seen).
    pub vault_watch_seconds: u64,
    /// `--egress-allow`: internal ranges tenants may reach. The test partners and token
    /// endpoints listen on loopback, so loopback by default; Envoy's admin port is denied
    /// in every stack (`--egress-deny`), as `scripts/up` does.
    pub egress_allow: Vec<String>,
    /// `--dns-refresh-seconds`.
    pub dns_refresh_seconds: u64,
    /// A file the control plane sees as its `/etc/hosts` (bind-mounted in a mount namespace
    /// of its own): a test rewrites it to make a name point elsewhere.
    pub hosts_file: Option<PathBuf>,
    /// Every upstream cluster's circuit breaker (`--upstream-max-connections`,
    /// `--upstream-max-pending-requests`, `--upstream-max-requests`); the control plane's
    /// defaults when `None`.
    pub upstream_limits: Option<(u32, u32, u32)>,
    /// The bootstrap's `FORWARD_TIMEOUT_SECONDS` (as `scripts/up`: 60).
    pub forward_timeout_seconds: u64,
    /// The bootstrap's `FORWARD_MAX_BODY_BYTES` (as `scripts/up`: 8 MiB).
    pub forward_max_body_bytes: u64,
    /// Every caller-facing listener over TLS, with the link PKI's control-plane certificate
    /// (a server certificate for 127.0.0.1): the API (`--tls-cert`/`--tls-key`), the
    /// gateway's listener (`GATEWAY_TRANSPORT`, file-based SDS) and the gateway's route to
    /// the API (`CONTROL_API_TRANSPORT`). `api` and `gateway` are then `https://…` and
    /// `client` trusts the link CA.
    pub tls: bool,
    /// `MTLSGATE_DATABASE_URL` (a server database from [`server_database`]) in place of a
    /// SQLite file in the scratch directory.
    pub database_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connection_seconds: 1,
            throttle: (10_000, 10_000),
            filter_config: None,
            system_trust_pem: None,
            token_endpoint_ca_pem: None,
            vault_watch_seconds: 10,
            egress_allow: vec!["127.0.0.1".into(), "::1".into()],
            dns_refresh_seconds: 30,
            hosts_file: None,
            upstream_limits: None,
            forward_timeout_seconds: 60,
            forward_max_body_bytes: 8 * 1024 * 1024,
            tls: false,
            database_url: None,
        }
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Stack {
        let envoy_bin = component("ENVOY_BIN", ".venv/bin/envoy");
        let bao_bin = component("BAO_BIN", ".venv/bin/bao");
        let mtlsgate_bin = component("MTLSGATE_BIN", "target/release/mtlsgate");
        let wasm = component(
            "MTLSGATE_WASM",
            "target/wasm32-wasip1/wasm/mtlsgate_filter.wasm",
        );
        // why: reqwest's TLS comes without a crypto provider in this workspace (the control
        // plane picks ring); install it before building a client.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let scratch = Scratch::new();
        let dir = scratch.0.clone();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");

        let bao_port = free_ports(2);
        let bao_token = hex::encode(rand_bytes());
        let mut bao = Proc::spawn(
            "openbao",
            &dir,
            // why: dev mode writes its token to $HOME/.vault-token; parallel tests would race.
            Command::new(&bao_bin).env("HOME", &dir).args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={bao_token}"),
                &format!("-dev-listen-address=127.0.0.1:{bao_port}"),
            ]),
        );
        wait_ok(
            &client,
            &format!("http://127.0.0.1:{bao_port}/v1/sys/health"),
            &mut bao,
        )
        .await;

        let api_port = free_port();
        let xds_port = free_port();
        let feed_port = free_port();
        let gateway_port = free_port();
        // The links are mutual TLS only: a link PKI per stack, with this Envoy's certificate.
        let node = format!("e2e-{}", hex::encode(rand_bytes()));
        let pki = dir.join("pki");
        let made = Command::new(&mtlsgate_bin)
            .args([
                "pki",
                "init",
                "--dir",
                &pki.to_string_lossy(),
                "--gateway",
                &node,
            ])
            .output()
            .expect("mtlsgate pki init");
        assert!(made.status.success(), "pki init: {made:?}");
        let client = if opts.tls {
            let ca = std::fs::read(pki.join("ca.pem")).expect("ca.pem");
            reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
                .build()
                .expect("client")
        } else {
            client
        };
        let admin_port = free_port();
        // With a hosts file: the control plane in its own mount namespace, that file
        // bind-mounted over /etc/hosts (glibc reads it on every lookup).
        let mut command = match &opts.hosts_file {
            Some(hosts) => {
                let mut c = Command::new("unshare");
                c.args(["--mount", "--propagation", "private", "sh", "-c"])
                    .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
                    .arg(hosts)
                    .arg(&mtlsgate_bin);
                c
            }
            None => Command::new(&mtlsgate_bin),
        };
        let mut control_plane = Proc::spawn(
            "control-plane",
            &dir,
            command
                .arg("serve")
                .args(["--egress-deny", &format!("127.0.0.1:{admin_port}")])
                .args([
                    "--dns-refresh-seconds",
                    &opts.dns_refresh_seconds.to_string(),
                ])
                .args(if opts.egress_allow.is_empty() {
                    vec![]
                } else {
                    vec!["--egress-allow".to_owned(), opts.egress_allow.join(",")]
                })
                .args(["--http-addr", &format!("127.0.0.1:{api_port}")])
                .args(if opts.tls {
                    vec![
                        "--tls-cert".to_owned(),
                        pki.join("control-plane.pem").to_string_lossy().into_owned(),
                        "--tls-key".to_owned(),
                        pki.join("control-plane.key").to_string_lossy().into_owned(),
                    ]
                } else {
                    vec![]
                })
                .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
                .args(["--feed-addr", &format!("127.0.0.1:{feed_port}")])
                .args([
                    "--link-cert-file",
                    &pki.join("control-plane.pem").to_string_lossy(),
                ])
                .args([
                    "--link-key-file",
                    &pki.join("control-plane.key").to_string_lossy(),
                ])
                .args(["--link-ca-file", &pki.join("ca.pem").to_string_lossy()])
                // The CRL `pki init` wrote; `pki revoke-gateway` adds to it.
                .args(["--link-crl-file", &pki.join("crl.pem").to_string_lossy()])
                .args(match &opts.database_url {
                    Some(_) => vec![],
                    None => vec![
                        "--database".to_owned(),
                        dir.join("mtlsgate.db").to_string_lossy().into_owned(),
                    ],
                })
                // In the environment, not the arguments: the URL carries a password.
                .envs(
                    opts.database_url
                        .iter()
                        .map(|u| ("MTLSGATE_DATABASE_URL", u)),
                )
                .args(["--vault-addr", &format!("http://127.0.0.1:{bao_port}")])
                .args([
                    "--vault-watch-seconds",
                    &opts.vault_watch_seconds.to_string(),
                ])
                .args([
                    "--upstream-max-connection-seconds",
                    &opts.max_connection_seconds.to_string(),
                ])
                .args(["--public-gateway", &format!("127.0.0.1:{gateway_port}")])
                .args(match &opts.system_trust_pem {
                    Some(pem) => {
                        let path = dir.join("system-trust.pem");
                        std::fs::write(&path, pem).expect("trust bundle");
                        vec![
                            "--system-trust-bundle".to_owned(),
                            path.to_string_lossy().into_owned(),
                        ]
                    }
                    None => vec![],
                })
                .args(match opts.upstream_limits {
                    Some((connections, pending, requests)) => vec![
                        "--upstream-max-connections".to_owned(),
                        connections.to_string(),
                        "--upstream-max-pending-requests".to_owned(),
                        pending.to_string(),
                        "--upstream-max-requests".to_owned(),
                        requests.to_string(),
                    ],
                    None => vec![],
                })
                .args(match &opts.token_endpoint_ca_pem {
                    Some(pem) => {
                        let path = dir.join("token-endpoint-ca.pem");
                        std::fs::write(&path, pem).expect("token endpoint roots");
                        vec![
                            "--token-endpoint-ca-file".to_owned(),
                            path.to_string_lossy().into_owned(),
                        ]
                    }
                    None => vec![],
                })
                .env("VAULT_TOKEN", &bao_token)
                .env("MTLSGATE_DEV_ADMIN_TOKEN", TOKEN)
                .env("MTLSGATE_LOG", "info,mtlsgate=debug"),
        );
        let scheme = if opts.tls { "https" } else { "http" };
        let api = format!("{scheme}://127.0.0.1:{api_port}");
        wait_ok(&client, &format!("{api}/healthz"), &mut control_plane).await;

        let template = std::fs::read_to_string(root().join("envoy/bootstrap.yaml"))
            .expect("bootstrap template");
        let (gateway_transport, control_api_transport) = if opts.tls {
            // The listener's certificate by file-based SDS, read again when `pki` changes.
            let abs = std::path::absolute(&pki).expect("pki path");
            let sds = abs.join("listener-sds.yaml");
            std::fs::write(
                &sds,
                "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: mtlsgate_gateway_listener\n  tls_certificate:\n    certificate_chain: { filename: CHAIN }\n    private_key: { filename: KEY }\n"
                    .replace("CHAIN", &abs.join("control-plane.pem").to_string_lossy())
                    .replace("KEY", &abs.join("control-plane.key").to_string_lossy()),
            )
            .expect("listener sds");
            (
                DOWNSTREAM_TLS
                    .replace("SDS", &sds.to_string_lossy())
                    .replace("DIR", &abs.to_string_lossy()),
                UPSTREAM_API_TLS.replace("CA", &abs.join("ca.pem").to_string_lossy()),
            )
        } else {
            (RAW_TRANSPORT.to_owned(), RAW_TRANSPORT.to_owned())
        };
        let values = [
            ("NODE_ID", node.clone()),
            (
                "LINK_DIR",
                pki.join("gateways")
                    .join(&node)
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("LINK_CA", pki.join("ca.pem").to_string_lossy().into_owned()),
            ("FEED_PORT", feed_port.to_string()),
            ("THROTTLE_RATE", opts.throttle.0.to_string()),
            ("THROTTLE_BURST", opts.throttle.1.to_string()),
            ("XFF_TRUSTED_HOPS", "0".into()),
            (
                "FORWARD_TIMEOUT_SECONDS",
                opts.forward_timeout_seconds.to_string(),
            ),
            (
                "FORWARD_MAX_BODY_BYTES",
                opts.forward_max_body_bytes.to_string(),
            ),
            ("WASM", wasm.to_string_lossy().into_owned()),
            ("LISTEN_ADDRESS", "127.0.0.1".into()),
            ("LISTEN_PORT", gateway_port.to_string()),
            ("ADMIN_ADDRESS", "127.0.0.1".into()),
            ("ADMIN_PORT", admin_port.to_string()),
            ("CONTROL_ADDRESS", "127.0.0.1".into()),
            ("XDS_PORT", xds_port.to_string()),
            ("API_PORT", api_port.to_string()),
            ("GATEWAY_TRANSPORT", gateway_transport),
            ("GATEWAY_SCHEME", scheme.to_owned()),
            ("CONTROL_API_TRANSPORT", control_api_transport),
            (
                "ACCESS_LOG",
                dir.join("access.log").to_string_lossy().into_owned(),
            ),
        ];
        let mut bootstrap = template;
        if let Some(cfg) = &opts.filter_config {
            let start = bootstrap
                .find(r#"'{"role":"filter""#)
                .expect("filter configuration in the bootstrap");
            let end = start
                + 1
                + bootstrap[start + 1..]
                    .find('\'')
                    .expect("end of the filter configuration");
            bootstrap.replace_range(start..=end, &format!("'{cfg}'"));
        }
        for (k, v) in values {
            bootstrap = bootstrap.replace(&format!("${{{k}}}"), &v);
        }
        assert!(
            !bootstrap.contains("${"),
            "unfilled placeholder in the bootstrap"
        );
        let bootstrap_path = dir.join("envoy.yaml");
        std::fs::write(&bootstrap_path, bootstrap).expect("write bootstrap");
        let mut envoy = Proc::spawn(
            "envoy",
            &dir,
            Command::new(&envoy_bin)
                .args(["-c", &bootstrap_path.to_string_lossy()])
                .args([
                    "--disable-hot-restart",
                    "--concurrency",
                    "2",
                    "--log-level",
                    "info",
                    "--file-flush-interval-msec",
                    "500",
                ]),
        );
        let admin = format!("http://127.0.0.1:{admin_port}");
        wait_ok(&client, &format!("{admin}/ready"), &mut envoy).await;

        let stack = Stack {
            pki,
            feed: format!("https://127.0.0.1:{feed_port}"),
            xds: format!("https://127.0.0.1:{xds_port}"),
            tokens: Default::default(),
            mtlsgate_bin,

            gateway: format!("{scheme}://127.0.0.1:{gateway_port}"),
            vault: (format!("http://127.0.0.1:{bao_port}"), bao_token),
            api,
            admin,
            client,
            envoy,
            control_plane,
            bao,
            scratch,
            database_url: opts.database_url.clone(),
        };
        if opts.filter_config.is_none() {
            stack.wait_snapshot_loaded().await;
        }
        stack
    }

    /// Waits until the filter has its first snapshot (it answers 503 before that).
    async fn wait_snapshot_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .forward(
                    "probe",
                    "GET",
                    "https://probe.invalid/",
                    "IDP",
                    &[("authorization", "Bearer none")],
                    None,
                )
                .await;
            if r.status() != 503 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the filter never loaded a snapshot"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The certificate files of gateway `node` in this stack's link PKI, issued on first use
    /// (`mtlsgate pki issue-gateway`): (certificate PEM, key PEM).
    pub fn gateway_identity(&self, node: &str) -> (String, String) {
        let dir = self.pki.join("gateways").join(node);
        if !dir.join("gateway.pem").exists() {
            let made = Command::new(&self.mtlsgate_bin)
                .args(["pki", "issue-gateway", "--dir", &self.pki.to_string_lossy()])
                .args(["--node-id", node])
                .output()
                .expect("mtlsgate pki issue-gateway");
            assert!(made.status.success(), "issue-gateway: {made:?}");
        }
        (
            std::fs::read_to_string(dir.join("gateway.pem")).expect("gateway.pem"),
            std::fs::read_to_string(dir.join("gateway.key")).expect("gateway.key"),
        )
    }

    /// A gateway certificate and key for `node` from another link CA than this stack's (made
    /// with `mtlsgate pki init` in a directory of its own): what must get nothing.
    pub fn foreign_identity(&self, node: &str) -> (String, String) {
        let other = self
            .pki
            .with_file_name(format!("foreign-pki-{}", hex::encode(rand_bytes())));
        let made = Command::new(&self.mtlsgate_bin)
            .args([
                "pki",
                "init",
                "--dir",
                &other.to_string_lossy(),
                "--gateway",
                node,
            ])
            .output()
            .expect("mtlsgate pki init");
        assert!(made.status.success(), "pki init: {made:?}");
        let read =
            |f: &str| std::fs::read_to_string(other.join("gateways").join(node).join(f)).expect(f);
        (read("gateway.pem"), read("gateway.key"))
    }

    /// The link CA (PEM).
    pub fn link_ca(&self) -> String {
        std::fs::read_to_string(self.pki.join("ca.pem")).expect("ca.pem")
    }

    /// A client of the links that trusts the link CA and presents `identity` (certificate
    /// and key PEM), or no certificate at all.
    pub fn link_client(&self, identity: Option<(String, String)>) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.link_ca().as_bytes()).expect("CA");
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .tls_certs_only([ca]);
        if let Some((cert, key)) = identity {
            b = b.identity(
                reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).expect("identity"),
            );
        }
        b.build().expect("link client")
    }

    /// Uploads a P12 through the gateway's mtlsGateway domain, as LivePerson's MTLS "Onboarding" does.
    pub async fn upload(
        &self,
        account: &str,
        name: &str,
        p12: Vec<u8>,
        password: &str,
    ) -> reqwest::Response {
        let form = Form::new()
            .part("file", Part::bytes(p12).file_name("cert.p12"))
            .text(
                "certificate",
                json!({"name": name, "password": password}).to_string(),
            );
        self.client
            .post(format!(
                "{}/mtls/account/{account}/certificates/by-file",
                self.gateway
            ))
            .bearer_auth(self.token_for(account).await)
            .multipart(form)
            .send()
            .await
            .expect("upload")
    }

    /// Uploads and answers the new certificate's id.
    pub async fn upload_ok(&self, account: &str, name: &str, p12: Vec<u8>, password: &str) -> i64 {
        let r = self.upload(account, name, p12, password).await;
        let status = r.status();
        let v: Value = r.json().await.expect("json");
        assert_eq!(status, 201, "upload: {v}");
        v["successfulySavedCertificates"][0]["id"]
            .as_i64()
            .expect("id")
    }

    /// Replaces a certificate's material (PUT by-file).
    pub async fn rotate(
        &self,
        account: &str,
        id: i64,
        name: &str,
        p12: Vec<u8>,
        password: &str,
    ) -> reqwest::Response {
        let form = Form::new()
            .part("file", Part::bytes(p12).file_name("cert.p12"))
            .text(
                "certificate",
                json!({"name": name, "password": password, "id": id}).to_string(),
            );
        self.client
            .put(format!(
                "{}/mtls/account/{account}/certificates/by-file",
                self.gateway
            ))
            .bearer_auth(self.token_for(account).await)
            .multipart(form)
            .send()
            .await
            .expect("rotate")
    }

    /// Posts mappings to the accountConfigReadWrite domain.
    pub async fn map(&self, account: &str, mappings: Value) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/api/account/{account}/configuration/ac-common/mtls?v=3.0",
                self.api
            ))
            .bearer_auth(TOKEN)
            .json(&mappings)
            .send()
            .await
            .expect("map")
    }

    /// Maps one triplet to a certificate, trusting `ca_pem` for the target's server certificate.
    pub async fn map_ok(
        &self,
        account: &str,
        cert: i64,
        service_id: &str,
        url: &str,
        name: &str,
        ca_pem: &str,
    ) {
        let r = self
            .map(
                account,
                json!([{
                    "certificationId": cert.to_string(), "serviceId": service_id, "enable": true,
                    "url": url, "siteId": account, "name": name, "deleted": false,
                    "caCertificates": ca_pem,
                }]),
            )
            .await;
        assert_eq!(
            r.status(),
            201,
            "map: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// A Bearer token of an admin of `account` (the user is made on first use).
    pub async fn token_for(&self, account: &str) -> String {
        let mut tokens = self.tokens.lock().await;
        if let Some(t) = tokens.get(account) {
            return t.clone();
        }
        let password = format!("pw-{}", hex::encode(rand_bytes()));
        self.add_user(account, "e2e-admin", &password, true);
        let t = self.login(account, "e2e-admin", &password).await;
        // The gateway learns of new users through its snapshot: wait until it knows this one
        // (a forward with no target is then refused for the target, not the token).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self
                .client
                .get(format!("{}/mtls/account/{account}", self.gateway))
                .bearer_auth(&t)
                .send()
                .await
                .expect("probe");
            if r.status() != 401 && r.status() != 503 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never accepted the new user's token"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokens.insert(account.to_owned(), t.clone());
        t
    }

    /// Sends a forward request through the gateway, as an admin of the account unless
    /// `headers` bring their own `authorization`.
    pub async fn forward(
        &self,
        account: &str,
        method: &str,
        url: &str,
        service: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self
            .client
            .request(method, format!("{}/mtls/account/{account}", self.gateway))
            .header("LP-forward-url", url)
            .header("LP-service-name", service);
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.bearer_auth(self.token_for(account).await);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_owned());
        }
        req.send().await.expect("forward")
    }

    /// Forwards `GET url` until the answer is 200 (at most 10 s), asserting that every answer
    /// before it is the `no_mtls_mapping` refusal: never a 5xx from a cluster or secret that
    /// is not there yet.
    pub async fn forward_when_mapped(
        &self,
        account: &str,
        url: &str,
        service: &str,
    ) -> reqwest::Response {
        self.forward_when_served(account, url, service, &[(400, "no_mtls_mapping")])
            .await
    }

    /// Forwards `GET url` until the answer is 200 (at most 10 s), asserting that every answer
    /// before it is one of `before` (status, code): what the gateway may say while a change
    /// is on its way, and nothing else.
    pub async fn forward_when_served(
        &self,
        account: &str,
        url: &str,
        service: &str,
        before: &[(u16, &str)],
    ) -> reqwest::Response {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.forward(account, "GET", url, service, &[], None).await;
            if r.status() == 200 {
                return r;
            }
            let (status, code) = error_code(r).await;
            assert!(
                before.contains(&(status, code.as_str())),
                "only {before:?} may precede success, got {status} {code}"
            );
            assert!(
                Instant::now() < deadline,
                "the mapping was not served within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sets `cmd`'s database as the stack's control plane has it (a command of `mtlsgate`
    /// other than `serve`: `user add`, `check`).
    pub fn with_database<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        match &self.database_url {
            Some(url) => cmd.env("MTLSGATE_DATABASE_URL", url),
            None => cmd.args([
                "--database",
                &self.scratch.0.join("mtlsgate.db").to_string_lossy(),
            ]),
        }
    }

    /// Adds a user with the `mtlsgate user add` command, the password on standard input.
    pub fn add_user(&self, account: &str, username: &str, password: &str, admin: bool) {
        use std::io::Write;
        let mut cmd = Command::new(&self.mtlsgate_bin);
        cmd.args(["user", "add", "--account", account, "--username", username]);
        match &self.database_url {
            Some(url) => cmd.env("MTLSGATE_DATABASE_URL", url),
            None => cmd.args([
                "--database",
                &self.scratch.0.join("mtlsgate.db").to_string_lossy(),
            ]),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if admin {
            cmd.arg("--admin");
        }
        let mut child = cmd.spawn().expect("mtlsgate user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(password));
    }

    /// Logs in and answers the bearer token.
    pub async fn login(&self, account: &str, username: &str, password: &str) -> String {
        let r = self
            .client
            .post(format!("{}/api/account/{account}/login?v=1.3", self.api))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status(), 200, "login");
        let v: Value = r.json().await.expect("json");
        v["bearer"].as_str().expect("bearer").to_owned()
    }

    /// Stops OpenBao, to see how the control plane copes with an unreachable Vault.
    pub fn stop_vault(&mut self) {
        let _ = self.bao.child.kill();
        let _ = self.bao.child.wait();
    }

    /// Stops the control plane, to see the gateway keep its last good snapshot.
    pub fn stop_control_plane(&mut self) {
        let _ = self.control_plane.child.kill();
        let _ = self.control_plane.child.wait();
    }

    /// The access log's lines once `ready` holds for them (Envoy flushes the file every
    /// half second); fails after 10 s.
    pub async fn audit_lines_when(&self, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.audit_lines();
            if ready(&lines) {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "the audit log never showed the expected lines: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where Envoy writes the access (audit) log.
    pub fn audit_path(&self) -> PathBuf {
        self.scratch.0.join("access.log")
    }

    /// The access log's lines, parsed, with the filter's audit record (the `audit` field, a
    /// JSON object in a string) merged into each line, as `jq '(.audit // "{}" | fromjson) +
    /// del(.audit)'` does.
    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let mut line: Value = serde_json::from_str(l).expect("access log lines are JSON");
                let audit = line
                    .as_object_mut()
                    .expect("access log lines are JSON objects")
                    .remove("audit");
                if let Some(Value::String(audit)) = audit {
                    let audit: Value =
                        serde_json::from_str(&audit).expect("the audit field holds JSON");
                    for (k, v) in audit.as_object().expect("the audit field is an object") {
                        line[k.as_str()] = v.clone();
                    }
                }
                line
            })
            .collect()
    }

    /// The process id of this stack's Envoy (to stop and continue it).
    pub fn envoy_pid(&self) -> u32 {
        self.envoy.child.id()
    }

    pub fn control_plane_alive(&mut self) -> bool {
        self.control_plane.alive()
    }

    /// Everything the control plane and Envoy logged so far (and the access log).
    pub fn logs(&self) -> String {
        ["control-plane.log", "envoy.log", "access.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.scratch.0.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether all three processes are still running.
    pub fn all_alive(&mut self) -> bool {
        self.envoy.alive() && self.control_plane.alive() && self.bao.alive()
    }
}

async fn wait_ok(client: &reqwest::Client, url: &str, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        assert!(proc.alive(), "{} exited before it was ready", proc.name);
        assert!(
            Instant::now() < deadline,
            "{} not ready at {url} within 60 s",
            proc.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The JSON an error answer must have: `code`, `message`, `requestId`.
pub async fn error_code(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: Value = r.json().await.expect("error body is JSON");
    assert!(v["message"].is_string(), "error without message: {v}");
    assert!(v["requestId"].is_string(), "error without requestId: {v}");
    (status, v["code"].as_str().expect("code").to_owned())
}

/// Helpers of the runtime snapshot tests (`runtime_api.rs`).
impl Stack {
    /// The node id Envoy presents over ADS (and so to the runtime snapshot), from its admin
    /// interface.
    pub async fn envoy_node_id(&self) -> String {
        let info: Value = self
            .client
            .get(format!("{}/server_info", self.admin))
            .send()
            .await
            .expect("server_info")
            .json()
            .await
            .expect("server_info is JSON");
        info["node"]["id"]
            .as_str()
            .expect("server_info names the node")
            .to_owned()
    }

    /// Envoy's clusters, as its admin interface lists them (`name::…` lines).
    pub async fn envoy_clusters(&self) -> String {
        self.client
            .get(format!("{}/clusters", self.admin))
            .send()
            .await
            .expect("clusters")
            .text()
            .await
            .expect("clusters text")
    }
}
