//! The proxy's own authentication: clients prove who they are to the proxy
//! (SCRAM-SHA-256 or md5, against `proxy.auth_file`), and the proxy logs in to
//! servers itself with what it holds for that user (plaintext password, md5 hash,
//! or the SCRAM `ClientKey` a client revealed in its own SCRAM exchange, as
//! pgbouncer does), answering whatever the server asks: trust, cleartext, md5 or
//! SCRAM-SHA-256. The SCRAM and md5 client steps from a plaintext password are
//! `postgres-protocol`'s.

use crate::users::{md5_hex, AuthType, ScramSecret, Secret, Users};
use crate::wire;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The longest password or SASL message a client may send.
const MAX_AUTH_MESSAGE: usize = 8 * 1024;
/// The longest message the proxy reads from a server during login.
const MAX_LOGIN_MESSAGE: usize = 1024 * 1024;
const SCRAM: &str = "SCRAM-SHA-256";
/// SQLSTATE `invalid_password`.
pub const INVALID_PASSWORD: &str = "28P01";

/// What the proxy logs in to servers with, for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Plaintext password.
    pub password: Option<String>,
    /// md5 hash (`md5` + hex).
    pub md5: Option<String>,
    /// `ClientKey` and `ServerKey` of the user's SCRAM verifier (the client key
    /// recovered from the client's proof).
    pub scram_keys: Option<([u8; 32], [u8; 32])>,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(data);
    m.finalize().into_bytes().into()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn xor(a: &[u8; 32], b: &[u8]) -> Option<[u8; 32]> {
    if b.len() != 32 {
        return None;
    }
    let mut out = *a;
    for (o, x) in out.iter_mut().zip(b) {
        *o ^= x;
    }
    Some(out)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Why a client was not let in (the text goes into a FATAL 28P01).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password (the two are not told apart).
    #[error("password authentication failed for user \"{0}\"")]
    Denied(String),
    /// The client went away mid-exchange.
    #[error("connection closed during authentication: {0}")]
    Closed(String),
    /// A SCRAM message the proxy cannot read.
    #[error("malformed SCRAM message from the client: {0}")]
    Malformed(&'static str),
    /// The client chose a mechanism other than SCRAM-SHA-256.
    #[error("the proxy offers SCRAM-SHA-256 (without channel binding); the client chose {0:?}")]
    Mechanism(String),
    /// The client requires channel binding.
    #[error(
        "the proxy does not support SCRAM channel binding: connect with channel_binding=disable"
    )]
    ChannelBinding,
}

fn denied(user: &str) -> AuthError {
    AuthError::Denied(user.to_string())
}

/// Checks the client's password for `user` (the proxy speaking as a server) and
/// returns what the proxy logs in to servers with. On `Err` the text is for the
/// client's FATAL error. Does not send `AuthenticationOk`.
pub async fn authenticate_client<S>(
    stream: &mut S,
    user: &str,
    users: &Users,
    auth_type: AuthType,
) -> Result<Credentials, AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(secret) = users.get(user) else {
        return Err(denied(user));
    };
    let use_md5 = auth_type == AuthType::Md5 && secret.md5.is_some();
    match (&secret.scram, use_md5) {
        (_, true) => {
            let stored = secret.md5.as_deref().unwrap_or_default();
            md5_exchange(stream, user, stored).await?;
        }
        (Some(scram), false) => {
            let client_key = scram_exchange(stream, user, scram).await?;
            if secret.password.is_none() {
                return Ok(Credentials {
                    password: None,
                    md5: None,
                    scram_keys: Some((client_key, scram.server_key)),
                });
            }
        }
        (None, false) => return Err(denied(user)),
    }
    Ok(credentials(secret))
}

fn credentials(secret: &Secret) -> Credentials {
    Credentials {
        password: secret.password.clone(),
        md5: secret.md5.clone(),
        scram_keys: None,
    }
}

