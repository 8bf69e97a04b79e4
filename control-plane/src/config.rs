//! Command-line flags and environment variables of `mtlsgate serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// Everything `serve` needs. Every flag has an environment variable; secrets are read from
/// the environment by preference so they stay out of `ps`.
/// Where the metadata lives: `serve` and the commands that write straight to the database
/// take the same flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DatabaseArgs {
    /// SQLite database file (the default store: nothing to install); created with its schema
    /// on first start. For PostgreSQL or MySQL/MariaDB, give --database-url instead.
    #[arg(long, env = "MTLSGATE_DATABASE", default_value = "mtlsgate.db")]
    pub database: PathBuf,

    /// The database as a URL, in place of --database: `sqlite://PATH?mode=rwc`,
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` (PostgreSQL 15+) or
    /// `mysql://USER:PASSWORD@HOST:PORT/DB` (MySQL 8, MariaDB 10.11+). TLS as the URL asks:
    /// `?sslmode=verify-full&sslrootcert=CA.pem` (PostgreSQL),
    /// `?ssl-mode=VERIFY_IDENTITY&ssl-ca=CA.pem` (MySQL). Its schema is created or brought up
    /// to date on start; several control planes may share it.
    #[arg(long, env = "MTLSGATE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// At most this many connections to the database (default: 4 for SQLite, else 10).
    #[arg(long, env = "MTLSGATE_DATABASE_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: Option<u32>,
}

impl DatabaseArgs {
    /// Connects and brings the schema up to date.
    pub(crate) async fn open(&self) -> Result<crate::store::Store, crate::store::StoreError> {
        let opts = crate::store::DbOptions {
            max_connections: self.database_max_connections,
        };
        match &self.database_url {
            Some(url) => crate::store::Store::connect(url, &opts).await,
            None => crate::store::Store::open_with(&self.database, &opts).await,
        }
    }

