//! Questions on stdin, as patronictl asks them (`Question [default]: `, `[y/N]`).
//!
//! stdin need not be a terminal: piped answers are read line by line, so scripts can
//! answer. When stdin ends before an answer is given the command fails with a clear
//! message instead of hanging or guessing.

use super::error::{CtlError, CtlResult};
use std::io::{BufRead, Write};

/// Reads answers from `input` and writes questions to `output`.
pub struct Prompter<'a> {
    input: Box<dyn BufRead + 'a>,
    output: Box<dyn Write + 'a>,
    /// Whether `input` is a terminal (answers are then echoed by the terminal).
    interactive: bool,
    /// What to tell the user when stdin runs dry (e.g. "use --force").
    hint: String,
}

impl<'a> Prompter<'a> {
    /// A prompter over any reader and writer (tests inject both).
    pub fn new(input: impl BufRead + 'a, output: impl Write + 'a, interactive: bool) -> Self {
        Prompter {
            input: Box::new(input),
            output: Box::new(output),
            interactive,
            hint: "stdin ended; answer on a terminal or pipe the answers".to_string(),
        }
    }

    /// The process's stdin and stdout.
    pub fn stdio() -> Prompter<'static> {
        use std::io::IsTerminal;
        let interactive = std::io::stdin().is_terminal();
        Prompter::new(
            std::io::BufReader::new(std::io::stdin()),
            std::io::stdout(),
            interactive,
        )
    }

    /// Sets the advice given when no answer can be read.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = hint.into();
        self
    }

    fn read_line(&mut self, question: &str) -> CtlResult<String> {
        let _ = self.output.flush();
        let mut line = String::new();
        let n = self
            .input
            .read_line(&mut line)
            .map_err(|e| CtlError::Io(format!("cannot read stdin: {e}")))?;
        if n == 0 {
            if !self.interactive {
                let _ = writeln!(self.output);
            }
            return Err(CtlError::NoAnswer {
                question: question.trim().to_string(),
                hint: self.hint.clone(),
            });
        }
        if !self.interactive {
            // The answer was not echoed: end the question's line ourselves.
            let _ = writeln!(self.output);
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }

    /// Asks for a text answer. An empty answer takes `default` when there is one and
    /// asks again otherwise.
    pub fn ask(&mut self, question: &str, default: Option<&str>) -> CtlResult<String> {
        loop {
            match default {
                Some(d) if !d.is_empty() => {
                    let _ = write!(self.output, "{question} [{d}]: ");
                }
                _ => {
                    let _ = write!(self.output, "{question}: ");
                }
            }
            let answer = self.read_line(question)?;
            let answer = answer.trim();
            if !answer.is_empty() {
                return Ok(answer.to_string());
            }
            if let Some(d) = default {
                return Ok(d.to_string());
            }
        }
    }

    /// Asks a yes/no question whose default is no.
    pub fn confirm(&mut self, question: &str) -> CtlResult<bool> {
        loop {
            let _ = write!(self.output, "{question} [y/N]: ");
            let answer = self.read_line(question)?;
            match answer.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => return Ok(true),
                "" | "n" | "no" => return Ok(false),
                _ => {
                    let _ = writeln!(self.output, "Error: invalid input");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T>(input: &str, f: impl FnOnce(&mut Prompter) -> T) -> (T, String) {
        let mut out = Vec::new();
        let r = {
            let mut p = Prompter::new(input.as_bytes(), &mut out, false);
            f(&mut p)
        };
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn ask_uses_default_on_empty_answer() {
        let (r, out) = run("\n", |p| p.ask("Primary", Some("pg0")));
        assert_eq!(r.unwrap(), "pg0");
        assert_eq!(out, "Primary [pg0]: \n");
        let (r, _) = run("  pg1  \n", |p| p.ask("Primary", Some("pg0")));
        assert_eq!(r.unwrap(), "pg1");
        let (r, _) = run("\n", |p| p.ask("Candidate", Some("")));
        assert_eq!(r.unwrap(), "");
    }

    #[test]
    fn ask_without_default_asks_again() {
        let (r, out) = run("\nbatman\n", |p| {
            p.ask("Please confirm the cluster name to remove", None)
        });
        assert_eq!(r.unwrap(), "batman");
        assert_eq!(out.matches("Please confirm").count(), 2);
    }

    #[test]
    fn confirm_accepts_yes_and_defaults_to_no() {
        assert!(run("y\n", |p| p.confirm("Apply?")).0.unwrap());
        assert!(run("YES\n", |p| p.confirm("Apply?")).0.unwrap());
        assert!(!run("\n", |p| p.confirm("Apply?")).0.unwrap());
        assert!(!run("no\n", |p| p.confirm("Apply?")).0.unwrap());
        let (r, out) = run("maybe\ny\n", |p| p.confirm("Apply?"));
        assert!(r.unwrap());
        assert!(out.contains("Error: invalid input"));
    }

    #[test]
    fn end_of_input_is_a_clear_error() {
        let (r, _) = run("", |p| {
            p.confirm("Are you sure you want to switchover cluster batman?")
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("no answer to \"Are you sure you want to switchover cluster batman?\""),
            "{e}"
        );
        let mut out = Vec::new();
        let mut p = Prompter::new("".as_bytes(), &mut out, false).with_hint("use --force");
        let e = p.ask("Candidate", None).unwrap_err().to_string();
        assert!(e.ends_with("use --force"), "{e}");
    }
}
