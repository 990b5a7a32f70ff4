//! Connection health reported by `/health`: each service registers its dependencies
//! (kafka, postgres, mqtt) and flips them as connections come and go.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Down,
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Component {
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `ok` when every component is up, otherwise `degraded`.
    pub status: &'static str,
    pub service: String,
    pub components: BTreeMap<String, Component>,
}

#[derive(Debug, Clone)]
pub struct Health {
    service: String,
    components: Arc<RwLock<BTreeMap<String, Component>>>,
}

impl Health {
    pub fn new(service: &str, components: &[&str]) -> Self {
        let map = components
            .iter()
            .map(|name| ((*name).to_owned(), Component { state: State::Unknown, detail: None }))
            .collect();
        Self { service: service.to_owned(), components: Arc::new(RwLock::new(map)) }
    }

    pub fn up(&self, component: &str) {
        self.set(component, State::Up, None);
    }

    pub fn down(&self, component: &str, detail: impl Into<String>) {
        self.set(component, State::Down, Some(detail.into()));
    }

    fn set(&self, component: &str, state: State, detail: Option<String>) {
        let mut map = self.components.write().expect("health lock poisoned");
        map.insert(component.to_owned(), Component { state, detail });
    }

    pub fn report(&self) -> Report {
        let components = self.components.read().expect("health lock poisoned").clone();
        let all_up = components.values().all(|c| c.state == State::Up);
        Report { status: if all_up { "ok" } else { "degraded" }, service: self.service.clone(), components }
    }
}
