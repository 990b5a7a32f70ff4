//! Signed, short-lived links to invoice PDFs: `Invoice.pdfUrl` is
//! `/api/invoices/{number}/pdf?expires=<unix seconds>&signature=<HMAC-SHA256>` for a
//! caller allowed to read the invoice, so a browser can open it as a plain link
//! (`<a href>` sends no Authorization header). The same path also answers a request
//! that carries a token instead.
//!
//! The key comes from `--link-secret` (set the same on every instance behind one
//! address); without it each process draws a random one, and its links stop working
//! when it restarts, which their short life makes harmless.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;

/// How long a link works.
pub const LINK_TTL_SECONDS: i64 = 15 * 60;

#[derive(Clone)]
pub struct LinkSigner {
    key: Vec<u8>,
}

impl LinkSigner {
    pub fn new(secret: Option<&str>) -> Result<Self, getrandom::Error> {
        let key = match secret.filter(|secret| !secret.is_empty()) {
            Some(secret) => secret.as_bytes().to_vec(),
            None => {
                let mut key = vec![0_u8; 32];
                getrandom::fill(&mut key)?;
                key
            }
        };
        Ok(Self { key })
    }

    fn signature(&self, invoice_number: &str, expires: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"invoice-pdf\n");
        mac.update(invoice_number.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The path of the PDF of `invoice_number`, valid for [`LINK_TTL_SECONDS`] from `now`.
    pub fn invoice_pdf_path(&self, invoice_number: &str, now: Timestamp) -> String {
        let expires = now.as_second() + LINK_TTL_SECONDS;
        format!(
            "/api/invoices/{invoice_number}/pdf?expires={expires}&signature={}",
            self.signature(invoice_number, expires)
        )
    }

    /// Whether `signature` was made by this key for this invoice and has not expired.
    pub fn verify(&self, invoice_number: &str, expires: i64, signature: &str, now: Timestamp) -> bool {
        if expires < now.as_second() {
            return false;
        }
        let Ok(given) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(b"invoice-pdf\n");
        mac.update(invoice_number.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(path: &str) -> (i64, String) {
        let query = path.split_once('?').unwrap().1;
        let mut expires = 0;
        let mut signature = String::new();
        for pair in query.split('&') {
            match pair.split_once('=').unwrap() {
                ("expires", value) => expires = value.parse().unwrap(),
                ("signature", value) => signature = value.to_owned(),
                _ => {}
            }
        }
        (expires, signature)
    }

    #[test]
    fn links_verify_for_their_invoice_until_they_expire() {
        let signer = LinkSigner::new(Some("test secret")).unwrap();
        let now: Timestamp = "2026-01-29T10:00:00Z".parse().unwrap();
        let path = signer.invoice_pdf_path("INV-meter-001-202601", now);
        assert!(path.starts_with("/api/invoices/INV-meter-001-202601/pdf?expires="));
        let (expires, signature) = query(&path);
        assert!(signer.verify("INV-meter-001-202601", expires, &signature, now));
        assert!(!signer.verify("INV-meter-002-202601", expires, &signature, now), "another invoice");
        assert!(!signer.verify("INV-meter-001-202601", expires + 1, &signature, now), "another expiry");
        let later = Timestamp::from_second(expires + 1).unwrap();
        assert!(!signer.verify("INV-meter-001-202601", expires, &signature, later), "expired");
        let other = LinkSigner::new(None).unwrap();
        assert!(!other.verify("INV-meter-001-202601", expires, &signature, now), "another key");
        assert!(!signer.verify("INV-meter-001-202601", expires, "garbage!", now));
    }
}
