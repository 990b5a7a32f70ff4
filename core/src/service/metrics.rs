//! Prometheus registry helpers. Metric names follow `smartmeter_<what>_<unit>_total`;
//! labels are bounded (never a device id).

use prometheus::{Encoder, Registry, TextEncoder};

/// A registry with the process collector (CPU, memory, open fds) already registered.
pub fn registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .expect("process collector registers once");
    registry
}

pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer).expect("text encoding never fails");
    String::from_utf8(buffer).expect("prometheus text is UTF-8")
}
