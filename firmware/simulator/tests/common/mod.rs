//! Shared by the integration tests: where the real data files are.

#![allow(dead_code)]

use std::path::PathBuf;

pub const TEN_HOUSEHOLDS: &str = "lcl_halfhourly_2013-01_10households.csv";
pub const RAW_MAC000002: &str = "lcl_raw_MAC000002_halfhourly_2012-10_to_2014-02.csv";

/// `SMARTMETER_DATA_DIR`, or the `shared/data` folder beside the repository.
pub fn data_file(name: &str) -> PathBuf {
    let dir = std::env::var_os("SMARTMETER_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let path = dir.join(name);
    assert!(path.is_file(), "data file {} not found; set SMARTMETER_DATA_DIR", path.display());
    path
}
