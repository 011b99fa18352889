//! Parts of the chaos run (see `tests/chaos.rs`).

pub mod checker;
pub mod disk;
pub mod nemesis;
pub mod proxy;
pub mod schedule;
pub mod timeline;
