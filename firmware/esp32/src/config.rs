//! Build-time settings. `build.rs` reads the SMARTMETER_* environment variables, checks
//! them, fills in defaults and hands them to the compiler; here they become constants.

pub const DEVICE_ID: &str = env!("SMARTMETER_DEVICE_ID");
pub const WIFI_SSID: &str = env!("SMARTMETER_WIFI_SSID");
/// Empty for an open network.
pub const WIFI_PASSWORD: &str = env!("SMARTMETER_WIFI_PASSWORD");
pub const MQTT_URL: &str = env!("SMARTMETER_MQTT_URL");
pub const MQTT_USERNAME: &str = env!("SMARTMETER_MQTT_USERNAME");
pub const MQTT_PASSWORD: &str = env!("SMARTMETER_MQTT_PASSWORD");
pub const PUBLISH_INTERVAL_MS: u64 = parse_u64(env!("SMARTMETER_PUBLISH_INTERVAL_S")) * 1_000;
pub const PZEM_ADDRESS: u8 = parse_u64(env!("SMARTMETER_PZEM_ADDRESS")) as u8;
pub const SNTP_SERVER: &str = env!("SMARTMETER_SNTP_SERVER");

/// The CA that signed the broker's certificate, for `mqtts://` (SMARTMETER_MQTT_CA_CERT).
#[cfg(mqtt_ca)]
pub const MQTT_CA: Option<esp_idf_svc::tls::X509<'static>> =
    Some(esp_idf_svc::tls::X509::pem_until_nul(include_bytes!(concat!(env!("OUT_DIR"), "/mqtt_ca.pem"))));
#[cfg(not(mqtt_ca))]
pub const MQTT_CA: Option<esp_idf_svc::tls::X509<'static>> = None;

/// Decimal digits to a number, at compile time (build.rs has checked them).
const fn parse_u64(text: &str) -> u64 {
    let bytes = text.as_bytes();
    assert!(!bytes.is_empty(), "empty number");
    let mut value = 0u64;
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i].is_ascii_digit(), "not a decimal number");
        value = value * 10 + (bytes[i] - b'0') as u64;
        i += 1;
    }
    value
}
