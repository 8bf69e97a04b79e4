//! The metadata store: SQL through `sqlx`, SQLite by default.
//!
//! Writes are serialized by one lock: SQLite takes one writer at a time anyway, and doing it
//! here turns "database is locked" races into plain waiting.

mod appkeys;
mod certificates;
mod credentials;
mod egress;
mod login_failures;
mod mappings;
mod quotas;
mod settings;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use tokio::sync::Mutex;

pub use appkeys::AppKeyRow;
pub use certificates::{CertificateRow, NewCertificate};
pub use credentials::CredentialRow;
pub use egress::EgressRow;
pub use mappings::{MappingRow, NewMapping};
pub use quotas::Counted;
pub use users::{UserDeletion, UserRow};

/// Schema migrations, applied in order, tracked in `PRAGMA user_version`.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_users_appkeys.sql"),
    include_str!("../../migrations/0003_egress.sql"),
    include_str!("../../migrations/0004_credentials.sql"),
    include_str!("../../migrations/0005_account_settings.sql"),
    include_str!("../../migrations/0006_generation.sql"),
    include_str!("../../migrations/0007_login_failures.sql"),
    include_str!("../../migrations/0008_pinned_secret_versions.sql"),
];

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
    Database(#[from] sqlx::Error),
    #[error("the database schema is newer ({0}) than this mtlsgate knows ({1})")]
    SchemaTooNew(i64, usize),
}

/// Handle on the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    write: std::sync::Arc<Mutex<()>>,
}

pub(crate) use crate::clock::now;

impl Store {
    /// Opens (creating if needed) the SQLite file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = Store {
            pool,
            write: Default::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let _w = self.write.lock().await;
        let version: i64 = sqlx::query("PRAGMA user_version")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        if version as usize > MIGRATIONS.len() {
            return Err(StoreError::SchemaTooNew(version, MIGRATIONS.len()));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let mut tx = self.pool.begin().await?;
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(migration = i + 1, "database schema migrated");
        }
        Ok(())
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Takes the write lock; hold it across a whole write (including a Vault call that must
    /// land together with it).
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
        query: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        from_row: fn(&SqliteRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = query.fetch_all(self.pool()).await?;
        Ok(rows.iter().map(from_row).collect::<Result<_, _>>()?)
    }

    /// Marks a live row of the account deleted (rows are kept, their ids never reused);
    /// false when there was no such live row.
    pub(crate) async fn mark_deleted<'e>(
        executor: impl sqlx::Executor<'e, Database = Sqlite>,
        table: SoftDeleted,
        account: &str,
        id: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE {} SET deleted = 1, updated_at = ? WHERE account = ? AND id = ? AND deleted = 0",
            table.name()
        ))
        .bind(now())
        .bind(account)
        .bind(id)
        .execute(executor)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn begin(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        Ok(self.pool().begin().await?)
    }

    /// Commits a row whose secrets were just written to Vault ("Vault first, commit second":
    /// if Vault failed, the transaction was dropped and the row is as it was). If the commit
    /// fails, `undo` removes what the write added to Vault (the entry of a new row, the new
    /// version of an updated one), so no secret outlives its row and the version the row
    /// still pins is the one served. Deletes pass an `undo` that does nothing: they destroy
    /// their secrets only after this commit.
    pub async fn commit_or_undo<U, F>(
        tx: Transaction<'_, Sqlite>,
        undo: U,
    ) -> Result<(), StoreError>
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
            return Err(e.into());
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
