//! Customers, API users and API keys (migration 0006): the only tables query-api
//! writes. Keys are looked up by the SHA-256 of the token; the token is never stored.

use jiff::Timestamp;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRow {
    pub customer_id: String,
    pub name: String,
    pub email: Option<String>,
    pub created_at: Timestamp,
    pub devices: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRow {
    pub key_id: String,
    pub user_name: String,
    /// `admin`, `operator` or `customer`.
    pub role: String,
    pub customer_id: Option<String>,
    pub label: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
}

/// A new key for a user that exists, or is created with `role`.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub user_name: &'a str,
    pub role: &'a str,
    pub customer_id: Option<&'a str>,
    pub key_id: &'a str,
    pub token_sha256: &'a [u8],
    pub label: Option<&'a str>,
    pub expires_at: Option<Timestamp>,
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum NewKeyError {
    #[error("user {user_name:?} exists with role {role} (customer {customer_id:?}); a user has one role")]
    RoleMismatch { user_name: String, role: String, customer_id: Option<String> },
    #[error("no customer {0:?}; create it first")]
    UnknownCustomer(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

const KEY_COLUMNS: &str =
    "k.key_id, k.user_name, u.role, u.customer_id, k.label, k.created_at, k.expires_at, \
     k.revoked_at, k.last_used_at";

fn key_row(row: &tokio_postgres::Row) -> Result<ApiKeyRow, tokio_postgres::Error> {
    Ok(ApiKeyRow {
        key_id: row.try_get("key_id")?,
        user_name: row.try_get("user_name")?,
        role: row.try_get("role")?,
        customer_id: row.try_get("customer_id")?,
        label: row.try_get("label")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

impl Store {
    pub async fn customers(&self) -> Result<Vec<CustomerRow>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT c.customer_id, c.name, c.email, c.created_at,
                        (SELECT count(*) FROM devices d WHERE d.customer_id = c.customer_id) AS devices
                 FROM customers c ORDER BY c.customer_id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                Ok(CustomerRow {
                    customer_id: row.try_get("customer_id")?,
                    name: row.try_get("name")?,
                    email: row.try_get("email")?,
                    created_at: row.try_get("created_at")?,
                    devices: row.try_get("devices")?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()?)
    }

    pub async fn customer_exists(&self, customer_id: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let row = client.query_opt("SELECT 1 FROM customers WHERE customer_id = $1", &[&customer_id]).await?;
        Ok(row.is_some())
    }

    /// Inserts a customer; `false` when the id is taken.
    pub async fn create_customer(
        &self,
        customer_id: &str,
        name: &str,
        email: Option<&str>,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let inserted = client
            .execute(
                "INSERT INTO customers (customer_id, name, email) VALUES ($1, $2, $3)
                 ON CONFLICT (customer_id) DO NOTHING",
                &[&customer_id, &name, &email],
            )
            .await?;
        Ok(inserted == 1)
    }

    /// Creates the user if it does not exist (a user keeps its first role) and the key,
    /// in one transaction.
    pub async fn create_key(&self, key: &NewKey<'_>) -> Result<ApiKeyRow, NewKeyError> {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        if let Some(customer_id) = key.customer_id {
            let known = tx
                .query_opt("SELECT 1 FROM customers WHERE customer_id = $1", &[&customer_id])
                .await
                .map_err(StoreError::from)?;
            if known.is_none() {
                return Err(NewKeyError::UnknownCustomer(customer_id.to_owned()));
            }
        }
        tx.execute(
            "INSERT INTO api_users (user_name, role, customer_id) VALUES ($1, $2, $3)
             ON CONFLICT (user_name) DO NOTHING",
            &[&key.user_name, &key.role, &key.customer_id],
        )
        .await
        .map_err(StoreError::from)?;
        let user = tx
            .query_one("SELECT role, customer_id FROM api_users WHERE user_name = $1", &[&key.user_name])
            .await
            .map_err(StoreError::from)?;
        let (role, customer_id): (String, Option<String>) =
            (user.try_get(0).map_err(StoreError::from)?, user.try_get(1).map_err(StoreError::from)?);
        if role != key.role || customer_id.as_deref() != key.customer_id {
            return Err(NewKeyError::RoleMismatch { user_name: key.user_name.to_owned(), role, customer_id });
        }
        tx.execute(
            "INSERT INTO api_keys (key_id, user_name, token_sha256, label, expires_at) VALUES ($1, $2, $3, $4, $5)",
            &[&key.key_id, &key.user_name, &key.token_sha256, &key.label, &key.expires_at],
        )
        .await
        .map_err(StoreError::from)?;
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN api_users u USING (user_name) WHERE k.key_id = $1"
        );
        let row = tx.query_one(&sql, &[&key.key_id]).await.map_err(StoreError::from)?;
        let created = key_row(&row).map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(created)
    }

    /// The key whose token hashes to `token_sha256`, whatever its state (the caller
    /// checks revocation and expiry), and marks it used.
    pub async fn key_by_hash(&self, token_sha256: &[u8]) -> Result<Option<ApiKeyRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "UPDATE api_keys k SET last_used_at = now() FROM api_users u
             WHERE k.token_sha256 = $1 AND u.user_name = k.user_name
             RETURNING {KEY_COLUMNS}"
        );
        let row = client.query_opt(&sql, &[&token_sha256]).await?;
        Ok(row.as_ref().map(key_row).transpose()?)
    }

    pub async fn api_keys(&self) -> Result<Vec<ApiKeyRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "SELECT {KEY_COLUMNS} FROM api_keys k JOIN api_users u USING (user_name) ORDER BY k.created_at, k.key_id"
        );
        Ok(client.query(&sql, &[]).await?.iter().map(key_row).collect::<Result<_, _>>()?)
    }

    /// Revokes a key; `None` for an unknown key id.
    pub async fn revoke_key(&self, key_id: &str) -> Result<Option<ApiKeyRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!(
            "UPDATE api_keys k SET revoked_at = COALESCE(k.revoked_at, now()) FROM api_users u
             WHERE k.key_id = $1 AND u.user_name = k.user_name
             RETURNING {KEY_COLUMNS}"
        );
        Ok(client.query_opt(&sql, &[&key_id]).await?.as_ref().map(key_row).transpose()?)
    }
}
