//! The device registry and state (`devices`, projected by the processor from
//! `smartmeter.device-events.v1` and telemetry), with the customer's name.

use jiff::Timestamp;
use rust_decimal::Decimal;
use smartmeter_core::DeviceId;

use tokio_postgres::types::ToSql;

use super::{Store, StoreError};

#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRow {
    pub device_id: String,
    pub name: Option<String>,
    pub location: Option<String>,
    pub time_zone: String,
    /// `discovered`, `registered` or `decommissioned` (a CHECK constraint holds it).
    pub lifecycle: String,
    pub tariff_id: Option<String>,
    pub sanctioned_load_kw: Option<Decimal>,
    pub firmware_version: Option<String>,
    /// `None` until the first status message.
    pub online: Option<bool>,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<Timestamp>,
    pub first_seen_at: Option<Timestamp>,
    pub last_seen_at: Option<Timestamp>,
    pub newest_reading_at: Option<Timestamp>,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    pub registered_at: Option<Timestamp>,
    pub decommissioned_at: Option<Timestamp>,
    pub decommission_reason: Option<String>,
    pub readings_total: i64,
}

/// Which devices a list holds. `customer_id` is how a customer's view is limited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    pub customer_id: Option<String>,
    pub lifecycle: Option<&'static str>,
    pub online: Option<bool>,
    /// Devices whose id, name or location contains this text, ignoring case; see
    /// [`contains_pattern`] (what `search` becomes).
    pub contains: Option<String>,
}

/// The `ILIKE` pattern of "contains `text`": `%`, `_` and `\` are matched as
/// themselves (escaped with `\`, `LIKE`'s default escape), the rest as typed. It goes
/// to PostgreSQL as a parameter, never as SQL text. A pattern of this shape, one
/// literal between two `%`, is what a trigram index (`pg_trgm`'s `gin_trgm_ops`) on
/// `device_id`, `name` and `location` answers; without one it is a scan of `devices`.
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

const DEVICE_COLUMNS: &str = "d.device_id, d.name, d.location, d.time_zone, d.lifecycle, d.tariff_id, \
     d.sanctioned_load_kw, d.firmware_version, d.online, d.status_reason, d.status_changed_at, \
     d.first_seen_at, d.last_seen_at, d.newest_reading_at, d.customer_id, c.name AS customer_name, \
     d.registered_at, d.decommissioned_at, d.decommission_reason, d.readings_total";

const DEVICE_FROM: &str = "FROM devices d LEFT JOIN customers c ON c.customer_id = d.customer_id";

/// The filter's conditions on parameters `$1` (customer), `$2` (lifecycle), `$3` (online).
const FILTER: &str = "($1::text IS NULL OR d.customer_id = $1) \
     AND ($2::text IS NULL OR d.lifecycle = $2) \
     AND ($3::boolean IS NULL OR d.online = $3)";

/// The text search of [`DeviceFilter::contains`] on parameter `$4` (the pattern). Only
/// added to the statement when there is a search: a plain `col ILIKE $4` (not
/// `$4 IS NULL OR ...`) is what the planner can answer from an index.
const CONTAINS: &str = " AND (d.device_id ILIKE $4 OR d.name ILIKE $4 OR d.location ILIKE $4)";

impl DeviceFilter {
    /// The statement's `WHERE` conditions (constant text) and the parameters `$1..$3`
    /// or `$1..$4` they use.
    fn conditions(&self) -> (String, Vec<Box<dyn ToSql + Sync + Send>>) {
        let mut params: Vec<Box<dyn ToSql + Sync + Send>> =
            vec![Box::new(self.customer_id.clone()), Box::new(self.lifecycle), Box::new(self.online)];
        let mut sql = FILTER.to_owned();
        if let Some(text) = &self.contains {
            sql.push_str(CONTAINS);
            params.push(Box::new(contains_pattern(text)));
        }
        (sql, params)
    }
}