    /// The database for a log line, without a password or the URL's parameters.
    pub fn describe(&self) -> String {
        match &self.database_url {
            Some(url) => crate::store::redacted_url(url),
            None => self.database.display().to_string(),
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeConfig {
    /// Address of the management API, the runtime snapshot feed and the health check.
    #[arg(long, env = "MTLSGATE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// The management API's certificate chain (PEM): with `--tls-key`, the API (and the
    /// health check) is served over HTTPS only, and the files are read again when they
    /// change. Without them the API is plain HTTP, which is allowed on a loopback
    /// `--http-addr` only: passwords, tokens and P12 files cross it.
    #[arg(long, env = "MTLSGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "MTLSGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Address of the xDS (ADS) gRPC server Envoy connects to (mutual TLS).
    #[arg(long, env = "MTLSGATE_XDS_ADDR", default_value = "127.0.0.1:18000")]
    pub xds_addr: SocketAddr,

    /// Address of the runtime snapshot feed the gateways' filter polls (mutual TLS).
    #[arg(long, env = "MTLSGATE_FEED_ADDR", default_value = "127.0.0.1:18001")]
    pub feed_addr: SocketAddr,

    /// The control plane's certificate chain (PEM) on the links to gateways: ADS and the
    /// feed, which are served over mutual TLS only (`mtlsgate pki init` makes one).
    #[arg(long, env = "MTLSGATE_LINK_CERT_FILE")]
    pub link_cert_file: PathBuf,

    /// The private key of `--link-cert-file` (PEM).
    #[arg(long, env = "MTLSGATE_LINK_KEY_FILE")]
    pub link_key_file: PathBuf,

    /// The CA that issues gateway certificates (PEM): a gateway must present one that names
    /// its node id, and gets that node's resources only.
    #[arg(long, env = "MTLSGATE_LINK_CA_FILE")]
    pub link_ca_file: PathBuf,

    /// The link CA's certificate revocation list (PEM; `mtlsgate pki init` writes an empty
    /// `crl.pem`, `mtlsgate pki revoke-gateway` adds to it). A revoked gateway certificate
    /// is refused, and the ADS streams and feed polls it holds open are closed, within a
    /// second of the file changing. A file that is missing, malformed or not signed by the
    /// link CA stops the start; later, it leaves the last good list in force.
    #[arg(long, env = "MTLSGATE_LINK_CRL_FILE")]
    pub link_crl_file: Option<PathBuf>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub vault: SecretStoreArgs,

    /// How often to look for certificates rotated directly in Vault (seconds, 1 to 86400).
    /// Changes made through the API reach Envoy at once, whatever this is.
    #[arg(long, env = "MTLSGATE_VAULT_WATCH_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub vault_watch_seconds: u64,

    /// How often to look for changes other processes made in the database (another control
    /// plane on the same database, `mtlsgate user add`), in milliseconds (50 to 10000): such
    /// a change reaches this control plane's gateways within about this long.
    #[arg(long, env = "MTLSGATE_CHANGE_POLL_MILLIS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(50..=10_000))]
    pub change_poll_millis: u64,

    /// The operator's credential: a file whose first line is a token of at least 32
    /// characters. `Authorization: Bearer <it>` may take deployment-wide actions (offboarding
    /// an account) and nothing of a tenant's; it is refused through the gateway. Without it,
    /// no operator action is possible.
    #[arg(long, env = "MTLSGATE_OPERATOR_TOKEN_FILE")]
    pub operator_token_file: Option<PathBuf>,

    /// DEVELOPMENT ONLY: accept `Authorization: Bearer <token>` as an admin of every account.
    #[arg(long, env = "MTLSGATE_DEV_ADMIN_TOKEN", hide_env_values = true)]
    pub dev_admin_token: Option<Secret>,

    /// How clients reach the gateway (`mtlsGateway` in CSDS): `host:port` as a client would
    /// use it, e.g. behind a load balancer.
    #[arg(
        long,
        env = "MTLSGATE_PUBLIC_GATEWAY",
        default_value = "127.0.0.1:10000"
    )]
    pub public_gateway: String,

    /// How clients reach this API (`accountConfigReadWrite` and `agentVep` in CSDS);
    /// defaults to `--http-addr`.
    #[arg(long, env = "MTLSGATE_PUBLIC_API")]
    pub public_api: Option<String>,

    /// Longest life of a pooled upstream connection (seconds, 1 to 86400): bounds how long a
    /// rotated client certificate can keep being presented on an old connection.
    #[arg(
        long,
        env = "MTLSGATE_UPSTREAM_MAX_CONNECTION_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub upstream_max_connection_seconds: u64,

    /// The system trust store as a PEM bundle on the Envoy host: how targets are verified
    /// when a mapping brings no `caCertificates`.
    #[arg(
        long,
        env = "MTLSGATE_SYSTEM_TRUST_BUNDLE",
        default_value = "/etc/ssl/certs/ca-certificates.crt"
    )]
    pub system_trust_bundle: String,

    /// Upstream connect timeout (milliseconds, 1 to 600000).
    #[arg(
        long,
        env = "MTLSGATE_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 5000,
        value_parser = clap::value_parser!(u64).range(1..=600_000)
    )]
    pub upstream_connect_timeout_ms: u64,

    /// Circuit breaker of every upstream cluster (one per certificate and partner, one per
    /// plain-TLS host): connections it may hold at once (1 to 1000000). With HTTP/1.1 to
    /// partners that is also the requests in flight. Beyond these bounds a forward is
    /// refused at once with 503 `upstream_overloaded`, so one tenant's stalled partner
    /// cannot hold the gateway for everyone.
    #[arg(long, env = "MTLSGATE_UPSTREAM_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub upstream_max_connections: u32,

    /// Requests of one upstream cluster that may wait for a connection once all of
    /// `--upstream-max-connections` are busy (1 to 1000000).
    #[arg(long, env = "MTLSGATE_UPSTREAM_MAX_PENDING_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub upstream_max_pending_requests: u32,

    /// Requests one upstream cluster may have in flight (1 to 1000000).
    #[arg(long, env = "MTLSGATE_UPSTREAM_MAX_REQUESTS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub upstream_max_requests: u32,

    /// Live mappings one account may hold (1 to 10000000); more: 422 `quota_exceeded`.
    #[arg(long, env = "MTLSGATE_QUOTA_MAPPINGS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub quota_mappings: u64,

    /// Live certificates one account may hold (1 to 1000000).
    #[arg(long, env = "MTLSGATE_QUOTA_CERTIFICATES", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub quota_certificates: u64,

    /// Live credentials one account may hold (1 to 1000000).
    #[arg(long, env = "MTLSGATE_QUOTA_CREDENTIALS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub quota_credentials: u64,

    /// Live (unrevoked) AppKeys one account may hold (1 to 100000).
    #[arg(long, env = "MTLSGATE_QUOTA_APPKEYS", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub quota_appkeys: u64,

    /// The JDK's `keytool`, used by the P12 tester to tell whether Java can read a file;
    /// found through `JAVA_HOME` or `PATH` when not given.
    #[arg(long, env = "MTLSGATE_KEYTOOL")]
    pub keytool: Option<std::path::PathBuf>,

    /// Lifetime of a login token (seconds, 60 to 2592000 = 30 days); the login answers it as
    /// `sessionTTl`.
    #[arg(long, env = "MTLSGATE_SESSION_TTL_SECONDS", default_value_t = 8 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub session_ttl_seconds: u64,

    /// This API's base URL as users' browsers reach it; the OAuth 2.0 redirect URI of
    /// authorization-code credentials is `<this>/api/oauth2/callback`. Defaults to
    /// `http://` + `--public-api`.
    #[arg(long, env = "MTLSGATE_PUBLIC_API_URL")]
    pub public_api_url: Option<String>,

    /// Extra trust roots (a PEM bundle) for OAuth 2.0 token endpoints, beside the system's:
    /// for authorization servers with a private CA.
    #[arg(long, env = "MTLSGATE_TOKEN_ENDPOINT_CA_FILE")]
    pub token_endpoint_ca_file: Option<PathBuf>,

    /// Token URL of Transfer to Messaging credentials that name none (LivePerson's
    /// Connect-to-Messaging token endpoint for the deployment).
    #[arg(long, env = "MTLSGATE_MESSAGING_TOKEN_URL")]
    pub messaging_token_url: Option<String>,

    /// Largest accepted upload (P12 file plus form fields), in bytes (1 KiB to 64 MiB).
    #[arg(long, env = "MTLSGATE_MAX_UPLOAD_BYTES", default_value_t = 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..=64 * 1024 * 1024))]
    pub max_upload_bytes: u64,

    /// Internal address ranges tenants' targets and token endpoints may have (`10.0.0.0/8`,
    /// `fd00::/8`, `127.0.0.1`; repeat the flag or separate with commas). Loopback,
    /// private, link-local, shared, multicast and reserved addresses are refused unless
    /// allowed here; the control plane's own endpoints and `--egress-deny` always are.
    #[arg(long = "egress-allow", env = "MTLSGATE_EGRESS_ALLOW", value_delimiter = ',',
          value_parser = crate::address_policy::parse_range)]
    pub egress_allow: Vec<ipnet::IpNet>,

    /// Ranges or endpoints (`address:port`) tenants' targets and token endpoints may never
    /// have, whatever `--egress-allow` says: e.g. the gateway's admin port, the hosts' own
    /// public addresses, another internal service.
    #[arg(
        long = "egress-deny",
        env = "MTLSGATE_EGRESS_DENY",
        value_delimiter = ','
    )]
    pub egress_deny: Vec<crate::address_policy::DenyEntry>,

    /// How often target hosts are looked up again (seconds, 1 to 3600): a name that now
    /// points somewhere refused stops being served within this.
    #[arg(long, env = "MTLSGATE_DNS_REFRESH_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub dns_refresh_seconds: u64,
}

