//! The store's contract, run on the three real databases it supports: SQLite, PostgreSQL
//! (`MTLSGATE_TEST_POSTGRES_URL`) and MySQL/MariaDB (`MTLSGATE_TEST_MYSQL_URL`), which
//! `scripts/db start` starts on loopback. A missing URL fails the test, never skips it.
//!
//! Each test gets a database of its own and two [`Store`]s on it: two pools and two in-process
//! write locks, as two control planes have. Nothing here takes [`Store::write_lock`], so what
//! keeps the writes apart is the database alone ([`Store::begin_write`]).

use std::sync::Arc;

use mtlsgate_filter::service::Service;
use sqlx::Connection;

use super::{Counted, Dialect, NewCertificate, NewMapping, SoftDeleted, Store, StoreError};
use crate::certinfo::CertInfo;
use crate::egress::EgressHost;

/// A database made for one test, on the backend `dialect`.
pub(crate) struct TestDb {
    pub url: String,
    dialect: Dialect,
    admin_url: String,
    name: String,
    dir: Option<std::path::PathBuf>,
}

fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run `scripts/db start` and source .run/db/env (scripts/test does)"
        )
    })
}

impl TestDb {
    pub(crate) async fn new(dialect: Dialect) -> TestDb {
        sqlx::any::install_default_drivers();
        let name = format!("mtlsgate_t_{}", hex::encode(crate::random::bytes::<6>()));
        match dialect {
            Dialect::Sqlite => {
                let dir = std::env::temp_dir().join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                let url = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.join("db.sqlite"))
                    .create_if_missing(true);
                let url = sqlx::ConnectOptions::to_url_lossy(&url).to_string();
                TestDb {
                    url,
                    dialect,
                    admin_url: String::new(),
                    name,
                    dir: Some(dir),
                }
            }
            Dialect::Postgres | Dialect::MySql => {
                let admin_url = server_url(match dialect {
                    Dialect::Postgres => "MTLSGATE_TEST_POSTGRES_URL",
                    _ => "MTLSGATE_TEST_MYSQL_URL",
                });
                let mut admin = sqlx::AnyConnection::connect(&admin_url).await.unwrap();
                let create = match dialect {
                    Dialect::Postgres => format!("CREATE DATABASE {name}"),
                    _ => format!(
                        "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"
                    ),
                };
                sqlx::raw_sql(&create).execute(&mut admin).await.unwrap();
                admin.close().await.unwrap();
                let mut url = url::Url::parse(&admin_url).unwrap();
                url.set_path(&format!("/{name}"));
                TestDb {
                    url: url.to_string(),
                    dialect,
                    admin_url,
                    name,
                    dir: None,
                }
            }
        }
    }

    pub(crate) async fn store(&self) -> Store {
        Store::connect(
            &self.url,
            &super::DbOptions {
                max_connections: None,
            },
        )
        .await
        .unwrap()
    }

    /// Drops the database (the stores on it must be gone).
    pub(crate) async fn drop_db(self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
            return;
        }
        let mut admin = sqlx::AnyConnection::connect(&self.admin_url).await.unwrap();
        let drop = match self.dialect {
            Dialect::Postgres => format!("DROP DATABASE {} WITH (FORCE)", self.name),
            _ => format!("DROP DATABASE {}", self.name),
        };
        sqlx::raw_sql(&drop).execute(&mut admin).await.unwrap();
    }
}

/// The store the handler tests run on: SQLite in `dir`, or, when `MTLSGATE_TEST_DATABASE`
/// says `postgres` or `mariadb`, a new database on that server (`scripts/test --all` runs
/// the handler suite on each). The database is left for the server's data directory to take
/// away (`scripts/db start` makes it anew).
pub(crate) async fn test_store(dir: &std::path::Path) -> Store {
    let dialect = match std::env::var("MTLSGATE_TEST_DATABASE").as_deref() {
        Ok("postgres") => Dialect::Postgres,
        Ok("mariadb") | Ok("mysql") => Dialect::MySql,
        Ok("sqlite") | Err(_) => return Store::open(&dir.join("db.sqlite")).await.unwrap(),
        Ok(other) => panic!("MTLSGATE_TEST_DATABASE={other}: expected sqlite, postgres or mariadb"),
    };
    TestDb::new(dialect).await.store().await
}

