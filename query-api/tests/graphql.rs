//! The query API against a real PostgreSQL.
//!
//! Each test gets a database of its own (`test_query_api_…`, on the server of
//! `SMARTMETER_DATABASE_URL`), runs core's migrations into it, inserts a real day of
//! household MAC000002 (Low Carbon London, `shared/data/`) and drops the database at
//! the end, so demo data is never touched. Start the database with `infra/up.sh postgres`.

use std::collections::BTreeMap;
use std::future::Future;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan as _};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use smartmeter_core::service::testkit::TestDatabase;
use smartmeter_core::service::{db, health::Health};
use smartmeter_query_api::store::Store;
use smartmeter_query_api::{app, ops, ApiOptions, AppState};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

const DEVICE: &str = "MAC000002";
/// The development admin key of these tests (kept in memory by the API, never stored).
const DEV_KEY: &str = "graphql-test-dev-key";
const LONDON: &str = "Europe/London";

// ---------------------------------------------------------------------------
// A schema of our own per test.

#[derive(Clone)]
struct Db {
    pool: deadpool_postgres::Pool,
    state: AppState,
}

/// Runs `test` against a fresh, migrated schema and drops the schema afterwards,
/// also when the test panics.
async fn with_db<F, Fut>(test: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // A database per test, not a schema in a shared one: with TimescaleDB, dropping a
    // schema's hypertables while other tests query theirs deadlocks on its catalog.
    let database = TestDatabase::create("query_api").await.unwrap_or_else(|error| {
        panic!("PostgreSQL is not reachable ({error:#}); start it: infra/up.sh postgres")
    });
    let pool = db::pool(&database.url, 4, "query-api-test").unwrap();
    db::migrate(&pool).await.unwrap();
    let options = ApiOptions { dev_admin_key: Some(DEV_KEY.into()), ..ApiOptions::local_defaults() };
    let state = AppState::new(Store::new(pool.clone()), options).unwrap();

    let result = tokio::spawn(test(Db { pool: pool.clone(), state })).await;
    pool.close();
    database.drop_database().await.unwrap();
    if let Err(error) = result {
        std::panic::resume_unwind(error.into_panic());
    }
}

