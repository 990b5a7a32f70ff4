//! Invoices by e-mail: the PDF attached, sent over SMTP with lettre. Plain SMTP for a
//! relay on this machine (localhost, 127.0.0.0/8, ::1), STARTTLS elsewhere unless
//! told otherwise. Every attempt is recorded in `invoice_mailings`.
//!
//! With a recipient configured, [`mail_forever`] mails each invoice issued within the
//! look-back window that has not been mailed to it yet (at least once: a crash between
//! the send and the record mails it again).

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::Pool;
use jiff::Timestamp;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use smartmeter_core::billing::events::InvoiceEvent;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::{pdf, store};

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    #[error("address {address:?}: {source}")]
    Address { address: String, source: lettre::address::AddressError },
    #[error("building the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("SMTP: {0}")]
    Smtp(#[from] lettre::transport::smtp::Error),
    #[error("rendering the PDF: {0}")]
    Pdf(#[from] pdf::PdfError),
    #[error("unknown SMTP TLS mode {0:?} (none, starttls, tls)")]
    TlsMode(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain SMTP: only for a relay on this machine.
    None,
    StartTls,
    /// Implicit TLS (SMTPS, port 465).
    Tls,
}

impl FromStr for TlsMode {
    type Err = EmailError;

    fn from_str(mode: &str) -> Result<Self, Self::Err> {
        match mode {
            "none" | "off" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" | "smtps" => Ok(Self::Tls),
            other => Err(EmailError::TlsMode(other.to_owned())),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// `Billing <billing@example.org>` or a bare address.
    pub from: String,
    pub tls: TlsMode,
}

impl SmtpConfig {
    /// TLS off for a relay on this machine, STARTTLS for any other.
    pub fn default_tls(host: &str) -> TlsMode {
        let local = host.eq_ignore_ascii_case("localhost")
            || host.parse::<IpAddr>().is_ok_and(|address| address.is_loopback());
        if local {
            TlsMode::None
        } else {
            TlsMode::StartTls
        }
    }
}

fn mailbox(address: &str) -> Result<Mailbox, EmailError> {
    address.parse().map_err(|source| EmailError::Address { address: address.to_owned(), source })
}

/// The message for `invoice` with `pdf` attached as `{invoice number}.pdf`.
pub fn message(from: &str, to: &str, invoice: &InvoiceEvent, pdf: Vec<u8>) -> Result<Message, EmailError> {
    let currency = invoice.currency.as_str();
    let month = invoice.month.strftime("%B %Y");
    let subject = if invoice.revision == 0 {
        format!("Electricity invoice {} for {month}: {currency} {}", invoice.invoice_number, invoice.total)
    } else {
        format!(
            "Revised electricity invoice {} for {month}: {currency} {}",
            invoice.invoice_number, invoice.total
        )
    };
    let mut body = format!(
        "Your electricity invoice for meter {} and {} to {} is attached.\n\n\
         Energy used: {} kWh\nTotal: {currency} {}\n",
        invoice.device_id, invoice.first_day, invoice.last_day, invoice.energy_kwh, invoice.total
    );
    if let (Some(previous), Some(difference)) = (invoice.previous_total, invoice.difference) {
        body.push_str(&format!(
            "\nThis revision replaces {} ({currency} {previous}); the difference is {currency} {difference}.\n",
            invoice.revises.as_deref().unwrap_or("the previous invoice")
        ));
    }
    let attachment = Attachment::new(format!("{}.pdf", invoice.invoice_number))
        .body(pdf, ContentType::parse("application/pdf").expect("a valid content type"));
    Ok(Message::builder()
        .from(mailbox(from)?)
        .to(mailbox(to)?)
        .subject(subject)
        .multipart(MultiPart::mixed().singlepart(SinglePart::plain(body)).singlepart(attachment))?)
}

/// Renders `invoice` and mails it to `to`.
pub async fn send(config: &SmtpConfig, to: &str, invoice: &InvoiceEvent) -> Result<(), EmailError> {
    let pdf = {
        let invoice = invoice.clone();
        tokio::task::spawn_blocking(move || pdf::render(&invoice)).await.expect("rendering never panics")?
    };
    let message = message(&config.from, to, invoice, pdf)?;
    let builder = match config.tls {
        TlsMode::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host),
        TlsMode::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.host)?,
        TlsMode::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.host)?,
    };
    let mut builder = builder.port(config.port).timeout(Some(Duration::from_secs(30)));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    builder.build().send(message).await?;
    tracing::info!(invoice_number = invoice.invoice_number, "Invoice mailed.");
    Ok(())
}

/// Mails every invoice issued since `now - lookback` that `recipient` has not had,
/// checking every `every` until `shutdown`.
pub async fn mail_forever(
    pool: Pool,
    config: SmtpConfig,
    recipient: String,
    lookback: Duration,
    every: Duration,
    metrics: Metrics,
    shutdown: CancellationToken,
) {
    const MAX_ATTEMPTS: i32 = 5;
    loop {
        let since = Timestamp::now()
            .checked_sub(jiff::SignedDuration::try_from(lookback).unwrap_or(jiff::SignedDuration::ZERO))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        match mail_pending(&pool, &config, &recipient, since, MAX_ATTEMPTS, &metrics).await {
            Ok(0) => {}
            Ok(sent) => tracing::info!(sent, "Mailed invoices."),
            Err(error) => tracing::warn!(%error, "Mailing invoices failed; retrying."),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

async fn mail_pending(
    pool: &Pool,
    config: &SmtpConfig,
    recipient: &str,
    since: Timestamp,
    max_attempts: i32,
    metrics: &Metrics,
) -> anyhow::Result<usize> {
    let client = pool.get().await?;
    let numbers = store::invoices_to_mail(&**client, recipient, since, max_attempts, 50).await?;
    let mut sent = 0;
    for number in numbers {
        let Some(invoice) = store::fetch_invoice(&**client, &number).await? else { continue };
        match send(config, recipient, &invoice).await {
            Ok(()) => {
                store::record_mailing(&**client, &number, recipient, None).await?;
                metrics.emails.with_label_values(&["sent"]).inc();
                sent += 1;
            }
            Err(error) => {
                tracing::warn!(invoice_number = number, %error, "Mailing an invoice failed.");
                store::record_mailing(&**client, &number, recipient, Some(&error.to_string())).await?;
                metrics.emails.with_label_values(&["failed"]).inc();
            }
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_only_on_this_machine() {
        assert_eq!(SmtpConfig::default_tls("localhost"), TlsMode::None);
        assert_eq!(SmtpConfig::default_tls("127.0.0.1"), TlsMode::None);
        assert_eq!(SmtpConfig::default_tls("::1"), TlsMode::None);
        assert_eq!(SmtpConfig::default_tls("smtp.example.org"), TlsMode::StartTls);
        assert_eq!("tls".parse::<TlsMode>().unwrap(), TlsMode::Tls);
        assert!("maybe".parse::<TlsMode>().is_err());
    }
}
