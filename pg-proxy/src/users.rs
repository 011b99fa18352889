//! The users the proxy knows (`proxy.auth_file`, in pgbouncer's `auth_file` format):
//! one `"name" "secret"` line per user, the secret a plaintext password, an md5 hash
//! (`md5` + 32 hex digits, as `pg_authid` stores it) or a SCRAM-SHA-256 verifier
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`). Clients log in to
//! the proxy against these secrets, and the proxy logs in to servers with them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::path::Path;

/// A SCRAM-SHA-256 verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// Salt.
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<ScramSecret> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (head, keys) = rest.split_once('$')?;
        let (iterations, salt) = head.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let key = |b64: &str| -> Option<[u8; 32]> { STANDARD.decode(b64).ok()?.try_into().ok() };
        Some(ScramSecret {
            iterations: iterations.parse().ok().filter(|i| *i > 0)?,
            salt: STANDARD.decode(salt).ok()?,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

/// What the proxy holds for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The plaintext password, when the file holds it.
    pub password: Option<String>,
    /// The md5 hash (`md5` + hex of md5(password + user)), given or computed.
    pub md5: Option<String>,
    /// A SCRAM verifier, given or computed from the plaintext password.
    pub scram: Option<ScramSecret>,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `md5` + hex(md5(`a` + `b`)).
pub fn md5_hex(a: &[u8], b: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(a);
    h.update(b);
    format!("md5{}", hex(&h.finalize()))
}

impl Secret {
    /// The secret for `user` written as `text` in the file.
    pub fn from_text(user: &str, text: &str) -> Secret {
        if let Some(scram) = ScramSecret::parse(text) {
            return Secret {
                password: None,
                md5: None,
                scram: Some(scram),
            };
        }
        let is_md5 = text.len() == 35
            && text.starts_with("md5")
            && text[3..].bytes().all(|b| b.is_ascii_hexdigit());
        if is_md5 {
            return Secret {
                password: None,
                md5: Some(text.to_ascii_lowercase()),
                scram: None,
            };
        }
        let verifier = postgres_protocol::password::scram_sha_256(text.as_bytes());
        Secret {
            password: Some(text.to_string()),
            md5: Some(md5_hex(text.as_bytes(), user.as_bytes())),
            scram: ScramSecret::parse(&verifier),
        }
    }
}

/// How clients prove who they are to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// SCRAM-SHA-256 only.
    ScramSha256,
    /// md5 where the proxy holds the password or its md5 hash; SCRAM-SHA-256 for
    /// users stored as a SCRAM verifier (as pgbouncer's `auth_type = md5`).
    Md5,
}

/// Users by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    by_name: HashMap<String, Secret>,
}

/// Why an auth file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsersError(pub String);

impl Users {
    /// Reads `path`.
    pub fn load(path: &Path, auth_type: AuthType) -> Result<Users, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsersError(format!(
                "cannot read {}: {e}; write one \"user\" \"password\" line per user",
                path.display()
            ))
        })?;
        Users::parse(&text, auth_type).map_err(|e| UsersError(format!("{}: {e}", path.display())))
    }

    /// Parses an auth file's text: `"user" "secret"` lines (a `""` inside quotes is
    /// one `"`); blank lines and lines starting with `#` or `;` are skipped.
    pub fn parse(text: &str, auth_type: AuthType) -> Result<Users, UsersError> {
        let mut by_name = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let bad = || {
                UsersError(format!(
                    "line {}: expected \"user\" \"password\" (both in double quotes)",
                    n + 1
                ))
            };
            let (user, rest) = quoted(line).ok_or_else(bad)?;
            let (secret, _) = quoted(rest.trim_start()).ok_or_else(bad)?;
            let s = Secret::from_text(&user, &secret);
            if auth_type == AuthType::ScramSha256 && s.scram.is_none() {
                return Err(UsersError(format!(
                    "line {}: user {user} has an md5 hash, which SCRAM-SHA-256 cannot check; \
                     write the plaintext password or a SCRAM verifier (from pg_authid), or set \
                     proxy.auth_type: md5",
                    n + 1
                )));
            }
            by_name.insert(user, s);
        }
        Ok(Users { by_name })
    }

    /// The secret of `user`.
    pub fn get(&self, user: &str) -> Option<&Secret> {
        self.by_name.get(user)
    }

    /// How many users there are.
    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// A double-quoted word at the start of `s` and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut rest = s.strip_prefix('"')?;
    let mut out = String::new();
    loop {
        let i = rest.find('"')?;
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        match rest.strip_prefix('"') {
            Some(after) => {
                out.push('"');
                rest = after;
            }
            None => return Some((out, rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_secret_forms_are_read() {
        let verifier = postgres_protocol::password::scram_sha_256(b"pw");
        let text = format!(
            "# comment\n\"alice\" \"s3\"\"cret\"\n\"bob\" \"md5{}\"\n\"carol\" \"{verifier}\"\n",
            "0123456789abcdef0123456789ABCDEF"
        );
        let users = Users::parse(&text, AuthType::Md5).unwrap();
        assert_eq!(users.len(), 3);
        let alice = users.get("alice").unwrap();
        assert_eq!(alice.password.as_deref(), Some("s3\"cret"));
        assert_eq!(
            alice.md5.as_deref(),
            Some(md5_hex(b"s3\"cret", b"alice").as_str())
        );
        assert!(alice.scram.is_some());
        let bob = users.get("bob").unwrap();
        assert_eq!(bob.password, None);
        assert_eq!(
            bob.md5.as_deref(),
            Some("md50123456789abcdef0123456789abcdef")
        );
        let carol = users.get("carol").unwrap();
        assert_eq!(carol.scram, ScramSecret::parse(&verifier));
        assert_eq!(carol.scram.as_ref().unwrap().iterations, 4096);
    }

    #[test]
    fn md5_hashes_are_refused_for_scram_and_bad_lines_name_their_number() {
        let e = Users::parse(
            "\"bob\" \"md50123456789abcdef0123456789abcdef\"",
            AuthType::ScramSha256,
        )
        .unwrap_err();
        assert!(e.0.contains("proxy.auth_type: md5"), "{e}");
        let e = Users::parse("\n\"a\" b\n", AuthType::Md5).unwrap_err();
        assert!(e.0.starts_with("line 2:"), "{e}");
    }
}