impl Db {
    async fn post(&self, body: Value) -> Value {
        let request = Request::post("/graphql")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {DEV_KEY}"))
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// `data` of a query that must succeed.
    async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.post(json!({ "query": query, "variables": variables })).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// `extensions.code` of the first error of a query that must fail.
    async fn error_code(&self, query: &str, variables: Value) -> String {
        let body = self.post(json!({ "query": query, "variables": variables })).await;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error: {body}"))
            .to_owned()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {DEV_KEY}"))
            .body(Body::empty())
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }
}

// ---------------------------------------------------------------------------
// Real data: Low Carbon London half-hours of MAC000002, kWh per half hour starting at
// the timestamp, UTC (see shared/data/PROVENANCE.md).

fn data_dir() -> std::path::PathBuf {
    std::env::var_os("SMARTMETER_SHARED_DATA")
        .map(Into::into)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// Half-hour start → kWh as an exact decimal, for `household` and UTC days `days`.
fn half_hours(file: &str, household: &str, days: &[&str]) -> BTreeMap<Timestamp, Decimal> {
    let path = data_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [id, when, kwh] = fields[..] else { continue };
        if id != household || !days.iter().any(|day| when.starts_with(day)) || kwh == "Null" {
            continue;
        }
        let at = when.parse::<jiff::civil::DateTime>().unwrap().to_zoned(TimeZone::UTC).unwrap().timestamp();
        // LCL meters count whole Wh, but a few hundred values in the files carry
        // float32 noise (`1.0369999` for 1.037): round to the Wh, and make sure that
        // is all the rounding removes.
        let written: Decimal = kwh.parse().unwrap();
        let value = written.round_dp(3);
        assert!((value - written).abs() < Decimal::new(1, 6), "{when}: {kwh} is not a Wh count");
        // Exact repeats exist at month boundaries; a map keeps one.
        out.insert(at, value);
    }
    out
}

fn milli_wh(kwh: Decimal) -> i64 {
    let value = kwh * Decimal::from(1_000_000);
    assert_eq!(value.fract(), Decimal::ZERO, "{kwh} kWh is not a whole number of mWh");
    i64::try_from(value).unwrap()
}

fn kwh_text(milli_wh: i64) -> String {
    Decimal::new(milli_wh, 6).to_string()
}

#[derive(Clone, Copy)]
struct Hour {
    start: Timestamp,
    local_date: Date,
    local_hour: i16,
    offset_seconds: i32,
    milli_wh: i64,
}

/// Half-hours summed per hour. Europe/London's local hours start on UTC hours, so the
/// UTC hour is the bucket; date, hour and offset are read on the local clock.
fn hours_of(half_hours: &BTreeMap<Timestamp, Decimal>) -> Vec<Hour> {
    let tz = TimeZone::get(LONDON).unwrap();
    let mut sums: BTreeMap<Timestamp, Decimal> = BTreeMap::new();
    for (at, kwh) in half_hours {
        let hour = Timestamp::from_second(at.as_second() - at.as_second().rem_euclid(3600)).unwrap();
        *sums.entry(hour).or_default() += kwh;
    }
    sums.into_iter()
        .map(|(start, kwh)| {
            let local = start.to_zoned(tz.clone());
            Hour {
                start,
                local_date: local.date(),
                local_hour: i16::from(local.hour()),
                offset_seconds: local.offset().seconds(),
                milli_wh: milli_wh(kwh),
            }
        })
        .collect()
}

struct Fixture {
    /// 2013-01-01 (24 h), 2012-10-28 (25 h, clocks back), 2013-03-31 (23 h, clocks forward).
    hours: Vec<Hour>,
    /// Half-hours of 2013-01-01, the day stored as raw readings.
    january: BTreeMap<Timestamp, Decimal>,
}

fn fixture() -> Fixture {
    let january = half_hours("lcl_halfhourly_2013-01_10households.csv", DEVICE, &["2013-01-01 "]);
    assert_eq!(january.len(), 48);
    let raw = half_hours(
        "lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv",
        DEVICE,
        &["2012-10-27 23:", "2012-10-28 ", "2013-03-31 "],
    );
    let mut hours = hours_of(&january);
    hours.extend(hours_of(&raw));
    let days =
        [jiff::civil::date(2012, 10, 28), jiff::civil::date(2013, 1, 1), jiff::civil::date(2013, 3, 31)];
    // Only whole local days: the raw extract starts an hour early for 2012-10-28.
    hours.retain(|h| days.contains(&h.local_date));
    hours.sort_by_key(|h| h.start);
    Fixture { hours, january }
}

async fn insert_devices(db: &Db) {
    let client = db.pool.get().await.unwrap();
    let statement = "INSERT INTO devices (device_id, name, location, time_zone, lifecycle, tariff_id,
                         sanctioned_load_kw, firmware_version, online, status_changed_at,
                         first_seen_at, last_seen_at, newest_reading_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";
    let ts = |s: &str| s.parse::<Timestamp>().unwrap();
    client
        .execute(
            statement,
            &[
                &DEVICE,
                &Some("LCL household MAC000002"),
                &Some("London"),
                &LONDON,
                &"registered",
                &Some("uk-flat-2013"),
                &Some(Decimal::new(6_000, 3)),
                &Some("0.3.1"),
                &Some(true),
                &Some(ts("2012-10-12T00:30:00Z")),
                &Some(ts("2012-10-12T00:30:00Z")),
                &Some(ts("2013-04-01T00:00:05Z")),
                &Some(ts("2013-04-01T00:00:00Z")),
            ],
        )
        .await
        .unwrap();
    // A few more, bare, to page through: discovered meters with only a zone.
    for (id, zone) in [
        ("MAC000006", LONDON),
        ("MAC000010", LONDON),
        ("meter-001", "Asia/Kolkata"),
        ("meter-002", "Asia/Kolkata"),
    ] {
        client
            .execute("INSERT INTO devices (device_id, time_zone) VALUES ($1, $2)", &[&id, &zone])
            .await
            .unwrap();
    }
}

/// Readings at every half-hour boundary of 2013-01-01 (and the next midnight): the
/// counter is the running sum of the half-hours from 1000 kWh; power is the average of
/// the half hour that ends at the reading; voltage is UK nominal and current follows
/// from it at power factor 1 (the LCL data has neither).
async fn insert_readings(db: &Db, january: &BTreeMap<Timestamp, Decimal>) -> Vec<(Timestamp, i64)> {
    let client = db.pool.get().await.unwrap();
    let mut counter = Decimal::from(1_000);
    let mut previous = Decimal::ZERO;
    let mut written = Vec::new();
    let boundaries: Vec<Timestamp> =
        january.keys().copied().chain(std::iter::once("2013-01-02T00:00:00Z".parse().unwrap())).collect();
    for (index, at) in boundaries.iter().enumerate() {
        let power_w = previous * Decimal::from(2_000); // kWh per half hour → W
        let power_f: f64 = power_w.try_into().unwrap();
        // To the mA, the PZEM-004T's resolution.
        let current_a: f64 = (power_w / Decimal::from(230)).round_dp(3).try_into().unwrap();
        let counter_milli_wh = milli_wh(counter);
        let counter_kwh: f64 = counter.try_into().unwrap();
        let (class, counted) = if index == 0 { ("first", 0) } else { ("normal", milli_wh(previous)) };
        let received_at = *at + SignedDuration::from_secs(2);
        client
            .execute(
                "INSERT INTO readings (device_id, ts, meter_ts, received_at, voltage_v, current_a, power_w,
                     energy_kwh, counter_milli_wh, power_factor, frequency_hz, rssi, clock_unsynced, late,
                     too_late, counter_class, counted_milli_wh, kafka_partition, kafka_offset)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
                &[
                    &DEVICE,
                    at,
                    at,
                    &received_at,
                    &230.0_f64,
                    &current_a,
                    &power_f,
                    &counter_kwh,
                    &counter_milli_wh,
                    &1.0_f64,
                    &Some(50.0_f64),
                    &Some(-61_i32),
                    &false,
                    &(index == 3),
                    &false,
                    &class,
                    &counted,
                    &0_i32,
                    &(index as i64),
                ],
            )
            .await
            .unwrap();
        written.push((*at, counter_milli_wh));
        if let Some(kwh) = january.get(at) {
            counter += kwh;
            previous = *kwh;
        }
    }
    written
}

