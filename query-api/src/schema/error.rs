//! Errors clients see. Every error carries `extensions.code`; internals are logged
//! once where they happen and reach the client only as a generic `INTERNAL`.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ErrorExtensionValues, Response, ServerError, ServerResult, ValidationResult, Variables};

use crate::store::StoreError;

/// `extensions.code` values. Bounded: they also label `smartmeter_graphql_errors_total`.
pub mod code {
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    /// No token, or one that is unknown, revoked or expired.
    pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
    /// The caller's role may not do this, or the meter is not the customer's.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// A dependency (Kafka) did not confirm in time, or a limit of this instance is
    /// reached; retrying later may succeed.
    pub const UNAVAILABLE: &str = "UNAVAILABLE";
    pub const INTERNAL: &str = "INTERNAL";
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const ALL: [&str; 9] = [
        BAD_USER_INPUT,
        NOT_FOUND,
        UNAUTHENTICATED,
        FORBIDDEN,
        UNAVAILABLE,
        INTERNAL,
        PARSE_FAILED,
        VALIDATION_FAILED,
        BAD_REQUEST,
    ];
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An argument the client can fix; `argument` names it and, inside an input object
    /// or document, `field` the path to the faulty part (`time_zone`,
    /// `components[0].slabs[1].rate`).
    #[error("{message}")]
    BadUserInput { argument: &'static str, field: Option<String>, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    /// The message says what happened and whether anything took effect.
    #[error("{0}")]
    Unavailable(String),
    /// Already logged; the message never reaches the client.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_input(argument: &'static str, message: impl Into<String>) -> Self {
        Self::BadUserInput { argument, field: None, message: message.into() }
    }

    pub fn bad_field(argument: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::BadUserInput { argument, field: Some(field.into()), message: message.into() }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadUserInput { .. } => code::BAD_USER_INPUT,
            Self::NotFound(_) => code::NOT_FOUND,
            Self::Unauthenticated(_) => code::UNAUTHENTICATED,
            Self::Forbidden(_) => code::FORBIDDEN,
            Self::Unavailable(_) => code::UNAVAILABLE,
            Self::Internal => code::INTERNAL,
        }
    }

    /// What the client is told: internals never.
    pub fn client_message(&self) -> String {
        match self {
            Self::Internal => "Internal error.".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "Database read failed.");
        Self::Internal
    }
}

/// Lets resolvers use `?` on store calls; with async-graphql's
/// `custom-error-conversion` no other error converts by itself, so nothing leaks.
impl From<StoreError> for async_graphql::Error {
    fn from(error: StoreError) -> Self {
        ApiError::from(error).into()
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(error: ApiError) -> Self {
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", error.code());
        if let ApiError::BadUserInput { argument, field, .. } = &error {
            extensions.set("argument", *argument);
            if let Some(field) = field {
                extensions.set("field", field.as_str());
            }
        }
        async_graphql::Error { message: error.client_message(), source: None, extensions: Some(extensions) }
    }
}

pub fn code_of(error: &ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code.as_str()),
        _ => None,
    }
}

fn set_code(error: &mut ServerError, code: &str) {
    if code_of(error).is_none() {
        error.extensions.get_or_insert_with(Default::default).set("code", code);
    }
}

/// Gives the errors async-graphql raises itself (syntax, validation, argument values,
/// operation selection) a `code`, so clients can branch on `extensions.code` alone.
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodes)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        for error in &mut response.errors {
            // Field errors: resolvers set their own codes, so what is left is
            // async-graphql refusing an argument. Request errors: e.g. an unknown
            // operation name.
            set_code(error, if error.path.is_empty() { code::BAD_REQUEST } else { code::BAD_USER_INPUT });
        }
        response
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut error| {
            set_code(&mut error, code::PARSE_FAILED);
            error
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for error in &mut errors {
                let code = if error.message.starts_with("Invalid value for argument") {
                    code::BAD_USER_INPUT
                } else {
                    code::VALIDATION_FAILED
                };
                set_code(error, code);
            }
            errors
        })
    }
}
