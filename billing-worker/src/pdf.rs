//! An invoice as a PDF, laid out like a utility bill: who and what period, the meter
//! reads, one line per slab, band, charge, levy and tax with quantity, rate and amount,
//! the total, and for a revision what it revises and the difference.
//!
//! Drawn with krilla (typst's PDF writer: fonts subset and embedded, text
//! extractable). The fonts are DejaVu Sans and DejaVu Sans Mono from the `dejavu`
//! crate, which embeds them (Bitstream Vera licence: free to embed and redistribute).
//! Text is measured with skrifa, the font reader krilla itself uses.

use jiff::tz::TimeZone;
use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use krilla::Document;
use rust_decimal::Decimal;
use skrifa::instance::{LocationRef, Size};
use skrifa::MetadataProvider;
use smartmeter_core::billing::events::{InvoiceEvent, MeterRead};
use smartmeter_core::billing::InvoiceLine;

#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("the embedded font cannot be read")]
    Font,
    #[error("PDF: {0:?}")]
    Krilla(krilla::error::KrillaError),
}

const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 48.0;
const BOTTOM: f32 = PAGE_HEIGHT - 64.0;

const INK: (u8, u8, u8) = (33, 37, 41);
const MUTED: (u8, u8, u8) = (108, 117, 125);
const ACCENT: (u8, u8, u8) = (0, 90, 140);
const RULE: (u8, u8, u8) = (206, 212, 218);
const SHADE: (u8, u8, u8) = (241, 244, 247);
const NOTICE: (u8, u8, u8) = (255, 243, 205);

/// A font for krilla and its advances for measuring.
struct Face {
    font: Font,
    data: &'static [u8],
}

impl Face {
    fn new(data: &'static [u8]) -> Result<Self, PdfError> {
        let font = Font::new(data.into(), 0).ok_or(PdfError::Font)?;
        skrifa::FontRef::new(data).map_err(|_| PdfError::Font)?;
        Ok(Self { font, data })
    }

    fn width(&self, text: &str, size: f32) -> f32 {
        let Ok(font) = skrifa::FontRef::new(self.data) else { return 0.0 };
        let charmap = font.charmap();
        let metrics = font.glyph_metrics(Size::new(size), LocationRef::default());
        text.chars().filter_map(|c| charmap.map(c).and_then(|glyph| metrics.advance_width(glyph))).sum()
    }
}

struct Fonts {
    regular: Face,
    bold: Face,
    mono: Face,
}

/// Where the next thing goes on which page.
struct Canvas<'s, 'p> {
    surface: &'s mut Surface<'p>,
    fonts: &'s Fonts,
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

impl Canvas<'_, '_> {
    fn fill(&mut self, color: (u8, u8, u8)) {
        self.surface.set_fill(Some(Fill {
            paint: rgb::Color::new(color.0, color.1, color.2).into(),
            opacity: NormalizedF32::ONE,
            rule: Default::default(),
        }));
    }

    // A drawing primitive: every argument is one property of the glyph run, and the
    // call sites read as one line of layout each.
    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        face: &Face,
        size: f32,
        color: (u8, u8, u8),
        x: f32,
        y: f32,
        align: Align,
        text: &str,
    ) {
        let x = match align {
            Align::Left => x,
            Align::Right => x - face.width(text, size),
        };
        self.fill(color);
        self.surface.draw_text(
            Point::from_xy(x, y),
            face.font.clone(),
            size,
            text,
            false,
            TextDirection::Auto,
        );
    }

    fn rect(&mut self, x: f32, y: f32, width: f32, height: f32, color: (u8, u8, u8)) {
        let Some(rect) = Rect::from_xywh(x, y, width, height) else { return };
        let mut builder = PathBuilder::new();
        builder.push_rect(rect);
        if let Some(path) = builder.finish() {
            self.fill(color);
            self.surface.set_stroke(None);
            self.surface.draw_path(&path);
        }
    }

