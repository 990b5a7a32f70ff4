//! The tariffs the worker prices with: every stored version, by tariff, as core's
//! validated [`TariffHistory`], and the rule for admitting a published version.
//!
//! A version is admitted only if core's [`Tariff`] accepts it (no overlapping or
//! unordered slabs, no negative rate, a known time zone, ...) and the history with it
//! is still valid (same currency and zone, strictly later date and higher number than
//! the versions before it). A version is never changed: the same number with another
//! document is a conflict. Refusal leaves the book as it was.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use smartmeter_core::billing::{Tariff, TariffDocument, TariffError, TariffHistory};

/// One tariff's versions and the digest of each version's document.
#[derive(Debug)]
pub struct TariffEntry {
    pub history: TariffHistory,
    /// sha256 of each version's canonical JSON, parallel to `history.versions()`.
    digests: Vec<[u8; 32]>,
}

impl TariffEntry {
    fn new(history: TariffHistory) -> Self {
        let digests = history.versions().iter().map(|version| document_digest(version.document())).collect();
        Self { history, digests }
    }

    /// Digest of `version`'s document (all zeros for a version this tariff lacks).
    pub fn version_digest(&self, version: u32) -> &[u8; 32] {
        const NONE: [u8; 32] = [0; 32];
        self.history
            .versions()
            .iter()
            .position(|tariff| tariff.version() == version)
            .map_or(&NONE, |index| &self.digests[index])
    }
}

pub fn document_digest(document: &TariffDocument) -> [u8; 32] {
    let json = serde_json::to_vec(document).expect("a tariff document serializes");
    Sha256::digest(json).into()
}

/// Why a published version was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("tariff {tariff_id:?} version {version} refused: {source}")]
    Invalid { tariff_id: String, version: u32, source: TariffError },
    #[error("tariff {tariff_id:?} version {version} does not follow the stored versions: {source}")]
    OutOfOrder { tariff_id: String, version: u32, source: TariffError },
    #[error(
        "tariff {tariff_id:?} version {version} is already published with another document; \
         a published version never changes (publish a new version)"
    )]
    Conflict { tariff_id: String, version: u32 },
}

impl Refusal {
    /// Bounded code for `billing_rejects.error_code` and metrics.
    pub fn error_code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } | Self::OutOfOrder { .. } => "tariff_refused",
            Self::Conflict { .. } => "tariff_conflict",
        }
    }
}

/// What admitting a version did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    New,
    /// The same document under the same version is stored already.
    AlreadyStored,
}

/// All stored tariffs. Cheap to clone (entries are shared).
#[derive(Debug, Clone, Default)]
pub struct TariffBook {
    entries: HashMap<String, Arc<TariffEntry>>,
    /// The `tariff_versions.seq` the book was loaded at.
    pub seq: i64,
}

impl TariffBook {
    /// A book of stored documents (in any order); they were admitted when stored.
    pub fn from_documents(documents: Vec<TariffDocument>, seq: i64) -> Result<Self, TariffError> {
        let mut by_tariff: HashMap<String, Vec<Tariff>> = HashMap::new();
        for document in documents {
            let tariff = Tariff::new(document)?;
            by_tariff.entry(tariff.tariff_id().to_owned()).or_default().push(tariff);
        }
        let mut entries = HashMap::with_capacity(by_tariff.len());
        for (tariff_id, mut versions) in by_tariff {
            versions.sort_by_key(|tariff| tariff.effective_from());
            entries.insert(tariff_id, Arc::new(TariffEntry::new(TariffHistory::new(versions)?)));
        }
        Ok(Self { entries, seq })
    }

    pub fn get(&self, tariff_id: &str) -> Option<&Arc<TariffEntry>> {
        self.entries.get(tariff_id)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Validates a published version against core's rules and the stored versions and,
    /// if it is new, adds it. On refusal the book is unchanged.
    pub fn admit(&mut self, document: TariffDocument) -> Result<Admitted, Refusal> {
        let (tariff_id, version) = (document.tariff_id.clone(), document.version);
        let tariff = Tariff::new(document).map_err(|source| Refusal::Invalid {
            tariff_id: tariff_id.clone(),
            version,
            source,
        })?;
        let mut versions = match self.entries.get(&tariff_id) {
            Some(entry) => {
                if let Some(stored) =
                    entry.history.versions().iter().find(|stored| stored.version() == version)
                {
                    return if stored.document() == tariff.document() {
                        Ok(Admitted::AlreadyStored)
                    } else {
                        Err(Refusal::Conflict { tariff_id, version })
                    };
                }
                entry.history.versions().to_vec()
            }
            None => Vec::new(),
        };
        versions.push(tariff);
        let history = TariffHistory::new(versions).map_err(|source| Refusal::OutOfOrder {
            tariff_id: tariff_id.clone(),
            version,
            source,
        })?;
        self.entries.insert(tariff_id, Arc::new(TariffEntry::new(history)));
        Ok(Admitted::New)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::price::tests::ofgem_documents;

    #[test]
    fn versions_are_admitted_in_order_once_and_never_changed() {
        let documents = ofgem_documents();
        let mut book = TariffBook::default();
        assert_eq!(book.admit(documents[0].clone()).unwrap(), Admitted::New);
        assert_eq!(book.admit(documents[0].clone()).unwrap(), Admitted::AlreadyStored);
        let mut changed = documents[0].clone();
        changed.title = Some("changed".into());
        assert_eq!(book.admit(changed).unwrap_err().error_code(), "tariff_conflict");
        assert_eq!(book.admit(documents[1].clone()).unwrap(), Admitted::New);

        // Version 3 dated before version 2: refused, the book unchanged.
        let mut early = documents[1].clone();
        early.version = 3;
        early.effective_from = jiff::civil::date(2024, 9, 1);
        let refusal = book.admit(early).unwrap_err();
        assert!(matches!(refusal, Refusal::OutOfOrder { .. }), "{refusal}");
        assert_eq!(book.get("ofgem_price_cap_2024q3").unwrap().history.versions().len(), 2);
    }

    #[test]
    fn invalid_documents_are_refused_with_core_reasons() {
        let mut negative = ofgem_documents()[0].clone();
        negative.components = serde_json::from_value(serde_json::json!([
            {"kind": "per_kwh", "name": "energy", "group": "energy", "rate": "-0.10"}
        ]))
        .unwrap();
        let mut book = TariffBook::default();
        let refusal = book.admit(negative).unwrap_err();
        assert_eq!(refusal.error_code(), "tariff_refused");
        assert!(refusal.to_string().contains("negative rate"), "{refusal}");
        assert!(book.is_empty());
    }
}