async fn insert_energy(db: &Db, hours: &[Hour]) {
    let client = db.pool.get().await.unwrap();
    let mut daily: BTreeMap<Date, i64> = BTreeMap::new();
    for hour in hours {
        client
            .execute(
                "INSERT INTO energy_hourly (device_id, bucket_start, bucket_end, local_date, local_hour,
                     utc_offset_seconds, energy_milli_wh)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &DEVICE,
                    &hour.start,
                    &(hour.start + 1.hour()),
                    &hour.local_date,
                    &hour.local_hour,
                    &hour.offset_seconds,
                    &hour.milli_wh,
                ],
            )
            .await
            .unwrap();
        *daily.entry(hour.local_date).or_default() += hour.milli_wh;
    }
    for (date, milli_wh) in daily {
        client
            .execute(
                "INSERT INTO energy_daily (device_id, local_date, energy_milli_wh) VALUES ($1, $2, $3)",
                &[&DEVICE, &date, &milli_wh],
            )
            .await
            .unwrap();
    }
}

async fn seeded(db: &Db) -> Fixture {
    let fixture = fixture();
    insert_devices(db).await;
    insert_readings(db, &fixture.january).await;
    insert_energy(db, &fixture.hours).await;
    fixture
}

// ---------------------------------------------------------------------------

const DEVICE_FIELDS: &str = "deviceId name location timeZone lifecycle online lastSeenAt newestReadingAt \
                             firmwareVersion tariffId sanctionedLoadKw firstSeenAt statusChangedAt";