impl ServeConfig {
    /// How users reach this API (CSDS `accountConfigReadWrite`).
    pub fn public_api(&self) -> String {
        self.public_api
            .clone()
            .unwrap_or_else(|| self.http_addr.to_string())
    }

    /// The API's certificate and key files, when it serves HTTPS.
    pub fn api_tls(&self) -> Option<(PathBuf, PathBuf)> {
        self.tls_cert.clone().zip(self.tls_key.clone())
    }

    /// The scheme this API is served with.
    fn api_scheme(&self) -> &'static str {
        if self.api_tls().is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Where authorization servers send users back to.
    pub fn oauth_redirect_uri(&self) -> String {
        let base = self
            .public_api_url
            .clone()
            .unwrap_or_else(|| format!("{}://{}", self.api_scheme(), self.public_api()));
        format!("{}/api/oauth2/callback", base.trim_end_matches('/'))
    }

    /// The files of the control plane's side of the links.
    pub fn link_files(&self) -> crate::link_tls::LinkFiles {
        crate::link_tls::LinkFiles {
            cert: self.link_cert_file.clone(),
            key: self.link_key_file.clone(),
            client_ca: self.link_ca_file.clone(),
            crl: self.link_crl_file.clone(),
        }
    }

    /// How much one account may hold.
    pub fn quotas(&self) -> crate::api::quotas::Quotas {
        crate::api::quotas::Quotas {
            mappings: self.quota_mappings,
            certificates: self.quota_certificates,
            credentials: self.quota_credentials,
            appkeys: self.quota_appkeys,
        }
    }

