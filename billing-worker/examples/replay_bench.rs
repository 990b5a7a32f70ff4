//! Benchmark (prints figures): pricing per core, and a year's replay for a fleet end
//! to end from Kafka through PostgreSQL.
//!
//! ```text
//! . infra/env.sh
//! cargo run --release -p smartmeter-billing-worker --example replay_bench [meters] [months]
//! ```
//!
//! Consumption is derived from real data: household MAC000002 of Low Carbon London,
//! half-hourly, 2013 (`shared/data/lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv`),
//! summed into London local hours (DST days have 23 and 25 hours). Meter `i` uses
//! that profile scaled by its own factor between 0.5 and 2.0, which makes each hour's
//! energy a whole number of milliwatt-hours, as the processor stores them. Each
//! device-month becomes the PeriodClosed event the processor publishes (energy by local
//! hour, counter reads, coverage), produced to a fresh topic of its own.
//!
//! Then, on a fresh database with the tariff and the assignments in place:
//! 1. in memory, on one core: decoding the events, pricing them as the worker does
//!    (assignment, core arithmetic across versions, inputs digest), and core's
//!    arithmetic alone;
//! 2. the replay of the whole year from Kafka (offsets looked up by time), first when
//!    every invoice is new, then again when nothing changed, then after a retroactive
//!    tariff change from 1 July (a revision for every month from July on).
//!
//! The topic and the database are removed at the end (kept with `BENCH_KEEP=1`, to run
//! `billing-worker replay` against them).

use std::io::BufRead as _;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use jiff::civil::{date, Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan as _};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rust_decimal::Decimal;
use smartmeter_billing_worker::price::{self, Assignment};
use smartmeter_billing_worker::replay::{self, ReplayRequest};
use smartmeter_billing_worker::store;
use smartmeter_billing_worker::tariffs::TariffBook;
use smartmeter_core::billing::events::{MeterRead, PeriodEvent, TariffVersionPublished, PERIOD_CLOSED};
use smartmeter_core::billing::{price_across_versions, BillingPeriod, HourlyEnergy, TariffDocument};
use smartmeter_core::event::Envelope;
use smartmeter_core::service::testkit::{self, TestDatabase};
use smartmeter_core::DeviceId;
use tokio_util::sync::CancellationToken;

const RAW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv"
);
const OFGEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tariffs/ofgem_price_cap_2024q3.json");
const TARIFF_ID: &str = "london_bench_2013";

/// One month of the household: Wh by London local hour (in time order).
struct MonthProfile {
    month: Date,
    hours: Vec<(DateTime, i64)>,
    starts_at: Timestamp,
    ends_at: Timestamp,
    /// Local hours in the month (for coverage).
    hours_in_month: i64,
}

fn profiles(months: usize) -> anyhow::Result<Vec<MonthProfile>> {
    let tz = TimeZone::get("Europe/London")?;
    let file = std::fs::File::open(RAW).with_context(|| RAW.to_owned())?;
    // Half hours by UTC start: duplicates dropped, `Null` is missing, not zero.
    let mut half_hours = std::collections::BTreeMap::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line?;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() < 3 || fields[0] == "LCLid" || fields[2] == "Null" {
            continue;
        }
        let at: Timestamp = format!("{}Z", &fields[1][..19].replace(' ', "T")).parse()?;
        if at.as_second() % 1800 != 0 {
            continue; // off the half-hour grid
        }
        let wh = (Decimal::from_str(fields[2])? * Decimal::ONE_THOUSAND).round();
        half_hours.insert(at, i64::try_from(wh)?);
    }
    let mut out = Vec::new();
    let mut month = date(2013, 1, 1);
    for _ in 0..months {
        let next = month.checked_add(1.month())?;
        let starts_at = month.to_zoned(tz.clone())?.timestamp();
        let ends_at = next.to_zoned(tz.clone())?.timestamp();
        let mut hours: Vec<(DateTime, i64)> = Vec::new();
        let mut last_hour_start = None;
        for (at, wh) in half_hours.range(starts_at..ends_at) {
            let hour_start = Timestamp::from_second(at.as_second() - at.as_second().rem_euclid(3600))?;
            let local = hour_start.to_zoned(tz.clone()).datetime();
            if last_hour_start == Some(hour_start) {
                hours.last_mut().expect("an hour").1 += wh;
            } else {
                hours.push((local, *wh));
                last_hour_start = Some(hour_start);
            }
        }
        let hours_in_month = ends_at.duration_since(starts_at).as_secs() / 3600;
        out.push(MonthProfile { month, hours, starts_at, ends_at, hours_in_month });
        month = next;
    }
    Ok(out)
}

