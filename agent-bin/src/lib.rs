//! Shared wiring of the fullauto binaries (config, REST API).

pub mod api;
pub mod config;
pub mod dcs_factory;