    /// The circuit breaker every upstream cluster gets.
    pub fn upstream_limits(&self) -> crate::xds::UpstreamLimits {
        crate::xds::UpstreamLimits {
            max_connections: self.upstream_max_connections,
            max_pending_requests: self.upstream_max_pending_requests,
            max_requests: self.upstream_max_requests,
        }
    }

    pub fn upstream_max_connection_duration(&self) -> Duration {
        Duration::from_secs(self.upstream_max_connection_seconds)
    }

    /// `--max-upload-bytes` as a size in memory (the flag's range fits any `usize` of 32 bits
    /// or more).
    pub fn max_upload_bytes(&self) -> usize {
        usize::try_from(self.max_upload_bytes).unwrap_or(usize::MAX)
    }
}

/// The secret store, as `serve` and the commands that use it reach it (the same flags and
/// environment variables everywhere).
#[derive(clap::Args, Debug, Clone)]
pub struct SecretStoreArgs {
    /// Vault / OpenBao address; for a cluster, every node's, comma-separated (requests go
    /// to the active node, found and followed as the cluster elects one).
    #[arg(long, env = "VAULT_ADDR", default_value = "http://127.0.0.1:8200")]
    pub vault_addr: String,

    /// The CA (PEM) that verifies an https `--vault-addr`'s certificate, besides the
    /// system's roots. Plain http is accepted for a loopback address only.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_ca_file: Option<PathBuf>,

    /// Vault / OpenBao token, FOR DEVELOPMENT (never renewed): in production, use AppRole
    /// (`--vault-approle-role-id-file` and `--vault-approle-secret-id-file`).
    #[arg(long, env = "VAULT_TOKEN", hide_env_values = true,
          required_unless_present = "vault_approle_role_id_file",
          conflicts_with_all = ["vault_approle_role_id_file", "vault_approle_secret_id_file"])]
    pub vault_token: Option<Secret>,

    /// A file holding the AppRole role id: mtlsgate logs in with AppRole and keeps its
    /// token renewed (read once, at start).
    #[arg(
        long,
        env = "MTLSGATE_VAULT_APPROLE_ROLE_ID_FILE",
        requires = "vault_approle_secret_id_file"
    )]
    pub vault_approle_role_id_file: Option<PathBuf>,

    /// A file holding the AppRole secret id (read at start and again at every login, so a
    /// new secret id written there is used without a restart).
    #[arg(
        long,
        env = "MTLSGATE_VAULT_APPROLE_SECRET_ID_FILE",
        requires = "vault_approle_role_id_file"
    )]
    pub vault_approle_secret_id_file: Option<PathBuf>,

    /// Where the AppRole auth method is mounted.
    #[arg(long, env = "MTLSGATE_VAULT_APPROLE_MOUNT", default_value = "approle")]
    pub vault_approle_mount: String,

    /// KV v2 mount that holds mtlsgate's secrets.
    #[arg(long, env = "MTLSGATE_VAULT_MOUNT", default_value = "secret")]
    pub vault_mount: String,

    /// Path prefix inside the mount.
    #[arg(long, env = "MTLSGATE_VAULT_PREFIX", default_value = "mtlsgate/")]
    pub vault_prefix: String,
}

