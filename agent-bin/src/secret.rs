//! Reading a secret (a password) from stdin without echoing it on a terminal.

use std::io::{BufRead, Write};

/// Where the question is written: stderr keeps stdout clean for generated output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// On stdout.
    Stdout,
    /// On stderr.
    Stderr,
}

/// Writes `question`, reads one line from stdin with echo off when stdin is a
/// terminal, and returns it without the line end; `None` when nothing was read.
pub fn read_line(question: &str, ask: Ask) -> Option<String> {
    let say = |text: &str| match ask {
        Ask::Stdout => {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
        Ask::Stderr => {
            eprint!("{text}");
            let _ = std::io::stderr().flush();
        }
    };
    say(question);
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios calls on our own stdin; the old settings are restored below.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let tty = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    if tty {
        let mut quiet = term;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    say("\n");
    match read {
        Ok(n) if n > 0 => Some(line.trim_end_matches(['\n', '\r']).to_string()),
        _ => None,
    }
}
