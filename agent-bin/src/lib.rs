//! Shared wiring of the fullauto binaries (config, REST API).