    fn hline(&mut self, x1: f32, x2: f32, y: f32, width: f32, color: (u8, u8, u8)) {
        let mut builder = PathBuilder::new();
        builder.move_to(x1, y);
        builder.line_to(x2, y);
        if let Some(path) = builder.finish() {
            self.surface.set_fill(None);
            self.surface.set_stroke(Some(Stroke {
                paint: rgb::Color::new(color.0, color.1, color.2).into(),
                width,
                ..Default::default()
            }));
            self.surface.draw_path(&path);
            self.surface.set_stroke(None);
        }
    }
}

/// Column right edges of the charges table.
const COL_QUANTITY: f32 = 352.0;
const COL_UNIT: f32 = 360.0;
const COL_RATE: f32 = 470.0;
const COL_AMOUNT: f32 = PAGE_WIDTH - MARGIN;

/// One row of the charges table.
enum Row {
    /// A tariff version's stretch of the period.
    Part(String),
    Line(InvoiceLine),
}

/// Renders `invoice` (its dates and reads local to `invoice.time_zone`).
pub fn render(invoice: &InvoiceEvent) -> Result<Vec<u8>, PdfError> {
    let fonts = Fonts {
        regular: Face::new(dejavu::sans::regular())?,
        bold: Face::new(dejavu::sans::bold())?,
        mono: Face::new(dejavu::sans_mono::regular())?,
    };
    let zone = TimeZone::get(&invoice.time_zone).unwrap_or(TimeZone::UTC);
    let currency = invoice.currency.as_str();

    let mut rows = Vec::new();
    let split = invoice.parts.len() > 1;
    for part in &invoice.parts {
        if split {
            rows.push(Row::Part(format!(
                "Tariff version {} (from {}): {} to {}, {} kWh",
                part.version,
                part.effective_from,
                part.first_day,
                part.last_day,
                group_digits(&part.energy_kwh.normalize().to_string())
            )));
        }
        rows.extend(invoice.lines[part.lines.clone()].iter().cloned().map(Row::Line));
    }
    let priced_lines: usize = invoice.parts.iter().map(|part| part.lines.len()).sum();
    rows.extend(invoice.lines[priced_lines.min(invoice.lines.len())..].iter().cloned().map(Row::Line));

    let mut document = Document::new();
    let mut remaining = rows.as_slice();
    let mut page_number = 1;
    let mut current_part: Option<String> = None;
    loop {
        let mut page = document.start_page_with(PageSettings::from_wh(PAGE_WIDTH, PAGE_HEIGHT).expect("A4"));
        let mut surface = page.surface();
        let mut canvas = Canvas { surface: &mut surface, fonts: &fonts };
        let mut y = header(&mut canvas, invoice, page_number);
        if page_number == 1 {
            y = summary(&mut canvas, invoice, &zone, y);
        }
        y = table_head(&mut canvas, currency, y);
        // A page that starts inside a tariff version's lines says whose lines they are.
        if let (Some(Row::Line(_)), Some(title)) = (remaining.first(), &current_part) {
            y = table_row(&mut canvas, &Row::Part(format!("{title} (continued)")), y, false);
        }
        let mut shaded = false;
        while let Some((row, rest)) = remaining.split_first() {
            if y + 16.0 > BOTTOM - 90.0 && rest.len() > 2 {
                break;
            }
            if let Row::Part(title) = row {
                current_part = Some(title.clone());
            }
            y = table_row(&mut canvas, row, y, shaded);
            shaded = !shaded;
            remaining = rest;
        }
        let last = remaining.is_empty();
        if last {
            totals(&mut canvas, invoice, y);
        } else {
            let fonts = canvas.fonts;
            canvas.text(&fonts.regular, 8.5, MUTED, COL_AMOUNT, y + 16.0, Align::Right, "continued overleaf");
        }
        footer(&mut canvas, invoice, page_number);
        surface.finish();
        page.finish();
        if last {
            break;
        }
        page_number += 1;
    }
    document.set_metadata(
        krilla::metadata::Metadata::new()
            .title(format!("Invoice {}", invoice.invoice_number))
            .creator("smartmeter billing-worker".to_owned()),
    );
    document.finish().map_err(PdfError::Krilla)
}

