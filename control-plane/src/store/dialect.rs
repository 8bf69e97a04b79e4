//! What differs between the three databases the store runs on, and nothing else: placeholder
//! spelling, the few statements each spells its own way, how a value comes back, and which
//! errors mean "try again", "busy" or "taken". The store's queries are written once, in the
//! common subset, with `?` placeholders.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use sqlx::any::AnyRow;
use sqlx::Row;

/// The database behind a store, from its URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    Sqlite,
    Postgres,
    /// MySQL 8 or MariaDB 10.11+ (the SQL used is their common part: no `RETURNING`).
    MySql,
}

impl Dialect {
    /// The dialect a database URL names; `None` for a scheme the store does not speak.
    pub fn of_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0.to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    /// `sql` as this database spells its placeholders (PostgreSQL: `$1`, `$2`, …; the others
    /// take `?`), kept for the life of the process. Only for the store's own statements: a
    /// bounded set (constants, and constants formatted with constants), so keeping each
    /// spelling costs a fixed amount of memory and saves rewriting it on every query.
    pub(crate) fn sql(self, sql: &str) -> &'static str {
        static SPELLED: OnceLock<Mutex<HashMap<(Dialect, String), &'static str>>> = OnceLock::new();
        let cache = SPELLED.get_or_init(Default::default);
        let mut cache = match cache.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(s) = cache.get(&(self, sql.to_owned())) {
            return s;
        }
        let spelled: &'static str = Box::leak(self.placeholders(sql).into_boxed_str());
        cache.insert((self, sql.to_owned()), spelled);
        spelled
    }

    /// Numbers the `?` placeholders for PostgreSQL. The store's SQL has no `?` inside a string
    /// literal or an identifier, so every `?` is a placeholder.
    fn placeholders(self, sql: &str) -> String {
        if self != Dialect::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0u32;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Whether `INSERT … RETURNING` works (MySQL has no `RETURNING` at all, MariaDB none on
    /// `UPDATE`; the store avoids both there).
    pub(crate) fn has_returning(self) -> bool {
        self != Dialect::MySql
    }

    /// "Insert the row, or add one to `column` of the existing one" for a one-key table.
    pub(crate) fn upsert_increment(
        self,
        table: &str,
        key: &str,
        column: &str,
        more_columns: &[&str],
    ) -> String {
        let mut cols = vec![key, column];
        cols.extend_from_slice(more_columns);
        let marks = vec!["?"; cols.len()].join(", ");
        let head = format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", "));
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                // Qualified: PostgreSQL calls a bare `column` ambiguous (the row or EXCLUDED).
                let mut sets = vec![format!("{column} = {table}.{column} + 1")];
                sets.extend(more_columns.iter().map(|c| format!("{c} = excluded.{c}")));
                format!(
                    "{head} ON CONFLICT ({key}) DO UPDATE SET {}",
                    sets.join(", ")
                )
            }
            Dialect::MySql => {
                let mut sets = vec![format!("{column} = {column} + 1")];
                sets.extend(more_columns.iter().map(|c| format!("{c} = VALUES({c})")));
                format!("{head} ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
        }
    }

    /// "Insert the row, or overwrite `columns` of the existing one" for a one-key table.
    pub(crate) fn upsert(self, table: &str, key: &str, columns: &[&str]) -> String {
        let mut cols = vec![key];
        cols.extend_from_slice(columns);
        let marks = vec!["?"; cols.len()].join(", ");
        let head = format!("INSERT INTO {table} ({}) VALUES ({marks})", cols.join(", "));
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                let sets: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = excluded.{c}"))
                    .collect();
                format!(
                    "{head} ON CONFLICT ({key}) DO UPDATE SET {}",
                    sets.join(", ")
                )
            }
            Dialect::MySql => {
                let sets: Vec<String> = columns
                    .iter()
                    .map(|c| format!("{c} = VALUES({c})"))
                    .collect();
                format!("{head} ON DUPLICATE KEY UPDATE {}", sets.join(", "))
            }
        }
    }

    /// The database's clock in Unix seconds, as an SQL expression: leases are judged by one
    /// clock, whatever the control planes' clocks say.
    pub(crate) fn unix_now(self) -> &'static str {
        match self {
            Dialect::Sqlite => "unixepoch()",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS BIGINT)",
            Dialect::MySql => "UNIX_TIMESTAMP()",
        }
    }

    /// "Insert the row unless its key exists" for a one-key table.
    pub(crate) fn insert_missing(self, table: &str, columns: &[&str]) -> String {
        let marks = vec!["?"; columns.len()].join(", ");
        let cols = columns.join(", ");
        match self {
            Dialect::Sqlite | Dialect::Postgres => {
                format!("INSERT INTO {table} ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING")
            }
            Dialect::MySql => format!("INSERT IGNORE INTO {table} ({cols}) VALUES ({marks})"),
        }
    }

    /// The statements that lock an account's row in `account_locks` (taking it into
    /// existence first), run at the start of every write transaction of that account.
    pub(crate) fn account_lock(self) -> &'static [&'static str] {
        match self {
            // BEGIN IMMEDIATE has taken the whole database already.
            Dialect::Sqlite => &[],
            Dialect::Postgres => &[
                "INSERT INTO account_locks (account) VALUES (?) ON CONFLICT (account) DO NOTHING",
                "SELECT account FROM account_locks WHERE account = ? FOR UPDATE",
            ],
            // An upsert takes the row's exclusive lock whether it inserts or not.
            Dialect::MySql => &[
                "INSERT INTO account_locks (account) VALUES (?) ON DUPLICATE KEY UPDATE account = account",
            ],
        }
    }

    /// The statement a write transaction starts with.
    pub(crate) fn begin_write(self) -> Option<&'static str> {
        match self {
            // Takes SQLite's write lock now rather than at the first write, so a transaction
            // that read first cannot fail to upgrade halfway (SQLITE_BUSY) across processes.
            Dialect::Sqlite => Some("BEGIN IMMEDIATE"),
            Dialect::Postgres | Dialect::MySql => None,
        }
    }

    /// Statements run on every new connection.
    pub(crate) fn session_setup(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;"
            }
            // READ COMMITTED: a read after taking the account lock sees what the previous
            // holder committed (under REPEATABLE READ it would see the snapshot from before).
            // Lock waits end below the API's 30 s request timeout; a replica killed inside a
            // transaction frees its locks within a minute.
            Dialect::Postgres => {
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                 SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '60s'; \
                 SET client_encoding = 'UTF8'"
            }
            Dialect::MySql => {
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
                 SET SESSION innodb_lock_wait_timeout = 10; \
                 SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'; \
                 SET NAMES utf8mb4 COLLATE utf8mb4_nopad_bin"
            }
        }
    }
}

