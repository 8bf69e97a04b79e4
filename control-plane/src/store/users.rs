//! User rows.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::{flag, now, text, SoftDeleted, Store, StoreError};

/// A user as stored. The hash is argon2id in PHC string form.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: i64,
    pub account: String,
    pub username: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub privileges: Vec<String>,
    pub created_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("account", &self.account)
            .field("username", &self.username)
            .field("is_admin", &self.is_admin)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "id, account, username, password_hash, is_admin, privileges, created_at";

fn from_row(r: &AnyRow) -> Result<UserRow, sqlx::Error> {
    let privileges = text(r, "privileges")?;
    Ok(UserRow {
        id: r.try_get("id")?,
        account: text(r, "account")?,
        username: text(r, "username")?,
        password_hash: text(r, "password_hash")?,
        is_admin: flag(r, "is_admin")?,
        privileges: serde_json::from_str(&privileges)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_at: r.try_get("created_at")?,
    })
}

/// What [`Store::delete_user_keeping_an_admin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDeletion {
    Deleted,
    NotFound,
    /// Refused: the user is the account's last admin.
    LastAdmin,
}

impl Store {
    pub async fn user_named(
        &self,
        account: &str,
        username: &str,
    ) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM users WHERE account = ? AND username = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(username)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn user(&self, account: &str, id: i64) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(self.sql(&format!(
            "SELECT {COLUMNS} FROM users WHERE account = ? AND id = ? AND deleted = 0"
        )))
        .bind(account)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(from_row).transpose()?)
    }

    pub async fn users(&self, account: &str) -> Result<Vec<UserRow>, StoreError> {
        self.fetch_rows(
            sqlx::query(self.sql(&format!(
                "SELECT {COLUMNS} FROM users WHERE account = ? AND deleted = 0 ORDER BY id"
            )))
            .bind(account),
            from_row,
        )
        .await
    }

    /// Every live user of every account, as (account, id), for the gateway's snapshot.
    pub async fn all_user_ids(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.fetch_rows(
            sqlx::query(
                self.sql("SELECT account, id FROM users WHERE deleted = 0 ORDER BY account, id"),
            ),
            |r| Ok((text(r, "account")?, r.try_get("id")?)),
        )
        .await
    }

    /// Inserts a user; `None` when the account already has a user of that name.
    pub async fn insert_user(
        &self,
        account: &str,
        username: &str,
        password_hash: &str,
        is_admin: bool,
        privileges: &[String],
    ) -> Result<Option<UserRow>, StoreError> {
        let _w = self.write_lock().await;
        let mut tx = self.begin_write(account).await?;
        let exists: Option<i64> = sqlx::query_scalar(
            tx.sql("SELECT id FROM users WHERE account = ? AND username = ? AND deleted = 0"),
        )
        .bind(account)
        .bind(username)
        .fetch_optional(tx.conn())
        .await?;
        if exists.is_some() {
            return Ok(None);
        }
        let t = now();
        let privileges = serde_json::to_string(privileges).unwrap_or_else(|_| "[]".into());
        let id = tx
            .insert_id(
                "INSERT INTO users (account, username, password_hash, is_admin, privileges, created_at, updated_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                |q| {
                    q.bind(account)
                        .bind(username)
                        .bind(password_hash)
                        .bind(i64::from(is_admin))
                        .bind(privileges)
                        .bind(t)
                        .bind(t)
                },
            )
            .await?;
        let row = sqlx::query(tx.sql(&format!("SELECT {COLUMNS} FROM users WHERE id = ?")))
            .bind(id)
            .fetch_one(tx.conn())
            .await?;
        tx.commit().await?;
        Ok(Some(from_row(&row)?))
    }

    /// Deletes a user unless it is the account's last admin: the check and the delete are one
    /// transaction under the write lock, so two admins deleting each other at the same time
    /// cannot leave the account without one.
    pub async fn delete_user_keeping_an_admin(
        &self,
        account: &str,
        id: i64,
    ) -> Result<UserDeletion, StoreError> {
        let _w = self.write_lock().await;
        let mut tx = self.begin_write(account).await?;
        let is_admin: Option<i64> = sqlx::query_scalar(
            tx.sql("SELECT is_admin FROM users WHERE account = ? AND id = ? AND deleted = 0"),
        )
        .bind(account)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
        match is_admin {
            None => return Ok(UserDeletion::NotFound),
            Some(flag) if flag != 0 => {
                let admins: i64 = sqlx::query_scalar(tx.sql(
                    "SELECT COUNT(*) FROM users WHERE account = ? AND is_admin = 1 AND deleted = 0",
                ))
                .bind(account)
                .fetch_one(tx.conn())
                .await?;
                if admins <= 1 {
                    return Ok(UserDeletion::LastAdmin);
                }
            }
            Some(_) => {}
        }
        if !Store::mark_deleted(&mut tx, SoftDeleted::Users, account, id).await? {
            return Ok(UserDeletion::NotFound);
        }
        tx.commit().await?;
        Ok(UserDeletion::Deleted)
    }
}