fn param_refs(params: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

fn device_row(row: &tokio_postgres::Row) -> Result<DeviceRow, tokio_postgres::Error> {
    Ok(DeviceRow {
        device_id: row.try_get("device_id")?,
        name: row.try_get("name")?,
        location: row.try_get("location")?,
        time_zone: row.try_get("time_zone")?,
        lifecycle: row.try_get("lifecycle")?,
        tariff_id: row.try_get("tariff_id")?,
        sanctioned_load_kw: row.try_get("sanctioned_load_kw")?,
        firmware_version: row.try_get("firmware_version")?,
        online: row.try_get("online")?,
        status_reason: row.try_get("status_reason")?,
        status_changed_at: row.try_get("status_changed_at")?,
        first_seen_at: row.try_get("first_seen_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        newest_reading_at: row.try_get("newest_reading_at")?,
        customer_id: row.try_get("customer_id")?,
        customer_name: row.try_get("customer_name")?,
        registered_at: row.try_get("registered_at")?,
        decommissioned_at: row.try_get("decommissioned_at")?,
        decommission_reason: row.try_get("decommission_reason")?,
        readings_total: row.try_get("readings_total")?,
    })
}

impl Store {
    /// Up to `limit` devices matching `filter` with an id after `after`, by id.
    pub async fn devices_after(
        &self,
        filter: &DeviceFilter,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeviceRow>, StoreError> {
        let client = self.pool.get().await?;
        let (conditions, mut params) = filter.conditions();
        let (after_param, limit_param) = (params.len() + 1, params.len() + 2);
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} {DEVICE_FROM}
             WHERE {conditions} AND (${after_param}::text IS NULL OR d.device_id > ${after_param})
             ORDER BY d.device_id LIMIT ${limit_param}"
        );
        params.push(Box::new(after.map(str::to_owned)));
        params.push(Box::new(limit));
        let rows = client.query(&sql, &param_refs(&params)).await?;
        Ok(rows.iter().map(device_row).collect::<Result<_, _>>()?)
    }

    pub async fn count_devices(&self, filter: &DeviceFilter) -> Result<i64, StoreError> {
        let client = self.pool.get().await?;
        let (conditions, params) = filter.conditions();
        let sql = format!("SELECT count(*) {DEVICE_FROM} WHERE {conditions}");
        let row = client.query_one(&sql, &param_refs(&params)).await?;
        Ok(row.try_get(0)?)
    }

    pub async fn device(&self, device_id: &DeviceId) -> Result<Option<DeviceRow>, StoreError> {
        let client = self.pool.get().await?;
        let sql = format!("SELECT {DEVICE_COLUMNS} {DEVICE_FROM} WHERE d.device_id = $1");
        let row = client.query_opt(&sql, &[&device_id.as_str()]).await?;
        Ok(row.as_ref().map(device_row).transpose()?)
    }

    /// `Some(customer)` of a known device (`Some(None)` when it has none); `None` for an
    /// unknown device.
    pub async fn device_customer(&self, device_id: &DeviceId) -> Result<Option<Option<String>>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT customer_id FROM devices WHERE device_id = $1", &[&device_id.as_str()])
            .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    /// The ids of a customer's devices, for filtering live events.
    pub async fn customer_device_ids(&self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query("SELECT device_id FROM devices WHERE customer_id = $1 ORDER BY device_id", &[&customer_id])
            .await?;
        Ok(rows.iter().map(|row| row.try_get(0)).collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_matches_the_text_as_typed() {
        assert_eq!(contains_pattern("MAC000024"), "%MAC000024%");
        // LIKE's wildcards and its escape character stand for themselves.
        assert_eq!(contains_pattern("50%_off\\x"), "%50\\%\\_off\\\\x%");
        assert_eq!(contains_pattern("Zürich"), "%Zürich%");
    }

    #[test]
    fn the_search_is_only_in_the_statement_when_asked_for() {
        let (plain, params) = DeviceFilter::default().conditions();
        assert!(!plain.contains("ILIKE"));
        assert_eq!(params.len(), 3);
        let filter = DeviceFilter { contains: Some("x".into()), ..Default::default() };
        let (searched, params) = filter.conditions();
        assert!(searched.ends_with(CONTAINS));
        assert_eq!(params.len(), 4);
    }
}
