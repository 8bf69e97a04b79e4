//! The metadata store: SQL through `sqlx`'s `Any` driver on SQLite (the default: a file,
//! nothing to install), PostgreSQL 15+ or MySQL 8 / MariaDB 10.11+. The queries are written
//! once; what each database spells its own way is in [`dialect`].
//!
//! **Writes.** Every write transaction of an account starts with [`Store::begin_write`], which
//! takes that account's lock in the database (SQLite: the database's one write lock), so the
//! checks a write makes and the rows it writes cannot interleave with another writer's —
//! whichever process, on whichever host, that writer runs in. Lock order: the account lock,
//! then the rows written, then the `generation` row (taken by its trigger at the first
//! change); all of them before the first secret-store call, so no lock is waited for after a
//! secret was written. Within one process, [`Store::write_lock`] also queues writers, so they
//! wait in memory rather than inside the database.

mod appkeys;
mod certificates;
#[cfg(test)]
pub(crate) mod contract;
mod credentials;
pub mod dialect;
mod egress;
mod leases;
mod login_failures;
mod mappings;
mod oauth_pending;
mod offboard;
mod quotas;
mod settings;
mod users;

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Executor, Row, Transaction};
use tokio::sync::Mutex;

pub use appkeys::AppKeyRow;
pub use certificates::{CertificateRow, NewCertificate};
pub use credentials::CredentialRow;
pub use dialect::Dialect;
pub(crate) use dialect::{flag, opt_text, text};
pub use egress::EgressRow;
pub use mappings::{MappingRow, NewMapping};
pub use oauth_pending::{PendingAuthorization, PendingInsert};
pub use quotas::Counted;
pub use users::{UserDeletion, UserRow};

use dialect::ErrorClass;

/// SQLite's schema migrations, applied in order, tracked in `PRAGMA user_version`.
const SQLITE_MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_users_appkeys.sql"),
    include_str!("../../migrations/0003_egress.sql"),
    include_str!("../../migrations/0004_credentials.sql"),
    include_str!("../../migrations/0005_account_settings.sql"),
    include_str!("../../migrations/0006_generation.sql"),
    include_str!("../../migrations/0007_login_failures.sql"),
    include_str!("../../migrations/0008_pinned_secret_versions.sql"),
    include_str!("../../migrations/0009_leases.sql"),
    include_str!("../../migrations/0010_oauth_pending.sql"),
];

/// PostgreSQL's and MySQL's migrations: (the schema level it brings the database to, the
/// SQL). Their first step is the whole schema of SQLite's level 8; from level 9 on, every
/// migration comes in all three dialects.
const POSTGRES_MIGRATIONS: &[(usize, &str)] = &[
    (
        8,
        include_str!("../../migrations/postgres/0008_baseline.sql"),
    ),
    (9, include_str!("../../migrations/postgres/0009_leases.sql")),
    (
        10,
        include_str!("../../migrations/postgres/0010_oauth_pending.sql"),
    ),
];
const MYSQL_MIGRATIONS: &[(usize, &str)] = &[
    (8, include_str!("../../migrations/mysql/0008_baseline.sql")),
    (9, include_str!("../../migrations/mysql/0009_leases.sql")),
    (
        10,
        include_str!("../../migrations/mysql/0010_oauth_pending.sql"),
    ),
];

/// The schema level this mtlsgate knows.
const SCHEMA_LEVEL: usize = SQLITE_MIGRATIONS.len();

/// The key of PostgreSQL's advisory lock and the name of MySQL's named lock that one
/// migrating process holds ("mtls").
const MIGRATION_LOCK: i64 = 0x6d74_6c73;
const MYSQL_MIGRATION_LOCK: &str = "mtlsgate.migrate";

/// The tables whose rows are deleted by marking them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SoftDeleted {
    Certificates,
    Mappings,
    Credentials,
    Users,
}

impl SoftDeleted {
    fn name(self) -> &'static str {
        match self {
            SoftDeleted::Certificates => "certificates",
            SoftDeleted::Mappings => "mappings",
            SoftDeleted::Credentials => "credentials",
            SoftDeleted::Users => "users",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("the database schema is newer ({0}) than this mtlsgate knows ({1})")]
    SchemaTooNew(i64, usize),
    #[error("unsupported database URL (expected sqlite://, postgres:// or mysql://)")]
    UnsupportedUrl,
    /// A lock was not had in time (another writer holds the account for long, or the
    /// database is overloaded).
    #[error("the database is busy")]
    Busy,
    /// A unique index refused a row that another writer created at the same time.
    #[error("a row with the same key exists")]
    Conflict,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Pooled connections (SQLite: 4, else 10, when not given).
    pub max_connections: Option<u32>,
}

/// Handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
    write: std::sync::Arc<Mutex<()>>,
}

/// A transaction, with the dialect its statements are spelled in.
pub struct Tx {
    inner: Transaction<'static, Any>,
    dialect: Dialect,
}

impl Tx {
    /// `sql` spelled for this transaction's database.
    pub(crate) fn sql(&self, sql: &str) -> &'static str {
        self.dialect.sql(sql)
    }

    pub(crate) fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        Ok(self.inner.commit().await?)
    }

    /// Runs an `INSERT` of one row into a table with an `id` column and answers the new id
    /// (`insert` without `RETURNING`: added here where the database has it).
    pub(crate) async fn insert_id<'q>(
        &mut self,
        insert: &str,
        bind: impl FnOnce(
            sqlx::query::Query<'q, Any, AnyArguments<'q>>,
        ) -> sqlx::query::Query<'q, Any, AnyArguments<'q>>,
    ) -> Result<i64, StoreError> {
        if self.dialect.has_returning() {
            let sql = self.sql(&format!("{insert} RETURNING id"));
            let row = bind(sqlx::query(sql)).fetch_one(self.conn()).await?;
            Ok(row.try_get("id")?)
        } else {
            let sql = self.sql(insert);
            let done = bind(sqlx::query(sql)).execute(self.conn()).await?;
            done.last_insert_id()
                .ok_or_else(|| sqlx::Error::Protocol("no id for the inserted row".into()).into())
        }
    }
}

pub(crate) use crate::clock::now;

/// A refused unique index is a [`StoreError::Conflict`] and a lock not had in time is
/// [`StoreError::Busy`], on every backend; the rest (deadlocks included, which
/// [`Store::retrying`] looks for) stays a database error.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        match dialect::classify(&e) {
            ErrorClass::Busy => StoreError::Busy,
            ErrorClass::Conflict => StoreError::Conflict,
            ErrorClass::Retry | ErrorClass::Other => StoreError::Database(e),
        }
    }
}

/// `url` without what may be secret in it (the password, and the query, which may name key
/// files), for logs.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("REDACTED"));
            }
            u.set_query(None);
            u.to_string()
        }
        // Nothing of it: an unparsable URL may still hold a password anywhere.
        Err(_) => "(a database URL that does not parse)".to_owned(),
    }
}