async fn md5_exchange<S>(stream: &mut S, user: &str, stored: &str) -> Result<(), AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let salt: [u8; 4] = random_bytes();
    let io = |e: std::io::Error| AuthError::Closed(e.to_string());
    stream
        .write_all(&wire::authentication(5, &salt))
        .await
        .map_err(io)?;
    let (kind, body) = wire::read_message(stream, MAX_AUTH_MESSAGE)
        .await
        .map_err(io)?;
    let (answer, _) = wire::cstring(&body);
    let expected = md5_hex(stored.get(3..).unwrap_or_default().as_bytes(), &salt);
    if kind != b'p' || answer != expected {
        return Err(denied(user));
    }
    Ok(())
}

/// The server side of SCRAM-SHA-256 (no channel binding); returns the client's
/// `ClientKey`.
async fn scram_exchange<S>(
    stream: &mut S,
    user: &str,
    secret: &ScramSecret,
) -> Result<[u8; 32], AuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io = |e: std::io::Error| AuthError::Closed(e.to_string());
    let bad = AuthError::Malformed;
    let mut offer = SCRAM.as_bytes().to_vec();
    offer.extend_from_slice(b"\0\0");
    stream
        .write_all(&wire::authentication(10, &offer))
        .await
        .map_err(io)?;
    let (kind, body) = wire::read_message(stream, MAX_AUTH_MESSAGE)
        .await
        .map_err(io)?;
    let (mechanism, rest) = wire::cstring(&body);
    if kind != b'p' || mechanism != SCRAM || rest.len() < 4 {
        return Err(AuthError::Mechanism(mechanism.to_string()));
    }
    let first = String::from_utf8_lossy(&rest[4..]).into_owned();
    // gs2 header: "n,," or "y,," (no channel binding), then the bare message.
    let (cbind_flag, after) = first.split_once(',').ok_or_else(|| bad("no gs2 header"))?;
    if cbind_flag != "n" && cbind_flag != "y" {
        return Err(AuthError::ChannelBinding);
    }
    let (_authzid, bare) = after.split_once(',').ok_or_else(|| bad("no gs2 header"))?;
    let header = &first[..first.len() - bare.len()];
    let client_nonce = bare
        .split(',')
        .find_map(|f| f.strip_prefix("r="))
        .ok_or_else(|| bad("no nonce"))?;
    let nonce = format!("{client_nonce}{}", STANDARD.encode(random_bytes::<18>()));
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&secret.salt),
        secret.iterations
    );
    stream
        .write_all(&wire::authentication(11, server_first.as_bytes()))
        .await
        .map_err(io)?;
    let (kind, body) = wire::read_message(stream, MAX_AUTH_MESSAGE)
        .await
        .map_err(io)?;
    let last = String::from_utf8_lossy(&body).into_owned();
    let (without_proof, proof) = last.rsplit_once(",p=").ok_or_else(|| bad("no proof"))?;
    let fields: Vec<&str> = without_proof.split(',').collect();
    let binding_ok = fields.first() == Some(&format!("c={}", STANDARD.encode(header)).as_str());
    let nonce_ok = fields.get(1) == Some(&format!("r={nonce}").as_str());
    if kind != b'p' || !binding_ok || !nonce_ok {
        return Err(denied(user));
    }
    let proof = STANDARD
        .decode(proof)
        .map_err(|_| bad("proof is not base64"))?;
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = hmac(&secret.stored_key, auth_message.as_bytes());
    let client_key = xor(&signature, &proof).ok_or_else(|| denied(user))?;
    if sha256(&client_key) != secret.stored_key {
        return Err(denied(user));
    }
    let verifier = hmac(&secret.server_key, auth_message.as_bytes());
    let last = format!("v={}", STANDARD.encode(verifier));
    stream
        .write_all(&wire::authentication(12, last.as_bytes()))
        .await
        .map_err(io)?;
    Ok(client_key)
}

/// Why the proxy could not log in to a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The connection failed or closed.
    #[error("{0}")]
    Io(String),
    /// The server said no: its SQLSTATE and message.
    #[error("{message}")]
    Server {
        /// SQLSTATE.
        code: String,
        /// The server's message.
        message: String,
    },
    /// The server asks for something the proxy does not hold.
    #[error("{0}")]
    Unsupported(String),
}

