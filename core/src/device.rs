//! Device identity.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest device id accepted. It is part of MQTT topics and Kafka keys, so it is
/// kept short and free of topic wildcards and separators.
pub const DEVICE_ID_MAX_LEN: usize = 64;

/// A meter's id, as it appears in `smartmeter/{device_id}/telemetry`.
///
/// Invariant: 1..=64 characters from `[A-Za-z0-9._:-]`, so it can never contain an
/// MQTT wildcard (`+`, `#`) or level separator (`/`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device id is empty")]
    Empty,
    #[error("device id is longer than {DEVICE_ID_MAX_LEN} characters")]
    TooLong,
    #[error("device id contains {0:?}; allowed are letters, digits and . _ : -")]
    BadCharacter(char),
}

impl DeviceId {
    pub fn parse(id: &str) -> Result<Self, DeviceIdError> {
        if id.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if id.len() > DEVICE_ID_MAX_LEN {
            return Err(DeviceIdError::TooLong);
        }
        if let Some(bad) =
            id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(DeviceIdError::BadCharacter(bad));
        }
        Ok(Self(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = DeviceIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for DeviceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_seed_and_london_ids() {
        for id in ["meter-001", "MAC000002", "ttyUSB0", "site.a:1_b"] {
            assert_eq!(DeviceId::parse(id).unwrap().as_str(), id);
        }
    }

    #[test]
    fn refuses_topic_characters_and_empty() {
        assert_eq!(DeviceId::parse(""), Err(DeviceIdError::Empty));
        assert_eq!(DeviceId::parse("a/b"), Err(DeviceIdError::BadCharacter('/')));
        assert_eq!(DeviceId::parse("+"), Err(DeviceIdError::BadCharacter('+')));
        assert_eq!(DeviceId::parse("#"), Err(DeviceIdError::BadCharacter('#')));
        assert_eq!(DeviceId::parse(&"x".repeat(65)), Err(DeviceIdError::TooLong));
    }
}
