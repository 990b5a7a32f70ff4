//! Commands become events, and the projections apply them: the query API of the test
//! (its own database and Kafka topics) with the processor and the billing worker
//! running in this process on the same database and topics. Mutations and the seed's
//! `POST` endpoints are validated with core's rules and refused whole, with the field,
//! before anything is published; what passes is on Kafka as CloudEvents and shows up
//! in the API once the processor and the worker have projected it. The tariffs are the
//! project's real ones (`core/tariffs`).

mod support;

use std::time::Duration;

use jiff::Timestamp;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use smartmeter_core::service::testkit;
use smartmeter_core::telemetry::{telemetry_topic, validate, DeadLetter, ValidationConfig};
use smartmeter_core::DeviceId;
use support::{Stack, DEV_KEY, WAIT};
use tokio_util::sync::CancellationToken;

const OFGEM: &str = include_str!("../../core/tariffs/ofgem_price_cap_2024q3.json");
const KSEB: &str = include_str!("../../core/tariffs/kseb_lt1_domestic_2019.json");

fn versions(json: &str) -> Vec<Value> {
    serde_json::from_str(json).unwrap()
}

fn dec(value: &Value) -> Decimal {
    value.as_str().unwrap_or_else(|| panic!("a decimal string, not {value}")).parse().unwrap()
}

const PUBLISH: &str = "mutation($doc: JSON!) { publishTariffVersion(document: $doc) {
    tariffId version eventId alreadyPublished event { topic key eventType } } }";

/// Records on `topic` now (all partitions).
async fn topic_len(topic: &str) -> i64 {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", testkit::kafka_brokers())
            .set("group.id", "query-api-test-len")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        metadata.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (low, high) = consumer.fetch_watermarks(&topic, p.id(), Duration::from_secs(10)).unwrap();
                high - low
            })
            .sum()
    })
    .await
    .unwrap()
}