impl From<std::io::Error> for LoginError {
    fn from(e: std::io::Error) -> Self {
        LoginError::Io(e.to_string())
    }
}

/// What a server said after accepting the proxy's login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Welcome {
    /// `ParameterStatus` pairs, in order.
    pub params: Vec<(String, String)>,
    /// `BackendKeyData`: process id and secret key.
    pub key: (i32, i32),
}

/// Sends `startup` (a `StartupMessage`, length word included) on `stream` and
/// completes the server's authentication with `creds` for `user`, up to its first
/// `ReadyForQuery`.
pub async fn login<S>(
    stream: &mut S,
    startup: &[u8],
    user: &str,
    creds: &Credentials,
) -> Result<Welcome, LoginError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(startup).await?;
    let mut welcome = Welcome::default();
    let mut scram: Option<Scram> = None;
    loop {
        let (kind, body) = wire::read_message(stream, MAX_LOGIN_MESSAGE).await?;
        match kind {
            b'R' if body.len() >= 4 => {
                let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                let data = &body[4..];
                match code {
                    0 => {}
                    3 => {
                        let pw = creds.password.as_deref().ok_or_else(|| {
                            missing(user, "a cleartext password", "the plaintext password")
                        })?;
                        stream.write_all(&password_message(pw.as_bytes())).await?;
                    }
                    5 if data.len() == 4 => {
                        let answer = match (&creds.password, &creds.md5) {
                            (Some(pw), _) => md5_hex(
                                &md5_hex(pw.as_bytes(), user.as_bytes()).as_bytes()[3..],
                                data,
                            ),
                            (None, Some(hash)) => md5_hex(&hash.as_bytes()[3..], data),
                            (None, None) => {
                                return Err(missing(
                                    user,
                                    "md5",
                                    "the plaintext password or its md5 hash",
                                ))
                            }
                        };
                        stream
                            .write_all(&password_message(answer.as_bytes()))
                            .await?;
                    }
                    10 => {
                        let offered = data.split(|b| *b == 0).any(|m| m == SCRAM.as_bytes());
                        if !offered {
                            return Err(LoginError::Unsupported(
                                "the server offers no SASL mechanism the proxy speaks \
                                 (SCRAM-SHA-256)"
                                    .into(),
                            ));
                        }
                        let s = Scram::start(user, creds)?;
                        let mut body = SCRAM.as_bytes().to_vec();
                        body.push(0);
                        let first = s.first();
                        body.extend_from_slice(&(first.len() as i32).to_be_bytes());
                        body.extend_from_slice(&first);
                        stream.write_all(&wire::message_bytes(b'p', &body)).await?;
                        scram = Some(s);
                    }
                    11 => {
                        let s = scram
                            .as_mut()
                            .ok_or_else(|| out_of_order("SASL continue"))?;
                        let answer = s.update(data)?;
                        stream
                            .write_all(&wire::message_bytes(b'p', &answer))
                            .await?;
                    }
                    12 => {
                        let s = scram.as_mut().ok_or_else(|| out_of_order("SASL final"))?;
                        s.finish(data)?;
                    }
                    other => {
                        return Err(LoginError::Unsupported(format!(
                            "the server asks for authentication method {other}, which the proxy \
                             does not speak (it speaks trust, password, md5 and SCRAM-SHA-256)"
                        )))
                    }
                }
            }
            b'S' => {
                let (name, rest) = wire::cstring(&body);
                let (value, _) = wire::cstring(rest);
                welcome.params.push((name, value));
            }
            b'K' if body.len() == 8 => {
                welcome.key = (
                    i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
                );
            }
            b'E' => {
                let (_, code, message) = wire::error_fields(&body);
                return Err(LoginError::Server { code, message });
            }
            b'Z' => return Ok(welcome),
            // NoticeResponse and anything else during start-up: not for the client.
            _ => {}
        }
    }
}

fn missing(user: &str, asks: &str, write: &str) -> LoginError {
    LoginError::Unsupported(format!(
        "the server asks for {asks} authentication and the proxy holds no usable secret for \
         user {user}: write {write} in proxy.auth_file"
    ))
}

