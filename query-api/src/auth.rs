//! Who is calling: API keys (bearer tokens) and the three roles.
//!
//! - A token is `smk_<key id: 16 hex>_<secret: 43 base64url>`, 256 random bits of
//!   secret. Only its SHA-256 is stored (`api_keys.token_sha256`); it is shown once.
//! - Sent as `Authorization: Bearer <token>` on HTTP, and on a WebSocket either in that
//!   header of the upgrade request or as `Authorization` (or `authorization`, or
//!   `token`) in the `connection_init` payload (browsers cannot set the header).
//! - Roles: `admin` (everything), `operator` (the whole fleet: devices, tariff
//!   assignments, replays, dead letters; not tariff publication or access management),
//!   `customer` (read-only, only the meters whose `devices.customer_id` is its own).
//! - Looked-up keys are cached for [`CACHE_TTL`]: a revoked key stops working within
//!   that time on every instance.
//! - A development admin key (`--dev-admin-key`) is accepted from memory, never
//!   stored: it exists for the one-command local run and tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jiff::Timestamp;
use sha2::{Digest as _, Sha256};

use crate::schema::error::ApiError;
use crate::store::{ApiKeyRow, Store, StoreError};

pub const TOKEN_PREFIX: &str = "smk_";
/// How long a looked-up key (or an unknown token) is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most tokens remembered; the cache is emptied when it is full.
const CACHE_MAX: usize = 10_000;
/// The user name of the development admin key.
pub const DEV_ADMIN_USER: &str = "dev-admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, async_graphql::Enum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Customer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Operator => "operator",
            Self::Customer => "customer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Self::Admin),
            "operator" => Some(Self::Operator),
            "customer" => Some(Self::Customer),
            _ => None,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_name: String,
    pub role: Role,
    /// Set exactly for customers.
    pub customer_id: Option<String>,
    pub key_id: String,
}

impl Principal {
    /// Admins and operators see the whole fleet.
    pub fn is_staff(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }

    /// The customer a view must be limited to; `None` for staff.
    pub fn customer_scope(&self) -> Option<&str> {
        match self.role {
            Role::Customer => Some(self.customer_id.as_deref().unwrap_or("")),
            Role::Admin | Role::Operator => None,
        }
    }

    /// Refuses roles not in `allowed`, naming what was refused.
    pub fn require(&self, allowed: &[Role], what: &str) -> Result<(), ApiError> {
        if allowed.contains(&self.role) {
            Ok(())
        } else {
            let roles: Vec<&str> = allowed.iter().map(|role| role.as_str()).collect();
            Err(ApiError::Forbidden(format!(
                "{what} needs the role {}; this key's role is {}",
                roles.join(" or "),
                self.role.as_str()
            )))
        }
    }

    pub fn require_staff(&self, what: &str) -> Result<(), ApiError> {
        self.require(&[Role::Admin, Role::Operator], what)
    }

    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        self.require(&[Role::Admin], what)
    }
}

/// A newly minted token and the parts stored.
pub struct NewToken {
    pub token: String,
    pub key_id: String,
    pub sha256: [u8; 32],
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A fresh random token.
pub fn new_token() -> Result<NewToken, getrandom::Error> {
    let mut id = [0_u8; 8];
    let mut secret = [0_u8; 32];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let token =
        format!("{TOKEN_PREFIX}{key_id}_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    Ok(NewToken { sha256: sha256(&token), token, key_id })
}

/// The token of an `Authorization: Bearer …` value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|token| !token.is_empty())
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no API key: send Authorization: Bearer <token>")]
    Missing,
    #[error("the API key is not valid (unknown, revoked or expired)")]
    Invalid,
    #[error("the API keys cannot be checked right now")]
    Unavailable(#[from] StoreError),
}

impl AuthError {
    /// Bounded label of `smartmeter_api_auth_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Unavailable(store) => store.into(),
            other => ApiError::Unauthenticated(other.to_string()),
        }
    }
}

#[derive(Clone)]
struct Cached {
    principal: Option<Principal>,
    expires_at: Option<Timestamp>,
    at: Instant,
}

