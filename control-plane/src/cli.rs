//! Commands other than `serve`: administration straight against the database.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use mtlsgate_filter::privilege;

use crate::identity;
use crate::secret::Secret;

/// `mtlsgate user add`
#[derive(clap::Args, Debug)]
pub struct UserAdd {
    /// The account the user belongs to.
    #[arg(long)]
    pub account: String,
    #[arg(long)]
    pub username: String,
    /// Make the user an admin of the account.
    #[arg(long)]
    pub admin: bool,
    /// Read the password from this file (first line). Without it, the password is asked for
    /// on the terminal without echo, or read from standard input when that is not a terminal.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub database: crate::config::DatabaseArgs,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read the password: {0}")]
    Password(std::io::Error),
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("pki: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("secret store: {0}")]
    Secrets(#[from] crate::secret_store::SecretStoreError),
    #[error("{0}")]
    Rotate(#[from] identity::RotateError),
}

pub use crate::config::SecretStoreArgs;

impl SecretStoreArgs {
    async fn open(&self) -> Result<crate::secret_store::Secrets, CliError> {
        let secrets = crate::secret_store::Secrets::new(std::sync::Arc::new(self.store()?));
        secrets.check().await?;
        Ok(secrets)
    }
}

/// `mtlsgate keys rotate-login`
#[derive(clap::Args, Debug)]
pub struct KeysRotateLogin {
    #[command(flatten)]
    pub secrets: SecretStoreArgs,
    /// The control planes' `--session-ttl-seconds`: tokens of the old key are accepted this
    /// long after the new key takes over (plus a minute of clock skew).
    #[arg(long, env = "MTLSGATE_SESSION_TTL_SECONDS", default_value_t = 8 * 3600,
          value_parser = clap::value_parser!(u64).range(60..=30 * 86_400))]
    pub session_ttl_seconds: u64,
    /// Seconds until the new key signs tokens (0 to 86400). Make it longer than every
    /// control plane's `--vault-watch-seconds`: each must know the new public key (and so
    /// must the gateways' snapshot) before another signs a token with it.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub activate_in_seconds: u64,
    /// The old keys are compromised: remove them now (tokens signed with them are refused
    /// as soon as each control plane polls, so every user logs in again) and sign with the
    /// new key at once.
    #[arg(long)]
    pub compromised: bool,
}

/// Rotates the login-token signing key in the secret store; running control planes take the
/// new key set at their next poll (`--vault-watch-seconds`), without a restart.
pub async fn keys_rotate_login(args: KeysRotateLogin) -> Result<(), CliError> {
    let secrets = args.secrets.open().await?;
    let done = identity::rotate(
        &secrets,
        identity::RotatePolicy {
            ttl_secs: args.session_ttl_seconds,
            activate_in_secs: args.activate_in_seconds,
            compromised: args.compromised,
        },
    )
    .await?;
    println!(
        "new login-token key {} signs from {} (unix seconds)",
        done.kid, done.signs_from
    );
    for (kid, until) in &done.retiring {
        println!("key {kid}: its tokens are accepted until {until} (unix seconds)");
    }
    if done.removed > 0 {
        println!("removed {} key(s)", done.removed);
    }
    Ok(())
}

/// `mtlsgate check`
#[derive(clap::Args, Debug)]
pub struct Check {
    #[command(flatten)]
    pub database: crate::config::DatabaseArgs,
    #[command(flatten)]
    pub secrets: SecretStoreArgs,
}

/// Reads every live row that names secrets against the secret store and prints the report
/// (JSON). Answers whether the two agree: the exit status says it to scripts (0: they agree,
/// 1: differences, listed).
pub async fn check(args: Check) -> Result<bool, CliError> {
    let store = args.database.open().await?;
    let secrets = args.secrets.open().await?;
    let report = crate::consistency::check(&store, &secrets)
        .await
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_else(|_| "{}".into())
    );
    Ok(report.differences.is_empty())
}

/// `mtlsgate pki init`
#[derive(clap::Args, Debug)]
pub struct PkiInit {
    /// Where the CA, the control plane's certificate and the gateways' go (created).
    #[arg(long)]
    pub dir: PathBuf,
    /// Another DNS name or IP address gateways reach the control planes by (repeatable);
    /// `mtlsgate-control-plane`, `localhost` and 127.0.0.1 are always in the certificate.
    #[arg(long = "control-plane-name")]
    pub control_plane_names: Vec<String>,
    /// Issue a gateway certificate for this Envoy node id too (repeatable).
    #[arg(long = "gateway")]
    pub gateways: Vec<String>,
}

/// `mtlsgate pki issue-gateway`
#[derive(clap::Args, Debug)]
pub struct PkiIssueGateway {
    /// The PKI directory made by `mtlsgate pki init`.
    #[arg(long)]
    pub dir: PathBuf,
    /// The gateway's Envoy node id (`node.id` in its bootstrap).
    #[arg(long)]
    pub node_id: String,
}