fn out_of_order(what: &str) -> LoginError {
    LoginError::Io(format!("the server sent {what} out of order"))
}

fn password_message(pw: &[u8]) -> Vec<u8> {
    let mut body = pw.to_vec();
    body.push(0);
    wire::message_bytes(b'p', &body)
}

/// The client side of SCRAM-SHA-256: `postgres-protocol`'s from a plaintext
/// password, or the proxy's own from the keys a client revealed.
enum Scram {
    Password(Box<ScramSha256>),
    Keys {
        client_key: [u8; 32],
        server_key: [u8; 32],
        bare: String,
        nonce: String,
        auth_message: String,
    },
}

impl Scram {
    fn start(user: &str, creds: &Credentials) -> Result<Scram, LoginError> {
        if let Some(pw) = &creds.password {
            return Ok(Scram::Password(Box::new(ScramSha256::new(
                pw.as_bytes(),
                ChannelBinding::unsupported(),
            ))));
        }
        match creds.scram_keys {
            Some((client_key, server_key)) => {
                let nonce = STANDARD.encode(random_bytes::<18>());
                Ok(Scram::Keys {
                    client_key,
                    server_key,
                    bare: format!("n=,r={nonce}"),
                    nonce,
                    auth_message: String::new(),
                })
            }
            None => Err(missing(
                user,
                "SCRAM-SHA-256",
                "the plaintext password or the SCRAM verifier",
            )),
        }
    }

    fn first(&self) -> Vec<u8> {
        match self {
            Scram::Password(s) => s.message().to_vec(),
            Scram::Keys { bare, .. } => format!("n,,{bare}").into_bytes(),
        }
    }

    fn update(&mut self, server_first: &[u8]) -> Result<Vec<u8>, LoginError> {
        let refused = |e: String| LoginError::Io(format!("SCRAM with the server failed: {e}"));
        match self {
            Scram::Password(s) => {
                s.update(server_first).map_err(|e| refused(e.to_string()))?;
                Ok(s.message().to_vec())
            }
            Scram::Keys {
                client_key,
                bare,
                nonce,
                auth_message,
                ..
            } => {
                let first = String::from_utf8_lossy(server_first).into_owned();
                let server_nonce = first
                    .split(',')
                    .find_map(|f| f.strip_prefix("r="))
                    .filter(|r| r.starts_with(nonce.as_str()))
                    .ok_or_else(|| refused("the server's nonce does not extend ours".into()))?;
                let without_proof = format!("c=biws,r={server_nonce}");
                *auth_message = format!("{bare},{first},{without_proof}");
                let signature = hmac(&sha256(client_key), auth_message.as_bytes());
                let proof = xor(client_key, &signature).unwrap_or_default();
                Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
            }
        }
    }

