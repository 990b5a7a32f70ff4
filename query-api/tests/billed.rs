//! The query API over a real, billed month: the ten London households of January 2013
//! (`shared/data`) rolled up by the processor and priced by the billing worker's code
//! (`common::billed_london_january`), served by a query API of the test's own with its
//! own Kafka topics (`support::Stack`).
//!
//! - Roles: what each of admin, operator and customer is refused, over GraphQL, REST,
//!   the PDF route and WebSocket.
//! - Billing: periods, invoices, revisions, PDF links, energy per month and series
//!   against the CSV, counter events (a reset), the bill projection, the seed's REST.
//! - Subscriptions over both WebSocket protocols, fed only by Kafka events: the
//!   database does not change while the projection moves.

mod common;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use smartmeter_core::billing::events::InvoiceEvent;
use smartmeter_core::device_events::{DeviceEvent, DeviceStatusChanged, StatusReason};
use smartmeter_core::telemetry::{telemetry_topic, validate, ValidationConfig};
use smartmeter_core::DeviceId;
use support::{Stack, DEV_KEY};

fn dec(value: &Value) -> Decimal {
    value.as_str().unwrap_or_else(|| panic!("a decimal string, not {value}")).parse().unwrap()
}

/// Half-hour energy (mWh) of `household` by slot start, read from the CSV without the
/// simulator (float32 renderings rounded to the Wh they show).
fn csv_half_hours(household: &str) -> BTreeMap<Timestamp, i64> {
    let text = std::fs::read_to_string(common::LONDON_JANUARY).unwrap();
    let mut slots = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 3 || fields[0] != household || fields[2] == "Null" {
            continue;
        }
        let start: Timestamp = format!("{}Z", fields[1].replace(' ', "T")).parse().unwrap();
        let kwh: Decimal = fields[2].parse().unwrap();
        slots.insert(start, i64::try_from(kwh.round_dp(3) * Decimal::from(1_000_000)).unwrap());
    }
    slots
}

fn kwh(milli_wh: i64) -> Decimal {
    Decimal::new(milli_wh, 6)
}

/// A reading as the bridge puts it on the telemetry topic: the seed payload validated.
fn telemetry(device: &str, at: &str, counter_kwh: Decimal, power_w: f64) -> String {
    let device = DeviceId::parse(device).unwrap();
    let payload = json!({
        "device_id": device.as_str(), "timestamp": at, "voltage": 240.1, "current": power_w / 240.1,
        "power_w": power_w, "energy_kwh": counter_kwh.to_string().parse::<f64>().unwrap(),
        "power_factor": 0.97, "rssi": -58,
    });
    let config =
        ValidationConfig { clock_floor: "2000-01-01T00:00:00Z".parse().unwrap(), ..Default::default() };
    let reading =
        validate(&telemetry_topic(&device), payload.to_string().as_bytes(), Timestamp::now(), &config)
            .expect("a valid reading");
    serde_json::to_string(&reading).unwrap()
}