/// `mtlsgate pki issue-control-plane`
#[derive(clap::Args, Debug)]
pub struct PkiIssueControlPlane {
    /// The PKI directory made by `mtlsgate pki init`.
    #[arg(long)]
    pub dir: PathBuf,
    /// Another DNS name or IP address gateways reach the control planes by (repeatable).
    #[arg(long = "control-plane-name")]
    pub control_plane_names: Vec<String>,
}

/// `mtlsgate pki revoke-gateway`
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["node_id", "serial"])))]
pub struct PkiRevokeGateway {
    /// The PKI directory made by `mtlsgate pki init`; its `crl.pem` is written again.
    #[arg(long)]
    pub dir: PathBuf,
    /// Revoke the certificate this gateway holds now (`gateways/<node>/gateway.pem`).
    /// Revoke before issuing its replacement, or name the old one by `--serial`.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Revoke the certificate with this serial number (hex; colons allowed), as
    /// `issue-gateway` prints it (or `openssl x509 -serial` shows it).
    #[arg(long)]
    pub serial: Option<String>,
}

/// Creates the link PKI: CA, control plane certificate, and the gateways asked for.
pub fn pki_init(args: PkiInit) -> Result<(), CliError> {
    crate::pki::init(&args.dir, &args.control_plane_names)?;
    println!(
        "created the link CA and the control plane's certificate in {}",
        args.dir.display()
    );
    for node in &args.gateways {
        let out = crate::pki::issue_gateway(&args.dir, node)?;
        println!("issued gateway {node:?}: {}", out.display());
    }
    Ok(())
}

/// Issues (or replaces) one gateway's certificate; Envoy picks a replaced one up by itself.
pub fn pki_issue_gateway(args: PkiIssueGateway) -> Result<(), CliError> {
    let out = crate::pki::issue_gateway(&args.dir, &args.node_id)?;
    let serial = crate::pki::gateway_serial(&args.dir, &args.node_id)?;
    println!(
        "issued gateway {:?} (serial {}): {}",
        args.node_id,
        hex::encode(serial),
        out.display()
    );
    Ok(())
}

/// Revokes a gateway certificate: the CRL (`crl.pem`) lists it; control planes that follow
/// that file (`--link-crl-file`) refuse it and close its open connections within a second.
pub fn pki_revoke_gateway(args: PkiRevokeGateway) -> Result<(), CliError> {
    let target = match (args.node_id, args.serial) {
        (Some(node), None) => crate::pki::RevokeTarget::Node(node),
        (None, Some(serial)) => crate::pki::RevokeTarget::Serial(serial),
        _ => {
            return Err(CliError::Invalid(
                "name the certificate by --node-id or by --serial".into(),
            ))
        }
    };
    let done = crate::pki::revoke(&args.dir, &target)?;
    println!(
        "{} certificate {}{}; {} lists {} revoked certificate(s): copy it to every control plane's --link-crl-file",
        if done.newly { "revoked" } else { "already revoked:" },
        done.serial,
        match &target {
            crate::pki::RevokeTarget::Node(node) => format!(" (gateway {node:?})"),
            crate::pki::RevokeTarget::Serial(_) => String::new(),
        },
        crate::pki::crl_path(&args.dir).display(),
        done.listed
    );
    Ok(())
}

/// Replaces the control planes' certificate; running control planes take it within a second.
pub fn pki_issue_control_plane(args: PkiIssueControlPlane) -> Result<(), CliError> {
    crate::pki::issue_control_plane(&args.dir, &args.control_plane_names)?;
    println!(
        "issued the control plane's certificate: {}",
        args.dir.join("control-plane.pem").display()
    );
    Ok(())
}

fn read_password(args: &UserAdd) -> Result<Secret, CliError> {
    let line = match &args.password_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(CliError::Password)?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned(),
        None if std::io::stdin().is_terminal() => {
            let first = rpassword::prompt_password("Password: ").map_err(CliError::Password)?;
            let again =
                rpassword::prompt_password("Password again: ").map_err(CliError::Password)?;
            if first != again {
                return Err(CliError::Invalid("the passwords differ".into()));
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(CliError::Password)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    Ok(Secret::new(line))
}

pub async fn user_add(args: UserAdd) -> Result<(), CliError> {
    let invalid = CliError::Invalid;
    if !mtlsgate_filter::account::is_valid(&args.account) {
        return Err(invalid(identity::ACCOUNT_RULE.into()));
    }
    identity::check_username(&args.username).map_err(|e| invalid(e.to_string()))?;
    let password = read_password(&args)?;
    identity::check_password(&password).map_err(|e| invalid(e.to_string()))?;
    let hash = identity::hash_password(&password)
        .map_err(|_| invalid("cannot hash the password".into()))?;
    let store = args.database.open().await?;
    let privileges: Vec<String> = privilege::RUNTIME.iter().map(|s| s.to_string()).collect();
    match store
        .insert_user(
            &args.account,
            &args.username,
            &hash,
            args.admin,
            &privileges,
        )
        .await?
    {
        Some(user) => {
            println!(
                "added {} {:?} to account {} (id {})",
                if user.is_admin { "admin" } else { "user" },
                user.username,
                user.account,
                user.id
            );
            Ok(())
        }
        None => Err(invalid(format!(
            "account {} already has a user named {:?}",
            args.account, args.username
        ))),
    }
}