    fn finish(&mut self, server_final: &[u8]) -> Result<(), LoginError> {
        let refused = |e: String| {
            LoginError::Io(format!(
                "SCRAM with the server failed: {e} (is the server's verifier for this user the one in proxy.auth_file?)"
            ))
        };
        match self {
            Scram::Password(s) => s.finish(server_final).map_err(|e| refused(e.to_string())),
            Scram::Keys {
                server_key,
                auth_message,
                ..
            } => {
                let text = String::from_utf8_lossy(server_final);
                let expected = format!(
                    "v={}",
                    STANDARD.encode(hmac(server_key, auth_message.as_bytes()))
                );
                if text.trim_end_matches('\0') == expected {
                    Ok(())
                } else {
                    Err(refused("the server's signature does not match".into()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::Users;

    /// The proxy's SCRAM server against postgres-protocol's client, then the keys it
    /// recovered logging in through the proxy's SCRAM client against the same server
    /// code: both directions agree with an independent implementation.
    #[tokio::test]
    async fn scram_both_ways_with_a_verifier_only() {
        let verifier = postgres_protocol::password::scram_sha_256(b"secret");
        let users =
            Users::parse(&format!("\"app\" \"{verifier}\""), AuthType::ScramSha256).unwrap();
        let (mut client, mut proxy) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            authenticate_client(&mut proxy, "app", &users, AuthType::ScramSha256).await
        });
        // postgres-protocol's client.
        let (kind, body) = wire::read_message(&mut client, 1024).await.unwrap();
        assert_eq!((kind, &body[..4]), (b'R', &10i32.to_be_bytes()[..]));
        let mut scram = ScramSha256::new(b"secret", ChannelBinding::unsupported());
        let mut first = b"SCRAM-SHA-256\0".to_vec();
        first.extend_from_slice(&(scram.message().len() as i32).to_be_bytes());
        first.extend_from_slice(scram.message());
        client
            .write_all(&wire::message_bytes(b'p', &first))
            .await
            .unwrap();
        let (_, body) = wire::read_message(&mut client, 1024).await.unwrap();
        scram.update(&body[4..]).unwrap();
        client
            .write_all(&wire::message_bytes(b'p', scram.message()))
            .await
            .unwrap();
        let (_, body) = wire::read_message(&mut client, 1024).await.unwrap();
        scram
            .finish(&body[4..])
            .expect("the proxy's server signature");
        let creds = server.await.unwrap().expect("client accepted");
        let (client_key, _) = creds.scram_keys.expect("keys recovered");

        // The proxy logs in with the recovered keys to a SCRAM server holding the
        // same verifier (the proxy's own server side plays it here).
        let again =
            Users::parse(&format!("\"app\" \"{verifier}\""), AuthType::ScramSha256).unwrap();
        let (mut to_server, mut server_side) = tokio::io::duplex(4096);
        let server = tokio::spawn(async move {
            let _startup = wire::read_first_packet(&mut server_side, false)
                .await
                .unwrap();
            let key = authenticate_client(&mut server_side, "app", &again, AuthType::ScramSha256)
                .await
                .map(|c| c.scram_keys.unwrap().0);
            server_side
                .write_all(&wire::authentication(0, &[]))
                .await
                .unwrap();
            server_side
                .write_all(&wire::parameter_status("a", "b"))
                .await
                .unwrap();
            server_side
                .write_all(&wire::backend_key_data(7, 9))
                .await
                .unwrap();
            server_side
                .write_all(&wire::message_bytes(b'Z', b"I"))
                .await
                .unwrap();
            key
        });
        let mut startup = 196_608i32.to_be_bytes().to_vec();
        startup.extend_from_slice(b"user\0app\0\0");
        let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&startup);
        let welcome = login(&mut to_server, &packet, "app", &creds)
            .await
            .expect("login");
        assert_eq!(welcome.key, (7, 9));
        assert_eq!(welcome.params, [("a".to_string(), "b".to_string())]);
        assert_eq!(server.await.unwrap(), Ok(client_key));
    }

    #[tokio::test]
    async fn md5_with_a_stored_hash_and_a_wrong_password_is_denied() {
        let hash = md5_hex(b"pw", b"bob");
        let users = Users::parse(&format!("\"bob\" \"{hash}\""), AuthType::Md5).unwrap();
        for (password, ok) in [("pw", true), ("nope", false)] {
            let users = users.clone();
            let (mut client, mut proxy) = tokio::io::duplex(4096);
            let server = tokio::spawn(async move {
                authenticate_client(&mut proxy, "bob", &users, AuthType::Md5).await
            });
            let (_, body) = wire::read_message(&mut client, 1024).await.unwrap();
            assert_eq!(&body[..4], &5i32.to_be_bytes());
            let salt: [u8; 4] = body[4..8].try_into().unwrap();
            let answer =
                postgres_protocol::authentication::md5_hash(b"bob", password.as_bytes(), salt);
            client
                .write_all(&password_message(answer.as_bytes()))
                .await
                .unwrap();
            let outcome = server.await.unwrap();
            assert_eq!(outcome.is_ok(), ok, "{password}: {outcome:?}");
            if let Ok(c) = outcome {
                assert_eq!(c.md5.as_deref(), Some(hash.as_str()));
            }
        }
    }
}