async fn forbidden(stack: &Stack, token: &str, query: &str, variables: Value) {
    let (code, _, _) = stack.error(token, query, variables.clone()).await;
    assert_eq!(code, "FORBIDDEN", "{query} {variables}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_role_is_refused_what_it_may_not_see_or_do() {
    let world = common::billed_london_january().await;
    let p = world.prefix.clone();
    let stack = Stack::serve(world.db, support::Topics::create("roles").await, None).await;
    let (a1, a2, b1) = (format!("{p}MAC000002"), format!("{p}MAC000006"), format!("{p}MAC000010"));

    // Customers own meters through devices.customer_id (the processor sets it from
    // DeviceRegistered.customer_id; set here directly as the test's fixture).
    stack.create_customer("cust-a", "Household A").await;
    stack.create_customer("cust-b", "Household B").await;
    let db = support::sql(&stack.db.url).await;
    db.execute(
        "UPDATE devices SET customer_id = 'cust-a' WHERE device_id = $1 OR device_id = $2",
        &[&a1, &a2],
    )
    .await
    .unwrap();
    db.execute("UPDATE devices SET customer_id = 'cust-b' WHERE device_id = $1", &[&b1]).await.unwrap();

    let admin = stack.key("alice", "ADMIN", None).await;
    let operator = stack.key("oscar", "OPERATOR", None).await;
    let carol = stack.key("carol", "CUSTOMER", Some("cust-a")).await;
    let bob = stack.key("bob", "CUSTOMER", Some("cust-b")).await;

    // No key, a wrong key: refused before anything runs.
    for token in [None, Some("smk_0123456789abcdef_notavalidsecretnotavalidsecretnotavalid12")] {
        let (status, body) = stack.graphql(token, "{ devices { totalCount } }", json!({})).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
        let (status, body) = stack.get(token, "/api/devices").await;
        assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHENTICATED")), "{body}");
    }

    // A customer sees its own meters only.
    let mine = stack
        .data(
            &carol,
            "{ me { role customerId } devices { totalCount nodes { deviceId customerId } } }",
            json!({}),
        )
        .await;
    assert_eq!(mine["me"], json!({ "role": "CUSTOMER", "customerId": "cust-a" }));
    assert_eq!(mine["devices"]["totalCount"], 2);
    let ids: Vec<&str> = mine["devices"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [a1.as_str(), a2.as_str()]);
    let all = stack.data(&operator, "{ devices { totalCount } }", json!({})).await;
    assert_eq!(all["devices"]["totalCount"], 10, "staff see the whole fleet");
    // A search does not widen it: another household's id finds nothing, a text all ids
    // share finds the customer's own two.
    let search = "query($s: String) { devices(search: $s) { totalCount nodes { deviceId } } }";
    let found = stack.data(&carol, search, json!({ "s": b1 })).await;
    assert_eq!(found["devices"], json!({ "totalCount": 0, "nodes": [] }));
    let found = stack.data(&carol, search, json!({ "s": "mac0000" })).await;
    assert_eq!(found["devices"]["totalCount"], 2, "{found}");
    let found = stack.data(&operator, search, json!({ "s": "mac0000" })).await;
    assert_eq!(found["devices"]["totalCount"], 10, "{found}");
    let found = stack.data(&operator, search, json!({ "s": b1 })).await;
    assert_eq!(found["devices"]["nodes"], json!([{ "deviceId": b1 }]));
    let (status, rest) = stack.get(Some(&carol), "/api/devices").await;
    assert_eq!((status, rest["count"].as_i64()), (200, Some(2)), "{rest}");

    let other = json!({ "id": b1 });
    for query in [
        "query($id: String!) { device(deviceId: $id) { deviceId } }",
        "query($id: String!) { latestReading(deviceId: $id) { ts } }",
        r#"query($id: String!) { readings(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z") { ts } }"#,
        r#"query($id: String!) { readingSeries(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z") { bucketSeconds } }"#,
        r#"query($id: String!) { hourlyEnergy(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z") { energyKwh } }"#,
        r#"query($id: String!) { dailyEnergy(deviceId: $id, fromDate: "2013-01-01", toDate: "2013-01-31") { energyKwh } }"#,
        r#"query($id: String!) { monthlyEnergy(deviceId: $id, fromMonth: "2013-01", toMonth: "2013-01") { energyKwh } }"#,
        r#"query($id: String!) { counterEvents(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-02-01T00:00:00Z") { kind } }"#,
        r#"query($id: String!) { quarantinedReadings(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-02-01T00:00:00Z") { quarantinedKwh } }"#,
        r#"query($id: String!) { billingPeriods(deviceId: $id, fromMonth: "2013-01", toMonth: "2013-01") { month } }"#,
        "query($id: String!) { tariffAssignments(deviceId: $id) { tariffId } }",
        "query($id: String!) { billProjection(deviceId: $id) { projectedTotal } }",
        "query($id: String!) { invoices(deviceId: $id) { nodes { invoiceNumber } } }",
    ] {
        forbidden(&stack, &carol, query, other.clone()).await;
    }
    // An unknown device is refused alike: nothing leaks about other meters.
    forbidden(&stack, &carol, "{ device(deviceId: \"MAC999999\") { deviceId } }", json!({})).await;
    let own = stack
        .data(
            &carol,
            "query($id: String!) { device(deviceId: $id) { deviceId customerName } }",
            json!({ "id": a1 }),
        )
        .await;
    assert_eq!(own["device"], json!({ "deviceId": a1, "customerName": "Household A" }));

    // Invoices: a customer lists its own; another's number is refused.
    let invoices = stack.data(&carol, "{ invoices { nodes { invoiceNumber deviceId } } }", json!({})).await;
    let numbers: Vec<&str> = invoices["invoices"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["invoiceNumber"].as_str().unwrap())
        .collect();
    // Newest month first: February (closed for silent meters, nothing used) and January.
    assert_eq!(
        numbers,
        [
            format!("INV-{a2}-201302"),
            format!("INV-{a1}-201302"),
            format!("INV-{a2}-201301"),
            format!("INV-{a1}-201301")
        ]
    );
    let theirs = format!("INV-{b1}-201301");
    forbidden(
        &stack,
        &carol,
        "query($n: String!) { invoice(invoiceNumber: $n) { total } }",
        json!({ "n": theirs }),
    )
    .await;
    forbidden(&stack, &carol, "{ invoice(invoiceNumber: \"INV-nope-201301\") { total } }", json!({})).await;
    let bobs = stack
        .data(
            &bob,
            "query($n: String!) { invoice(invoiceNumber: $n) { total pdfUrl } }",
            json!({ "n": theirs }),
        )
        .await;
    assert!(dec(&bobs["invoice"]["total"]) > Decimal::ZERO);

    // Staff-only reads and every mutation are refused to customers.
    for query in [
        "{ deadLetters { retained } }",
        "{ rejects(kind: BILLING) { reason } }",
        "{ replayJobs { jobId } }",
        "{ replayJob(jobId: 1) { jobId } }",
        "{ customers { customerId } }",
        "{ apiKeys { keyId } }",
        "mutation { registerDevice(input: { deviceId: \"m-new\", timeZone: \"Europe/London\" }) { eventId } }",
        "mutation { updateDevice(input: { deviceId: \"m-new\", name: \"x\" }) { eventId } }",
        "mutation { decommissionDevice(deviceId: \"m-new\") { eventId } }",
        "mutation { assignTariff(input: { deviceId: \"m-new\", tariffId: \"t\", effectiveFrom: \"2013-01-01\" }) { eventId } }",
        "mutation { publishTariffVersion(document: {}) { eventId } }",
        "mutation { startBillingReplay(fromMonth: \"2013-01\") { jobId } }",
        "mutation { createCustomer(customerId: \"c\", name: \"c\") { customerId } }",
        "mutation { createApiKey(userName: \"x\", role: ADMIN) { token } }",
        "mutation { revokeApiKey(keyId: \"x\") { keyId } }",
    ] {
        forbidden(&stack, &carol, query, json!({})).await;
    }
    // Tariffs are published prices: every role reads them.
    let tariffs = stack.data(&carol, "{ tariffs { tariffId latestVersion { version } } }", json!({})).await;
    assert_eq!(tariffs["tariffs"][0]["tariffId"], common::replay_tariff().tariff_id);

    // The operator runs the fleet but neither publishes prices nor manages access.
    for query in [
        "mutation { publishTariffVersion(document: {}) { eventId } }",
        "mutation { createCustomer(customerId: \"c\", name: \"c\") { customerId } }",
        "mutation { createApiKey(userName: \"x\", role: ADMIN) { token } }",
        "mutation { revokeApiKey(keyId: \"x\") { keyId } }",
        "{ apiKeys { keyId } }",
    ] {
        forbidden(&stack, &operator, query, json!({})).await;
    }
    let job = stack
        .data(&operator, "mutation { startBillingReplay(fromMonth: \"2013-01\", toMonth: \"2013-01\") { jobId status requestedBy } }", json!({}))
        .await;
    assert_eq!(job["startBillingReplay"]["status"], "REQUESTED");
    assert_eq!(job["startBillingReplay"]["requestedBy"], "oscar");
    let dead = stack
        .data(
            &operator,
            "{ deadLetters { retained items { reason } } customers { customerId devices } }",
            json!({}),
        )
        .await;
    assert_eq!(dead["deadLetters"]["retained"], 0);
    assert_eq!(
        dead["customers"],
        json!([{ "customerId": "cust-a", "devices": 2 }, { "customerId": "cust-b", "devices": 1 }])
    );

    // The admin lists keys without secrets.
    let keys = stack.data(&admin, "{ apiKeys { userName role customerId revokedAt } }", json!({})).await;
    let users: Vec<&str> =
        keys["apiKeys"].as_array().unwrap().iter().map(|k| k["userName"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "oscar", "carol", "bob"]);
    assert!(!keys.to_string().contains("smk_"), "no token in key lists");

    // REST and the PDF route follow the same rules.
    for path in [
        format!("/api/devices/{b1}/readings"),
        format!("/api/billing/{b1}?month=2013-01"),
        format!("/api/invoices/{theirs}"),
        format!("/api/invoices/{theirs}/pdf"),
        "/metrics".to_owned(),
    ] {
        let (status, body) = stack.get(Some(&carol), &path).await;
        assert_eq!((status, body["code"].as_str()), (403, Some("FORBIDDEN")), "{path}: {body}");
    }
    for (path, body) in [("/api/devices", json!({ "device_id": "m-new" })), ("/api/tariffs", json!({}))] {
        let (status, answer) = stack.post(Some(&carol), path, body).await;
        assert_eq!((status, answer["code"].as_str()), (403, Some("FORBIDDEN")), "{path}: {answer}");
    }
    let (status, _) = stack.get(Some(&operator), "/metrics").await;
    assert_eq!(status, 200);
    let own_pdf = stack
        .http
        .get(format!("{}/api/invoices/INV-{a1}-201301/pdf", stack.url))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap();
    assert_eq!(own_pdf.status(), 200);
    assert!(own_pdf.bytes().await.unwrap().starts_with(b"%PDF"));

    // Subscriptions: another's meter is refused when the subscription starts.
    let (mut ws, ack) = support::WsClient::connect(
        &stack.ws_url(),
        "graphql-transport-ws",
        json!({ "Authorization": format!("Bearer {carol}") }),
        None,
    )
    .await;
    assert_eq!(ack["type"], "connection_ack");
    ws.subscribe(
        "1",
        "subscription($id: String!) { liveReadings(deviceId: $id) { ts } }",
        json!({ "id": b1 }),
    )
    .await;
    let refused = ws.next().await;
    // The resolver's error arrives as a result with errors, then the subscription ends.
    assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    assert!(refused["payload"]["data"].is_null(), "{refused}");
    assert_eq!(ws.next().await["type"], "complete");
    ws.close().await;

    // A revoked key stops working (at once on the instance that revoked it).
    let keys = stack.data(&admin, "{ apiKeys { keyId userName } }", json!({})).await;
    let bobs_key =
        keys["apiKeys"].as_array().unwrap().iter().find(|k| k["userName"] == "bob").unwrap()["keyId"].clone();
    stack
        .data(
            &admin,
            "mutation($k: String!) { revokeApiKey(keyId: $k) { revokedAt } }",
            json!({ "k": bobs_key }),
        )
        .await;
    let (status, _) = stack.graphql(Some(&bob), "{ me { userName } }", json!({})).await;
    assert_eq!(status, 401);

    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn billing_energy_and_the_seed_rest_api_agree_with_the_csv() {
    let world = common::billed_london_january().await;
    let p = world.prefix.clone();
    let stack = Stack::serve(world.db, support::Topics::create("billing").await, None).await;
    let reset = format!("{p}{}", common::RESET_HOUSEHOLD);
    let plain = format!("{p}MAC000006");
    let unassigned = format!("{p}{}", common::UNASSIGNED_HOUSEHOLD);
    let csv: i64 = csv_half_hours("MAC000006").values().sum();
    let tariff = common::replay_tariff();

    // Energy per month is the sum of the days, equal to the CSV.
    let months = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { monthlyEnergy(deviceId: $id, fromMonth: "2012-12", toMonth: "2013-02") { month energyKwh energyWh daysWithData } }"#,
            json!({ "id": plain }),
        )
        .await;
    assert_eq!(
        months["monthlyEnergy"],
        json!([{ "month": "2013-01", "energyKwh": kwh(csv).to_string(), "energyWh": Decimal::new(csv, 3).to_string(), "daysWithData": 31 }])
    );

    // The January period is closed and invoiced; the invoice bills that energy.
    let periods = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { billingPeriods(deviceId: $id, fromMonth: "2013-01", toMonth: "2013-02") {
                 month status revision energyKwh readingCount coverage qualityFlags billingStatus billingTariffId
                 closingRead { at counterKwh }
                 invoice { invoiceNumber revision energyKwh total currency tariffId tariffVersions
                           lines { name quantity unit rate amount } parts { version energyKwh firstDay lastDay }
                           revisions { invoiceNumber } pdfUrl } } }"#,
            json!({ "id": plain }),
        )
        .await;
    let january = &periods["billingPeriods"][0];
    assert_eq!((january["month"].as_str(), january["status"].as_str()), (Some("2013-01"), Some("CLOSED")));
    assert_eq!(dec(&january["energyKwh"]), kwh(csv));
    assert_eq!(january["billingStatus"], "INVOICED");
    assert_eq!(january["billingTariffId"], tariff.tariff_id.as_str());
    let invoice = &january["invoice"];
    assert_eq!(invoice["invoiceNumber"], format!("INV-{plain}-201301"));
    assert_eq!(dec(&invoice["energyKwh"]), kwh(csv));
    assert_eq!(invoice["currency"], "GBP");
    let lines_total: Decimal = invoice["lines"].as_array().unwrap().iter().map(|l| dec(&l["amount"])).sum();
    assert_eq!(lines_total, dec(&invoice["total"]), "the lines add up to the total");
    assert_eq!(invoice["revisions"].as_array().unwrap().len(), 1);
    // The same total as core's pricing of the CSV's energy with the tariff.
    let expected = smartmeter_core::billing::price(
        &smartmeter_core::billing::Tariff::new(tariff.clone()).unwrap(),
        &smartmeter_core::billing::BillingPeriod::new(
            jiff::civil::date(2013, 1, 1),
            jiff::civil::date(2013, 1, 31),
            kwh(csv),
        ),
    )
    .unwrap();
    assert_eq!(dec(&invoice["total"]), expected.total);

    // The household without a tariff: closed, not billable, and says why.
    let unbilled = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { billingPeriods(deviceId: $id, fromMonth: "2013-01", toMonth: "2013-01") { status billingStatus billingReason invoice { total } } }"#,
            json!({ "id": unassigned }),
        )
        .await;
    assert_eq!(unbilled["billingPeriods"][0]["billingStatus"], "UNBILLABLE");
    assert!(
        unbilled["billingPeriods"][0]["billingReason"].as_str().unwrap().contains("tariff"),
        "{unbilled}"
    );
    assert!(unbilled["billingPeriods"][0]["invoice"].is_null());

    // The PDF: a signed link works without a key, a tampered one does not.
    let link = invoice["pdfUrl"].as_str().unwrap();
    let pdf = stack.http.get(format!("{}{link}", stack.url)).send().await.unwrap();
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.headers()["content-type"], "application/pdf");
    let bytes = pdf.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF"));
    let file = std::env::temp_dir()
        .join(format!("{}.pdf", smartmeter_core::service::testkit::unique_name("invoice")));
    std::fs::write(&file, &bytes).unwrap();
    let text = std::process::Command::new("pdftotext")
        .arg(&file)
        .arg("-")
        .output()
        .expect("pdftotext (poppler-utils)");
    std::fs::remove_file(&file).unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("INV-{plain}-201301")), "{text}");
    assert!(text.contains(&dec(&invoice["total"]).to_string()), "{text}");
    let tampered = link.replace("signature=", "signature=A");
    let (status, _) = stack.get(None, &tampered).await;
    assert_eq!(status, 401);

    // Counter events: the reset injected into MAC000002's real data.
    let events = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { counterEvents(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-02-01T00:00:00Z") { ts kind countedKwh } }"#,
            json!({ "id": reset }),
        )
        .await;
    let kinds: Vec<&str> =
        events["counterEvents"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reset"], "{events}");
    assert!(events["counterEvents"][0]["ts"].as_str().unwrap() > common::RESET_AT);
    let quarantined = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { quarantinedReadings(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-02-01T00:00:00Z") { quarantinedKwh } }"#,
            json!({ "id": reset }),
        )
        .await;
    assert_eq!(quarantined["quarantinedReadings"], json!([]), "real data has no impossible jump");

    // Downsampled series: hour buckets of New Year's Day; each holds the readings at
    // :00 and :30, and counts the two half-hours that end at them.
    let series = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { readingSeries(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-01-02T00:00:00Z", bucketSeconds: 3600) {
                 bucketSeconds points { bucketStart readings powerWMin powerWMax powerWAvg countedKwh } } }"#,
            json!({ "id": plain }),
        )
        .await;
    let points = series["readingSeries"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 24);
    let halves = csv_half_hours("MAC000006");
    let at = |s: &str| s.parse::<Timestamp>().unwrap();
    for point in points {
        let start = at(point["bucketStart"].as_str().unwrap());
        assert_eq!(point["readings"], 2, "{point}");
        let ending_here: i64 = [start - jiff::SignedDuration::from_mins(30), start]
            .iter()
            .filter_map(|slot| halves.get(slot))
            .sum();
        let first_of_day = start == at("2013-01-01T00:00:00Z");
        if !first_of_day {
            assert_eq!(dec(&point["countedKwh"]), kwh(ending_here), "{point}");
        }
        assert!(
            point["powerWMin"].as_f64() <= point["powerWAvg"].as_f64()
                && point["powerWAvg"].as_f64() <= point["powerWMax"].as_f64()
        );
    }
    let auto = stack
        .data(
            DEV_KEY,
            r#"query($id: String!) { readingSeries(deviceId: $id, from: "2013-01-01T00:00:00Z", to: "2013-02-01T00:00:00Z") { bucketSeconds points { readings } } }"#,
            json!({ "id": plain }),
        )
        .await;
    assert_eq!(auto["readingSeries"]["bucketSeconds"], 7200, "31 days in at most 500 buckets");
    let counted: i64 = auto["readingSeries"]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["readings"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, 1488, "every reading of January in some bucket");

    // The bill projection: the newest reading closes January at 1 February 00:00, so
    // the month in progress is February with nothing used yet; its bill is the
    // standing charge, as core prices an empty February.
    let projection = stack
        .data(
            DEV_KEY,
            "query($id: String!) { latestReading(deviceId: $id) { ts } billProjection(deviceId: $id) {
               month asOf energySoFarKwh projectedEnergyKwh elapsedShare projectedTotal currency tariffId lines { name amount } kwhToNextSlab } }",
            json!({ "id": plain }),
        )
        .await;
    assert_eq!(projection["latestReading"]["ts"], "2013-02-01T00:00:00Z");
    let bill = &projection["billProjection"];
    assert_eq!(
        (bill["month"].as_str(), bill["asOf"].as_str()),
        (Some("2013-02"), Some("2013-02-01T00:00:00Z"))
    );
    assert_eq!(dec(&bill["energySoFarKwh"]), Decimal::ZERO);
    assert_eq!(dec(&bill["projectedEnergyKwh"]), Decimal::ZERO);
    let empty_february = smartmeter_core::billing::price(
        &smartmeter_core::billing::Tariff::new(tariff.clone()).unwrap(),
        &smartmeter_core::billing::BillingPeriod::new(
            jiff::civil::date(2013, 2, 1),
            jiff::civil::date(2013, 2, 28),
            Decimal::ZERO,
        ),
    )
    .unwrap();
    assert_eq!(dec(&bill["projectedTotal"]), empty_february.total);
    assert!(bill["kwhToNextSlab"].is_null(), "a flat tariff has no slabs");
    let (code, _, _) = stack
        .error(
            DEV_KEY,
            "query($id: String!) { billProjection(deviceId: $id) { projectedTotal } }",
            json!({ "id": unassigned }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND", "no tariff, no projection");

    // The seed's REST API, from the same tables.
    let (status, devices) = stack.get(Some(DEV_KEY), "/api/devices").await;
    assert_eq!(status, 200);
    assert_eq!(devices["count"], 10);
    let device =
        devices["devices"].as_array().unwrap().iter().find(|d| d["device_id"] == json!(plain)).unwrap();
    assert_eq!(device["time_zone"], "Europe/London");
    assert!(device["last_seen"].is_string(), "{device}");

    let (status, readings) =
        stack.get(Some(DEV_KEY), &format!("/api/devices/{plain}/readings?limit=3")).await;
    assert_eq!(status, 200, "{readings}");
    assert_eq!(readings["count"], 3);
    let stamps: Vec<&str> =
        readings["readings"].as_array().unwrap().iter().map(|r| r["timestamp"].as_str().unwrap()).collect();
    assert_eq!(
        stamps,
        ["2013-02-01T00:00:00Z", "2013-01-31T23:30:00Z", "2013-01-31T23:00:00Z"],
        "newest first"
    );
    let first = &readings["readings"][0];
    for field in ["voltage", "current", "power_w", "energy_kwh", "power_factor"] {
        assert!(first[field].is_number(), "{field} in {first}");
    }
    let (_, window) = stack
        .get(Some(DEV_KEY), &format!("/api/devices/{plain}/readings?start=2013-01-01T00:00:00Z&end=2013-01-02T00:00:00Z&limit=1000"))
        .await;
    assert_eq!(window["count"], 48);
    let (status, bad) =
        stack.get(Some(DEV_KEY), &format!("/api/devices/{plain}/readings?start=yesterday")).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("BAD_USER_INPUT")));
    let (status, _) = stack.get(Some(DEV_KEY), "/api/devices/MAC999999/readings").await;
    assert_eq!(status, 404);

    let (status, billing) = stack.get(Some(DEV_KEY), &format!("/api/billing/{plain}?month=2013-01")).await;
    assert_eq!(status, 200, "{billing}");
    assert_eq!(billing["status"], "invoiced");
    assert_eq!(dec(&billing["amount"]), dec(&invoice["total"]));
    assert_eq!(dec(&billing["energy_kwh"]), kwh(csv));
    assert_eq!(billing["invoice"]["invoice_number"], format!("INV-{plain}-201301"));
    let (_, unbillable) = stack.get(Some(DEV_KEY), &format!("/api/billing/{unassigned}?month=2013-01")).await;
    assert_eq!(unbillable["status"], "unbillable", "{unbillable}");
    assert!(unbillable["amount"].is_null());
    // Without a month: the month in progress, February, which the worker closed and
    // invoiced for the silent meter at the standing charge the projection gave.
    let (_, current) = stack.get(Some(DEV_KEY), &format!("/api/billing/{plain}")).await;
    assert_eq!(
        (current["status"].as_str(), current["month"].as_str()),
        (Some("invoiced"), Some("2013-02")),
        "{current}"
    );
    assert_eq!(dec(&current["amount"]), empty_february.total);
    let (status, bad_month) = stack.get(Some(DEV_KEY), &format!("/api/billing/{plain}?month=2013-13")).await;
    assert_eq!((status, bad_month["code"].as_str()), (400, Some("BAD_USER_INPUT")));
    let (status, none) = stack.get(Some(DEV_KEY), &format!("/api/billing/{plain}?month=2012-06")).await;
    assert_eq!(status, 404, "{none}");

    let (status, rest_invoice) = stack.get(Some(DEV_KEY), &format!("/api/invoices/INV-{plain}-201301")).await;
    assert_eq!(status, 200);
    assert_eq!(dec(&rest_invoice["total"]), dec(&invoice["total"]));
    assert_eq!(rest_invoice["period"], json!({ "from": "2013-01-01", "to": "2013-01-31" }));
    assert_eq!(rest_invoice["lines"].as_array().unwrap().len(), invoice["lines"].as_array().unwrap().len());
    let (status, _) = stack.get(Some(DEV_KEY), "/api/invoices/INV-nope-201301").await;
    assert_eq!(status, 404);

    let (status, tariffs) = stack.get(Some(DEV_KEY), "/api/tariffs").await;
    assert_eq!(status, 200);
    assert_eq!(tariffs["count"], 1);
    assert_eq!(tariffs["tariffs"][0]["tariff_id"], tariff.tariff_id.as_str());
    assert_eq!(tariffs["tariffs"][0]["versions"], json!([tariff.version]));
    assert_eq!(tariffs["tariffs"][0]["document"]["currency"], "GBP");

    stack.finish().await;
}

