//! The async runner: drives [`crate::decision::decide`] against real `Dcs`,
//! `Postgres` and `Watchdog` trait objects.

pub mod guard;
