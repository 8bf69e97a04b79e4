//! Privileges a user or an AppKey can hold. The control plane grants them; the control plane
//! and the filter both enforce them.

/// Forward requests through the gateway (`/mtls/account/{accountId}`).
pub const FORWARD: &str = "MTLS_FORWARD";
/// Ask the gateway whether triplets are mapped (`/mtls/mapping`).
pub const CHECK_MAPPING: &str = "MTLS_CHECK_MAPPING";
/// Manage certificates and mappings of the account (admins always may).
pub const MANAGE: &str = "MTLS_MANAGE";

/// Every privilege there is.
pub const ALL: [&str; 3] = [FORWARD, CHECK_MAPPING, MANAGE];

/// What an AppKey gets when its creator names none: everything the mTLS runtime needs.
pub const RUNTIME: [&str; 2] = [FORWARD, CHECK_MAPPING];

/// Whether `name` is a privilege mtlsgate knows.
pub fn is_known(name: &str) -> bool {
    ALL.contains(&name)
}
