//! Replication slot names (Patroni's rules, shared with the HA engine).

/// The physical slot name for a member.
pub use ha_core::slot_name_for_member;

/// Whether `name` is a slot name PostgreSQL accepts.
pub use ha_core::is_valid_slot_name;