/// Checks tokens against the stored keys (through a short cache) and the development key.
#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    dev_key: Option<[u8; 32]>,
    cache: Arc<Mutex<HashMap<[u8; 32], Cached>>>,
    failures: prometheus::IntCounterVec,
}

impl Authenticator {
    pub fn new(
        store: Store,
        dev_admin_key: Option<&str>,
        registry: &prometheus::Registry,
    ) -> prometheus::Result<Self> {
        let failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "smartmeter_api_auth_failures_total",
                "Requests refused for their API key, by reason (missing, invalid, unavailable).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            store,
            dev_key: dev_admin_key.filter(|key| !key.is_empty()).map(sha256),
            cache: Arc::new(Mutex::new(HashMap::new())),
            failures,
        })
    }

    /// The principal of an `Authorization` header value (or `None` when absent).
    pub async fn authorize(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let result = match authorization.and_then(bearer) {
            Some(token) => self.authenticate(token).await,
            None => Err(AuthError::Missing),
        };
        if let Err(error) = &result {
            self.failures.with_label_values(&[error.reason()]).inc();
        }
        result
    }

    async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = sha256(token);
        if self.dev_key == Some(hash) {
            return Ok(Principal {
                user_name: DEV_ADMIN_USER.to_owned(),
                role: Role::Admin,
                customer_id: None,
                key_id: "dev".to_owned(),
            });
        }
        let now = Instant::now();
        let cached = self.cache.lock().ok().and_then(|cache| cache.get(&hash).cloned());
        let entry = match cached.filter(|entry| now.duration_since(entry.at) < CACHE_TTL) {
            Some(entry) => entry,
            None => {
                let row = self.store.key_by_hash(&hash).await?;
                let entry = match row {
                    Some(row) if row.revoked_at.is_none() => principal_of(&row)
                        .map(|principal| Cached {
                            principal: Some(principal),
                            expires_at: row.expires_at,
                            at: now,
                        })
                        .unwrap_or(Cached { principal: None, expires_at: None, at: now }),
                    _ => Cached { principal: None, expires_at: None, at: now },
                };
                if let Ok(mut cache) = self.cache.lock() {
                    if cache.len() >= CACHE_MAX {
                        cache.clear();
                    }
                    cache.insert(hash, entry.clone());
                }
                entry
            }
        };
        match entry.principal {
            Some(_) if entry.expires_at.is_some_and(|at| at <= Timestamp::now()) => Err(AuthError::Invalid),
            Some(principal) => Ok(principal),
            None => Err(AuthError::Invalid),
        }
    }

    /// Forgets cached keys, so a revocation takes effect on this instance at once.
    pub fn forget(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }
}

fn principal_of(row: &ApiKeyRow) -> Option<Principal> {
    let role = Role::parse(&row.role)?;
    Some(Principal {
        user_name: row.user_name.clone(),
        role,
        customer_id: row.customer_id.clone(),
        key_id: row.key_id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_hash_to_what_is_stored() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a.token, b.token);
        assert!(a.token.starts_with("smk_"));
        assert_eq!(&a.token[4..20], a.key_id);
        assert_eq!(a.token.len(), 4 + 16 + 1 + 43);
        assert_eq!(a.sha256, sha256(&a.token));
    }

    #[test]
    fn bearer_values_are_read_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn roles_are_checked_by_name() {
        let customer = Principal {
            user_name: "c".into(),
            role: Role::Customer,
            customer_id: Some("cust-1".into()),
            key_id: "k".into(),
        };
        assert_eq!(customer.customer_scope(), Some("cust-1"));
        let refused = customer.require_staff("the dead-letter queue").unwrap_err();
        assert_eq!(refused.code(), "FORBIDDEN");
        assert!(refused.to_string().contains("admin or operator"), "{refused}");
        let operator = Principal { role: Role::Operator, customer_id: None, ..customer };
        assert!(operator.require_staff("x").is_ok());
        assert!(operator.require_admin("publishing a tariff").is_err());
        assert_eq!(operator.customer_scope(), None);
    }
}
