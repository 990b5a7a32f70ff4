//! Passes ESP-IDF's build settings on (embuild), then checks the SMARTMETER_* settings
//! and hands them to the compiler, defaults filled in, so a bad value fails the build
//! instead of the meter in the field.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    embuild::espidf::sysenv::output();
    settings();
}

fn var(name: &str) -> Option<String> {
    println!("cargo:rerun-if-env-changed={name}");
    env::var(name).ok()
}

fn fail(message: &str) -> ! {
    panic!(
        "\n\nfirmware settings: {message}\nSee firmware/README.md and firmware/esp32/config.example.env.\n\n"
    );
}

fn pass(name: &str, value: &str) {
    if value.contains(['\n', '\r']) {
        fail(&format!("{name} must be one line"));
    }
    println!("cargo:rustc-env={name}={value}");
}

fn settings() {
    const REQUIRED: [&str; 5] = [
        "SMARTMETER_DEVICE_ID",
        "SMARTMETER_WIFI_SSID",
        "SMARTMETER_WIFI_PASSWORD",
        "SMARTMETER_MQTT_URL",
        "SMARTMETER_MQTT_PASSWORD",
    ];
    let values: Vec<Option<String>> = REQUIRED.iter().map(|name| var(name)).collect();
    let missing: Vec<&str> =
        REQUIRED.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(n, _)| *n).collect();
    if !missing.is_empty() {
        fail(&format!("not set: {}", missing.join(", ")));
    }
    let [device_id, ssid, wifi_password, mqtt_url, mqtt_password] =
        <[Option<String>; 5]>::try_from(values).unwrap().map(Option::unwrap);

    if let Err(e) = meter_core::DeviceId::parse(&device_id) {
        fail(&format!("SMARTMETER_DEVICE_ID {device_id:?}: {e}"));
    }
    if ssid.is_empty() || ssid.len() > 32 {
        fail("SMARTMETER_WIFI_SSID must be 1..=32 bytes");
    }
    if !(wifi_password.is_empty() || (8..=64).contains(&wifi_password.len())) {
        fail("SMARTMETER_WIFI_PASSWORD must be empty (open network) or 8..=64 bytes");
    }
    if !["mqtt://", "mqtts://"].iter().any(|scheme| mqtt_url.starts_with(scheme)) {
        fail("SMARTMETER_MQTT_URL must start with mqtt:// or mqtts://");
    }
    if mqtt_password.is_empty() {
        fail("SMARTMETER_MQTT_PASSWORD is empty; the broker refuses anonymous meters");
    }
    let mqtt_username = var("SMARTMETER_MQTT_USERNAME").unwrap_or_else(|| device_id.clone());

    let interval = var("SMARTMETER_PUBLISH_INTERVAL_S").unwrap_or_else(|| "10".into());
    match interval.parse::<u32>() {
        Ok(1..=86_400) => {}
        _ => fail("SMARTMETER_PUBLISH_INTERVAL_S must be a whole number of seconds, 1..=86400"),
    }

    let address_text = var("SMARTMETER_PZEM_ADDRESS").unwrap_or_else(|| "0xF8".into());
    let address = match address_text.strip_prefix("0x").or_else(|| address_text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => address_text.parse::<u8>(),
    };
    let address = match address {
        Ok(a @ 0x01..=0xF8) => a,
        _ => fail("SMARTMETER_PZEM_ADDRESS must be 0x01..=0xF7, or 0xF8 for the only module on the bus"),
    };

    let sntp_server = var("SMARTMETER_SNTP_SERVER").unwrap_or_else(|| "pool.ntp.org".into());

    println!("cargo:rustc-check-cfg=cfg(mqtt_ca)");
    if let Some(path) = var("SMARTMETER_MQTT_CA_CERT") {
        println!("cargo:rerun-if-changed={path}");
        let mut pem =
            fs::read(&path).unwrap_or_else(|e| fail(&format!("SMARTMETER_MQTT_CA_CERT {path}: {e}")));
        if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") || pem.contains(&0) {
            fail("SMARTMETER_MQTT_CA_CERT must be a PEM certificate");
        }
        // ESP-TLS wants PEM text with a terminating NUL.
        pem.push(0);
        let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("mqtt_ca.pem");
        fs::write(out, pem).unwrap();
        println!("cargo:rustc-cfg=mqtt_ca");
    }

    pass("SMARTMETER_DEVICE_ID", &device_id);
    pass("SMARTMETER_WIFI_SSID", &ssid);
    pass("SMARTMETER_WIFI_PASSWORD", &wifi_password);
    pass("SMARTMETER_MQTT_URL", &mqtt_url);
    pass("SMARTMETER_MQTT_USERNAME", &mqtt_username);
    pass("SMARTMETER_MQTT_PASSWORD", &mqtt_password);
    pass("SMARTMETER_PUBLISH_INTERVAL_S", &interval);
    pass("SMARTMETER_PZEM_ADDRESS", &address.to_string());
    pass("SMARTMETER_SNTP_SERVER", &sntp_server);
}
