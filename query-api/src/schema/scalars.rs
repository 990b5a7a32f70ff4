//! Scalars at the API's edge: `DateTime` (RFC 3339 instant), `Date` (YYYY-MM-DD),
//! `Month` (YYYY-MM, a local calendar month).
//! `Decimal` is async-graphql's, a string, for exact energy.
//!
//! Both check their input in `is_valid`, so a malformed value is refused while the
//! query is validated, before any resolver runs.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// An instant as RFC 3339 with an offset (`2013-01-01T00:00:00Z`); written in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct DateTime(pub jiff::Timestamp);

/// An instant, RFC 3339 with an offset (`2013-01-01T00:00:00Z`,
/// `2013-01-01T05:30:00+05:30`); the API writes UTC.
#[Scalar(name = "DateTime", specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_timestamp(text).map(DateTime).map_err(InputValueError::custom),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(text) if parse_timestamp(text).is_ok())
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

fn parse_timestamp(text: &str) -> Result<jiff::Timestamp, String> {
    text.parse::<jiff::Timestamp>().map_err(|_| {
        format!("{text:?} is not an RFC 3339 date-time with an offset, e.g. 2013-01-01T00:00:00Z")
    })
}

/// A calendar date, `YYYY-MM-DD`, local to the device's time zone where it names a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub jiff::civil::Date);

/// A calendar date, `YYYY-MM-DD`; local to the device's time zone where it names a day.
#[Scalar(name = "Date", specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339#section-5.6")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_date(text).map(Date).map_err(InputValueError::custom),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(text) if parse_date(text).is_ok())
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.to_string())
    }
}

fn parse_date(text: &str) -> Result<jiff::civil::Date, String> {
    let error = || format!("{text:?} is not a date of the form YYYY-MM-DD");
    // RFC 3339 full-date: exactly four year digits, two month, two day.
    let shape_ok = text.len() == 10
        && text
            .bytes()
            .enumerate()
            .all(|(i, b)| if i == 4 || i == 7 { b == b'-' } else { b.is_ascii_digit() });
    if !shape_ok {
        return Err(error());
    }
    text.parse::<jiff::civil::Date>().map_err(|_| error())
}

/// A local calendar month, `YYYY-MM`; held as its first day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month(pub jiff::civil::Date);

/// A calendar month, `YYYY-MM`, local to the device's time zone (billing periods are
/// local months).
#[Scalar(name = "Month")]
impl ScalarType for Month {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => parse_month(text).map(Month).map_err(InputValueError::custom),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn is_valid(value: &Value) -> bool {
        matches!(value, Value::String(text) if parse_month(text).is_ok())
    }

    fn to_value(&self) -> Value {
        Value::String(format_month(self.0))
    }
}

pub fn format_month(first_day: jiff::civil::Date) -> String {
    format!("{:04}-{:02}", first_day.year(), first_day.month())
}

/// `YYYY-MM` to the month's first day.
pub fn parse_month(text: &str) -> Result<jiff::civil::Date, String> {
    let error = || format!("{text:?} is not a month of the form YYYY-MM");
    let shape_ok = text.len() == 7
        && text.bytes().enumerate().all(|(i, b)| if i == 4 { b == b'-' } else { b.is_ascii_digit() });
    if !shape_ok {
        return Err(error());
    }
    let year: i16 = text[..4].parse().map_err(|_| error())?;
    let month: i8 = text[5..].parse().map_err(|_| error())?;
    jiff::civil::Date::new(year, month, 1).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_time_needs_an_offset_and_prints_utc() {
        let parsed = DateTime::parse(Value::String("2013-03-31T02:30:00+01:00".into())).unwrap();
        assert_eq!(parsed.to_value(), Value::String("2013-03-31T01:30:00Z".into()));
        assert!(!DateTime::is_valid(&Value::String("2013-03-31T02:30:00".into())));
        assert!(!DateTime::is_valid(&Value::String("yesterday".into())));
        assert!(!DateTime::is_valid(&Value::Number(5.into())));
    }

    #[test]
    fn month_is_strictly_yyyy_mm() {
        let parsed = Month::parse(Value::String("2013-01".into())).unwrap();
        assert_eq!(parsed.0, jiff::civil::date(2013, 1, 1));
        assert_eq!(parsed.to_value(), Value::String("2013-01".into()));
        for bad in ["2013-1", "2013-13", "2013-00", "201301", "2013-01-01", "+2013-01"] {
            assert!(!Month::is_valid(&Value::String(bad.into())), "{bad}");
        }
    }

    #[test]
    fn date_is_strictly_yyyy_mm_dd() {
        let parsed = Date::parse(Value::String("2013-03-31".into())).unwrap();
        assert_eq!(parsed.to_value(), Value::String("2013-03-31".into()));
        for bad in ["2013-3-31", "2013-02-30", "20130331", "2013-03-31T00:00:00", "+2013-03-31"] {
            assert!(!Date::is_valid(&Value::String(bad.into())), "{bad}");
        }
    }
}
