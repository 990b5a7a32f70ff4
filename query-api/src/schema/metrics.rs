//! Request metrics, recorded by a schema extension so every transport counts alike:
//! `smartmeter_graphql_requests_total{operation}`,
//! `smartmeter_graphql_request_duration_seconds{operation}` and
//! `smartmeter_graphql_errors_total{operation,code}`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextPrepareRequest, NextRequest,
};
use async_graphql::{Request, Response, ServerResult};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::error::{code, code_of};

/// Operation names that get their own label value; any other name, or none, is
/// `other`, so clients cannot grow the label set. The project's own clients name
/// their operations from this list; GraphiQL sends `IntrospectionQuery`.
pub const KNOWN_OPERATIONS: &[&str] = &[
    "Devices",
    "MeterSearch",
    "Device",
    "LatestReading",
    "Readings",
    "ReadingSeries",
    "HourlyEnergy",
    "DailyEnergy",
    "MonthlyEnergy",
    "CounterEvents",
    "BillProjection",
    "BillingPeriods",
    "Invoices",
    "Invoice",
    "Tariffs",
    "DeadLetters",
    "ReplayJob",
    "Me",
    "SignIn",
    "RegisterDevice",
    "UpdateDevice",
    "DecommissionDevice",
    "AssignTariff",
    "PublishTariffVersion",
    "StartBillingReplay",
    "IntrospectionQuery",
];

const OTHER: &str = "other";

pub fn operation_label(name: Option<&str>) -> &'static str {
    name.and_then(|name| KNOWN_OPERATIONS.iter().find(|known| **known == name).copied()).unwrap_or(OTHER)
}

#[derive(Clone)]
pub struct GraphqlMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
}

impl GraphqlMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("smartmeter_graphql_requests_total", "GraphQL requests executed, by operation."),
            &["operation"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "smartmeter_graphql_request_duration_seconds",
                "Time from parsing a GraphQL request to its response, by operation.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["operation"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "smartmeter_graphql_errors_total",
                "Errors in GraphQL responses, by operation and code.",
            ),
            &["operation", "code"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        Ok(Self { requests, duration, errors })
    }

    fn record(&self, operation: &'static str, started: Instant, response: &Response) {
        self.requests.with_label_values(&[operation]).inc();
        self.duration.with_label_values(&[operation]).observe(started.elapsed().as_secs_f64());
        for error in &response.errors {
            let error_code = code_of(error)
                .and_then(|c| code::ALL.iter().find(|known| **known == c).copied())
                .unwrap_or(OTHER);
            self.errors.with_label_values(&[operation, error_code]).inc();
        }
    }
}

impl ExtensionFactory for GraphqlMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestMetrics { metrics: self.clone(), operation: Mutex::new(None) })
    }
}

/// One per request: remembers the operation's name for the label.
struct RequestMetrics {
    metrics: GraphqlMetrics,
    operation: Mutex<Option<&'static str>>,
}

impl RequestMetrics {
    fn remember(&self, name: Option<&str>) {
        if let Ok(mut operation) = self.operation.lock() {
            *operation = Some(operation_label(name));
        }
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for RequestMetrics {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let operation = self.operation.lock().ok().and_then(|o| *o).unwrap_or(OTHER);
        self.metrics.record(operation, started, &response);
        response
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.remember(request.operation_name.as_deref());
        next.run(ctx, request).await
    }

    /// The name from the document, for requests that do not send `operationName`.
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.remember(operation_name);
        next.run(ctx, operation_name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_names_are_other() {
        assert_eq!(operation_label(Some("DailyEnergy")), "DailyEnergy");
        assert_eq!(operation_label(Some("dailyenergy")), "other");
        assert_eq!(operation_label(Some("x".repeat(1000).as_str())), "other");
        assert_eq!(operation_label(None), "other");
    }
}