/// Runs the subscription checks over `protocol`.
async fn subscriptions_over(
    stack: &Stack,
    protocol: &str,
    device: &str,
    other: &str,
    carol: &str,
    counter: Decimal,
) {
    let auth = json!({ "Authorization": format!("Bearer {DEV_KEY}") });
    let (mut ws, ack) = support::WsClient::connect(&stack.ws_url(), protocol, auth, None).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");

    // Live readings, straight from the telemetry topic: keep producing until the
    // subscription is in place, then check what arrives.
    ws.subscribe(
        "r",
        "subscription($id: String!) { liveReadings(deviceId: $id) { deviceId ts powerW counterKwh } }",
        json!({ "id": device }),
    )
    .await;
    let mut minute = 1;
    let first = loop {
        let at = format!("2013-02-01T00:{minute:02}:00Z");
        support::produce(&stack.topics.telemetry, other, &telemetry(other, &at, Decimal::from(5), 100.0))
            .await;
        support::produce(&stack.topics.telemetry, device, &telemetry(device, &at, counter, 0.0)).await;
        if let Some(message) = ws.next_for("r", Duration::from_millis(500)).await {
            break message;
        }
        minute += 1;
        assert!(minute < 40, "no live reading arrived");
    };
    let kind = if protocol == "graphql-transport-ws" { "next" } else { "data" };
    assert_eq!(first["type"], kind, "{first}");
    let reading = &first["payload"]["data"]["liveReadings"];
    assert_eq!(reading["deviceId"], device, "only the device asked for");
    assert_eq!(dec(&reading["counterKwh"]), counter);
    ws.stop("r").await;

    // Status changes, as the bridge and the processor publish them.
    ws.subscribe("s", "subscription { deviceStatusChanges { deviceId online status reason at } }", json!({}))
        .await;
    let mut second = 0;
    let change = loop {
        let event = DeviceEvent::StatusChanged(DeviceStatusChanged {
            device_id: DeviceId::parse(device).unwrap(),
            online: false,
            reason: StatusReason::LastWill,
            at: Timestamp::from_second(1_359_676_800 + second).unwrap(),
        });
        let envelope = event.to_envelope(format!("test-{second}"), "/bridge", Timestamp::now());
        support::produce(&stack.topics.device_events, device, &serde_json::to_string(&envelope).unwrap())
            .await;
        if let Some(message) = ws.next_for("s", Duration::from_millis(500)).await {
            break message;
        }
        second += 1;
        assert!(second < 40, "no status change arrived");
    };
    let change = &change["payload"]["data"]["deviceStatusChanges"];
    assert_eq!(change["deviceId"], device);
    assert_eq!(
        (change["online"].as_bool(), change["status"].as_str(), change["reason"].as_str()),
        (Some(false), Some("OFFLINE"), Some("last_will"))
    );
    ws.stop("s").await;

    // Invoices as the billing worker publishes them (its envelope, a real invoice).
    ws.subscribe(
        "i",
        "subscription($id: String) { invoicesIssued(deviceId: $id) { invoiceNumber total revision pdfUrl } }",
        json!({ "id": device }),
    )
    .await;
    let stored: InvoiceEvent = {
        let pool = smartmeter_core::service::db::pool(&stack.db.url, 1, "test").unwrap();
        smartmeter_query_api::store::Store::new(pool)
            .invoice(&format!("INV-{device}-201301"))
            .await
            .unwrap()
            .unwrap()
    };
    let envelope = serde_json::to_string(&smartmeter_billing_worker::invoice::envelope(&stored)).unwrap();
    let mut tries = 0;
    let issued = loop {
        support::produce(&stack.topics.invoices, device, &envelope).await;
        if let Some(message) = ws.next_for("i", Duration::from_millis(500)).await {
            break message;
        }
        tries += 1;
        assert!(tries < 40, "no invoice arrived");
    };
    let issued = &issued["payload"]["data"]["invoicesIssued"];
    assert_eq!(issued["invoiceNumber"], stored.invoice_number);
    assert_eq!(dec(&issued["total"]), stored.total);
    ws.stop("i").await;
    ws.close().await;

    // A customer's unfiltered status subscription carries its meters only.
    let (mut mine, ack) =
        support::WsClient::connect(&stack.ws_url(), protocol, json!({ "token": carol }), None).await;
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    mine.subscribe("c", "subscription { deviceStatusChanges { deviceId online } }", json!({})).await;
    let mut n = 0;
    let own = loop {
        for (id, online) in [(other, true), (device, true)] {
            let event = DeviceEvent::StatusChanged(DeviceStatusChanged {
                device_id: DeviceId::parse(id).unwrap(),
                online,
                reason: StatusReason::Birth,
                at: Timestamp::from_second(1_359_680_000 + n).unwrap(),
            });
            let envelope = event.to_envelope(format!("c-{id}-{n}"), "/bridge", Timestamp::now());
            support::produce(&stack.topics.device_events, id, &serde_json::to_string(&envelope).unwrap())
                .await;
        }
        if let Some(message) = mine.next_for("c", Duration::from_millis(500)).await {
            break message;
        }
        n += 1;
        assert!(n < 40, "no status change arrived for the customer");
    };
    assert_eq!(own["payload"]["data"]["deviceStatusChanges"]["deviceId"], device, "{own}");
    mine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_carry_the_pipelines_events_over_both_protocols() {
    let world = common::billed_london_january().await;
    let p = world.prefix.clone();
    let stack = Stack::serve(world.db, support::Topics::create("subs").await, None).await;
    let device = format!("{p}MAC000006");
    let other = format!("{p}MAC000010");
    stack.create_customer("cust-s", "Subscriber").await;
    let db = support::sql(&stack.db.url).await;
    db.execute("UPDATE devices SET customer_id = 'cust-s' WHERE device_id = $1", &[&device]).await.unwrap();
    let carol = stack.key("carol", "CUSTOMER", Some("cust-s")).await;
    let latest = stack
        .data(
            DEV_KEY,
            "query($id: String!) { latestReading(deviceId: $id) { counterKwh } }",
            json!({ "id": device }),
        )
        .await;
    let counter = dec(&latest["latestReading"]["counterKwh"]);

    for protocol in ["graphql-transport-ws", "graphql-ws"] {
        subscriptions_over(&stack, protocol, &device, &other, &carol, counter).await;
    }

    // A bad key ends the connection at init: graphql-transport-ws closes it,
    // graphql-ws answers connection_error.
    let (_, refused) = support::WsClient::connect(
        &stack.ws_url(),
        "graphql-transport-ws",
        json!({ "Authorization": "Bearer nope" }),
        None,
    )
    .await;
    assert_eq!(refused["type"], "close", "{refused}");
    assert!(refused["reason"].as_str().unwrap().contains("not valid"), "{refused}");
    let (_, refused) = support::WsClient::connect(&stack.ws_url(), "graphql-ws", json!({}), None).await;
    assert_eq!(refused["type"], "connection_error", "{refused}");
    // A key in the upgrade request's header works too.
    let (ws, ack) =
        support::WsClient::connect(&stack.ws_url(), "graphql-transport-ws", json!({}), Some(DEV_KEY)).await;
    assert_eq!(ack["type"], "connection_ack");
    ws.close().await;
    // `/graphql` itself upgrades too, for clients that use one URL for everything.
    let same_url = stack.ws_url().trim_end_matches("/ws").to_owned();
    let (ws, ack) =
        support::WsClient::connect(&same_url, "graphql-ws", json!({ "token": DEV_KEY }), None).await;
    assert_eq!(ack["type"], "connection_ack");
    ws.close().await;

    // The live bill projection: February starts empty; each reading on the telemetry
    // topic moves it, while the database stays as it was (no processor runs).
    let readings_before: i64 = db.query_one("SELECT count(*) FROM readings", &[]).await.unwrap().get(0);
    let auth = json!({ "Authorization": format!("Bearer {DEV_KEY}") });
    let (mut ws, _) = support::WsClient::connect(&stack.ws_url(), "graphql-transport-ws", auth, None).await;
    ws.subscribe(
        "b",
        "subscription($id: String!) { billProjection(deviceId: $id) { month asOf energySoFarKwh projectedEnergyKwh projectedTotal } }",
        json!({ "id": device }),
    )
    .await;
    let start = ws.next_data("b").await;
    assert_eq!(start["billProjection"]["month"], "2013-02");
    assert_eq!(dec(&start["billProjection"]["energySoFarKwh"]), Decimal::ZERO);
    // The first live reading: 0.5 kWh in the first 10 minutes of February (3 kW).
    // The subscription reads the counter baseline from the database at 00:00; the
    // readings produced above for 00:01.. moved it already: continue from there.
    let mut at_minute = 50;
    let mut added = Decimal::ZERO;
    let mut seen = None;
    while seen.is_none() {
        added += Decimal::new(5, 1);
        let at = format!("2013-02-01T00:{at_minute:02}:00Z");
        support::produce(&stack.topics.telemetry, &device, &telemetry(&device, &at, counter + added, 3000.0))
            .await;
        seen = ws.next_for("b", Duration::from_millis(800)).await;
        at_minute += 1;
        assert!(at_minute < 60, "no projection update arrived");
    }
    let update = seen.unwrap();
    assert_eq!(update["type"], "next", "{update}");
    let update = &update["payload"]["data"]["billProjection"];
    let as_of: Timestamp = update["asOf"].as_str().unwrap().parse().unwrap();
    let elapsed = as_of.duration_since("2013-02-01T00:00:00Z".parse().unwrap()).as_secs();
    let so_far = dec(&update["energySoFarKwh"]);
    assert!(so_far > Decimal::ZERO && so_far <= added, "{update}");
    // Projected = so far × the month's 28 days / the time elapsed, to the mWh.
    let expected = (so_far * Decimal::from(28 * 24 * 3600) / Decimal::from(elapsed)).round_dp(6);
    assert_eq!(dec(&update["projectedEnergyKwh"]), expected, "{update}");
    assert!(dec(&update["projectedTotal"]) > dec(&start["billProjection"]["projectedTotal"]));
    // What an operator sees meanwhile: the subscription open, the live consumer up and
    // reading, events published by nobody (the API published nothing here).
    let (status, metrics) = stack.get(Some(DEV_KEY), "/metrics").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    let value = |line: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {line} in\n{metrics}"))
    };
    assert_eq!(value(r#"smartmeter_graphql_subscriptions_open{subscription="bill_projection"}"#), 1.0);
    assert_eq!(
        value(r#"smartmeter_graphql_subscriptions_open{subscription="live_readings"}"#),
        0.0,
        "stopped ones are closed"
    );
    assert_eq!(value("smartmeter_query_api_live_consumer_up"), 1.0);
    assert!(value(r#"smartmeter_query_api_live_messages_total{topic="telemetry"}"#) >= 2.0);
    assert!(value(r#"smartmeter_query_api_live_messages_total{topic="invoices"}"#) >= 2.0);
    assert!(value("smartmeter_graphql_websocket_connections") >= 1.0);
    ws.close().await;
    let readings_after: i64 = db.query_one("SELECT count(*) FROM readings", &[]).await.unwrap().get(0);
    assert_eq!(
        readings_before, readings_after,
        "the database did not change: the projection came from Kafka"
    );

    stack.finish().await;
}