/// Two stores on one new database (two control planes), on the backend
/// `MTLSGATE_TEST_DATABASE` names (SQLite: a file in `dir`).
pub(crate) async fn test_store_pair(dir: &std::path::Path) -> (Store, Store) {
    let dialect = match std::env::var("MTLSGATE_TEST_DATABASE").as_deref() {
        Ok("postgres") => Dialect::Postgres,
        Ok("mariadb") | Ok("mysql") => Dialect::MySql,
        _ => {
            let path = dir.join("db.sqlite");
            return (
                Store::open(&path).await.unwrap(),
                Store::open(&path).await.unwrap(),
            );
        }
    };
    let db = TestDb::new(dialect).await;
    (db.store().await, db.store().await)
}

fn info(serial: &str) -> CertInfo {
    CertInfo {
        subject: "CN=partner ✓".into(),
        issuer: "CN=issuer".into(),
        serial_number: serial.into(),
        not_before: 1_700_000_000,
        not_after: 1_900_000_000,
        sha256_fingerprint: "ab".repeat(32),
        key_algorithm: "EC".into(),
        key_size: 256,
    }
}

async fn certificate(s: &Store, account: &str, name: &str) -> Result<i64, StoreError> {
    let info = info("01");
    let mut tx = s.begin_write(account).await?;
    let id = Store::insert_certificate(
        &mut tx,
        &NewCertificate {
            account,
            name,
            display_name: name,
            info: &info,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

fn mapping(name: &str, url: &str, certificate_id: i64) -> NewMapping {
    NewMapping {
        name: name.into(),
        service: Service::Webhooks,
        url: url.into(),
        certificate_id,
        enabled: true,
        ca_certificates: None,
        credential_id: None,
    }
}

async fn insert_mapping(s: &Store, account: &str, m: &NewMapping) -> Result<i64, StoreError> {
    let mut tx = s.begin_write(account).await?;
    let row = Store::insert_mapping(&mut tx, account, m).await?;
    tx.commit().await?;
    Ok(row.id)
}

/// Runs `each(i, store)` for i in 0..n at once, alternating the two stores.
async fn in_parallel<T, F, Fut>(a: &Store, b: &Store, n: usize, each: F) -> Vec<T>
where
    F: Fn(usize, Store) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(each(i, if i % 2 == 0 { a.clone() } else { b.clone() })))
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn a_quota_holds_against_parallel_creations_on_two_replicas(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = (db.store().await, db.store().await);
    let created = in_parallel(&a, &b, 20, |i, s| async move {
        let mut tx = s.begin_write("acct").await.unwrap();
        if Store::live_count(&mut tx, "acct", Counted::AppKeys)
            .await
            .unwrap()
            >= 5
        {
            return false;
        }
        Store::insert_appkey(
            &mut tx,
            "acct",
            &format!("ck{i}"),
            &format!("at{i}"),
            &[],
            "admin",
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        true
    })
    .await;
    assert_eq!(created.iter().filter(|c| **c).count(), 5, "{created:?}");
    assert_eq!(a.appkeys("acct").await.unwrap().len(), 5);
    drop((a, b));
    db.drop_db().await;
}

async fn two_admins_deleting_each_other_leave_one(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = (db.store().await, db.store().await);
    for round in 0..5 {
        let account = format!("acct{round}");
        let one = a
            .insert_user(&account, "one", "h", true, &[])
            .await
            .unwrap()
            .unwrap();
        let two = b
            .insert_user(&account, "two", "h", true, &[])
            .await
            .unwrap()
            .unwrap();
        let (x, y) = tokio::join!(
            a.delete_user_keeping_an_admin(&account, two.id),
            b.delete_user_keeping_an_admin(&account, one.id)
        );
        let outcomes = [x.unwrap(), y.unwrap()];
        let admins: Vec<_> = a
            .users(&account)
            .await
            .unwrap()
            .into_iter()
            .filter(|u| u.is_admin)
            .collect();
        assert_eq!(admins.len(), 1, "{outcomes:?}");
        assert!(outcomes.contains(&super::UserDeletion::LastAdmin));
    }
    drop((a, b));
    db.drop_db().await;
}

async fn revisions_are_distinct_and_consecutive(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = (db.store().await, db.store().await);
    let mut seen = in_parallel(&a, &b, 40, |_, s| async move {
        let mut tx = s.begin_write("acct").await.unwrap();
        let r = Store::bump_revision(&mut tx, "acct").await.unwrap();
        tx.commit().await.unwrap();
        r
    })
    .await;
    seen.sort_unstable();
    assert_eq!(seen, (1..=40).collect::<Vec<i64>>());
    assert_eq!(b.revision("acct").await.unwrap(), 40);
    assert_eq!(b.revision("other").await.unwrap(), 0);
    drop((a, b));
    db.drop_db().await;
}

async fn login_failures_count_every_attempt(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = (db.store().await, db.store().await);
    let counts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = counts.clone();
    in_parallel(&a, &b, 30, move |_, s| {
        let c = c.clone();
        async move {
            s.login_failed("user:acct:bob", 1_000, 300, |n| {
                c.lock().unwrap().push(n);
                if n >= 30 {
                    60
                } else {
                    0
                }
            })
            .await
            .unwrap()
        }
    })
    .await;
    let mut counts = counts.lock().unwrap().clone();
    counts.sort_unstable();
    counts.dedup();
    // Retried transactions may ask again for a count, but every count 1..=30 was reached
    // once committed, and none beyond.
    assert_eq!(counts, (1..=30).collect::<Vec<i64>>());
    let scopes = ["user:acct:bob".to_owned()];
    assert_eq!(
        a.login_locked_until(&scopes, 1_001).await.unwrap(),
        Some(1_060)
    );
    // A failure after the window starts the count again.
    let after = b.login_failed("user:acct:bob", 2_000, 300, |n| n).await;
    assert_eq!(after.unwrap(), 2_001);
    b.login_succeeded("user:acct:bob").await.unwrap();
    assert_eq!(a.login_locked_until(&scopes, 2_000).await.unwrap(), None);
    drop((a, b));
    db.drop_db().await;
}

async fn parallel_egress_replacements_leave_one_whole_list(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = (db.store().await, db.store().await);
    let lists: Vec<Vec<EgressHost>> = (0..8)
        .map(|i| {
            (0..5)
                .map(|j| EgressHost {
                    host: format!("h{}.example", (i * 3 + j) % 7),
                    port: 443,
                })
                .collect()
        })
        .collect();
    let l = Arc::new(lists.clone());
    in_parallel(&a, &b, 8, move |i, s| {
        let l = l.clone();
        async move { s.replace_egress_hosts("acct", &l[i]).await.unwrap() }
    })
    .await;
    let now = a.egress_hosts("acct").await.unwrap();
    assert!(lists.contains(&now), "a mixed list: {now:?}");
    drop((a, b));
    db.drop_db().await;
}

async fn replicas_starting_together_both_migrate(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = tokio::join!(db.store(), db.store());
    assert_eq!(a.generation().await.unwrap(), 0);
    // A change through one is counted for the other (the triggers are in the database).
    certificate(&a, "acct", "c").await.unwrap();
    assert!(b.generation().await.unwrap() > 0);
    // And a third start finds the schema current.
    let c = db.store().await;
    assert_eq!(c.certificates("acct").await.unwrap().len(), 1);
    drop((a, b, c));
    db.drop_db().await;
}

async fn names_compare_bytewise_and_deleted_rows_free_theirs(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let s = db.store().await;
    let id = certificate(&s, "acct", "Partner").await.unwrap();
    // Another case, a trailing space, another account: other names.
    for (account, name) in [
        ("acct", "partner"),
        ("acct", "Partner "),
        ("acct2", "Partner"),
    ] {
        certificate(&s, account, name).await.unwrap();
    }
    // The same name in the same account: refused by the unique index.
    assert!(matches!(
        certificate(&s, "acct", "Partner").await,
        Err(StoreError::Conflict)
    ));
    // Deleted, the name is free again, and the new row has a new id.
    let mut tx = s.begin_write("acct").await.unwrap();
    assert!(Store::mark_certificate_deleted(&mut tx, "acct", id)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let again = certificate(&s, "acct", "Partner").await.unwrap();
    assert!(again > id);
    let names: Vec<String> = s
        .certificates("acct")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["partner", "Partner ", "Partner"]);
    // Text beyond ASCII survives the round trip.
    let c = s.certificate("acct", again).await.unwrap().unwrap();
    assert_eq!(c.info.subject, "CN=partner ✓");
    drop(s);
    db.drop_db().await;
}

async fn long_urls_and_ca_bundles_are_kept_whole(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let s = db.store().await;
    let cert = certificate(&s, "acct", "c").await.unwrap();
    let long = format!("https://partner.example/{}", "a".repeat(8 * 1024 - 30));
    let mut m = mapping("m1", &long, cert);
    m.ca_certificates = Some("x".repeat(64 * 1024));
    let id = insert_mapping(&s, "acct", &m).await.unwrap();
    let row = s.mapping("acct", id).await.unwrap().unwrap();
    assert_eq!(row.url, long);
    assert_eq!(
        row.ca_certificates.as_deref().map(str::len),
        Some(64 * 1024)
    );
    assert!(row.enabled && !row.deleted);
    // The same triplet again (by another name) is refused; a URL differing in its last
    // character is not.
    assert!(matches!(
        insert_mapping(&s, "acct", &mapping("m2", &long, cert)).await,
        Err(StoreError::Conflict)
    ));
    let other = format!("{}b", &long[..long.len() - 1]);
    insert_mapping(&s, "acct", &mapping("m2", &other, cert))
        .await
        .unwrap();
    // Updated and read back in the same transaction (no RETURNING on MySQL).
    let mut tx = s.begin_write("acct").await.unwrap();
    let mut changed = mapping("m1-renamed", &long, cert);
    changed.enabled = false;
    let row = Store::update_mapping(&mut tx, "acct", id, &changed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.name, "m1-renamed");
    assert!(!row.enabled);
    assert!(Store::update_mapping(&mut tx, "other", id, &changed)
        .await
        .unwrap()
        .is_none());
    tx.commit().await.unwrap();
    drop(s);
    db.drop_db().await;
}

async fn soft_deletes_and_settings_round_trip(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let s = db.store().await;
    assert!(!s.allows_authorization_override("acct").await.unwrap());
    s.set_authorization_override("acct", true).await.unwrap();
    s.set_authorization_override("acct", true).await.unwrap();
    assert!(s.allows_authorization_override("acct").await.unwrap());
    assert_eq!(s.accounts_allowing_override().await.unwrap(), ["acct"]);
    s.set_authorization_override("acct", false).await.unwrap();
    assert!(s.accounts_allowing_override().await.unwrap().is_empty());
    // A deleted row answers false the second time, and another account cannot delete it.
    let id = certificate(&s, "acct", "c").await.unwrap();
    let mut tx = s.begin_write("evil").await.unwrap();
    assert!(
        !Store::mark_deleted(&mut tx, SoftDeleted::Certificates, "evil", id)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let mut tx = s.begin_write("acct").await.unwrap();
    assert!(
        Store::mark_deleted(&mut tx, SoftDeleted::Certificates, "acct", id)
            .await
            .unwrap()
    );
    assert!(
        !Store::mark_deleted(&mut tx, SoftDeleted::Certificates, "acct", id)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert!(s.certificate("acct", id).await.unwrap().is_none());
    drop(s);
    db.drop_db().await;
}

/// A URL that asks for verified TLS gets an encrypted connection to a server whose
/// certificate chains to the given CA, and no connection at all with another CA.
async fn tls_is_verified_when_the_url_asks(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let ca = server_url("MTLSGATE_TEST_DB_CA");
    let mut url = url::Url::parse(&db.url).unwrap();
    let (mode, root, mode_value) = match dialect {
        Dialect::Postgres => ("sslmode", "sslrootcert", "verify-full"),
        _ => ("ssl-mode", "ssl-ca", "VERIFY_IDENTITY"),
    };
    url.query_pairs_mut()
        .append_pair(mode, mode_value)
        .append_pair(root, &ca);
    let s = Store::connect(
        url.as_str(),
        &super::DbOptions {
            max_connections: None,
        },
    )
    .await
    .unwrap();
    let encrypted: String = match dialect {
        Dialect::Postgres => sqlx::query_scalar(
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
        )
        .fetch_one(s.pool())
        .await
        .unwrap(),
        _ => {
            let row = sqlx::query("SHOW SESSION STATUS LIKE 'Ssl_version'")
                .fetch_one(s.pool())
                .await
                .unwrap();
            super::text(&row, "Value").unwrap()
        }
    };
    assert!(encrypted.starts_with("TLSv1."), "{encrypted:?}");
    certificate(&s, "acct", "over-tls").await.unwrap();
    drop(s);

    // Another CA: the server's certificate does not verify, so nothing connects.
    let other = std::env::temp_dir().join(format!(
        "mtlsgate-other-ca-{}.pem",
        hex::encode(crate::random::bytes::<6>())
    ));
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&other, params.self_signed(&key).unwrap().pem()).unwrap();
    let mut wrong = url::Url::parse(&db.url).unwrap();
    wrong
        .query_pairs_mut()
        .append_pair(mode, mode_value)
        .append_pair(root, &other.to_string_lossy());
    let refused = Store::connect(
        wrong.as_str(),
        &super::DbOptions {
            max_connections: None,
        },
    )
    .await;
    let refused = format!(
        "{:?}",
        refused
            .err()
            .expect("connected with a CA that did not issue the server's certificate")
    );
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("certificate"),
        "{refused}"
    );
    let _ = std::fs::remove_file(&other);
    db.drop_db().await;
}

mod tls {
    #[tokio::test]
    async fn postgres() {
        super::tls_is_verified_when_the_url_asks(super::Dialect::Postgres).await
    }
    #[tokio::test]
    async fn mariadb() {
        super::tls_is_verified_when_the_url_asks(super::Dialect::MySql).await
    }
}

async fn a_lease_has_one_holder_at_a_time(dialect: Dialect) {
    let db = TestDb::new(dialect).await;
    let (a, b) = (db.store().await, db.store().await);
    // Ten asking at once: one gets it.
    let got = in_parallel(&a, &b, 10, |i, s| async move {
        s.take_lease("work", &format!("holder-{i}"), 30)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(got.iter().filter(|g| **g).count(), 1, "{got:?}");
    let holder = format!("holder-{}", got.iter().position(|g| *g).unwrap());
    // Its holder keeps it; another does not get it; another lease is another matter.
    assert!(b.take_lease("work", &holder, 30).await.unwrap());
    assert!(!a.take_lease("work", "other", 30).await.unwrap());
    assert!(a.take_lease("other work", "other", 30).await.unwrap());
    // Given back, anyone may take it; a release by a non-holder changes nothing.
    a.release_lease("work", "not-the-holder").await.unwrap();
    assert!(!a.take_lease("work", "other", 30).await.unwrap());
    b.release_lease("work", &holder).await.unwrap();
    assert!(a.take_lease("work", "other", 30).await.unwrap());
    // Expired (its holder died): taken over, by the database's clock.
    assert!(a.take_lease("work", "other", -1).await.unwrap());
    assert!(b.take_lease("work", "successor", 30).await.unwrap());
    drop((a, b));
    db.drop_db().await;
}

#[test]
fn every_backend_migrates_to_the_same_schema_level() {
    assert_eq!(
        super::POSTGRES_MIGRATIONS.last().map(|m| m.0),
        Some(super::SCHEMA_LEVEL)
    );
    assert_eq!(
        super::MYSQL_MIGRATIONS.last().map(|m| m.0),
        Some(super::SCHEMA_LEVEL)
    );
}

/// Each case above, on each backend.
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Dialect::Sqlite).await } )* }
        mod postgres { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Dialect::Postgres).await } )* }
        mod mariadb { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $case() { super::$case(super::Dialect::MySql).await } )* }
    };
}

on_every_backend!(
    a_quota_holds_against_parallel_creations_on_two_replicas,
    two_admins_deleting_each_other_leave_one,
    revisions_are_distinct_and_consecutive,
    login_failures_count_every_attempt,
    parallel_egress_replacements_leave_one_whole_list,
    replicas_starting_together_both_migrate,
    names_compare_bytewise_and_deleted_rows_free_theirs,
    long_urls_and_ca_bundles_are_kept_whole,
    soft_deletes_and_settings_round_trip,
    a_lease_has_one_holder_at_a_time,
);