fn device(meter: usize) -> String {
    format!("bench-{meter:05}")
}

/// Meter `meter`'s scale, in thousandths: 500..=2000.
fn scale(meter: usize) -> i64 {
    500 + (meter as i64 * 7919) % 1501
}

fn period_event(meter: usize, profile: &MonthProfile, opening_milli_wh: i64) -> PeriodEvent {
    let k = scale(meter);
    let hourly_energy: Vec<HourlyEnergy> = profile
        .hours
        .iter()
        .map(|(hour_start, wh)| HourlyEnergy { hour_start: *hour_start, energy_kwh: Decimal::new(wh * k, 6) })
        .collect();
    let energy_milli_wh: i64 = profile.hours.iter().map(|(_, wh)| wh * k).sum();
    let mut period =
        BillingPeriod::new(profile.month, profile.month.last_of_month(), Decimal::new(energy_milli_wh, 6));
    period.hourly_energy = hourly_energy;
    PeriodEvent {
        device_id: DeviceId::parse(&device(meter)).expect("a device id"),
        month: profile.month,
        revision: 0,
        time_zone: "Europe/London".into(),
        starts_at: profile.starts_at,
        ends_at: profile.ends_at,
        period,
        energy_milli_wh,
        opening_read: Some(MeterRead {
            at: profile.starts_at,
            counter_kwh: Decimal::new(opening_milli_wh, 6),
        }),
        closing_read: Some(MeterRead {
            at: profile.ends_at,
            counter_kwh: Decimal::new(opening_milli_wh + energy_milli_wh, 6),
        }),
        reading_count: profile.hours.len() as i64 * 2,
        coverage: (Decimal::from(profile.hours.len() as i64) / Decimal::from(profile.hours_in_month))
            .min(Decimal::ONE)
            .round_dp(4),
        quality_flags: Vec::new(),
        tariff_id: None,
    }
}

