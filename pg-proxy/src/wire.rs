//! The parts of the PostgreSQL frontend/backend protocol (version 3.0) the proxy
//! speaks itself: the untyped first packet of a connection (startup, SSL and GSS
//! encryption requests, cancel requests), the messages the proxy writes itself
//! (`ErrorResponse`, authentication, `ParameterStatus`, `BackendKeyData`), reading
//! typed messages, and a framer that follows the server's messages so the proxy
//! knows where one ends.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol 3.0 in a `StartupMessage`.
const PROTOCOL_3: i32 = 196_608;
/// `CancelRequest` code.
const CANCEL_REQUEST: i32 = 80_877_102;
/// `SSLRequest` code.
const SSL_REQUEST: i32 = 80_877_103;
/// `GSSENCRequest` code.
const GSSENC_REQUEST: i32 = 80_877_104;
/// Longest first packet accepted (libpq's own limit is 10000).
const MAX_STARTUP: usize = 10_000;

/// What a client opened its connection with, after any encryption requests were
/// answered with 'N'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    /// A `StartupMessage`: the raw packet (to pass on verbatim) and its parameters.
    Startup {
        /// The whole packet, length word included.
        raw: Vec<u8>,
        /// `user`, `database`, `application_name`, … in order.
        params: Vec<(String, String)>,
    },
    /// An `SSLRequest` the proxy will accept (it has a certificate): answer `S` and
    /// start TLS, then read the first packet again.
    SslRequest,
    /// A `CancelRequest` for the backend with this process id and secret key.
    Cancel {
        /// The whole packet, to forward to the server that issued the key.
        raw: Vec<u8>,
        /// Backend process id.
        pid: i32,
        /// Secret key.
        key: i32,
    },
}

impl FirstPacket {
    /// A startup parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        match self {
            FirstPacket::Startup { params, .. } => params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str()),
            FirstPacket::Cancel { .. } | FirstPacket::SslRequest => None,
        }
    }
}

/// Why a client's first packet was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The socket failed or closed.
    #[error("connection closed during start-up: {0}")]
    Io(#[from] std::io::Error),
    /// Not a packet of protocol 3.0.
    #[error("{0}")]
    Protocol(String),
}

/// Reads the client's first packet, answering GSS encryption requests, and SSL
/// requests unless `tls` (the proxy has a certificate), with 'N' (the client then goes
/// on in plain text or gives up, as its `sslmode` says).
pub async fn read_first_packet<S>(stream: &mut S, tls: bool) -> Result<FirstPacket, StartupError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let len = stream.read_i32().await?;
        if len < 8 || len as usize > MAX_STARTUP {
            return Err(StartupError::Protocol(format!(
                "invalid start-up packet length {len}"
            )));
        }
        let mut raw = Vec::with_capacity(len as usize);
        raw.extend_from_slice(&len.to_be_bytes());
        raw.resize(len as usize, 0);
        stream.read_exact(&mut raw[4..]).await?;
        let code = i32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        match code {
            SSL_REQUEST if tls && raw.len() == 8 => return Ok(FirstPacket::SslRequest),
            SSL_REQUEST | GSSENC_REQUEST => {
                stream.write_all(b"N").await?;
                continue;
            }
            CANCEL_REQUEST if raw.len() == 16 => {
                let pid = i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]);
                let key = i32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]);
                return Ok(FirstPacket::Cancel { raw, pid, key });
            }
            PROTOCOL_3 => {
                let params = parse_params(&raw[8..]);
                return Ok(FirstPacket::Startup { raw, params });
            }
            other => {
                return Err(StartupError::Protocol(format!(
                    "unsupported frontend protocol {}.{}: the proxy speaks 3.0",
                    other >> 16,
                    other & 0xffff
                )))
            }
        }
    }
}

/// Name/value pairs of a startup packet's body (NUL-terminated strings, then NUL).
fn parse_params(body: &[u8]) -> Vec<(String, String)> {
    let mut words = body
        .split(|b| *b == 0)
        .map(|w| String::from_utf8_lossy(w).into_owned());
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (words.next(), words.next()) {
        if k.is_empty() {
            break;
        }
        out.push((k, v));
    }
    out
}

/// A FATAL `ErrorResponse` with SQLSTATE `code` and `message`.
pub fn fatal(code: &str, message: &str) -> Vec<u8> {
    error("FATAL", code, message)
}

/// An `ErrorResponse` of `severity` (ERROR, FATAL) with SQLSTATE `code` and `message`.
pub fn error(severity: &str, code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    message_bytes(b'E', &body)
}

/// A typed message: `kind`, length word, `body`.
pub fn message_bytes(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(kind);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// An `Authentication*` message: `code` (0 ok, 5 md5, 10 SASL, 11 SASL continue, 12
/// SASL final) and its data.
pub fn authentication(code: i32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    message_bytes(b'R', &body)
}

/// A `ParameterStatus` message.
pub fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(name.len() + value.len() + 2);
    body.extend_from_slice(name.as_bytes());
    body.push(0);
    body.extend_from_slice(value.as_bytes());
    body.push(0);
    message_bytes(b'S', &body)
}

/// A `BackendKeyData` message.
pub fn backend_key_data(pid: i32, key: i32) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&key.to_be_bytes());
    message_bytes(b'K', &body)
}

/// A `CancelRequest` packet for backend `pid` with secret `key`.
pub fn cancel_request(pid: i32, key: i32) -> Vec<u8> {
    let mut out = 16i32.to_be_bytes().to_vec();
    out.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(&key.to_be_bytes());
    out
}

