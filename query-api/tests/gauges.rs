//! Downsampled gauges (`readingSeries`) equal the raw readings bucketed here, on real
//! replayed data. On plain PostgreSQL the store computes them from `readings`; with
//! TimescaleDB a range and width on the 15-minute grid come from the real-time
//! continuous aggregate `readings_gauges_15m` — before and after it is materialized,
//! and after a backfill below its watermark that waits for a refresh, the figures must
//! be the same.

mod common;

use std::collections::BTreeMap;

use jiff::Timestamp;
use smartmeter_core::DeviceId;
use smartmeter_query_api::store::energy::BUCKET_ORIGIN_EPOCH_S;
use smartmeter_query_api::store::{GaugeBucketRow, Store};

/// (readings, power sum, power min, power max, counted mWh) per bucket start.
type Expected = BTreeMap<Timestamp, (i64, f64, f64, f64, i64)>;

async fn expected(url: &str, device: &str, from: Timestamp, to: Timestamp, width_s: i64) -> Expected {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT ts, power_w, counted_milli_wh FROM readings
             WHERE device_id = $1 AND ts >= $2 AND ts < $3 AND NOT too_late",
            &[&device, &from, &to],
        )
        .await
        .unwrap();
    assert!(rows.len() > 1000, "a month of half-hourly readings");
    let mut buckets = Expected::new();
    for row in rows {
        let ts: Timestamp = row.get(0);
        let power: f64 = row.get(1);
        let counted: i64 = row.get(2);
        let start =
            BUCKET_ORIGIN_EPOCH_S + width_s * (ts.as_second() - BUCKET_ORIGIN_EPOCH_S).div_euclid(width_s);
        let bucket =
            buckets.entry(Timestamp::from_second(start).unwrap()).or_insert((0, 0.0, f64::MAX, f64::MIN, 0));
        bucket.0 += 1;
        bucket.1 += power;
        bucket.2 = bucket.2.min(power);
        bucket.3 = bucket.3.max(power);
        bucket.4 += counted;
    }
    buckets
}

fn assert_same(got: &[GaugeBucketRow], want: &Expected, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: buckets");
    for row in got {
        let (readings, sum, min, max, counted) = want[&row.bucket_start];
        assert_eq!(row.readings, readings, "{what} {}", row.bucket_start);
        let avg = sum / readings as f64;
        assert!(
            (row.power_w_avg - avg).abs() <= 1e-9 * avg.abs().max(1.0),
            "{what} {}: avg",
            row.bucket_start
        );
        assert_eq!((row.power_w_min, row.power_w_max), (min, max), "{what} {}", row.bucket_start);
        assert_eq!(row.counted_milli_wh, counted, "{what} {}: counted energy", row.bucket_start);
    }
}

async fn refresh(client: &tokio_postgres::Client) {
    client
        .simple_query("CALL refresh_continuous_aggregate('readings_gauges_15m', NULL, NULL)")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gauge_series_equal_the_raw_readings_on_both_paths() {
    let world = common::billed_london_january().await;
    let pool = smartmeter_core::service::db::pool(&world.db.url, 2, "gauges-test").unwrap();
    let store = Store::new(pool.clone());
    let client = pool.get().await.unwrap();
    let timescale = client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'", &[])
        .await
        .unwrap()
        .is_some();
    assert_eq!(
        store.has_gauge_aggregate().await.unwrap(),
        timescale,
        "the aggregate exists exactly with TimescaleDB"
    );

    let device = DeviceId::parse(&world.device).unwrap();
    let from: Timestamp = "2013-01-01T00:00:00Z".parse().unwrap();
    let to: Timestamp = "2013-02-01T00:00:00Z".parse().unwrap();
    for width_s in [900, 3600, 86_400] {
        let want = expected(&world.db.url, &world.device, from, to, width_s).await;
        let got = store.gauge_buckets(&device, from, to, width_s).await.unwrap();
        assert_same(&got, &want, &format!("width {width_s} s"));
    }
    // Off the 15-minute grid: always the raw readings.
    let off_grid = from + jiff::SignedDuration::from_mins(7);
    let want = expected(&world.db.url, &world.device, off_grid, to, 600).await;
    assert_same(&store.gauge_buckets(&device, off_grid, to, 600).await.unwrap(), &want, "600 s off the grid");

    if timescale {
        // Materialized now: the aggregate answers, with the same figures.
        refresh(&client).await;
        assert!(store.gauge_aggregate_current(from, to).await.unwrap(), "refreshed: the aggregate answers");
        for width_s in [900, 3600] {
            let want = expected(&world.db.url, &world.device, from, to, width_s).await;
            let got = store.gauge_buckets(&device, from, to, width_s).await.unwrap();
            assert_same(&got, &want, &format!("materialized, width {width_s} s"));
        }
        // A reading written below the watermark after the refresh (a replay of old
        // data) is missing from the materialized rows until the next refresh: the raw
        // readings answer meanwhile, and the figures still include it.
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE backfill AS
                     SELECT * FROM readings WHERE device_id = '{device}' AND ts >= '2013-01-10' ORDER BY ts LIMIT 1;
                 UPDATE backfill SET ts = ts + interval '1 second', power_w = 9999.5, kafka_offset = -1;
                 INSERT INTO readings SELECT * FROM backfill;",
                device = world.device
            ))
            .await
            .unwrap();
        assert!(!store.gauge_aggregate_current(from, to).await.unwrap(), "a backfill waits for a refresh");
        assert!(
            store.gauge_aggregate_current(from, "2013-01-08T00:00:00Z".parse().unwrap()).await.unwrap(),
            "a range the backfill did not touch is still answered by the aggregate"
        );
        for width_s in [900, 86_400] {
            let want = expected(&world.db.url, &world.device, from, to, width_s).await;
            assert!(want.values().any(|bucket| bucket.3 == 9999.5), "the backfilled reading is expected");
            let got = store.gauge_buckets(&device, from, to, width_s).await.unwrap();
            assert_same(&got, &want, &format!("backfilled, width {width_s} s"));
        }
        refresh(&client).await;
        assert!(store.gauge_aggregate_current(from, to).await.unwrap(), "refreshed again");
        let want = expected(&world.db.url, &world.device, from, to, 900).await;
        assert_same(
            &store.gauge_buckets(&device, from, to, 900).await.unwrap(),
            &want,
            "backfill materialized",
        );
    } else {
        assert!(!store.gauge_aggregate_current(from, to).await.unwrap());
    }
    drop(client);
    world.finish().await;
}
