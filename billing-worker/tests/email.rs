//! Invoices mailed over SMTP to a sink this test starts on 127.0.0.1 (a minimal SMTP
//! server: greeting, EHLO, MAIL, RCPT, DATA, QUIT). The message is parsed back with
//! mail-parser: one attachment, the invoice's PDF byte for byte, and the total in the
//! subject, the body and the PDF's text. The worker's automatic mailing sends each
//! stored invoice once and records it in `invoice_mailings`.

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use mail_parser::{MessageParser, MimeHeaders};
use smartmeter_billing_worker::email::{self, SmtpConfig, TlsMode};
use smartmeter_billing_worker::metrics::Metrics;
use smartmeter_billing_worker::{bill, pdf, price, store, tariffs};
use smartmeter_core::billing::events::InvoiceEvent;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A message the sink accepted: envelope sender, recipients, and the DATA.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    to: Vec<String>,
    data: Vec<u8>,
}

/// Starts the sink; returns its port and what it received so far.
async fn smtp_sink() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let store = received.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read);
                write.write_all(b"220 sink.test ESMTP test sink\r\n").await.unwrap();
                let mut message = Received { from: String::new(), to: Vec::new(), data: Vec::new() };
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let command = line.trim_end().to_owned();
                    let upper = command.to_ascii_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                        b"250-sink.test\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM:") {
                        message.from = command[10..].trim().to_owned();
                        b"250 2.1.0 OK\r\n"
                    } else if upper.starts_with("RCPT TO:") {
                        message.to.push(command[8..].trim().to_owned());
                        b"250 2.1.5 OK\r\n"
                    } else if upper == "DATA" {
                        write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await.unwrap();
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == ".\r\n" {
                                break;
                            }
                            // Dot-unstuffing (RFC 5321 4.5.2).
                            let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                            message.data.extend_from_slice(unstuffed.as_bytes());
                        }
                        store.lock().unwrap().push(std::mem::replace(
                            &mut message,
                            Received { from: String::new(), to: Vec::new(), data: Vec::new() },
                        ));
                        b"250 2.0.0 queued\r\n"
                    } else if upper == "QUIT" {
                        write.write_all(b"221 2.0.0 bye\r\n").await.unwrap();
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    (port, received)
}

fn smtp(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        user: None,
        password: None,
        from: "smartmeter billing <billing@localhost>".into(),
        tls: TlsMode::None,
    }
}

fn real_invoice(household: &str) -> InvoiceEvent {
    let rows = half_hours();
    let event = january_period(household, household, &rows);
    invoice_for(&event, &[london_tariff("london_test_2013")])
}

/// Checks a received message carries `invoice` with its PDF; returns the PDF.
fn check_message(received: &Received, invoice: &InvoiceEvent, to: &str) -> Vec<u8> {
    assert_eq!(received.to, [format!("<{to}>")]);
    assert_eq!(received.from, "<billing@localhost>");
    let message = MessageParser::default().parse(&received.data).expect("a MIME message");
    let subject = message.subject().unwrap();
    assert!(subject.contains(&invoice.invoice_number), "{subject}");
    assert!(subject.contains(&format!("GBP {}", invoice.total)), "{subject}");
    let body = message.body_text(0).expect("a text part");
    assert!(body.contains(&format!("Total: GBP {}", invoice.total)), "{body}");
    assert!(body.contains(&format!("Energy used: {} kWh", invoice.energy_kwh)), "{body}");
    let attachments: Vec<_> = message.attachments().collect();
    assert_eq!(attachments.len(), 1);
    let attachment = attachments[0];
    let content_type = attachment.content_type().expect("a content type");
    assert_eq!((content_type.ctype(), content_type.subtype()), ("application", Some("pdf")));
    assert_eq!(attachment.attachment_name(), Some(format!("{}.pdf", invoice.invoice_number).as_str()));
    attachment.contents().to_vec()
}

fn pdf_text(pdf: &[u8], name: &str) -> String {
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("mailed-{name}.pdf"));
    std::fs::write(&path, pdf).unwrap();
    let output = Command::new("pdftotext").arg(&path).arg("-").output().expect("pdftotext runs");
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_is_mailed_with_its_pdf_attached() {
    let (port, received) = smtp_sink().await;
    let invoice = real_invoice("MAC000002");
    email::send(&smtp(port), "customer@example.org", &invoice).await.expect("mailed");

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let pdf = check_message(&received[0], &invoice, "customer@example.org");
    assert_eq!(pdf, pdf::render(&invoice).unwrap(), "the attachment is the invoice's PDF");
    let text = pdf_text(&pdf, &invoice.invoice_number);
    assert!(text.contains(&invoice.invoice_number), "{text}");
    assert!(text.contains(&format!("GBP {}", invoice.total)), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_invoices_are_mailed_once_and_recorded() {
    let (port, received) = smtp_sink().await;
    let db = database("billing_email").await;
    let pool = smartmeter_core::service::db::pool(&db.url, 2, "billing-test").unwrap();

    // Two invoices of real January data, written the way the worker writes them.
    let rows = half_hours();
    let tariff = london_tariff("london_test_2013");
    let book = tariffs::TariffBook::from_documents(vec![tariff.clone()], 1).unwrap();
    let events: Vec<_> = ["MAC000015", "MAC000020"]
        .iter()
        .map(|household| january_period(household, household, &rows))
        .collect();
    let assignments = events
        .iter()
        .map(|event| {
            let assignment = price::Assignment {
                tariff_id: tariff.tariff_id.clone(),
                effective_from: tariff.effective_from,
                sanctioned_load_kw: None,
                phase: None,
                connected_load_kw: None,
            };
            (event.device_id.to_string(), vec![assignment])
        })
        .collect();
    let priced = bill::price_all(events, &assignments, &book, 1);
    {
        let mut client = pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let counts = bill::record(&tx, priced, "smartmeter.invoices.unused", None).await.unwrap();
        assert_eq!(counts.issued, 2);
        tx.commit().await.unwrap();
    }

    let shutdown = CancellationToken::new();
    let metrics = Metrics::register(&prometheus::Registry::new()).unwrap();
    let mailer = tokio::spawn(email::mail_forever(
        pool.clone(),
        smtp(port),
        "accounts@example.org".into(),
        Duration::from_secs(3600),
        Duration::from_millis(200),
        metrics.clone(),
        shutdown.clone(),
    ));
    wait_for(&db.url, "SELECT count(*) FROM invoice_mailings WHERE sent_at IS NOT NULL", 2, 60).await;
    // A few more rounds: nothing is mailed twice.
    tokio::time::sleep(Duration::from_millis(800)).await;
    shutdown.cancel();
    mailer.await.unwrap();

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2);
    assert_eq!(metrics.emails.with_label_values(&["sent"]).get(), 2);
    let client = pool.get().await.unwrap();
    for message in &received {
        let number = MessageParser::default()
            .parse(&message.data)
            .unwrap()
            .attachments()
            .next()
            .unwrap()
            .attachment_name()
            .unwrap()
            .trim_end_matches(".pdf")
            .to_owned();
        let invoice = store::fetch_invoice(&**client, &number).await.unwrap().expect("a stored invoice");
        let pdf = check_message(message, &invoice, "accounts@example.org");
        assert_eq!(pdf, pdf::render(&invoice).unwrap());
        let attempts: i32 = client
            .query_one(
                "SELECT attempts FROM invoice_mailings WHERE invoice_number = $1 AND recipient = $2",
                &[&number, &"accounts@example.org"],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(attempts, 1);
    }
    drop(client);
    db.drop_database().await.unwrap();
}
