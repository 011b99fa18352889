//! systemd's readiness protocol for `Type=notify` units: `READY=1` once the REST API
//! listens and the HA loop runs, `RELOADING=1` … `READY=1` around a SIGHUP reload,
//! `STOPPING=1` when shutting down (as Patroni 4 sends them).
//!
//! The socket is taken from `NOTIFY_SOCKET` once at start and the variable removed,
//! so Postgres and callback scripts do not inherit it: a Postgres built with systemd
//! support would otherwise tell systemd the whole service is stopping when it stops.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

static SOCKET: OnceLock<Option<String>> = OnceLock::new();

/// Reads and removes `NOTIFY_SOCKET`. Call at the start of `main`, before any thread
/// or child process exists.
pub fn take_notify_socket() {
    let addr = std::env::var("NOTIFY_SOCKET")
        .ok()
        .filter(|a| !a.is_empty());
    if addr.is_some() {
        std::env::remove_var("NOTIFY_SOCKET");
    }
    let _ = SOCKET.set(addr);
}

/// Tells systemd `state` (`READY=1`, …) when started by it; otherwise does nothing.
pub fn notify(state: &str) {
    let Some(Some(addr)) = SOCKET.get() else {
        return;
    };
    match send(addr, state) {
        Ok(()) => tracing::debug!("told systemd {}", state.replace('\n', " ")),
        Err(e) => tracing::warn!("cannot tell systemd {state:?} at NOTIFY_SOCKET {addr}: {e}"),
    }
}

/// `RELOADING=1` with the monotonic time systemd asks for.
pub fn notify_reloading() {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let usec = ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000;
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
}

/// Sends one datagram to a socket path or an abstract address (`@name`).
pub fn send(addr: &str, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = addr.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(message.as_bytes(), &a)?;
    } else if addr.starts_with('/') {
        sock.send_to(message.as_bytes(), addr)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an absolute path or @abstract address",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_paths_and_abstract_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("fullauto-test-{}", std::process::id());
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&a).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(send("relative", "READY=1").is_err());
    }
}
