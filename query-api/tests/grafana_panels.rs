//! Every panel of the Grafana dashboards in `infra/grafana/dashboards` against the
//! real services. Grafana itself is not packaged for this machine, so the test does
//! what Grafana does with a panel's query:
//!
//! - PostgreSQL panels: template variables and Grafana's macros (`$__timeFilter`,
//!   `$__timeFrom`, `$__timeTo`, `$__timeGroupAlias`, `$__interval`,
//!   `${var:sqlstring}`) are expanded as Grafana's PostgreSQL datasource documents them,
//!   and the SQL runs against a database holding the real London January 2013 data,
//!   rolled up by the processor and billed by the billing worker. Each must succeed
//!   and return rows.
//! - Prometheus panels: each expression is sent to the real Prometheus of `infra/up.sh`
//!   (`/api/v1/query`), which must accept it, and every metric it names must be one
//!   that a smartmeter service registers.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/grafana/dashboards")
}

/// (dashboard file, panel title, target) of every panel target.
fn targets() -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards_dir())
        .expect("infra/grafana/dashboards")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "fleet, device, billing and pipeline dashboards");
    for file in files {
        let board: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|error| panic!("{}: not JSON: {error}", file.display()));
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for panel in board["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            for target in panel["targets"].as_array().expect("targets") {
                found.push((name.clone(), title.clone(), target.clone()));
            }
        }
    }
    found
}

/// The time range the panels are run for: the replayed month.
const FROM: &str = "2013-01-01T00:00:00Z";
const TO: &str = "2013-02-01T00:00:00Z";

/// `1m`, `1h`, `300`... in seconds, as Grafana reads a `$__timeGroup` interval.
fn interval_seconds(text: &str) -> i64 {
    let text = text.trim().trim_matches('\'');
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let number: i64 = number.parse().unwrap_or_else(|_| panic!("interval {text:?}"));
    number
        * match unit {
            "" | "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            other => panic!("interval unit {other:?}"),
        }
}

/// Replaces each `name(args)` macro with `expand(args)`.
fn expand_macro(sql: &str, name: &str, expand: impl Fn(&[&str]) -> String) -> String {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(name) {
        out.push_str(&rest[..at]);
        let after = &rest[at + name.len()..];
        assert!(after.starts_with('('), "{name} without arguments");
        let close = after.find(')').expect("macro arguments end");
        let args: Vec<&str> = after[1..close].split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
        out.push_str(&expand(&args));
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// Grafana's interpolation of a PostgreSQL panel's raw SQL.
fn interpolate(sql: &str, device: &str) -> String {
    let quoted = format!("'{}'", device.replace('\'', "''"));
    let sql = sql
        .replace("${device:sqlstring}", &quoted)
        .replace("${device}", device)
        .replace("$device", device)
        .replace("$__interval", "1h");
    let sql = expand_macro(&sql, "$__timeFilter", |args| format!("{} BETWEEN '{FROM}' AND '{TO}'", args[0]));
    let sql = expand_macro(&sql, "$__timeFrom", |_| format!("'{FROM}'"));
    let sql = expand_macro(&sql, "$__timeTo", |_| format!("'{TO}'"));
    let sql = expand_macro(&sql, "$__timeGroupAlias", |args| {
        let seconds = interval_seconds(args[1]);
        format!("floor(extract(epoch from {})/{seconds})*{seconds} AS \"time\"", args[0])
    });
    expand_macro(&sql, "$__timeGroup", |args| {
        let seconds = interval_seconds(args[1]);
        format!("floor(extract(epoch from {})/{seconds})*{seconds}", args[0])
    })
}

#[test]
fn interpolation_follows_grafana() {
    assert_eq!(
        interpolate("WHERE id = ${device:sqlstring} AND $__timeFilter(ts)", "o'k"),
        format!("WHERE id = 'o''k' AND ts BETWEEN '{FROM}' AND '{TO}'")
    );
    assert_eq!(
        interpolate("SELECT $__timeGroupAlias(ts, '5m'), 1", "x"),
        "SELECT floor(extract(epoch from ts)/300)*300 AS \"time\", 1"
    );
    assert_eq!(
        interpolate("$__timeGroupAlias(ts, $__interval)", "x"),
        interpolate("$__timeGroupAlias(ts, 1h)", "x")
    );
}

/// Metric names the services register, read from their sources (a `Vec` metric has
/// no series until a label is used, so a fresh registry would not list it).
fn registered_metric_names() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_string_lossy();
            if path.is_dir() {
                if !matches!(file_name.as_ref(), "target" | ".git" | ".state" | "node_modules" | "tests") {
                    stack.push(path);
                }
            } else if file_name.ends_with(".rs") && path.components().any(|c| c.as_os_str() == "src") {
                let text = std::fs::read_to_string(&path).unwrap();
                let mut rest = text.as_str();
                while let Some(at) = rest.find("\"smartmeter_") {
                    let name: String = rest[at + 1..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    names.insert(name);
                    rest = &rest[at + 1..];
                }
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_prometheus_panel_is_valid_promql_over_registered_metrics() {
    let registered = registered_metric_names();
    assert!(registered.contains("smartmeter_processor_batch_commit_seconds"), "metric names found in src");
    let prometheus =
        smartmeter_core::service::testkit::env_or("SMARTMETER_PROMETHEUS_URL", "http://127.0.0.1:9090");
    let http = reqwest::Client::new();
    let mut checked = 0;
    for (board, title, target) in targets() {
        if target["datasource"]["type"] != "prometheus" {
            continue;
        }
        let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{board} / {title}: no expr"));
        let response: Value = http
            .get(format!("{prometheus}/api/v1/query"))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("Prometheus answers (infra/up.sh starts it)")
            .json()
            .await
            .unwrap();
        assert_eq!(response["status"], "success", "{board} / {title}: Prometheus refused {expr}: {response}");
        let mut rest = expr;
        while let Some(at) = rest.find("smartmeter_") {
            let name: String =
                rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|b| registered.contains(*b)))
                .unwrap_or(&name);
            assert!(
                registered.contains(base),
                "{board} / {title}: {name} is not a metric any service registers"
            );
            rest = &rest[at + name.len()..];
        }
        checked += 1;
    }
    assert!(checked >= 8, "pipeline health panels checked: {checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_sql_panel_returns_rows_on_replayed_real_data() {
    let world = common::billed_london_january().await;
    let (client, connection) = tokio_postgres::connect(&world.db.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let mut checked = 0;
    for (board, title, target) in targets() {
        if target["datasource"]["type"] != "grafana-postgresql-datasource" {
            continue;
        }
        let raw = target["rawSql"].as_str().unwrap_or_else(|| panic!("{board} / {title}: no rawSql"));
        let sql = interpolate(raw, &world.device);
        assert!(!sql.contains('$'), "{board} / {title}: not all of it was expanded:\n{sql}");
        let rows = client
            .simple_query(&sql)
            .await
            .unwrap_or_else(|error| panic!("{board} / {title}: the SQL fails: {error}\n{sql}"));
        let returned =
            rows.iter().filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))).count();
        assert!(returned > 0, "{board} / {title}: no rows\n{sql}");
        checked += 1;
    }
    assert!(checked >= 20, "SQL panels checked: {checked}");
    // The device dashboard's variable query.
    let device_json = std::fs::read_to_string(dashboards_dir().join("device.json")).unwrap();
    let device_board: Value = serde_json::from_str(&device_json).unwrap();
    let variable = device_board["templating"]["list"][0]["query"].as_str().unwrap();
    let devices = client.simple_query(variable).await.unwrap();
    assert!(devices.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))));
    world.finish().await;
}
