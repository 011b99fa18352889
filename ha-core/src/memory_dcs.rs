//! In-memory DCS with real TTL semantics on an injectable clock (being written).