fn header(canvas: &mut Canvas, invoice: &InvoiceEvent, page_number: u32) -> f32 {
    let fonts = canvas.fonts;
    canvas.rect(0.0, 0.0, PAGE_WIDTH, 6.0, ACCENT);
    canvas.text(&fonts.bold, 20.0, ACCENT, MARGIN, 52.0, Align::Left, "smartmeter");
    canvas.text(&fonts.regular, 9.0, MUTED, MARGIN, 66.0, Align::Left, "Electricity metering & billing");
    let title = if invoice.revision == 0 { "INVOICE" } else { "REVISED INVOICE" };
    canvas.text(&fonts.bold, 16.0, INK, COL_AMOUNT, 50.0, Align::Right, title);
    canvas.text(&fonts.mono, 10.0, INK, COL_AMOUNT, 66.0, Align::Right, &invoice.invoice_number);
    if page_number > 1 {
        canvas.text(
            &fonts.regular,
            9.0,
            MUTED,
            COL_AMOUNT,
            80.0,
            Align::Right,
            &format!("page {page_number}"),
        );
    }
    canvas.hline(MARGIN, COL_AMOUNT, 90.0, 0.8, RULE);
    108.0
}

fn summary(canvas: &mut Canvas, invoice: &InvoiceEvent, zone: &TimeZone, mut y: f32) -> f32 {
    let fonts = canvas.fonts;
    let days = (invoice.last_day - invoice.first_day).get_days() + 1;
    let versions = invoice
        .parts
        .iter()
        .map(|part| format!("version {} (from {})", part.version, part.effective_from))
        .collect::<Vec<_>>()
        .join(", ");
    let fields = [
        ("Meter", invoice.device_id.to_string()),
        (
            "Billing period",
            format!("{} to {} ({days} days, {})", invoice.first_day, invoice.last_day, invoice.time_zone),
        ),
        ("Tariff", invoice.tariff_id.clone()),
        ("Tariff version", versions),
        ("Issued", invoice.issued_at.to_zoned(zone.clone()).strftime("%Y-%m-%d").to_string()),
        ("Period revision", invoice.period_revision.to_string()),
    ];
    for (label, value) in fields {
        canvas.text(&fonts.regular, 9.0, MUTED, MARGIN, y, Align::Left, label);
        let lines = wrap(&fonts.regular, 10.0, &value, COL_AMOUNT - MARGIN - 100.0);
        for (index, line) in lines.iter().enumerate() {
            if index > 0 {
                y += 13.0;
            }
            canvas.text(&fonts.regular, 10.0, INK, MARGIN + 100.0, y, Align::Left, line);
        }
        y += 15.0;
    }

    // Meter reads box.
    y += 8.0;
    canvas.rect(MARGIN, y, COL_AMOUNT - MARGIN, 58.0, SHADE);
    let read = |read: &Option<MeterRead>| match read {
        Some(read) => (
            read.at.to_zoned(zone.clone()).strftime("%Y-%m-%d %H:%M").to_string(),
            format!("{} kWh", group_digits(&read.counter_kwh.normalize().to_string())),
        ),
        None => ("no reading".to_owned(), "-".to_owned()),
    };
    let (opening_at, opening) = read(&invoice.opening_read);
    let (closing_at, closing) = read(&invoice.closing_read);
    let columns = [
        (MARGIN + 12.0, "Opening read", opening, opening_at),
        (MARGIN + 180.0, "Closing read", closing, closing_at),
    ];
    for (x, label, value, at) in columns {
        canvas.text(&fonts.regular, 8.5, MUTED, x, y + 16.0, Align::Left, label);
        canvas.text(&fonts.bold, 11.0, INK, x, y + 32.0, Align::Left, &value);
        canvas.text(&fonts.regular, 8.5, MUTED, x, y + 46.0, Align::Left, &at);
    }
    canvas.text(&fonts.regular, 8.5, MUTED, COL_AMOUNT - 12.0, y + 16.0, Align::Right, "Energy used");
    let energy = format!("{} kWh", group_digits(&invoice.energy_kwh.normalize().to_string()));
    canvas.text(&fonts.bold, 14.0, ACCENT, COL_AMOUNT - 12.0, y + 36.0, Align::Right, &energy);
    y + 58.0 + 26.0
}

