//! Patroni-compatible REST API.