/// Polls `query` until `done` holds for its data.
async fn eventually(
    stack: &Stack,
    token: &str,
    query: &str,
    variables: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = stack.graphql(Some(token), query, variables.clone()).await;
        if done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never reached: {query} → {body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The processor and the billing worker on the stack's database and topics.
fn projections(
    stack: &Stack,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let processor = smartmeter_processor::Config {
        brokers: testkit::kafka_brokers(),
        database_url: stack.db.url.clone(),
        group_id: testkit::unique_name("processor-commands"),
        topic: stack.topics.telemetry.clone(),
        device_events_topic: Some(stack.topics.device_events.clone()),
        billing_periods_topic: stack.topics.periods.clone(),
        default_time_zone: "Europe/London".into(),
        housekeeping_interval: Duration::from_millis(300),
        ..smartmeter_processor::Config::local_defaults()
    };
    let worker = smartmeter_billing_worker::Config {
        brokers: testkit::kafka_brokers(),
        database_url: stack.db.url.clone(),
        group_id: testkit::unique_name("billing-commands"),
        periods_topic: stack.topics.periods.clone(),
        tariffs_topic: stack.topics.tariff_events.clone(),
        invoices_topic: stack.topics.invoices.clone(),
        replay_poll_interval: Duration::from_millis(200),
        ..smartmeter_billing_worker::Config::local_defaults()
    };
    vec![
        tokio::spawn(smartmeter_processor::run_embedded(processor, shutdown.clone())),
        tokio::spawn(smartmeter_billing_worker::run_embedded(worker, shutdown.clone())),
    ]
}

/// A reading as the bridge puts it on the telemetry topic.
fn telemetry(device: &str, at: Timestamp, counter_kwh: f64) -> String {
    let device = DeviceId::parse(device).unwrap();
    let payload = json!({
        "device_id": device.as_str(), "timestamp": at.to_string(), "voltage": 231.0, "current": 4.1,
        "power_w": 930.0, "energy_kwh": counter_kwh, "power_factor": 0.98,
    });
    let reading = validate(
        &telemetry_topic(&device),
        payload.to_string().as_bytes(),
        Timestamp::now(),
        &ValidationConfig::default(),
    )
    .expect("a valid reading");
    serde_json::to_string(&reading).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_are_validated_published_and_projected() {
    let stack = Stack::start("commands").await;
    let shutdown = CancellationToken::new();
    let tasks = projections(&stack, &shutdown);
    let operator = stack.key("oscar", "OPERATOR", None).await;
    let ofgem = versions(OFGEM);
    let kseb = versions(KSEB);

    // Tariff versions: every fault refuses the version whole, naming where it is, and
    // publishes nothing.
    let mut negative = ofgem[0].clone();
    negative["components"][0]["rate"] = json!("-0.10");
    let mut float = ofgem[0].clone();
    float["components"][1]["rate"] = json!(0.6012);
    let mut zone = ofgem[0].clone();
    zone["time_zone"] = json!("Mars/Olympus");
    let mut currency = ofgem[0].clone();
    currency["currency"] = json!("gbp");
    let mut overlapping = kseb[0].clone();
    overlapping["components"][0]["bands"][0]["then"][0]["slabs"][2]["up_to_kwh"] = json!("90");
    for (document, field, says) in [
        (&negative, "components[0]", "negative rate"),
        (&float, "components[1].rate", "decimal"),
        (&zone, "time_zone", "Mars/Olympus"),
        (&currency, "currency", "gbp"),
        (&overlapping, "components[0].bands[0].then[0].slabs", "ascending"),
    ] {
        let (_, body) = stack.graphql(Some(DEV_KEY), PUBLISH, json!({ "doc": document })).await;
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{body}");
        assert_eq!(error["extensions"]["argument"], "document", "{body}");
        assert_eq!(error["extensions"]["field"], field, "{body}");
        assert!(error["message"].as_str().unwrap().contains(says), "{body}");
    }
    assert_eq!(topic_len(&stack.topics.tariff_events).await, 0, "nothing published");

    // A valid version is published, and the worker stores it.
    let published = stack.data(DEV_KEY, PUBLISH, json!({ "doc": ofgem[0] })).await;
    let receipt = &published["publishTariffVersion"];
    assert_eq!(receipt["alreadyPublished"], false);
    assert_eq!(receipt["event"]["topic"], stack.topics.tariff_events);
    assert_eq!(receipt["event"]["key"], "ofgem_price_cap_2024q3");
    let stored = "{ tariffs { tariffId versions { version effectiveFrom } } }";
    eventually(&stack, DEV_KEY, stored, json!({}), |d| {
        d["tariffs"][0]["versions"].as_array().is_some_and(|v| v.len() == 1)
    })
    .await;
    // The same document again: nothing new. Changed under the same number: refused.
    let again = stack.data(DEV_KEY, PUBLISH, json!({ "doc": ofgem[0] })).await;
    assert_eq!(again["publishTariffVersion"]["alreadyPublished"], true);
    assert_eq!(again["publishTariffVersion"]["eventId"], receipt["eventId"]);
    let mut changed = ofgem[0].clone();
    changed["title"] = json!("corrected");
    assert_eq!(
        stack.error(DEV_KEY, PUBLISH, json!({ "doc": changed })).await,
        ("BAD_USER_INPUT".into(), Some("document".into()), Some("version".into()))
    );
    // Version 2 dated before version 1: out of order.
    let mut early = ofgem[1].clone();
    early["effective_from"] = json!("2024-01-01");
    assert_eq!(
        stack.error(DEV_KEY, PUBLISH, json!({ "doc": early })).await,
        ("BAD_USER_INPUT".into(), Some("document".into()), Some("version".into()))
    );
    assert_eq!(topic_len(&stack.topics.tariff_events).await, 1, "only the one valid version");
    // Version 2 through the seed's REST API; KSEB through GraphQL.
    let (status, answer) = stack.post(Some(DEV_KEY), "/api/tariffs", ofgem[1].clone()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        (answer["tariff_id"].as_str(), answer["version"].as_i64()),
        (Some("ofgem_price_cap_2024q3"), Some(2))
    );
    let (status, answer) = stack.post(Some(DEV_KEY), "/api/tariffs", zone.clone()).await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("time_zone")), "{answer}");
    stack.data(DEV_KEY, PUBLISH, json!({ "doc": kseb[0] })).await;
    let tariffs = eventually(&stack, DEV_KEY, stored, json!({}), |d| {
        d["tariffs"]
            .as_array()
            .is_some_and(|t| t.len() == 2 && t.iter().all(|t| !t["versions"].as_array().unwrap().is_empty()))
            && d["tariffs"][1]["versions"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(tariffs["tariffs"][0]["tariffId"], "kseb_lt1_domestic_2019");
    let (_, rest) = stack.get(Some(&operator), "/api/tariffs").await;
    assert_eq!(rest["count"], 2);

    // Devices: a bad registration is refused whole, naming the input field.
    stack.create_customer("cust-1", "Kochi household").await;
    let register = "mutation($input: RegisterDeviceInput!) { registerDevice(input: $input) { eventId eventType topic key } }";
    let good = json!({
        "deviceId": "kochi-001", "name": "Kitchen", "location": "Kochi", "timeZone": "Asia/Kolkata",
        "tariffId": "kseb_lt1_domestic_2019", "sanctionedLoadKw": "3.5", "customerId": "cust-1", "phase": "SINGLE",
    });
    for (change, field) in [
        (json!({ "timeZone": "Mars/Olympus" }), "timeZone"),
        (json!({ "customerId": "nobody" }), "customerId"),
        (json!({ "tariffId": "no-such-tariff" }), "tariffId"),
        (json!({ "deviceId": "kochi/001" }), "deviceId"),
        (json!({ "sanctionedLoadKw": "-1" }), "sanctionedLoadKw"),
        (json!({ "name": "  " }), "name"),
    ] {
        let mut input = good.clone();
        for (key, value) in change.as_object().unwrap() {
            input[key] = value.clone();
        }
        let (code, argument, got) = stack.error(&operator, register, json!({ "input": input })).await;
        assert_eq!(
            (code.as_str(), argument.as_deref(), got.as_deref()),
            ("BAD_USER_INPUT", Some("input"), Some(field))
        );
    }
    assert_eq!(topic_len(&stack.topics.device_events).await, 0, "nothing published");

    // A good one: DeviceRegistered and TariffAssigned on Kafka as CloudEvents.
    let receipts = stack.data(&operator, register, json!({ "input": good })).await;
    let receipts = receipts["registerDevice"].as_array().unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0]["eventType"], "dev.smartmeter.device.registered.v1");
    assert_eq!(
        (receipts[0]["topic"].as_str(), receipts[0]["key"].as_str()),
        (Some(stack.topics.device_events.as_str()), Some("kochi-001"))
    );
    assert_eq!(receipts[1]["eventType"], "dev.smartmeter.billing.tariff-assigned.v1");
    assert_eq!(receipts[1]["key"], "kseb_lt1_domestic_2019");
    let events = support::read_topic(&stack.topics.device_events, 1).await;
    let (key, envelope) = &events[0];
    assert_eq!(key, "kochi-001");
    assert_eq!(
        (envelope["specversion"].as_str(), envelope["source"].as_str(), envelope["subject"].as_str()),
        (Some("1.0"), Some("/query-api"), Some("kochi-001"))
    );
    assert_eq!(envelope["data"]["customer_id"], "cust-1");
    assert_eq!(envelope["data"]["time_zone"], "Asia/Kolkata");
    let assigned = support::read_topic(&stack.topics.tariff_events, 4).await;
    let assignment =
        assigned.iter().find(|(_, e)| e["type"] == "dev.smartmeter.billing.tariff-assigned.v1").unwrap();
    let this_month =
        Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Kolkata").unwrap()).date().first_of_month();
    assert_eq!(assignment.1["data"]["effective_from"], this_month.to_string());
    assert_eq!(assignment.1["data"]["phase"], "single");

    // The processor projects the registration, the worker the assignment.
    let device = "query($id: String!) { device(deviceId: $id) { deviceId name location timeZone lifecycle customerId
        customerName sanctionedLoadKw tariffId registeredAt decommissionReason assignedTariff { tariffId effectiveFrom phase } } }";
    let projected = eventually(&stack, &operator, device, json!({ "id": "kochi-001" }), |d| {
        d["device"]["lifecycle"] == "REGISTERED" && !d["device"]["assignedTariff"].is_null()
    })
    .await;
    let row = &projected["device"];
    assert_eq!(
        (
            row["name"].as_str(),
            row["timeZone"].as_str(),
            row["customerId"].as_str(),
            row["customerName"].as_str()
        ),
        (Some("Kitchen"), Some("Asia/Kolkata"), Some("cust-1"), Some("Kochi household"))
    );
    assert_eq!(dec(&row["sanctionedLoadKw"]), Decimal::new(35, 1));
    assert_eq!(
        row["assignedTariff"],
        json!({ "tariffId": "kseb_lt1_domestic_2019", "effectiveFrom": this_month.to_string(), "phase": "SINGLE" })
    );

    // The seed's POST /api/devices: the same command; the time zone defaults.
    let (status, answer) = stack
        .post(Some(&operator), "/api/devices", json!({ "device_id": "meter-001", "name": "Seed meter" }))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["events"].as_array().unwrap().len(), 1);
    let (status, answer) = stack
        .post(
            Some(&operator),
            "/api/devices",
            json!({ "device_id": "meter-002", "time_zone": "Nowhere/Land" }),
        )
        .await;
    assert_eq!((status, answer["field"].as_str()), (400, Some("time_zone")), "{answer}");
    let (status, answer) = stack.post(Some(&operator), "/api/devices", json!({ "name": "no id" })).await;
    assert_eq!((status, answer["code"].as_str()), (400, Some("BAD_USER_INPUT")), "{answer}");
    let seed = eventually(&stack, &operator, device, json!({ "id": "meter-001" }), |d| {
        d["device"]["lifecycle"] == "REGISTERED"
    })
    .await;
    assert_eq!(seed["device"]["timeZone"], "Europe/London");
    let (_, listed) = stack.get(Some(&operator), "/api/devices").await;
    assert_eq!(listed["count"], 2);

    // Update, assign, decommission.
    let update = "mutation($input: UpdateDeviceInput!) { updateDevice(input: $input) { eventType } }";
    stack.data(&operator, update, json!({ "input": { "deviceId": "meter-001", "location": "Loft" } })).await;
    eventually(&stack, &operator, device, json!({ "id": "meter-001" }), |d| {
        d["device"]["location"] == "Loft"
    })
    .await;
    assert_eq!(
        stack.error(&operator, update, json!({ "input": { "deviceId": "meter-001" } })).await.0,
        "BAD_USER_INPUT"
    );
    assert_eq!(
        stack.error(&operator, update, json!({ "input": { "deviceId": "ghost", "name": "x" } })).await.0,
        "NOT_FOUND"
    );
    let assign = "mutation($input: AssignTariffInput!) { assignTariff(input: $input) { eventType key } }";
    let (code, _, field) = stack
        .error(&operator, assign, json!({ "input": { "deviceId": "meter-001", "tariffId": "nope", "effectiveFrom": "2030-01-01" } }))
        .await;
    assert_eq!((code.as_str(), field.as_deref()), ("BAD_USER_INPUT", Some("tariffId")));
    stack
        .data(&operator, assign, json!({ "input": { "deviceId": "meter-001", "tariffId": "ofgem_price_cap_2024q3", "effectiveFrom": "2030-01-01" } }))
        .await;
    let assignments = "query($id: String!) { tariffAssignments(deviceId: $id) { tariffId effectiveFrom } }";
    eventually(&stack, &operator, assignments, json!({ "id": "meter-001" }), |d| {
        d["tariffAssignments"]
            == json!([{ "tariffId": "ofgem_price_cap_2024q3", "effectiveFrom": "2030-01-01" }])
    })
    .await;
    let decommission =
        "mutation($id: String!) { decommissionDevice(deviceId: $id, reason: \"replaced\") { eventType } }";
    stack.data(&operator, decommission, json!({ "id": "meter-001" })).await;
    let gone = eventually(&stack, &operator, device, json!({ "id": "meter-001" }), |d| {
        d["device"]["lifecycle"] == "DECOMMISSIONED"
    })
    .await;
    assert_eq!(gone["device"]["decommissionReason"], "replaced");
    assert_eq!(stack.error(&operator, decommission, json!({ "id": "meter-001" })).await.0, "BAD_USER_INPUT");

    // The month in progress, live from the meter's own readings (its clock is now):
    // 12 kWh so far of the KSEB slabs, 38 kWh before the 0-50 slab ends.
    let now = Timestamp::now();
    for (minutes_ago, counter) in [(120, 100.0), (60, 106.0), (0, 112.0)] {
        let at = now - jiff::SignedDuration::from_mins(minutes_ago);
        support::produce(&stack.topics.telemetry, "kochi-001", &telemetry("kochi-001", at, counter)).await;
    }
    let bill = "query($id: String!) { billProjection(deviceId: $id) { month energySoFarKwh projectedEnergyKwh projectedTotal
        slabName slabRate nextSlabLimitKwh kwhToNextSlab currency } }";
    let projection = eventually(&stack, &operator, bill, json!({ "id": "kochi-001" }), |d| {
        d["billProjection"]["energySoFarKwh"]
            .as_str()
            .is_some_and(|e| e.parse::<Decimal>().unwrap() == Decimal::from(12))
    })
    .await;
    let projection = &projection["billProjection"];
    assert_eq!(projection["month"], format!("{:04}-{:02}", this_month.year(), this_month.month()));
    assert_eq!(projection["currency"], "INR");
    assert_eq!(projection["slabName"], "energy 0-50");
    assert_eq!(dec(&projection["slabRate"]), Decimal::new(315, 2));
    assert_eq!(
        (dec(&projection["nextSlabLimitKwh"]), dec(&projection["kwhToNextSlab"])),
        (Decimal::from(50), Decimal::from(38))
    );
    assert!(dec(&projection["projectedEnergyKwh"]) >= Decimal::from(12));
    // The seed's billing endpoint shows the same projection for the open month.
    let (status, open) = stack.get(Some(&operator), "/api/billing/kochi-001").await;
    assert_eq!(status, 200, "{open}");
    assert_eq!(open["status"], "open");
    assert_eq!(dec(&open["energy_kwh"]), Decimal::from(12));
    assert_eq!(open["projection"]["slab"], "energy 0-50");
    assert_eq!(dec(&open["projection"]["kwh_to_next_slab"]), Decimal::from(38));

    // An impossible jump (1000 kWh in a minute) is quarantined: shown, never counted.
    let later = now + jiff::SignedDuration::from_mins(1);
    support::produce(&stack.topics.telemetry, "kochi-001", &telemetry("kochi-001", later, 1112.0)).await;
    let window = json!({ "id": "kochi-001", "from": (now - jiff::SignedDuration::from_hours(24)).to_string(),
        "to": (now + jiff::SignedDuration::from_hours(1)).to_string() });
    let jumps = eventually(
        &stack,
        &operator,
        "query($id: String!, $from: DateTime!, $to: DateTime!) {
           quarantinedReadings(deviceId: $id, from: $from, to: $to) { quarantinedKwh reading { counterKwh flags { quarantined counterClass } } }
           counterEvents(deviceId: $id, from: $from, to: $to) { kind quarantinedKwh countedKwh } }",
        window,
        |d| d["quarantinedReadings"].as_array().is_some_and(|q| !q.is_empty()),
    )
    .await;
    let jump = &jumps["quarantinedReadings"][0];
    assert_eq!(dec(&jump["quarantinedKwh"]), Decimal::from(1000));
    assert_eq!(jump["reading"]["flags"], json!({ "quarantined": true, "counterClass": "quarantined" }));
    assert_eq!(dec(&jump["reading"]["counterKwh"]), Decimal::from(1112));
    let kinds: Vec<&str> =
        jumps["counterEvents"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["quarantined"]);
    assert_eq!(dec(&jumps["counterEvents"][0]["countedKwh"]), Decimal::ZERO);
    let still = stack.data(&operator, bill, json!({ "id": "kochi-001" })).await;
    assert_eq!(dec(&still["billProjection"]["energySoFarKwh"]), Decimal::from(12), "not billed");

    // A replay requested through the API is claimed and run by the worker.
    let job = stack.data(&operator, "mutation { startBillingReplay(fromMonth: \"2013-01\", deviceId: \"kochi-001\") { jobId status } }", json!({})).await;
    assert_eq!(job["startBillingReplay"]["status"], "REQUESTED");
    let progress =
        "query($id: Int!) { replayJob(jobId: $id) { status progress requestedBy fromMonth deviceId error } }";
    let done =
        eventually(&stack, &operator, progress, json!({ "id": job["startBillingReplay"]["jobId"] }), |d| {
            matches!(d["replayJob"]["status"].as_str(), Some("SUCCEEDED" | "FAILED"))
        })
        .await;
    assert_eq!(
        done["replayJob"],
        json!({ "status": "SUCCEEDED", "progress": 1.0, "requestedBy": "oscar", "fromMonth": "2013-01", "deviceId": "kochi-001", "error": null })
    );
    let (code, argument, _) = stack
        .error(
            &operator,
            "mutation { startBillingReplay(fromMonth: \"2013-05\", toMonth: \"2013-01\") { jobId } }",
            json!({}),
        )
        .await;
    assert_eq!((code.as_str(), argument.as_deref()), ("BAD_USER_INPUT", Some("toMonth")));

    // What the processor could not read is kept with the reason, and shown.
    support::produce(&stack.topics.telemetry, "kochi-001", "this is not a reading").await;
    let rejects = eventually(
        &stack,
        &operator,
        "{ rejects(kind: TELEMETRY) { reason payloadText partition offset } }",
        json!({}),
        |d| d["rejects"].as_array().is_some_and(|r| !r.is_empty()),
    )
    .await;
    assert_eq!(rejects["rejects"][0]["payloadText"], "this is not a reading");
    assert!(!rejects["rejects"][0]["reason"].as_str().unwrap().is_empty());

    shutdown.cancel();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("stops").unwrap().unwrap();
    }
    stack.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_browsed_newest_first_with_their_reasons() {
    let stack = Stack::start("dlq").await;
    let operator = stack.key("oscar", "OPERATOR", None).await;
    // What the bridge publishes for refused MQTT messages: core's validation on real
    // faults, each a dead letter with its code and reason, on two partitions.
    let config = ValidationConfig::default();
    let received = Timestamp::now();
    let faults: [(&str, &str); 5] = [
        ("smartmeter/meter-001/telemetry", "{not json"),
        (
            "smartmeter/meter-001/telemetry",
            r#"{"device_id":"meter-002","timestamp":"2026-01-29T10:00:00Z","voltage":230.4,"current":2.73,"power_w":628.99,"energy_kwh":12.345,"power_factor":0.98}"#,
        ),
        (
            "smartmeter/meter-003/telemetry",
            r#"{"device_id":"meter-003","timestamp":"2026-01-29T10:00:00Z","voltage":400.0,"current":2.73,"power_w":628.99,"energy_kwh":12.345,"power_factor":0.98}"#,
        ),
        ("smartmeter/meter-004/telemetry", r#"{"device_id":"meter-004","voltage":230.0}"#),
        ("smartmeter/+/telemetry", "{}"),
    ];
    for (index, (topic, payload)) in faults.iter().enumerate() {
        let rejection = validate(topic, payload.as_bytes(), received, &config).expect_err("a fault");
        let letter = DeadLetter::new(
            topic,
            payload.as_bytes(),
            received + jiff::SignedDuration::from_secs(index as i64),
            rejection,
        );
        support::produce(&stack.topics.dlq, letter.key(), &serde_json::to_string(&letter).unwrap()).await;
    }
    let page = "query($before: String) { deadLetters(first: 2, before: $before) {
        topic retained nextCursor items { partition offset mqttTopic deviceId errorCode reason payloadText receivedAt } } }";
    let mut before = Value::Null;
    let mut seen = Vec::new();
    loop {
        let data = stack.data(&operator, page, json!({ "before": before })).await;
        let letters = &data["deadLetters"];
        assert_eq!(letters["retained"], 5);
        assert_eq!(letters["topic"], stack.topics.dlq);
        for item in letters["items"].as_array().unwrap() {
            seen.push(item.clone());
        }
        if letters["nextCursor"].is_null() {
            break;
        }
        before = letters["nextCursor"].clone();
        assert!(seen.len() <= 5, "paging does not end: {seen:#?}");
    }
    assert_eq!(seen.len(), 5);
    let received: Vec<&str> = seen.iter().map(|i| i["receivedAt"].as_str().unwrap()).collect();
    let mut sorted = received.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(received, sorted, "newest first across partitions");
    let codes: Vec<&str> = seen.iter().rev().map(|i| i["errorCode"].as_str().unwrap()).collect();
    assert_eq!(codes, ["invalid_json", "device_mismatch", "out_of_range", "missing_field", "invalid_topic"]);
    let oldest = seen.last().unwrap();
    assert_eq!(oldest["payloadText"], "{not json");
    assert_eq!(oldest["deviceId"], "meter-001");
    let mismatch = &seen[3];
    assert!(mismatch["reason"].as_str().unwrap().contains("meter-002"), "{mismatch}");
    assert_eq!(
        stack.error(&operator, "{ deadLetters(before: \"garbage\") { retained } }", json!({})).await.0,
        "BAD_USER_INPUT"
    );
    stack.finish().await;
}