/// What a database error means for the write that met it. The codes of the three backends do
/// not overlap (SQLite's are numbers, PostgreSQL's and MySQL's SQLSTATEs agree on 40001), so
/// this needs no dialect.
pub(crate) fn classify(e: &sqlx::Error) -> ErrorClass {
    let Some(db) = e.as_database_error() else {
        return match e {
            sqlx::Error::PoolTimedOut => ErrorClass::Busy,
            _ => ErrorClass::Other,
        };
    };
    if db.kind() == sqlx::error::ErrorKind::UniqueViolation {
        return ErrorClass::Conflict;
    }
    let code = db.code();
    match code.as_deref().unwrap_or("") {
        // serialization_failure (PostgreSQL), ER_LOCK_DEADLOCK (MySQL); deadlock_detected.
        "40001" | "40P01" => ErrorClass::Retry,
        // lock_not_available: PostgreSQL's lock_timeout.
        "55P03" => ErrorClass::Busy,
        // SQLITE_BUSY (5) and its extended codes (5 + 256·n), after the 10 s busy timeout.
        c if c.parse::<i64>().is_ok_and(|c| c & 0xff == 5) => ErrorClass::Busy,
        // ER_LOCK_WAIT_TIMEOUT (1205) comes as SQLSTATE HY000, told by its message.
        _ if db.message().contains("Lock wait timeout") => ErrorClass::Busy,
        _ => ErrorClass::Other,
    }
}

/// See [`classify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    /// A deadlock or serialization failure: the transaction was rolled back and may run again.
    Retry,
    /// A lock was not had in time.
    Busy,
    /// A unique index refused the row.
    Conflict,
    Other,
}