impl Store {
    /// Opens (creating if needed) the SQLite file and brings its schema up to date.
    #[cfg(test)]
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Store::open_with(
            path,
            &DbOptions {
                max_connections: None,
            },
        )
        .await
    }

    /// [`Store::open`] with options.
    pub async fn open_with(path: &Path, opts: &DbOptions) -> Result<Self, StoreError> {
        let url = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .to_url_lossy();
        Store::connect(url.as_str(), opts).await
    }

    /// Connects to the database `url` names (`sqlite://PATH?mode=rwc`, `postgres://…`,
    /// `mysql://…`; TLS as the URL asks: `sslmode=verify-full&sslrootcert=…` or
    /// `ssl-mode=VERIFY_IDENTITY&ssl-ca=…`) and brings its schema up to date.
    pub async fn connect(url: &str, opts: &DbOptions) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::of_url(url).ok_or(StoreError::UnsupportedUrl)?;
        let parsed = url::Url::parse(url).map_err(|_| StoreError::UnsupportedUrl)?;
        let connect = AnyConnectOptions::from_url(&parsed)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let max = opts.max_connections.unwrap_or(match dialect {
            Dialect::Sqlite => 4,
            Dialect::Postgres | Dialect::MySql => 10,
        });
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    conn.execute(dialect.session_setup()).await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        let store = Store {
            pool,
            dialect,
            write: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// `sql` spelled for this store's database.
    pub(crate) fn sql(&self, sql: &str) -> &'static str {
        self.dialect.sql(sql)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        match self.dialect {
            Dialect::Sqlite => self.migrate_sqlite().await,
            Dialect::Postgres => self.migrate_postgres().await,
            Dialect::MySql => self.migrate_mysql().await,
        }
    }

    /// Each migration in a `BEGIN IMMEDIATE` transaction that reads the level again, so two
    /// processes starting at once cannot both run one.
    async fn migrate_sqlite(&self) -> Result<(), StoreError> {
        loop {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let version: i64 = sqlx::query("PRAGMA user_version")
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
            let level = usize::try_from(version).unwrap_or(usize::MAX);
            if level > SCHEMA_LEVEL {
                return Err(StoreError::SchemaTooNew(version, SCHEMA_LEVEL));
            }
            let Some(sql) = SQLITE_MIGRATIONS.get(level) else {
                return Ok(());
            };
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", level + 1))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(
                migration = level + 1,
                database = self.dialect.name(),
                "database schema migrated"
            );
        }
    }

    /// The level kept in `mtlsgate_schema` (0: an empty database).
    async fn schema_level<'e>(
        executor: impl Executor<'e, Database = Any>,
    ) -> Result<usize, StoreError> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM mtlsgate_schema WHERE id = 1")
                .fetch_optional(executor)
                .await?;
        let version = version.unwrap_or(0);
        let level = usize::try_from(version).unwrap_or(usize::MAX);
        if level > SCHEMA_LEVEL {
            return Err(StoreError::SchemaTooNew(version, SCHEMA_LEVEL));
        }
        Ok(level)
    }

    /// Each migration in one transaction (PostgreSQL's DDL is transactional) that first takes
    /// an advisory lock, so replicas starting at once migrate one after the other.
    async fn migrate_postgres(&self) -> Result<(), StoreError> {
        for (to, sql) in POSTGRES_MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            // Under the lock: two concurrent CREATE TABLE IF NOT EXISTS can both try to
            // create it, and one then fails.
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS mtlsgate_schema \
                 (id BIGINT PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            if Store::schema_level(&mut *tx).await? >= *to {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            Store::set_schema_level(&mut tx, Dialect::Postgres, *to).await?;
            tx.commit().await?;
            tracing::info!(
                migration = to,
                database = self.dialect.name(),
                "database schema migrated"
            );
        }
        Ok(())
    }

    /// MySQL commits each DDL statement on its own, so its migrations are written to be run
    /// again after a crash halfway, and one process at a time runs them under a named lock
    /// held by one connection (it belongs to the session, not to a transaction).
    async fn migrate_mysql(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK(?, 120)")
            .bind(MYSQL_MIGRATION_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        if got != Some(1) {
            return Err(StoreError::Busy);
        }
        let result = async {
            sqlx::raw_sql(
                "CREATE TABLE IF NOT EXISTS mtlsgate_schema                  (id BIGINT NOT NULL PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)                  ENGINE = InnoDB",
            )
            .execute(&mut *conn)
            .await?;
            for (to, sql) in MYSQL_MIGRATIONS {
                if Store::schema_level(&mut *conn).await? >= *to {
                    continue;
                }
                sqlx::raw_sql(sql).execute(&mut *conn).await?;
                sqlx::query(
                    "INSERT INTO mtlsgate_schema (id, version) VALUES (1, ?)                      ON DUPLICATE KEY UPDATE version = VALUES(version)",
                )
                .bind(*to as i64)
                .execute(&mut *conn)
                .await?;
                tracing::info!(migration = to, database = self.dialect.name(), "database schema migrated");
            }
            Ok::<_, StoreError>(())
        }
        .await;
        let _ = sqlx::query("SELECT RELEASE_LOCK(?)")
            .bind(MYSQL_MIGRATION_LOCK)
            .execute(&mut *conn)
            .await;
        result
    }

    async fn set_schema_level(
        tx: &mut Transaction<'static, Any>,
        dialect: Dialect,
        level: usize,
    ) -> Result<(), StoreError> {
        let sql = dialect.upsert("mtlsgate_schema", "id", &["version"]);
        sqlx::query(dialect.sql(&sql))
            .bind(1i64)
            .bind(level as i64)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Takes the in-process write lock; hold it across a whole write (including a secret-store
    /// call that must land together with it). Across processes, [`Store::begin_write`] is
    /// what serializes.
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.write.lock().await
    }

    /// A number that changes whenever any table the gateway is built from does, whoever
    /// changed it (kept by triggers).
    pub async fn generation(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM generation WHERE id = 1")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Runs a `SELECT` and maps every row with the row module's `from_row` (the plumbing each
    /// `store/*` module would otherwise repeat).
    pub(crate) async fn fetch_rows<'q, T>(
        &self,
        query: sqlx::query::Query<'q, Any, AnyArguments<'q>>,
        from_row: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = query.fetch_all(self.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Marks a live row of the account deleted (rows are kept, their ids never reused);
    /// false when there was no such live row.
    pub(crate) async fn mark_deleted(
        tx: &mut Tx,
        table: SoftDeleted,
        account: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(tx.sql(&format!(
            "UPDATE {} SET deleted = 1, updated_at = ? WHERE account = ? AND id = ? AND deleted = 0",
            table.name()
        )))
        .bind(now())
        .bind(account)
        .bind(id)
        .execute(tx.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts a write transaction of `account`: its lock is held from here to the commit (or
    /// the rollback), against every writer of the account in every process.
    pub async fn begin_write(&self, account: &str) -> Result<Tx, StoreError> {
        let mut tx = self.begin().await?;
        for step in self.dialect.account_lock() {
            let sql = tx.sql(step);
            sqlx::query(sql).bind(account).execute(tx.conn()).await?;
        }
        Ok(tx)
    }

    /// Starts a write transaction that belongs to no account (SQLite: with the database's
    /// write lock; elsewhere the rows it writes are its locks).
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        let inner = match self.dialect.begin_write() {
            Some(statement) => self.pool.begin_with(statement).await?,
            None => self.pool.begin().await?,
        };
        Ok(Tx {
            inner,
            dialect: self.dialect,
        })
    }

    /// Runs the write `f` again (up to three times in all) when the database rolled it back
    /// for a deadlock or a serialization failure — which two replicas writing the same rows
    /// can meet; other errors are answered at once. `f` must be a whole transaction.
    pub(crate) async fn retrying<T, F, Fut>(&self, mut f: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match f().await {
                Err(StoreError::Database(e))
                    if attempt < 3 && dialect::classify(&e) == ErrorClass::Retry =>
                {
                    tracing::debug!(attempt, "write rolled back by the database; again");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(StoreError::Database(e)) => return Err(StoreError::from(e)),
                other => return other,
            }
        }
    }

    /// Commits a row whose secrets were just written to Vault ("Vault first, commit second":
    /// if Vault failed, the transaction was dropped and the row is as it was). If the commit
    /// fails, `undo` removes what the write added to Vault (the entry of a new row, the new
    /// version of an updated one), so no secret outlives its row and the version the row
    /// still pins is the one served. Deletes pass an `undo` that does nothing: they destroy
    /// their secrets only after this commit.
    pub async fn commit_or_undo<U, F>(tx: Tx, undo: U) -> Result<(), StoreError>
    where
        U: FnOnce() -> F,
        F: std::future::Future,
    {
        #[cfg(test)]
        if FAILING_COMMITS.try_with(|_| ()).is_ok() {
            drop(tx);
            undo().await;
            return Err(sqlx::Error::Protocol("commit refused by the test".into()).into());
        }
        if let Err(e) = tx.commit().await {
            undo().await;
            return Err(e);
        }
        Ok(())
    }

    /// Test-only: runs `f` with every [`Store::commit_or_undo`] in it failing as a refused
    /// commit does (the transaction rolled back, `undo` run). Scoped to the calling task, so
    /// tests running alongside and background tasks commit as usual.
    #[cfg(test)]
    pub(crate) async fn with_failing_commits<F: std::future::Future>(f: F) -> F::Output {
        FAILING_COMMITS.scope((), f).await
    }

    /// Test-only: `f`, failing its commits as the calling task does (within
    /// [`Store::with_failing_commits`]); for a write the API runs in a task of its own.
    #[cfg(test)]
    pub(crate) fn carry_failing_commits<F>(
        f: F,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = F::Output> + Send>>
    where
        F: std::future::Future + Send + 'static,
    {
        if FAILING_COMMITS.try_with(|_| ()).is_ok() {
            Box::pin(FAILING_COMMITS.scope((), f))
        } else {
            Box::pin(f)
        }
    }
}

#[cfg(test)]
tokio::task_local! {
    /// Set within [`Store::with_failing_commits`].
    static FAILING_COMMITS: ();
}
