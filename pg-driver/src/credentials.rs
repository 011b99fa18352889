//! One Postgres role's connection settings (`postgresql.authentication.<user>`): its
//! name and password plus the libpq TLS and encryption options Patroni accepts.
//! Every option is used both by the agent's own connections and in the connection
//! strings handed to the server's tools.

use crate::error::{DriverError, Result};
use serde::Deserialize;

/// libpq `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// Plain first, TLS when the server refuses the plain connection.
    Allow,
    /// TLS when the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS; the server certificate is checked only when a root certificate exists.
    Require,
    /// TLS with a server certificate signed by the root certificate.
    VerifyCa,
    /// `VerifyCa`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The libpq keyword value.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// libpq `gssencmode` and `channel_binding` (both take these three values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preference {
    /// Never.
    Disable,
    /// When possible.
    Prefer,
    /// Always; the connection fails otherwise.
    Require,
}

impl Preference {
    /// The libpq keyword value.
    pub fn as_str(self) -> &'static str {
        match self {
            Preference::Disable => "disable",
            Preference::Prefer => "prefer",
            Preference::Require => "require",
        }
    }
}

/// libpq `sslnegotiation` (PostgreSQL 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslNegotiation {
    /// The classic SSLRequest handshake (the default).
    Postgres,
    /// TLS right away, without SSLRequest.
    Direct,
}

/// A role name, its password and its libpq connection options.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Role name.
    pub username: String,
    /// Password (`None`: rely on trust / peer / certificates / a passfile).
    #[serde(default)]
    pub password: Option<String>,
    /// `sslmode` (libpq's default `prefer` when unset).
    #[serde(default)]
    pub sslmode: Option<SslMode>,
    /// `sslcert`: client certificate file.
    #[serde(default)]
    pub sslcert: Option<String>,
    /// `sslkey`: the client certificate's private key file.
    #[serde(default)]
    pub sslkey: Option<String>,
    /// `sslpassword`: passphrase of an encrypted `sslkey`.
    #[serde(default)]
    pub sslpassword: Option<String>,
    /// `sslrootcert`: CA certificates the server's certificate must chain to
    /// (`system`: the system's trust store, which implies host name checks).
    #[serde(default)]
    pub sslrootcert: Option<String>,
    /// `sslcrl`: revocation list file.
    #[serde(default)]
    pub sslcrl: Option<String>,
    /// `sslcrldir`: directory of revocation lists (OpenSSL hashed names).
    #[serde(default)]
    pub sslcrldir: Option<String>,
    /// `sslnegotiation`: only `postgres` is supported.
    #[serde(default)]
    pub sslnegotiation: Option<SslNegotiation>,
    /// `gssencmode`: `disable` or `prefer` (the agent itself never uses GSSAPI).
    #[serde(default)]
    pub gssencmode: Option<Preference>,
    /// `channel_binding`.
    #[serde(default)]
    pub channel_binding: Option<Preference>,
}

impl Credentials {
    /// A role without password or options.
    pub fn user(username: &str) -> Self {
        Credentials {
            username: username.into(),
            ..Default::default()
        }
    }

    /// The effective `sslmode`.
    pub fn ssl_mode(&self) -> SslMode {
        self.sslmode.unwrap_or(SslMode::Prefer)
    }

    /// The libpq options other than user and password, in Patroni's conninfo order,
    /// as `(keyword, value)`. `sslnegotiation=postgres` is libpq's default and left
    /// out (PostgreSQL before 17 does not know the keyword).
    pub fn libpq_options(&self) -> Vec<(&'static str, String)> {
        let s = |k: &'static str, v: &Option<String>| v.clone().map(|v| (k, v));
        [
            self.sslmode.map(|m| ("sslmode", m.as_str().to_string())),
            s("sslcert", &self.sslcert),
            s("sslkey", &self.sslkey),
            s("sslpassword", &self.sslpassword),
            s("sslrootcert", &self.sslrootcert),
            s("sslcrl", &self.sslcrl),
            s("sslcrldir", &self.sslcrldir),
            self.gssencmode
                .map(|m| ("gssencmode", m.as_str().to_string())),
            self.channel_binding
                .map(|m| ("channel_binding", m.as_str().to_string())),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Refuses what the agent cannot honour on its own connections; `role` names the
    /// section (`superuser`, `replication`, `rewind`) in the message.
    pub fn validate(&self, role: &str) -> Result<()> {
        if self.username.is_empty() {
            return Err(DriverError::Config(format!(
                "authentication.{role}.username is empty"
            )));
        }
        if self.gssencmode == Some(Preference::Require) {
            return Err(DriverError::Config(format!(
                "authentication.{role}.gssencmode: require is not supported (fullauto's own connections cannot use GSSAPI encryption); use prefer or disable"
            )));
        }
        if self.sslnegotiation == Some(SslNegotiation::Direct) {
            return Err(DriverError::Config(format!(
                "authentication.{role}.sslnegotiation: direct is not supported; remove it or use postgres"
            )));
        }
        if self.sslkey.is_some() && self.sslcert.is_none() {
            return Err(DriverError::Config(format!(
                "authentication.{role}.sslkey is set without sslcert: set both"
            )));
        }
        for (k, v) in [
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
            ("sslrootcert", &self.sslrootcert),
            ("sslcrl", &self.sslcrl),
            ("sslcrldir", &self.sslcrldir),
        ] {
            if v.as_deref().is_some_and(str::is_empty) {
                return Err(DriverError::Config(format!(
                    "authentication.{role}.{k} is empty: remove it or name a file"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_option_is_refused_by_name() {
        let e = serde_json::from_value::<Credentials>(serde_json::json!({
            "username": "u", "sslcompression": "1"
        }))
        .unwrap_err();
        assert!(e.to_string().contains("sslcompression"), "{e}");
    }

    #[test]
    fn options_in_patroni_order_and_refusals_name_the_key() {
        let c: Credentials = serde_json::from_value(serde_json::json!({
            "username": "u", "channel_binding": "require", "sslrootcert": "/ca.crt",
            "sslmode": "verify-ca", "sslkey": "/k", "sslcert": "/c", "gssencmode": "disable",
            "sslnegotiation": "postgres"
        }))
        .unwrap();
        c.validate("superuser").unwrap();
        let keys: Vec<_> = c.libpq_options().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "sslmode",
                "sslcert",
                "sslkey",
                "sslrootcert",
                "gssencmode",
                "channel_binding"
            ]
        );
        let mut gss = c.clone();
        gss.gssencmode = Some(Preference::Require);
        let e = gss.validate("rewind").unwrap_err().to_string();
        assert!(e.contains("authentication.rewind.gssencmode"), "{e}");
        let mut direct = c.clone();
        direct.sslnegotiation = Some(SslNegotiation::Direct);
        assert!(direct
            .validate("superuser")
            .unwrap_err()
            .to_string()
            .contains("sslnegotiation"));
        let mut key_only = c;
        key_only.sslcert = None;
        assert!(key_only
            .validate("replication")
            .unwrap_err()
            .to_string()
            .contains("authentication.replication.sslkey"));
    }
}