impl SecretStoreArgs {
    /// The store these flags name (nothing is sent yet: `check` it).
    pub(crate) fn store(
        &self,
    ) -> Result<crate::secret_store::OpenBao, crate::secret_store::SecretStoreError> {
        use crate::secret_store::{AppRole, Auth, OpenBao, SecretStoreError};
        let auth = match (
            &self.vault_token,
            &self.vault_approle_role_id_file,
            &self.vault_approle_secret_id_file,
        ) {
            (Some(token), None, None) => Auth::Token(token.clone()),
            (None, Some(role), Some(secret)) => Auth::AppRole(AppRole::from_files(
                &self.vault_approle_mount,
                role,
                secret,
            )?),
            // (clap refuses these combinations; this is for a caller that builds the struct.)
            _ => {
                return Err(SecretStoreError::Credentials(
                    "give --vault-token, or both AppRole files, not both".into(),
                ))
            }
        };
        OpenBao::new(
            &self.vault_addr,
            auth,
            &self.vault_mount,
            &self.vault_prefix,
            self.vault_ca_file.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        serve: super::ServeConfig,
    }

    fn parse(extra: &[&str]) -> Result<super::ServeConfig, clap::Error> {
        let args = [
            "mtlsgate",
            "--vault-token",
            "t",
            "--link-cert-file",
            "c",
            "--link-key-file",
            "k",
            "--link-ca-file",
            "ca",
        ]
        .iter()
        .chain(extra);
        Command::try_parse_from(args).map(|c| c.serve)
    }

    #[test]
    fn the_secret_store_takes_a_token_or_approle_files_never_both() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let links = [
            "--link-cert-file",
            "c",
            "--link-key-file",
            "k",
            "--link-ca-file",
            "ca",
        ];
        let with = |extra: &[&str]| {
            Command::try_parse_from(["mtlsgate"].iter().chain(&links).chain(extra)).map(|c| c.serve)
        };
        let approle = [
            "--vault-approle-role-id-file",
            "r",
            "--vault-approle-secret-id-file",
            "s",
        ];
        let ok = with(&approle).unwrap();
        assert!(ok.vault.vault_token.is_none());
        assert_eq!(ok.vault.vault_approle_mount, "approle");
        let both = [&approle[..], &["--vault-token", "t"]].concat();
        assert_eq!(
            with(&both).err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            with(&approle[..2]).err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::MissingRequiredArgument),
            "a role id without a secret id"
        );
        assert_eq!(
            with(&[]).err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::MissingRequiredArgument),
            "neither"
        );
        let addrs = with(&[
            "--vault-token",
            "t",
            "--vault-addr",
            "http://127.0.0.1:1,http://127.0.0.1:2",
        ])
        .unwrap();
        assert!(addrs.vault.store().is_ok());
    }

    #[test]
    fn numeric_flags_out_of_range_are_refused_not_clamped() {
        for bad in [
            ["--vault-watch-seconds", "0"],
            ["--session-ttl-seconds", "59"],
            ["--session-ttl-seconds", "99999999999"],
            ["--upstream-max-connection-seconds", "0"],
            ["--upstream-connect-timeout-ms", "0"],
            ["--upstream-max-connections", "0"],
            ["--upstream-max-pending-requests", "0"],
            ["--upstream-max-requests", "1000001"],
            ["--max-upload-bytes", "10"],
            ["--max-upload-bytes=-1", ""],
        ] {
            let e = parse(&bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad:?}");
            let flag = bad[0].split('=').next().unwrap_or_default();
            assert!(e.to_string().contains(flag), "{e}");
        }
        let ok = parse(&["--session-ttl-seconds", "60", "--vault-watch-seconds", "1"]).unwrap();
        assert_eq!((ok.session_ttl_seconds, ok.vault_watch_seconds), (60, 1));
        let defaults = parse(&[]).unwrap();
        assert_eq!(defaults.max_upload_bytes(), 1024 * 1024);
        assert_eq!(
            defaults.upstream_limits(),
            crate::xds::UpstreamLimits::default()
        );
        let set = parse(&[
            "--upstream-max-connections",
            "2",
            "--upstream-max-pending-requests",
            "3",
            "--upstream-max-requests",
            "4",
        ])
        .unwrap();
        assert_eq!(
            set.upstream_limits(),
            crate::xds::UpstreamLimits {
                max_connections: 2,
                max_pending_requests: 3,
                max_requests: 4,
            }
        );
        // The links are mutual TLS or nothing: without the files, serve does not parse.
        let bare = Command::try_parse_from(["mtlsgate", "--vault-token", "t"]);
        assert_eq!(
            bare.err().map(|e| e.kind()),
            Some(clap::error::ErrorKind::MissingRequiredArgument)
        );
    }

    /// Every flag and environment variable the deployment examples (`deploy/`) give
    /// `mtlsgate serve` exists: an example that names one that does not would fail at
    /// start, or be silently ignored (an environment variable).
    #[test]
    fn the_deployment_examples_use_only_flags_that_exist() {
        use clap::Args;
        let cmd = super::ServeConfig::augment_args(clap::Command::new("serve"));
        let mut flags: std::collections::BTreeSet<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_owned))
            .collect();
        // The `mtlsgate` command's own (global) flag.
        flags.insert("log-json".into());
        let envs: std::collections::BTreeSet<String> = cmd
            .get_arguments()
            .filter_map(|a| a.get_env().and_then(|e| e.to_str()).map(str::to_owned))
            .collect();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let mut files = Vec::new();
        for dir in ["systemd", "kubernetes"] {
            for e in std::fs::read_dir(root.join(dir)).unwrap() {
                files.push(e.unwrap().path());
            }
        }
        files.sort();
        let mut control_plane_files = 0;
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            // The control plane's files; the gateway's name Envoy's flags.
            if !text.contains("serve") || text.contains("envoy -c") {
                continue;
            }
            control_plane_files += 1;
            let mut checked = 0;
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                for (i, _) in line.match_indices("--") {
                    let name: String = line[i + 2..]
                        .chars()
                        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
                        .collect();
                    // Not a flag: YAML's `---`, a URL's text.
                    if !name.starts_with(|c: char| c.is_ascii_lowercase())
                        || (i > 0 && !line[..i].ends_with([' ', '-', '\t']))
                    {
                        continue;
                    }
                    assert!(
                        flags.contains(&name),
                        "{}: --{name} is no flag of `mtlsgate serve`",
                        file.display()
                    );
                    checked += 1;
                }
                for word in line
                    .split(|c: char| !(c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit()))
                {
                    if word.starts_with("MTLSGATE_") || word.starts_with("VAULT_") {
                        assert!(
                            envs.contains(word),
                            "{}: {word} is read by no flag of `mtlsgate serve`",
                            file.display()
                        );
                        checked += 1;
                    }
                }
            }
            assert!(
                checked > 15,
                "{}: only {checked} flags and variables found",
                file.display()
            );
        }
        assert_eq!(control_plane_files, 2, "{files:?}");
    }
}
