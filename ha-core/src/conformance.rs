//! Shared DCS conformance suite (being written).