/// A text column. MySQL sends `TEXT`/`MEDIUMTEXT` columns as blobs, which the `Any` driver
/// does not decode as strings: those arrive as bytes and must be UTF-8.
pub(crate) fn text(r: &AnyRow, col: &str) -> Result<String, sqlx::Error> {
    match r.try_get::<String, _>(col) {
        Ok(s) => Ok(s),
        Err(first) => match r.try_get::<Vec<u8>, _>(col) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|e| sqlx::Error::Decode(Box::new(e))),
            Err(_) => Err(first),
        },
    }
}

/// A nullable text column (see [`text`]).
pub(crate) fn opt_text(r: &AnyRow, col: &str) -> Result<Option<String>, sqlx::Error> {
    match r.try_get::<Option<String>, _>(col) {
        Ok(s) => Ok(s),
        Err(first) => match r.try_get::<Option<Vec<u8>>, _>(col) {
            Ok(bytes) => bytes
                .map(|b| String::from_utf8(b).map_err(|e| sqlx::Error::Decode(Box::new(e))))
                .transpose(),
            Err(_) => Err(first),
        },
    }
}

/// A 0/1 flag column (a BIGINT on every backend: `Any` decodes `bool` only from a boolean).
pub(crate) fn flag(r: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_only() {
        let sql = "SELECT a FROM t WHERE b = ? AND (? IS NULL OR c <> ?)";
        assert_eq!(
            Dialect::Postgres.sql(sql),
            "SELECT a FROM t WHERE b = $1 AND ($2 IS NULL OR c <> $3)"
        );
        assert_eq!(Dialect::Sqlite.sql(sql), sql);
        assert_eq!(Dialect::MySql.sql(sql), sql);
        // The same spelling comes back the second time (kept, not rebuilt).
        assert!(std::ptr::eq(
            Dialect::Postgres.sql(sql),
            Dialect::Postgres.sql(sql)
        ));
    }

    #[test]
    fn logged_urls_carry_no_password_and_no_parameters() {
        let logged = super::super::redacted_url(
            "postgres://mtlsgate:s3cret-pw@db.internal:5432/mtlsgate?sslmode=verify-full&sslrootcert=/k",
        );
        assert_eq!(
            logged,
            "postgres://mtlsgate:REDACTED@db.internal:5432/mtlsgate"
        );
        let odd = super::super::redacted_url("mysql://u:s3cret-pw@[bad");
        assert!(!odd.contains("s3cret-pw"), "{odd}");
    }

    #[test]
    fn urls_name_their_dialect() {
        assert_eq!(
            Dialect::of_url("sqlite://x.db?mode=rwc"),
            Some(Dialect::Sqlite)
        );
        assert_eq!(
            Dialect::of_url("postgres://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(
            Dialect::of_url("postgresql://u@h/db"),
            Some(Dialect::Postgres)
        );
        assert_eq!(Dialect::of_url("mysql://u@h/db"), Some(Dialect::MySql));
        assert_eq!(Dialect::of_url("MariaDB://u@h/db"), Some(Dialect::MySql));
        assert_eq!(Dialect::of_url("redis://h"), None);
        assert_eq!(Dialect::of_url("no scheme"), None);
    }

    #[test]
    fn upserts_are_spelled_per_backend() {
        assert_eq!(
            Dialect::Postgres.upsert_increment("r", "account", "revision", &[]),
            "INSERT INTO r (account, revision) VALUES (?, ?) \
             ON CONFLICT (account) DO UPDATE SET revision = r.revision + 1"
        );
        assert_eq!(
            Dialect::MySql.upsert_increment("f", "scope", "failures", &["last_failure"]),
            "INSERT INTO f (scope, failures, last_failure) VALUES (?, ?, ?) \
             ON DUPLICATE KEY UPDATE failures = failures + 1, last_failure = VALUES(last_failure)"
        );
        assert_eq!(
            Dialect::Sqlite.upsert("s", "account", &["a", "b"]),
            "INSERT INTO s (account, a, b) VALUES (?, ?, ?) \
             ON CONFLICT (account) DO UPDATE SET a = excluded.a, b = excluded.b"
        );
    }
}
