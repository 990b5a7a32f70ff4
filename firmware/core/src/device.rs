//! The meter's identity as it appears in topics and payloads.
//!
//! The rules are those of `smartmeter_core::DeviceId` (the bridge's), restated here
//! because that crate needs `std`; a host test holds the two equal. They also make the
//! id safe to put in an MQTT topic (no `/`, `+`, `#`) and in JSON without escaping.

use heapless::String;

/// Longest device id, as in `smartmeter_core::device::DEVICE_ID_MAX_LEN`.
pub const DEVICE_ID_MAX_LEN: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device id is empty")]
    Empty,
    #[error("device id is longer than {DEVICE_ID_MAX_LEN} characters")]
    TooLong,
    #[error("device id contains {0:?}; allowed are ASCII letters, digits and . _ : -")]
    BadCharacter(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId(String<DEVICE_ID_MAX_LEN>);

impl DeviceId {
    pub fn parse(id: &str) -> Result<Self, DeviceIdError> {
        if id.is_empty() {
            return Err(DeviceIdError::Empty);
        }
        if id.len() > DEVICE_ID_MAX_LEN {
            return Err(DeviceIdError::TooLong);
        }
        if let Some(bad) = id.chars().find(|c| !is_allowed(*c)) {
            return Err(DeviceIdError::BadCharacter(bad));
        }
        let mut text = String::new();
        text.push_str(id).map_err(|()| DeviceIdError::TooLong)?;
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert_eq!(DeviceId::parse("meter-001").unwrap().as_str(), "meter-001");
        assert_eq!(DeviceId::parse(""), Err(DeviceIdError::Empty));
        assert_eq!(DeviceId::parse("a/b"), Err(DeviceIdError::BadCharacter('/')));
        assert_eq!(DeviceId::parse("a+"), Err(DeviceIdError::BadCharacter('+')));
        assert_eq!(DeviceId::parse(&"x".repeat(65)), Err(DeviceIdError::TooLong));
        assert!(DeviceId::parse(&"x".repeat(64)).is_ok());
    }

    proptest! {
        #[test]
        fn agrees_with_the_bridge(id in "\\PC{0,70}") {
            let ours = DeviceId::parse(&id).is_ok();
            let bridge = smartmeter_core::DeviceId::parse(&id).is_ok();
            prop_assert_eq!(ours, bridge);
        }

        #[test]
        fn agrees_with_the_bridge_on_near_misses(id in "[a-zA-Z0-9._:/+# -]{0,66}") {
            prop_assert_eq!(DeviceId::parse(&id).is_ok(), smartmeter_core::DeviceId::parse(&id).is_ok());
        }
    }
}