#[tokio::test]
async fn devices_page_by_cursor_in_id_order() {
    with_db(|db| async move {
        insert_devices(&db).await;
        let query = format!(
            "query Devices($after: String) {{ devices(first: 2, after: $after) {{
                edges {{ cursor node {{ {DEVICE_FIELDS} }} }}
                pageInfo {{ hasNextPage hasPreviousPage endCursor }} }} }}"
        );
        let mut after = Value::Null;
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let data = db.data(&query, json!({ "after": after })).await;
            let page = &data["devices"];
            pages += 1;
            assert_eq!(page["pageInfo"]["hasPreviousPage"], json!(!after.is_null()));
            for edge in page["edges"].as_array().unwrap() {
                seen.push(edge["node"]["deviceId"].as_str().unwrap().to_owned());
            }
            if page["pageInfo"]["hasNextPage"] == json!(false) {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
            assert!(pages < 10, "pagination does not end");
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ["MAC000002", "MAC000006", "MAC000010", "meter-001", "meter-002"]);

        let all = db.data(&format!("{{ devices {{ nodes {{ {DEVICE_FIELDS} }} }} }}"), json!({})).await;
        let nodes = all["devices"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 5);
        assert_eq!(
            nodes[3],
            json!({
                "deviceId": "meter-001", "name": null, "location": null, "timeZone": "Asia/Kolkata",
                "lifecycle": "DISCOVERED", "online": null, "lastSeenAt": null, "newestReadingAt": null,
                "firmwareVersion": null, "tariffId": null, "sanctionedLoadKw": null, "firstSeenAt": null,
                "statusChangedAt": null,
            })
        );
        let empty =
            db.data("{ devices(first: 0) { edges { cursor } pageInfo { hasNextPage } } }", json!({})).await;
        assert_eq!(empty["devices"], json!({ "edges": [], "pageInfo": { "hasNextPage": true } }));
    })
    .await;
}

#[tokio::test]
async fn devices_search_by_id_name_or_location() {
    with_db(|db| async move {
        insert_devices(&db).await;
        // Ids and names with LIKE's wildcards in them: they must match only as characters.
        let client = db.pool.get().await.unwrap();
        for (id, name) in [("plant_7", Some("50% share")), ("plantx7", None), ("plant\\7", None)] {
            client
                .execute(
                    "INSERT INTO devices (device_id, name, time_zone) VALUES ($1, $2, 'Europe/London')",
                    &[&id, &name],
                )
                .await
                .unwrap();
        }
        let search = |search: Value, extra: &'static str| {
            let db = db.clone();
            async move {
                let query = format!(
                    "query Devices($search: String) {{ devices(search: $search{extra}) {{
                        totalCount nodes {{ deviceId }} pageInfo {{ hasNextPage endCursor }} }} }}"
                );
                let data = db.data(&query, json!({ "search": search })).await;
                let ids: Vec<String> = data["devices"]["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|node| node["deviceId"].as_str().unwrap().to_owned())
                    .collect();
                (data["devices"]["totalCount"].as_i64().unwrap(), ids)
            }
        };
        let ids = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

        // The id, ignoring case, anywhere in it.
        assert_eq!(search(json!("mac0000"), "").await, (3, ids(&["MAC000002", "MAC000006", "MAC000010"])));
        assert_eq!(search(json!("0010"), "").await, (1, ids(&["MAC000010"])));
        // The name and the location.
        assert_eq!(search(json!("HOUSEHOLD"), "").await, (1, ids(&["MAC000002"])));
        assert_eq!(search(json!("lond"), "").await, (1, ids(&["MAC000002"])));
        // Trimmed; blank is no filter.
        assert_eq!(search(json!("  meter-00 "), "").await, (2, ids(&["meter-001", "meter-002"])));
        assert_eq!(search(json!("   "), "").await.0, 8);
        assert_eq!(search(Value::Null, "").await.0, 8);
        // With the other filters.
        assert_eq!(search(json!("MAC"), ", lifecycle: REGISTERED").await, (1, ids(&["MAC000002"])));
        assert_eq!(
            search(json!("MAC"), ", lifecycle: DISCOVERED").await,
            (2, ids(&["MAC000006", "MAC000010"]))
        );
        assert_eq!(search(json!("MAC"), ", online: true").await, (1, ids(&["MAC000002"])));
        // `_`, `%` and `\` are characters, not wildcards.
        assert_eq!(search(json!("t_7"), "").await, (1, ids(&["plant_7"])));
        assert_eq!(search(json!("50%"), "").await, (1, ids(&["plant_7"])));
        assert_eq!(search(json!("%"), "").await, (1, ids(&["plant_7"])));
        assert_eq!(search(json!("t\\7"), "").await, (1, ids(&["plant\\7"])));
        // Text is a parameter, never SQL.
        assert_eq!(search(json!("x' OR '1'='1"), "").await, (0, vec![]));
        assert_eq!(search(json!("'; DROP TABLE devices; --"), "").await, (0, vec![]));

        // Pages with the same cursors: one at a time through the matches.
        let query = "query Devices($after: String) { devices(first: 1, after: $after, search: \"mac\") {
            nodes { deviceId } pageInfo { hasNextPage endCursor } } }";
        let (mut after, mut seen) = (Value::Null, Vec::new());
        loop {
            let data = db.data(query, json!({ "after": after })).await;
            seen.extend(data["devices"]["nodes"].as_array().unwrap().iter().map(|n| n["deviceId"].clone()));
            if data["devices"]["pageInfo"]["hasNextPage"] == json!(false) {
                break;
            }
            after = data["devices"]["pageInfo"]["endCursor"].clone();
            assert!(seen.len() < 10, "pagination does not end");
        }
        assert_eq!(seen, [json!("MAC000002"), json!("MAC000006"), json!("MAC000010")]);

        // Too long: refused, naming the argument.
        let long = "m".repeat(101);
        let body = db
            .post(json!({
                "query": "query($s: String) { devices(search: $s) { totalCount } }",
                "variables": { "s": long },
            }))
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["argument"], "search", "{body}");
        assert_eq!(search(json!("m".repeat(100)), "").await, (0, vec![]));
    })
    .await;
}

