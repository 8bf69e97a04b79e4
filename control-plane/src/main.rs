//! The `mtlsgate` command.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "mtlsgate",
    version,
    about = "mTLS egress gateway control plane"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true, env = "MTLSGATE_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: management API, xDS server and runtime snapshot feed.
    Serve(Box<mtlsgate::config::ServeConfig>),
    /// Manage users directly in the database (the first admin of an account starts here).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The private CA and certificates of the links between control planes and gateways
    /// (ADS and the runtime snapshot feed are served over mutual TLS only).
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Do the database and the secret store agree? Every live certificate, credential and
    /// AppKey is read against the secret store (after restoring backups taken apart, or for
    /// an audit); prints a JSON report; exits 3 when they differ (1 when it cannot tell).
    Check(mtlsgate::cli::Check),
    /// mtlsgate's own keys in the secret store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Rotate the login-token signing key: a new key (a new `kid`) signs after
    /// `--activate-in-seconds`; tokens of the old one stay accepted until they expire.
    /// Running control planes follow without a restart.
    RotateLogin(mtlsgate::cli::KeysRotateLogin),
}

#[derive(Subcommand)]
enum PkiCommand {
    /// Create a CA, the control plane's certificate and, optionally, gateway certificates.
    Init(mtlsgate::cli::PkiInit),
    /// Issue (or replace) the certificate of one gateway.
    IssueGateway(mtlsgate::cli::PkiIssueGateway),
    /// Replace the control planes' certificate (running control planes pick it up by
    /// themselves, for their next connections).
    IssueControlPlane(mtlsgate::cli::PkiIssueControlPlane),
    /// Revoke a gateway certificate (a stolen one): adds it to the link CA's CRL
    /// (`crl.pem`), which control planes follow with `--link-crl-file`; they refuse it and
    /// close its open connections within a second.
    RevokeGateway(mtlsgate::cli::PkiRevokeGateway),
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user to an account.
    Add(mtlsgate::cli::UserAdd),
}

/// What is logged unless `MTLSGATE_LOG` says otherwise.
const DEFAULT_LOG: &str = "info";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter =
        EnvFilter::try_from_env("MTLSGATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mtlsgate: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // `Ok(false)`: the command ran and says no (`check` found differences).
    let result: Result<bool, Box<dyn std::error::Error>> = runtime.block_on(async {
        match cli.command {
            Command::Check(args) => Ok(mtlsgate::cli::check(args).await?),
            Command::Serve(cfg) => {
                mtlsgate::serve::run(*cfg).await?;
                Ok(true)
            }
            Command::User {
                command: UserCommand::Add(args),
            } => {
                mtlsgate::cli::user_add(args).await?;
                Ok(true)
            }
            Command::Pki {
                command: PkiCommand::Init(args),
            } => {
                mtlsgate::cli::pki_init(args)?;
                Ok(true)
            }
            Command::Pki {
                command: PkiCommand::IssueGateway(args),
            } => {
                mtlsgate::cli::pki_issue_gateway(args)?;
                Ok(true)
            }
            Command::Pki {
                command: PkiCommand::IssueControlPlane(args),
            } => {
                mtlsgate::cli::pki_issue_control_plane(args)?;
                Ok(true)
            }
            Command::Keys {
                command: KeysCommand::RotateLogin(args),
            } => {
                mtlsgate::cli::keys_rotate_login(args).await?;
                Ok(true)
            }
            Command::Pki {
                command: PkiCommand::RevokeGateway(args),
            } => {
                mtlsgate::cli::pki_revoke_gateway(args)?;
                Ok(true)
            }
        }
    });
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        // Distinct from a failure (1): the command worked, and its answer is no.
        Ok(false) => std::process::ExitCode::from(3),
        Err(e) => {
            tracing::error!(error = %e, "mtlsgate stopped");
            std::process::ExitCode::FAILURE
        }
    }
}
