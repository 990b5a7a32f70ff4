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
    pub const INTERNAL: &str = "INTERNAL";
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    pub const BAD_REQUEST: &str = "BAD_REQUEST";
    pub const ALL: [&str; 6] =
        [BAD_USER_INPUT, NOT_FOUND, INTERNAL, PARSE_FAILED, VALIDATION_FAILED, BAD_REQUEST];
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An argument the client can fix; `argument` names it.
    #[error("{message}")]
    BadUserInput { argument: &'static str, message: String },
    #[error("{0}")]
    NotFound(String),
    /// Already logged; the message never reaches the client.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn bad_input(argument: &'static str, message: impl Into<String>) -> Self {
        Self::BadUserInput { argument, message: message.into() }
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
        let message = match &error {
            ApiError::BadUserInput { argument, message } => {
                extensions.set("code", code::BAD_USER_INPUT);
                extensions.set("argument", *argument);
                message.clone()
            }
            ApiError::NotFound(message) => {
                extensions.set("code", code::NOT_FOUND);
                message.clone()
            }
            ApiError::Internal => {
                extensions.set("code", code::INTERNAL);
                "Internal error.".to_owned()
            }
        };
        async_graphql::Error { message, source: None, extensions: Some(extensions) }
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