fn table_head(canvas: &mut Canvas, currency: &str, y: f32) -> f32 {
    let fonts = canvas.fonts;
    canvas.text(&fonts.bold, 11.0, INK, MARGIN, y, Align::Left, "Charges");
    let y = y + 18.0;
    let head = [
        (MARGIN, Align::Left, "Description".to_owned()),
        (COL_QUANTITY, Align::Right, "Quantity".to_owned()),
        (COL_UNIT, Align::Left, "Unit".to_owned()),
        (COL_RATE, Align::Right, format!("Rate ({currency})")),
        (COL_AMOUNT, Align::Right, format!("Amount ({currency})")),
    ];
    for (x, align, label) in head {
        canvas.text(&fonts.bold, 8.5, MUTED, x, y, align, &label);
    }
    canvas.hline(MARGIN, COL_AMOUNT, y + 5.0, 0.8, INK);
    y + 18.0
}

fn table_row(canvas: &mut Canvas, row: &Row, y: f32, shaded: bool) -> f32 {
    let fonts = canvas.fonts;
    match row {
        Row::Part(title) => {
            canvas.text(&fonts.bold, 9.0, ACCENT, MARGIN, y + 2.0, Align::Left, title);
            y + 16.0
        }
        Row::Line(line) => {
            if shaded {
                canvas.rect(MARGIN, y - 10.0, COL_AMOUNT - MARGIN, 15.0, SHADE);
            }
            let name = ellipsize(&fonts.regular, 9.0, &line.name, COL_QUANTITY - 62.0 - MARGIN);
            canvas.text(&fonts.regular, 9.0, INK, MARGIN + 4.0, y, Align::Left, &name);
            if let Some(quantity) = line.quantity {
                let quantity = group_digits(&quantity.normalize().to_string());
                canvas.text(&fonts.mono, 9.0, INK, COL_QUANTITY, y, Align::Right, &quantity);
            }
            if let Some(unit) = line.unit {
                canvas.text(&fonts.regular, 8.5, MUTED, COL_UNIT, y, Align::Left, &unit.to_string());
            }
            if let Some(rate) = line.rate {
                // As the tariff writes it (5.95, 4.00): a price keeps its decimals.
                let rate = match line.unit {
                    Some(smartmeter_core::billing::Unit::Base(_)) => format!("{}%", rate.normalize()),
                    _ => rate.to_string(),
                };
                canvas.text(&fonts.mono, 9.0, INK, COL_RATE, y, Align::Right, &rate);
            }
            canvas.text(&fonts.mono, 9.0, INK, COL_AMOUNT - 4.0, y, Align::Right, &money(line.amount));
            y + 15.0
        }
    }
}

fn totals(canvas: &mut Canvas, invoice: &InvoiceEvent, y: f32) {
    let fonts = canvas.fonts;
    let currency = invoice.currency.as_str();
    canvas.hline(MARGIN, COL_AMOUNT, y - 6.0, 0.8, INK);
    let mut y = y + 14.0;
    let label = if invoice.revision == 0 { "Total" } else { "Revised total" };
    canvas.text(&fonts.bold, 12.0, INK, COL_RATE - 60.0, y, Align::Right, label);
    canvas.text(
        &fonts.bold,
        12.0,
        INK,
        COL_AMOUNT - 4.0,
        y,
        Align::Right,
        &format!("{currency} {}", money(invoice.total)),
    );
    for tax in &invoice.included_taxes {
        y += 16.0;
        let text = format!(
            "includes {} {}% of {currency} {}: {currency} {}",
            tax.name,
            tax.percent.normalize(),
            money(tax.base),
            money(tax.amount)
        );
        canvas.text(&fonts.regular, 9.0, MUTED, COL_AMOUNT - 4.0, y, Align::Right, &text);
    }
    if let (Some(previous), Some(difference)) = (invoice.previous_total, invoice.difference) {
        y += 26.0;
        canvas.rect(MARGIN, y - 14.0, COL_AMOUNT - MARGIN, 52.0, NOTICE);
        let revises = invoice.revises.as_deref().unwrap_or("the previous invoice");
        let sign = if difference.is_sign_negative() { "" } else { "+" };
        let outcome = if difference.is_sign_negative() { "credited to you" } else { "to pay" };
        canvas.text(
            &fonts.bold,
            10.0,
            INK,
            MARGIN + 10.0,
            y + 2.0,
            Align::Left,
            &format!("Revision {} of this period's invoice: replaces {revises}", invoice.revision),
        );
        canvas.text(
            &fonts.regular,
            9.5,
            INK,
            MARGIN + 10.0,
            y + 18.0,
            Align::Left,
            &format!(
                "Previously invoiced {currency} {}; now {currency} {}; difference {sign}{currency} {} {outcome}.",
                money(previous),
                money(invoice.total),
                money(difference.abs())
            ),
        );
        canvas.text(
            &fonts.regular,
            8.5,
            MUTED,
            MARGIN + 10.0,
            y + 31.0,
            Align::Left,
            "Issued because the period was priced again (late meter data or a tariff change).",
        );
    }
}

