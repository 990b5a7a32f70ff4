//! Prices many device-months with a shipped tariff and prints the rate.
//!
//! `cargo run --release -p smartmeter-core --example price_bench [device_months] [tariff_id]`
//!
//! Each device-month is a calendar month with 720–744 hourly values (what a closed
//! period carries), a different total per device, priced across the tariff's versions.
//! Checking the hourly values against the total is most of the cost; `NO_HOURLY=1`
//! prices the totals alone.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use rust_decimal::Decimal;
use smartmeter_core::billing::{price_across_versions, BillingPeriod, HourlyEnergy, Phase, TariffHistory};

fn main() {
    let mut args = std::env::args().skip(1);
    let device_months: usize = args.next().map_or(200_000, |n| n.parse().expect("a count"));
    let tariff_id = args.next().unwrap_or_else(|| "tpddl_domestic_fy2015_16".to_owned());
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tariffs").join(format!("{tariff_id}.json"));
    let history = TariffHistory::from_json(&std::fs::read_to_string(&path).expect("tariff file"))
        .expect("valid tariff");

    // 1,000 distinct device-months (0–1,400 kWh), reused round-robin.
    let first_day = history.versions()[0].effective_from().last_of_month().tomorrow().expect("a date");
    let periods: Vec<BillingPeriod> = (0..1_000i64)
        .map(|device| {
            let mut period = BillingPeriod::new(first_day, first_day.last_of_month(), Decimal::ZERO);
            let mut day = first_day;
            while day <= period.last_day {
                for hour in 0..24 {
                    let energy_kwh = Decimal::new((device * 37 + i64::from(hour) * 11) % 2_000, 3);
                    period.hourly_energy.push(HourlyEnergy { hour_start: day.at(hour, 0, 0, 0), energy_kwh });
                }
                day = day.tomorrow().expect("a date");
            }
            period.energy_kwh = period.hourly_energy.iter().map(|hour| hour.energy_kwh).sum();
            if std::env::var_os("NO_HOURLY").is_some() {
                period.hourly_energy.clear();
            }
            period.sanctioned_load_kw = Some(Decimal::from(1 + device % 9));
            period.connected_load_kw = period.sanctioned_load_kw;
            period.phase = Some(if device % 3 == 0 { Phase::Three } else { Phase::Single });
            period
        })
        .collect();

    let started = Instant::now();
    let mut billed = Decimal::ZERO;
    for index in 0..device_months {
        let invoice = price_across_versions(&history, &periods[index % periods.len()]).expect("priced");
        billed += black_box(invoice).total;
    }
    let elapsed = started.elapsed();
    println!(
        "{tariff_id}: {device_months} device-months in {:.3} s = {:.0} device-months/s per core (billed {billed})",
        elapsed.as_secs_f64(),
        device_months as f64 / elapsed.as_secs_f64()
    );
}
