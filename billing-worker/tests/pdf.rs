//! Invoices of a real London January rendered to PDF and read back with poppler's
//! `pdftotext` (Debian package poppler-utils): a valid PDF whose text holds the invoice
//! number, the lines and the right total; a revision also shows what it revises and
//! the difference; a long invoice continues on a second page.
//!
//! The PDFs are left in `target/tmp/invoices/` to be looked at
//! (`pdftoppm -png -r 80 <pdf> <prefix>`).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;
use jiff::civil::date;
use smartmeter_billing_worker::invoice::decide;
use smartmeter_billing_worker::pdf;
use smartmeter_billing_worker::price::{price_period, Assignment};
use smartmeter_billing_worker::tariffs::TariffBook;
use smartmeter_core::billing::events::InvoiceEvent;
use smartmeter_core::billing::TariffDocument;

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("invoices");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the PDF and returns the text `pdftotext -layout` extracts from it.
fn render_and_extract(invoice: &InvoiceEvent) -> (Vec<u8>, String) {
    let bytes = pdf::render(invoice).expect("rendered");
    let path = out_dir().join(format!("{}.pdf", invoice.invoice_number));
    std::fs::write(&path, &bytes).unwrap();
    let output = Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(&path)
        .arg("-")
        .output()
        .expect("pdftotext (apt-get install poppler-utils) runs");
    assert!(
        output.status.success(),
        "pdftotext refused {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    (bytes, String::from_utf8(output.stdout).unwrap())
}

fn pages(invoice: &InvoiceEvent) -> usize {
    let path = out_dir().join(format!("{}.pdf", invoice.invoice_number));
    let output = Command::new("pdfinfo").arg(&path).output().expect("pdfinfo runs");
    assert!(output.status.success());
    let info = String::from_utf8(output.stdout).unwrap();
    let line = info.lines().find(|line| line.starts_with("Pages:")).expect("a page count");
    line["Pages:".len()..].trim().parse().unwrap()
}

fn book(documents: &[TariffDocument]) -> TariffBook {
    let mut book = TariffBook::default();
    for document in documents {
        book.admit(document.clone()).unwrap();
    }
    book
}

#[test]
fn a_real_invoice_renders_to_a_pdf_with_its_number_lines_and_total() {
    let rows = half_hours();
    let device = "MAC000002";
    let event = january_period(device, "MAC000002", &rows);
    let tariff = london_tariff("london_test_2013");
    let invoice = invoice_for(&event, std::slice::from_ref(&tariff));

    let (bytes, text) = render_and_extract(&invoice);
    assert!(bytes.starts_with(b"%PDF-"), "a PDF header");
    assert!(bytes.windows(5).any(|window| window == b"%%EOF"), "a PDF trailer");
    assert_eq!(pages(&invoice), 1);
    assert!(text.contains("INV-MAC000002-201301"), "{text}");
    assert!(text.contains(&format!("GBP {}", invoice.total)), "total {} in:\n{text}", invoice.total);
    for line in &invoice.lines {
        assert!(text.contains(&line.amount.to_string()), "line {} in:\n{text}", line.name);
    }
    assert!(text.contains(&format!("{} kWh", invoice.energy_kwh.normalize())), "{text}");
    assert!(text.contains("2013-01-01 to 2013-01-31"), "{text}");
    let vat = &invoice.included_taxes[0];
    assert!(text.contains(&format!("GBP {}", vat.amount)), "included VAT {} in:\n{text}", vat.amount);
    // Deterministic: the same invoice gives the same bytes (what is mailed can be
    // rendered again).
    assert_eq!(pdf::render(&invoice).unwrap(), bytes);
}

#[test]
fn a_revision_shows_both_tariff_versions_what_it_revises_and_the_difference() {
    let rows = half_hours();
    let event = january_period("MAC000006", "MAC000006", &rows);
    let v1 = london_tariff("london_test_2013");
    let mut v2 = london_tariff_change("london_test_2013", date(2013, 1, 15));
    v2.version = 2;
    let assignment = Assignment {
        tariff_id: v1.tariff_id.clone(),
        effective_from: v1.effective_from,
        sanctioned_load_kw: None,
        phase: None,
        connected_load_kw: None,
    };
    let issued_at = "2013-02-03T09:00:00Z".parse().unwrap();
    let first = decide(
        &event,
        price_period(&event, std::slice::from_ref(&assignment), &book(std::slice::from_ref(&v1))),
        None,
        issued_at,
    );
    let state = first.state.unwrap();
    let revised =
        decide(&event, price_period(&event, &[assignment], &book(&[v1, v2])), Some(&state), issued_at);
    let invoice = revised.invoice.expect("a revision");
    assert_eq!(invoice.invoice_number, "INV-MAC000006-201301-R1");
    assert_eq!(invoice.parts.len(), 2);

    let (_, text) = render_and_extract(&invoice);
    assert!(text.contains("REVISED INVOICE"), "{text}");
    assert!(text.contains("INV-MAC000006-201301-R1"), "{text}");
    assert!(text.contains("replaces INV-MAC000006-201301"), "{text}");
    assert!(text.contains(&format!("GBP {}", invoice.total)), "{text}");
    let difference = invoice.difference.unwrap();
    assert!(text.contains(&format!("GBP {}", difference.abs())), "difference {difference} in:\n{text}");
    assert!(text.contains("Tariff version 1 (from 2012-10-01): 2013-01-01 to 2013-01-14"), "{text}");
    assert!(text.contains("Tariff version 2 (from 2013-01-15): 2013-01-15 to 2013-01-31"), "{text}");
}

#[test]
fn a_long_invoice_continues_on_the_next_page() {
    // A tariff revised every week of January: five versions, five parts of lines.
    let rows = half_hours();
    let event = january_period("MAC000010", "MAC000010", &rows);
    let mut versions = vec![london_tariff("weekly_2013")];
    for (index, day) in [8, 15, 22, 29].into_iter().enumerate() {
        let mut next = if index % 2 == 0 {
            london_tariff_change("weekly_2013", date(2013, 1, day))
        } else {
            london_tariff("weekly_2013")
        };
        next.version = index as u32 + 2;
        next.effective_from = date(2013, 1, day);
        // Eight time-of-use lines per part, so the table is long.
        next.components.insert(
            0,
            serde_json::from_value(serde_json::json!({"kind": "time_of_use", "group": "tou", "bands": [
                {"name": "night 00-03", "from": "00:00", "to": "03:00", "rate": "0.01"},
                {"name": "night 03-06", "from": "03:00", "to": "06:00", "rate": "0.01"},
                {"name": "morning 06-09", "from": "06:00", "to": "09:00", "rate": "0.02"},
                {"name": "day 09-12", "from": "09:00", "to": "12:00", "rate": "0.02"},
                {"name": "day 12-15", "from": "12:00", "to": "15:00", "rate": "0.02"},
                {"name": "peak 15-18", "from": "15:00", "to": "18:00", "rate": "0.04"},
                {"name": "evening 18-21", "from": "18:00", "to": "21:00", "rate": "0.03"},
                {"name": "late 21-24", "from": "21:00", "to": "00:00", "rate": "0.02"}]}))
            .unwrap(),
        );
        versions.push(next);
    }
    let invoice = invoice_for(&event, &versions);
    assert_eq!(invoice.parts.len(), 5);
    assert!(invoice.lines.len() > 35, "{} lines", invoice.lines.len());
    let (_, text) = render_and_extract(&invoice);
    assert_eq!(pages(&invoice), 2, "{text}");
    assert!(text.contains("continued overleaf"), "{text}");
    // Page 2 starts inside version 3's lines and says so; the list of versions is
    // wrapped inside the page.
    assert!(text.contains("(continued)"), "{text}");
    assert!(text.contains("version 5 (from 2013-01-29)"), "{text}");
    assert!(text.contains(&format!("GBP {}", invoice.total)), "{text}");
    for line in &invoice.lines {
        assert!(text.contains(&line.amount.to_string()), "line {} {} in:\n{text}", line.name, line.amount);
    }
}

#[test]
fn an_indian_slab_bill_shows_its_slabs_surcharges_and_tax_on_the_surcharged_amount() {
    // Case t1500_7kw of shared/data/tariffs/cases.json: 1,500 kWh, 7 kW sanctioned,
    // September 2015, TPDDL; expected total INR 12,854.21.
    let documents: Vec<TariffDocument> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../core/tariffs/tpddl_domestic_fy2015_16.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let rows = half_hours();
    let mut event = january_period("DL-0001", "MAC000002", &rows);
    event.time_zone = "Asia/Kolkata".into();
    event.month = date(2015, 9, 1);
    event.period =
        smartmeter_core::billing::BillingPeriod::new(date(2015, 9, 1), date(2015, 9, 30), 1500.into());
    event.period.sanctioned_load_kw = Some(7.into());
    event.energy_milli_wh = 1_500_000_000;
    event.opening_read = None;
    event.closing_read = None;
    let invoice = invoice_for(&event, &documents);
    assert_eq!(invoice.total.to_string(), "12854.21");
    let (_, text) = render_and_extract(&invoice);
    assert!(text.contains("INR 12,854.21"), "{text}");
    assert!(text.contains("energy 1200-above"), "{text}");
    assert!(text.contains("10,950"), "the surcharges' base in:\n{text}");
    assert!(text.contains("3.8%"), "{text}");
    assert!(text.contains(" 4.00 ") && text.contains(" 7.30 "), "rates as the tariff writes them:\n{text}");
    assert!(text.contains("12,242.1"), "the tax's base includes the surcharges:\n{text}");
    assert!(text.contains("no reading"), "a period without reads says so:\n{text}");
}
