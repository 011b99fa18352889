//! Patroni's physical replication slot names for members.

/// The physical slot name for a member: lowercased, `-` and `.` become `_`, any other
/// character outside `[a-z0-9_]` becomes `u` + its code point as four decimal digits,
/// cut at 63 bytes.
pub fn slot_name_for_member(member: &str) -> String {
    let mut out = String::new();
    for c in member.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => out.push(c),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.truncate(63);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_slot_names() {
        assert_eq!(slot_name_for_member("Node-1.b"), "node_1_b");
        assert_eq!(slot_name_for_member("a b"), "au0032b");
        assert_eq!(slot_name_for_member(&"x".repeat(80)).len(), 63);
    }
}