fn footer(canvas: &mut Canvas, invoice: &InvoiceEvent, page_number: u32) {
    let fonts = canvas.fonts;
    let y = PAGE_HEIGHT - 40.0;
    canvas.hline(MARGIN, COL_AMOUNT, y - 12.0, 0.5, RULE);
    let digest = &invoice.inputs_digest[..invoice.inputs_digest.len().min(16)];
    let left = format!("Amounts in {}. Inputs digest {digest}.", invoice.currency);
    canvas.text(&fonts.regular, 7.5, MUTED, MARGIN, y, Align::Left, &left);
    let right = format!("{}  |  page {page_number}", invoice.invoice_number);
    canvas.text(&fonts.regular, 7.5, MUTED, COL_AMOUNT, y, Align::Right, &right);
}

/// `1234567.891` → `1,234,567.891`.
fn group_digits(number: &str) -> String {
    let (sign, digits) = number.strip_prefix('-').map_or(("", number), |rest| ("-", rest));
    let (whole, fraction) = digits.split_once('.').map_or((digits, None), |(w, f)| (w, Some(f)));
    let mut grouped = String::with_capacity(number.len() + whole.len() / 3);
    for (index, digit) in whole.chars().enumerate() {
        if index > 0 && (whole.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    match fraction {
        Some(fraction) => format!("{sign}{grouped}.{fraction}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Money with at least two decimals and grouped thousands.
fn money(amount: Decimal) -> String {
    let mut amount = amount;
    if amount.scale() < 2 {
        amount.rescale(2);
    }
    group_digits(&amount.to_string())
}

/// `text` in lines no wider than `width`, broken after ", " (a list of versions); a
/// piece wider than the line on its own gets a line of its own.
fn wrap(face: &Face, size: f32, text: &str, width: f32) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for piece in text.split_inclusive(", ") {
        let candidate = format!("{line}{piece}");
        if !line.is_empty() && face.width(candidate.trim_end(), size) > width {
            lines.push(line.trim_end().to_owned());
            line = piece.to_owned();
        } else {
            line = candidate;
        }
    }
    lines.push(line.trim_end().to_owned());
    lines
}

fn ellipsize(face: &Face, size: f32, text: &str, width: f32) -> String {
    if face.width(text, size) <= width {
        return text.to_owned();
    }
    let mut shortened: String = text.to_owned();
    while !shortened.is_empty() && face.width(&format!("{shortened}…"), size) > width {
        shortened.pop();
    }
    format!("{}…", shortened.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn numbers_are_grouped_and_money_has_cents() {
        assert_eq!(group_digits("1234567.891"), "1,234,567.891");
        assert_eq!(group_digits("-999"), "-999");
        assert_eq!(group_digits("100"), "100");
        assert_eq!(money(dec!(5)), "5.00");
        assert_eq!(money(dec!(-1234.5)), "-1,234.50");
    }
}