/// Reads one typed message (at most `max` bytes of body): its type and body.
pub async fn read_message<S>(stream: &mut S, max: usize) -> std::io::Result<(u8, Vec<u8>)>
where
    S: AsyncRead + Unpin,
{
    let kind = stream.read_u8().await?;
    let len = stream.read_i32().await?;
    if len < 4 || (len as usize - 4) > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "invalid length {len} of a message of type {:?}",
                kind as char
            ),
        ));
    }
    let mut body = vec![0u8; len as usize - 4];
    stream.read_exact(&mut body).await?;
    Ok((kind, body))
}

/// The type and whole length (header included) of the complete message at the start
/// of `buf`, if it holds one.
pub fn complete_message(buf: &[u8]) -> Option<(u8, usize)> {
    if buf.len() < 5 {
        return None;
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]).max(4) as usize;
    (buf.len() > len).then_some((buf[0], len + 1))
}

/// The NUL-terminated string at the start of `body` and what follows it.
pub fn cstring(body: &[u8]) -> (String, &[u8]) {
    match body.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&body[..i]).into_owned(),
            &body[i + 1..],
        ),
        None => (String::from_utf8_lossy(body).into_owned(), &[]),
    }
}

/// The fields of an `ErrorResponse`/`NoticeResponse` body: severity, SQLSTATE and
/// message.
pub fn error_fields(body: &[u8]) -> (String, String, String) {
    let (mut severity, mut code, mut message) = (String::new(), String::new(), String::new());
    let mut rest = body;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let (value, after) = cstring(after);
        match field {
            b'V' => severity = value,
            b'S' if severity.is_empty() => severity = value,
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = after;
    }
    (severity, code, message)
}

/// Follows a stream of typed messages (type byte, length word, body) fed in chunks
/// of any size, reporting each `BackendKeyData` and whether the stream stands at a
/// message boundary.
#[derive(Debug, Default)]
pub struct Framer {
    /// Bytes of the current message's header seen so far (0 to 5).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current message still to come.
    remaining: usize,
    /// The body of a `BackendKeyData` message being collected.
    key_data: Option<Vec<u8>>,
}

impl Framer {
    /// Whether the bytes fed so far end exactly at the end of a message.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }

    /// Feeds the next bytes; returns the `(pid, key)` of every `BackendKeyData`
    /// message completed in them.
    pub fn feed(&mut self, mut data: &[u8]) -> Vec<(i32, i32)> {
        let mut keys = Vec::new();
        while !data.is_empty() {
            if self.remaining == 0 {
                let take = (5 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
                self.header_len += take;
                data = &data[take..];
                if self.header_len < 5 {
                    break;
                }
                let len = i32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = (len.max(4) - 4) as usize;
                self.header_len = 0;
                self.key_data = (self.header[0] == b'K').then(Vec::new);
                if self.remaining == 0 {
                    continue;
                }
            }
            let take = self.remaining.min(data.len());
            if let Some(k) = self.key_data.as_mut() {
                k.extend_from_slice(&data[..take]);
            }
            self.remaining -= take;
            data = &data[take..];
            if self.remaining == 0 {
                if let Some(k) = self.key_data.take().filter(|k| k.len() == 8) {
                    keys.push((
                        i32::from_be_bytes([k[0], k[1], k[2], k[3]]),
                        i32::from_be_bytes([k[4], k[5], k[6], k[7]]),
                    ));
                }
            }
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn framer_finds_boundaries_and_key_data_across_any_split() {
        let mut stream = message(b'R', &0i32.to_be_bytes());
        let mut key = 4242i32.to_be_bytes().to_vec();
        key.extend_from_slice(&(-7i32).to_be_bytes());
        stream.extend(message(b'K', &key));
        stream.extend(message(b'Z', b"I"));
        let ends = [9, 22, 28];
        for chunk in 1..=stream.len() {
            let mut f = Framer::default();
            let mut keys = Vec::new();
            let mut fed = 0;
            for part in stream.chunks(chunk) {
                keys.extend(f.feed(part));
                fed += part.len();
                assert_eq!(
                    f.at_boundary(),
                    ends.contains(&fed),
                    "chunk {chunk} at {fed}"
                );
            }
            assert_eq!(keys, [(4242, -7)], "chunk {chunk}");
        }
    }

    #[test]
    fn fatal_error_is_a_well_formed_error_response() {
        let e = fatal("57P01", "gone");
        assert_eq!(
            error_fields(&e[5..]),
            ("FATAL".into(), "57P01".into(), "gone".into())
        );
        assert_eq!(complete_message(&e), Some((b'E', e.len())));
        assert_eq!(complete_message(&e[..e.len() - 1]), None);
        assert_eq!(e[0], b'E');
        let len = i32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len + 1, e.len());
        assert_eq!(&e[5..], b"SFATAL\0VFATAL\0C57P01\0Mgone\0\0");
    }

    #[tokio::test]
    async fn encryption_requests_get_n_and_the_startup_packet_follows() {
        let (mut client, mut proxy) = tokio::io::duplex(1024);
        let mut ssl = 8i32.to_be_bytes().to_vec();
        ssl.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        let mut body = PROTOCOL_3.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0alice\0database\0app\0\0");
        let mut startup = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        startup.extend_from_slice(&body);
        client.write_all(&ssl).await.unwrap();
        client.write_all(&startup).await.unwrap();
        let first = read_first_packet(&mut proxy, false).await.unwrap();
        let mut answer = [0u8; 1];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"N");
        assert_eq!(first.param("user"), Some("alice"));
        assert_eq!(first.param("database"), Some("app"));
        match first {
            FirstPacket::Startup { raw, .. } => assert_eq!(raw, startup),
            other => panic!("{other:?}"),
        }
    }
}