fn tariff_versions() -> anyhow::Result<Vec<TariffDocument>> {
    let mut versions: Vec<TariffDocument> = serde_json::from_str(&std::fs::read_to_string(OFGEM)?)?;
    for version in &mut versions {
        version.tariff_id = TARIFF_ID.into();
    }
    versions[0].effective_from = date(2012, 10, 1);
    versions[1].effective_from = date(2013, 7, 1);
    Ok(versions)
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let meters: usize = args.next().map_or(Ok(10_000), |n| n.parse())?;
    let months: usize = args.next().map_or(Ok(12), |n| n.parse())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let brokers = testkit::kafka_brokers();
    println!(
        "replay_bench: {meters} meters x {months} months = {} device-months; {cores} cores",
        meters * months
    );

    let profiles = profiles(months)?;
    let hours: usize = profiles.iter().map(|p| p.hours.len()).sum();
    println!("profile: MAC000002 2013, {hours} local hours over {months} months");

    // Produce the period events.
    let topic = testkit::unique_name("smartmeter.billing-periods.bench");
    testkit::create_topic(&brokers, &topic, 3).await?;
    let producer: FutureProducer =
        smartmeter_core::service::kafka::idempotent_producer(&brokers, "replay-bench")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .create()?;
    let started = Instant::now();
    let mut bytes = 0usize;
    let mut sample = Vec::new();
    let mut in_flight = Vec::new();
    for meter in 0..meters {
        let mut counter_milli_wh = (meter as i64 % 997) * 1_000_000;
        for profile in &profiles {
            let event = period_event(meter, profile, counter_milli_wh);
            counter_milli_wh += event.energy_milli_wh;
            let envelope = Envelope::new(
                event.event_id(),
                "/processor",
                PERIOD_CLOSED,
                event.ends_at,
                event.device_id.as_str(),
                &event,
            );
            let payload = serde_json::to_vec(&envelope)?;
            bytes += payload.len();
            let key = device(meter);
            in_flight.push(
                producer
                    .send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                    .map_err(|(error, _)| error)?,
            );
            if sample.len() < 12_000 {
                sample.push(payload);
            }
        }
        if in_flight.len() >= 5_000 {
            for delivery in in_flight.drain(..) {
                delivery.await?.map_err(|(error, _)| error)?;
            }
        }
    }
    for delivery in in_flight.drain(..) {
        delivery.await?.map_err(|(error, _)| error)?;
    }
    let produced = meters * months;
    println!(
        "produced {produced} PeriodClosed events ({:.0} MB of JSON, {:.0} KB each) in {:.1} s",
        bytes as f64 / 1e6,
        bytes as f64 / produced as f64 / 1e3,
        started.elapsed().as_secs_f64()
    );

    // In memory, one core.
    let versions = tariff_versions()?;
    let mut book = TariffBook::default();
    for version in &versions {
        book.admit(version.clone()).map_err(|refusal| anyhow::anyhow!("{refusal}"))?;
    }
    let started = Instant::now();
    let events: Vec<PeriodEvent> = sample
        .iter()
        .map(|payload| serde_json::from_slice::<Envelope<PeriodEvent>>(payload).map(|envelope| envelope.data))
        .collect::<Result<_, _>>()?;
    let decode = started.elapsed();
    let assignment = [Assignment {
        tariff_id: TARIFF_ID.into(),
        effective_from: date(2012, 10, 1),
        sanctioned_load_kw: None,
        phase: None,
        connected_load_kw: None,
    }];
    let started = Instant::now();
    let mut billed = Decimal::ZERO;
    for event in &events {
        if let price::Pricing::Priced(priced) = price::price_period(event, &assignment, &book) {
            billed += priced.invoice.total;
        }
    }
    let worker_pricing = started.elapsed();
    let history = &book.get(TARIFF_ID).expect("the tariff").history;
    let started = Instant::now();
    for event in &events {
        billed += std::hint::black_box(price_across_versions(history, &event.period)?).total;
    }
    let core_pricing = started.elapsed();
    println!("one core, {} device-months in memory (billed {billed}):", events.len());
    println!("  decode JSON events          {:>10.0} device-months/s", rate(events.len(), decode));
    println!(
        "  price as the worker does    {:>10.0} device-months/s (assignment, core arithmetic, inputs digest)",
        rate(events.len(), worker_pricing)
    );
    println!("  core arithmetic alone       {:>10.0} device-months/s", rate(events.len(), core_pricing));
    println!(
        "  decode + price              {:>10.0} device-months/s",
        rate(events.len(), decode + worker_pricing)
    );
    drop(events);
    drop(sample);

    // The database: version 1 only at first, every meter assigned.
    let db = TestDatabase::create("replay_bench").await?;
    let pool = smartmeter_core::service::db::pool(&db.url, 8, "replay-bench")?;
    smartmeter_core::service::db::migrate(&pool).await?;
    {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let published = TariffVersionPublished { document: versions[0].clone() };
        store::insert_tariff_version(&tx, &published, &published.event_id(), Timestamp::now()).await?;
        tx.execute(
            "INSERT INTO tariff_assignments (device_id, effective_from, tariff_id, event_id, assigned_at)
             SELECT 'bench-' || lpad(i::text, 5, '0'), '2012-10-01', $1, 'bench-assignment-' || i, now()
             FROM generate_series(0, $2 - 1) AS i",
            &[&TARIFF_ID, &(meters as i32)],
        )
        .await?;
        tx.commit().await?;
    }

    let request = ReplayRequest {
        brokers: brokers.clone(),
        topic: topic.clone(),
        invoices_topic: testkit::unique_name("smartmeter.invoices.bench-unpublished"),
        from: date(2013, 1, 1),
        to: Some(profiles.last().expect("a month").month),
        device_id: None,
        batch_size: 2_000,
        pricing_threads: cores,
        progress_bar: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let shutdown = CancellationToken::new();
    let run = |label: &'static str| {
        let pool = pool.clone();
        let request = request.clone();
        let shutdown = shutdown.clone();
        async move {
            let report = replay::replay(&pool, &request, None, &shutdown).await?;
            let p = report.progress;
            println!(
                "replay ({label}): {} records, {} device-months in {:.1} s = {:.0} device-months/s \
                 ({:.0} per core); issued {}, revised {}, unchanged {}, unbillable {}",
                p.records_read,
                p.periods_matched,
                report.elapsed.as_secs_f64(),
                report.periods_per_second(),
                report.periods_per_second() / cores as f64,
                p.issued,
                p.revised,
                p.unchanged,
                p.unbillable
            );
            anyhow::Ok(())
        }
    };
    run("first pricing, every invoice new").await?;
    run("nothing changed").await?;
    {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let published = TariffVersionPublished { document: versions[1].clone() };
        store::insert_tariff_version(&tx, &published, &published.event_id(), Timestamp::now()).await?;
        tx.commit().await?;
    }
    run("after a tariff change from 1 July").await?;

    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept: topic {topic}, database {}", db.url);
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        rdkafka::ClientConfig::new().set("bootstrap.servers", &brokers).create()?;
    admin.delete_topics(&[&topic], &AdminOptions::new()).await?;
    drop(pool);
    db.drop_database().await?;
    Ok(())
}