#[tokio::test]
async fn device_by_id_and_not_found() {
    with_db(|db| async move {
        insert_devices(&db).await;
        let data = db
            .data(
                &format!("query Device($id: String!) {{ device(deviceId: $id) {{ {DEVICE_FIELDS} }} }}"),
                json!({ "id": DEVICE }),
            )
            .await;
        assert_eq!(
            data["device"],
            json!({
                "deviceId": "MAC000002", "name": "LCL household MAC000002", "location": "London",
                "timeZone": "Europe/London", "lifecycle": "REGISTERED", "online": true,
                "lastSeenAt": "2013-04-01T00:00:05Z", "newestReadingAt": "2013-04-01T00:00:00Z",
                "firmwareVersion": "0.3.1", "tariffId": "uk-flat-2013", "sanctionedLoadKw": "6.000",
                "firstSeenAt": "2012-10-12T00:30:00Z", "statusChangedAt": "2012-10-12T00:30:00Z",
            })
        );
        let body = db.post(json!({ "query": r#"{ device(deviceId: "MAC999999") { deviceId } }"# })).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "NOT_FOUND", "{body}");
        assert!(body["data"]["device"].is_null());
    })
    .await;
}

#[tokio::test]
async fn readings_in_half_open_range_ordered_by_ts() {
    with_db(|db| async move {
        let fixture = fixture();
        insert_devices(&db).await;
        let written = insert_readings(&db, &fixture.january).await;
        assert_eq!(written.len(), 49);

        let query = "query Readings($from: DateTime!, $to: DateTime!, $limit: Int) {
            readings(deviceId: \"MAC000002\", from: $from, to: $to, limit: $limit) {
                ts meterTs receivedAt voltage current powerW energyKwh counterKwh countedKwh powerFactor
                frequencyHz rssi flags { clockUnsynced late tooLate quarantined counterClass } } }";
        // [from, to): the reading at the next midnight is outside.
        let day = json!({ "from": "2013-01-01T00:00:00Z", "to": "2013-01-02T00:00:00Z", "limit": 10000 });
        let data = db.data(query, day).await;
        let readings = data["readings"].as_array().unwrap();
        assert_eq!(readings.len(), 48);
        for (reading, (at, counter_milli_wh)) in readings.iter().zip(&written) {
            assert_eq!(reading["ts"], at.to_string());
            assert_eq!(reading["counterKwh"], kwh_text(*counter_milli_wh));
        }
        assert_eq!(
            readings[1],
            json!({
                "ts": "2013-01-01T00:30:00Z", "meterTs": "2013-01-01T00:30:00Z",
                "receivedAt": "2013-01-01T00:30:02Z", "voltage": 230.0, "current": 1.904,
                "powerW": 438.0, "energyKwh": 1000.219, "counterKwh": "1000.219000",
                "countedKwh": "0.219000", "powerFactor": 1.0, "frequencyHz": 50.0, "rssi": -61,
                "flags": { "clockUnsynced": false, "late": false, "tooLate": false, "quarantined": false,
                           "counterClass": "normal" },
            })
        );
        assert_eq!(readings[0]["flags"]["counterClass"], "first");
        assert_eq!(readings[3]["flags"]["late"], true);

        let limited = db
            .data(query, json!({ "from": "2013-01-01T12:00:00+01:00", "to": "2013-01-02T00:00:01Z", "limit": 5 }))
            .await;
        let ts: Vec<&str> = limited["readings"].as_array().unwrap().iter().map(|r| r["ts"].as_str().unwrap()).collect();
        assert_eq!(ts, ["2013-01-01T11:00:00Z", "2013-01-01T11:30:00Z", "2013-01-01T12:00:00Z", "2013-01-01T12:30:00Z", "2013-01-01T13:00:00Z"]);
        let unknown = db
            .data(r#"{ readings(deviceId: "MAC999999", from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z") { ts } }"#, json!({}))
            .await;
        assert_eq!(unknown["readings"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn hourly_energy_is_exact_and_local() {
    with_db(|db| async move {
        let fixture = seeded(&db).await;
        let query = "query HourlyEnergy($from: DateTime!, $to: DateTime!) {
            hourlyEnergy(deviceId: \"MAC000002\", from: $from, to: $to) {
                bucketStart bucketEnd localDate localHour utcOffsetSeconds energyKwh energyWh } }";

        // New Year's Day: GMT, 24 hours, each the sum of its two half-hours.
        let data =
            db.data(query, json!({ "from": "2013-01-01T00:00:00Z", "to": "2013-01-02T00:00:00Z" })).await;
        let rows = data["hourlyEnergy"].as_array().unwrap();
        assert_eq!(rows.len(), 24);
        assert_eq!(
            rows[0],
            json!({
                "bucketStart": "2013-01-01T00:00:00Z", "bucketEnd": "2013-01-01T01:00:00Z",
                "localDate": "2013-01-01", "localHour": 0, "utcOffsetSeconds": 0,
                // 0.219 + 0.241 from the CSV.
                "energyKwh": "0.460000", "energyWh": "460.000",
            })
        );
        let expected: Vec<&Hour> =
            fixture.hours.iter().filter(|h| h.local_date == jiff::civil::date(2013, 1, 1)).collect();
        for (row, hour) in rows.iter().zip(expected) {
            assert_eq!(row["bucketStart"], hour.start.to_string());
            assert_eq!(row["localHour"], hour.local_hour);
            assert_eq!(row["energyKwh"], kwh_text(hour.milli_wh));
        }

        // Clocks go forward on 2013-03-31 at 01:00 GMT: local hour 1 does not exist.
        let data =
            db.data(query, json!({ "from": "2013-03-31T00:00:00Z", "to": "2013-03-31T23:00:00Z" })).await;
        let rows = data["hourlyEnergy"].as_array().unwrap();
        assert_eq!(rows.len(), 23);
        let local_hours: Vec<i64> = rows.iter().map(|r| r["localHour"].as_i64().unwrap()).collect();
        assert_eq!(local_hours, [0].into_iter().chain(2..=23).collect::<Vec<_>>());
        assert_eq!(rows[0]["utcOffsetSeconds"], 0);
        assert_eq!(rows[1]["utcOffsetSeconds"], 3600);
        assert_eq!(rows[1]["bucketStart"], "2013-03-31T01:00:00Z");
        assert!(rows.iter().all(|r| r["localDate"] == "2013-03-31"));
        // 0.135 + 0.083 from the raw file, the first BST hour.
        assert_eq!(rows[1]["energyKwh"], "0.218000");

        // [from, to) on bucket_start, offsets in the arguments allowed.
        let data = db
            .data(query, json!({ "from": "2013-01-01T05:00:00+05:00", "to": "2013-01-01T02:00:00Z" }))
            .await;
        let starts: Vec<&str> = data["hourlyEnergy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["bucketStart"].as_str().unwrap())
            .collect();
        assert_eq!(starts, ["2013-01-01T00:00:00Z", "2013-01-01T01:00:00Z"]);
    })
    .await;
}

#[tokio::test]
async fn daily_energy_is_the_exact_sum_with_dst_hours() {
    with_db(|db| async move {
        let fixture = seeded(&db).await;
        let data = db
            .data(
                "query DailyEnergy { dailyEnergy(deviceId: \"MAC000002\", fromDate: \"2012-10-28\", toDate: \"2013-03-31\") {
                    localDate energyKwh energyWh hours } }",
                json!({}),
            )
            .await;
        let rows = data["dailyEnergy"].as_array().unwrap();
        let dates: Vec<&str> = rows.iter().map(|r| r["localDate"].as_str().unwrap()).collect();
        assert_eq!(dates, ["2012-10-28", "2013-01-01", "2013-03-31"]);
        let hours: Vec<i64> = rows.iter().map(|r| r["hours"].as_i64().unwrap()).collect();
        assert_eq!(hours, [25, 24, 23]);

        // The exact decimal sum of the CSV's half-hours of each local day.
        let tz = TimeZone::get(LONDON).unwrap();
        for row in rows {
            let date: Date = row["localDate"].as_str().unwrap().parse().unwrap();
            let start = date.to_zoned(tz.clone()).unwrap().timestamp();
            let end = date.tomorrow().unwrap().to_zoned(tz.clone()).unwrap().timestamp();
            let file = if date == jiff::civil::date(2013, 1, 1) {
                "lcl_halfhourly_2013-01_10households.csv"
            } else {
                "lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv"
            };
            let utc_days = [start.to_string()[..10].to_owned() + " ", date.to_string() + " "];
            let halves = half_hours(file, DEVICE, &[&utc_days[0], &utc_days[1]]);
            let sum: Decimal = halves.range(start..end).map(|(_, kwh)| *kwh).sum();
            let served: Decimal = row["energyKwh"].as_str().unwrap().parse().unwrap();
            assert_eq!(served, sum, "{date}");
            assert_eq!(row["energyKwh"].as_str().unwrap(), kwh_text(milli_wh(sum)));
            let hourly_sum: i64 = fixture.hours.iter().filter(|h| h.local_date == date).map(|h| h.milli_wh).sum();
            assert_eq!(row["energyWh"].as_str().unwrap(), Decimal::new(hourly_sum, 3).to_string());
        }
        // A one-day range, and one with no days.
        let one = db
            .data(r#"{ dailyEnergy(deviceId: "MAC000002", fromDate: "2013-01-01", toDate: "2013-01-01") { localDate } }"#, json!({}))
            .await;
        assert_eq!(one["dailyEnergy"], json!([{ "localDate": "2013-01-01" }]));
        let none = db
            .data(r#"{ dailyEnergy(deviceId: "MAC000002", fromDate: "2013-01-02", toDate: "2013-03-30") { localDate } }"#, json!({}))
            .await;
        assert_eq!(none["dailyEnergy"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn bad_arguments_have_codes() {
    with_db(|db| async move {
        seeded(&db).await;
        let cases = [
            (r#"{ device(deviceId: "MAC999999") { deviceId } }"#, "NOT_FOUND"),
            (r#"{ device(deviceId: "bad/id") { deviceId } }"#, "BAD_USER_INPUT"),
            (r#"{ readings(deviceId: "MAC000002", from: "2013-01-02T00:00:00Z", to: "2013-01-01T00:00:00Z") { ts } }"#, "BAD_USER_INPUT"),
            (r#"{ readings(deviceId: "MAC000002", from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z", limit: 0) { ts } }"#, "BAD_USER_INPUT"),
            (r#"{ readings(deviceId: "MAC000002", from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z", limit: 100001) { ts } }"#, "BAD_USER_INPUT"),
            (r#"{ readings(deviceId: "MAC000002", from: "2013-01-01", to: "2013-01-02T00:00:00Z") { ts } }"#, "BAD_USER_INPUT"),
            (r#"{ hourlyEnergy(deviceId: "MAC000002", from: "2012-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z") { energyKwh } }"#, "BAD_USER_INPUT"),
            (r#"{ hourlyEnergy(deviceId: "MAC000002", from: "2013-01-01T00:00:00Z", to: "2013-01-01T00:00:00Z") { energyKwh } }"#, "BAD_USER_INPUT"),
            (r#"{ dailyEnergy(deviceId: "MAC000002", fromDate: "2013-03-31", toDate: "2013-01-01") { hours } }"#, "BAD_USER_INPUT"),
            (r#"{ dailyEnergy(deviceId: "MAC000002", fromDate: "2013-1-1", toDate: "2013-01-31") { hours } }"#, "BAD_USER_INPUT"),
            (r#"{ devices(first: 5000) { nodes { deviceId } } }"#, "BAD_USER_INPUT"),
            (r#"{ devices(after: "!!") { nodes { deviceId } } }"#, "BAD_USER_INPUT"),
            (r#"{ devices { nodes { nosuch } } }"#, "GRAPHQL_VALIDATION_FAILED"),
            (r#"{ devices { "#, "GRAPHQL_PARSE_FAILED"),
        ];
        for (query, code) in cases {
            assert_eq!(db.error_code(query, json!({})).await, code, "{query}");
        }
        // 366 days exactly is allowed.
        db.data(r#"{ hourlyEnergy(deviceId: "MAC000002", from: "2012-01-01T00:00:00Z", to: "2013-01-01T00:00:00Z") { energyKwh } }"#, json!({}))
            .await;
    })
    .await;
}

#[tokio::test]
async fn health_checks_postgres_and_metrics_show_the_pool() {
    with_db(|db| async move {
        let (status, _) = db.get("/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "postgres is unknown before the first check");

        let shutdown = CancellationToken::new();
        let health: Health = db.state.health.clone();
        let watch = tokio::spawn(ops::watch_postgres(Store::new(db.pool.clone()), health, shutdown.clone()));
        // The live consumer flips `kafka` (reading the local stack's topics from their
        // ends, committing nothing).
        let options = ApiOptions::local_defaults();
        let live = tokio::spawn(smartmeter_query_api::live::consume(
            options.brokers.clone(),
            options.live_topics(),
            db.state.api.feeds.clone(),
            db.state.health.clone(),
            shutdown.clone(),
        ));
        let mut status = StatusCode::SERVICE_UNAVAILABLE;
        for _ in 0..300 {
            let (now, body) = db.get("/health").await;
            status = now;
            if status == StatusCode::OK {
                let report: Value = serde_json::from_str(&body).unwrap();
                assert_eq!(report["status"], "ok");
                assert_eq!(report["components"]["postgres"]["state"], "up");
                assert_eq!(report["components"]["kafka"]["state"], "up");
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(status, StatusCode::OK);
        shutdown.cancel();
        watch.await.unwrap();
        live.await.unwrap();

        db.data("query Devices { devices { nodes { deviceId } } }", json!({})).await;
        let (status, metrics) = db.get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(metrics.contains(r#"smartmeter_graphql_requests_total{operation="Devices"} 1"#), "{metrics}");
        let open: i64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("smartmeter_db_pool_connections "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no pool gauge in {metrics}"));
        assert!((1..=4).contains(&open), "{open}");
        assert!(metrics.contains("smartmeter_db_pool_max_connections 4"));
    })
    .await;
}
