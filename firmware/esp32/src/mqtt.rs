//! One MQTT session on ESP-IDF's client (esp-mqtt through esp-idf-svc).
//!
//! ESP-IDF's own reconnect is off (`reconnect_timeout: None`): when the session ends the
//! [`Session`] is dropped, and meter-core's jittered back-off decides when a new one is
//! made. Unacknowledged readings are meter-core's to keep (they leave its outbox only on
//! PUBACK), so nothing is lost with the old client's queue. Events travel from the
//! client's task to the meter loop over a channel that belongs to one session, so a late
//! event from a dropped session cannot reach the next one.

use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

use esp_idf_svc::mqtt::client::{
    EspMqttClient, EventPayload, LwtConfiguration, MqttClientConfiguration, QoS as EspQoS,
};
use esp_idf_svc::sys::EspError;
use log::{debug, warn};
use meter_core::meter::Handover;
use meter_core::mqtt::{Delivery, LastWill, QoS};
use meter_core::Publisher;

use crate::config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connected,
    Disconnected,
    /// The broker acknowledged this message id (PUBACK).
    Acknowledged(u32),
}

pub struct Session {
    client: EspMqttClient<'static>,
    events: Receiver<Event>,
}

impl Session {
    /// Starts connecting; [`Event::Connected`] follows when the broker accepted us.
    pub fn start(will: &LastWill) -> Result<Self, EspError> {
        let conf = MqttClientConfiguration {
            client_id: Some(config::DEVICE_ID),
            username: Some(config::MQTT_USERNAME),
            password: Some(config::MQTT_PASSWORD),
            keep_alive_interval: Some(Duration::from_secs(30)),
            network_timeout: Duration::from_secs(10),
            reconnect_timeout: None,
            lwt: Some(LwtConfiguration {
                topic: will.topic.as_str(),
                payload: will.payload,
                qos: esp_qos(will.delivery.qos),
                retain: will.delivery.retain,
            }),
            server_certificate: config::MQTT_CA,
            ..Default::default()
        };
        let (sender, events) = channel();
        let client = EspMqttClient::new_cb(config::MQTT_URL, &conf, move |event| {
            let event = match event.payload() {
                EventPayload::Connected(_) => Event::Connected,
                EventPayload::Disconnected => Event::Disconnected,
                EventPayload::Published(id) => Event::Acknowledged(id),
                EventPayload::Error(e) => {
                    warn!("MQTT client error: {e:?}");
                    return;
                }
                other => {
                    debug!("MQTT event {other}");
                    return;
                }
            };
            // The receiver is gone once the session is dropped; nothing to tell then.
            let _ = sender.send(event);
        })?;
        Ok(Self { client, events })
    }

    pub fn next_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

impl Publisher for Session {
    type Error = EspError;

    /// Queues the message in the client (non-blocking); QoS 1 messages are then awaited
    /// by id.
    fn publish(&mut self, topic: &str, payload: &[u8], delivery: Delivery) -> Result<Handover, EspError> {
        let id = self.client.enqueue(topic, esp_qos(delivery.qos), delivery.retain, payload)?;
        Ok(match delivery.qos {
            QoS::AtMostOnce => Handover::Done,
            QoS::AtLeastOnce => Handover::AwaitingAck(id),
        })
    }
}

fn esp_qos(qos: QoS) -> EspQoS {
    match qos {
        QoS::AtMostOnce => EspQoS::AtMostOnce,
        QoS::AtLeastOnce => EspQoS::AtLeastOnce,
    }
}
