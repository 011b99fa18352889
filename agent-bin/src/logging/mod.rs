//! The agent's logger, set up from the `log` section: the level and `loggers` filter,
//! plain or JSON lines, stderr or a rotating `<dir>/patroni.log`, written through
//! Patroni's bounded queue by one thread that [`LogGuard`] stops.

mod queue;
mod render;
mod rotate;

pub use queue::{LineQueue, Sink};
pub use render::{asctime, json, plain, Record};
pub use rotate::{RotatingFile, FILE_NAME};

use crate::config::{LogConfig, LogLayout, LogLevel};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// How long shutdown and a panic wait for queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// Keeps the writer thread; dropping it writes the queued lines and stops the thread
/// (unless the destination is stuck for `FLUSH_WAIT`: the thread is then left to
/// the process exit rather than hanging it).
pub struct LogGuard {
    queue: Arc<LineQueue>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if self.queue.flush(FLUSH_WAIT) {
            self.queue.stop();
            if let Some(w) = self.writer.take() {
                let _ = w.join();
            }
        }
    }
}

/// Installs the process's logger as `cfg` says; also logs panics with a backtrace at
/// `traceback_level`. Fails if the log file cannot be opened.
pub fn init(cfg: &LogConfig) -> Result<LogGuard, String> {
    let (mut sink, terminal): (Box<dyn Sink>, bool) = match &cfg.dir {
        Some(dir) => {
            let file = RotatingFile::open(Path::new(dir), cfg.file_size, cfg.file_num, cfg.mode)
                .map_err(|e| format!("log.dir: cannot open {dir}/{FILE_NAME}: {e}"))?;
            (
                Box::new(FileSink {
                    file,
                    failing: false,
                }),
                false,
            )
        }
        None => (Box::new(StderrSink), std::io::stderr().is_terminal()),
    };
    let queue = Arc::new(LineQueue::new(cfg.max_queue_size));
    let writer = {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || queue.run(sink.as_mut()))
            .map_err(|e| format!("cannot start the log writer thread: {e}"))?
    };
    let guard = LogGuard {
        queue: queue.clone(),
        writer: Some(writer),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(cfg.filter_directives())
        .map_err(|e| format!("log.loggers: {e}"))?;
    let layer = LineLayer {
        colour: terminal && !cfg.is_json(),
        layout: cfg.layout.clone(),
        dateformat: cfg.dateformat.clone(),
        static_fields: cfg.static_fields.clone(),
        capacity: cfg.max_queue_size,
        last_heartbeat: cfg.deduplicate_heartbeat_logs.then(|| Mutex::new(None)),
        queue: queue.clone(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init()
        .map_err(|e| format!("cannot install the logger: {e}"))?;
    install_panic_hook(cfg.traceback_level, queue);
    Ok(guard)
}

struct StderrSink;

impl Sink for StderrSink {
    fn write_line(&mut self, line: &[u8]) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line);
        let _ = err.flush();
    }
}

struct FileSink {
    file: RotatingFile,
    failing: bool,
}

impl Sink for FileSink {
    fn write_line(&mut self, line: &[u8]) {
        match self.file.write_line(line) {
            Ok(()) => self.failing = false,
            Err(e) => {
                // Said once per failing stretch, where an operator may see it.
                if !std::mem::replace(&mut self.failing, true) {
                    eprintln!(
                        "fullauto: cannot write {}: {e}; log lines are lost until it works",
                        self.file.path().display()
                    );
                }
            }
        }
    }
}

/// Formats each event into one line and queues it.
struct LineLayer {
    layout: LogLayout,
    dateformat: Option<String>,
    static_fields: Vec<(String, Value)>,
    colour: bool,
    capacity: usize,
    /// `deduplicate_heartbeat_logs`: the last heartbeat written, if the last line was one.
    last_heartbeat: Option<Mutex<Option<String>>>,
    queue: Arc<LineQueue>,
}

/// A heartbeat: the HA loop's "nothing to do" line.
fn is_heartbeat(message: &str) -> bool {
    message.starts_with("no action. ") || message.starts_with("PAUSE: no action")
}

impl LineLayer {
    fn line(&self, r: &Record) -> Vec<u8> {
        let df = self.dateformat.as_deref();
        let mut text = match &self.layout {
            LogLayout::Plain(pieces) => plain(pieces, r, df, self.colour),
            LogLayout::Json(fields) => json(fields, &self.static_fields, r, df),
        };
        text.push('\n');
        text.into_bytes()
    }

    /// Whether `message` repeats the previous heartbeat line (then it is skipped).
    fn repeated_heartbeat(&self, message: &str) -> bool {
        let Some(last) = &self.last_heartbeat else {
            return false;
        };
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        if !is_heartbeat(message) {
            *last = None;
            return false;
        }
        if last.as_deref() == Some(message) {
            return true;
        }
        *last = Some(message.to_string());
        false
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut v = Collect::default();
        event.record(&mut v);
        if self.repeated_heartbeat(&v.message) {
            return;
        }
        let now = chrono::Local::now().fixed_offset();
        let thread = std::thread::current();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
        let mut r = Record {
            time: now,
            level: match *meta.level() {
                Level::ERROR if v.critical => LogLevel::Critical,
                Level::ERROR => LogLevel::Error,
                Level::WARN => LogLevel::Warning,
                Level::INFO => LogLevel::Info,
                Level::DEBUG => LogLevel::Debug,
                Level::TRACE => LogLevel::Trace,
            },
            target: meta.target(),
            file: meta.file(),
            line: meta.line(),
            message: &v.message,
            fields: &v.fields,
            process: std::process::id(),
            thread: tid,
            thread_name: thread.name().unwrap_or(""),
        };
        if !self.queue.push(self.line(&r)) {
            return;
        }
        let lost = self.queue.take_lost();
        if lost > 0 {
            let message = format!(
                "the log queue (log.max_queue_size {}) was full: {lost} log lines were lost",
                self.capacity
            );
            r.level = LogLevel::Warning;
            r.target = module_path!();
            r.message = &message;
            r.fields = &[];
            self.queue.push(self.line(&r));
        }
    }
}

/// The message and the other fields of an event (the `log.*` fields of records from
/// the `log` crate are its metadata, already in the normalized metadata).
#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(String, Value)>,
    /// `critical = true`: an error the agent exits on, shown as Python's CRITICAL.
    critical: bool,
}

impl Collect {
    fn put(&mut self, field: &Field, v: Value) {
        match field.name() {
            "message" => {
                self.message = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            n if n.starts_with("log.") => {}
            "critical" if v == Value::Bool(true) => self.critical = true,
            n => self.fields.push((n.to_string(), v)),
        }
    }
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

/// Logs a panic as an ERROR line and its backtrace at `traceback_level` (Patroni
/// shows Python tracebacks at that level), then waits for the lines to be written:
/// the release build aborts right after.
fn install_panic_hook(traceback: LogLevel, queue: Arc<LineQueue>) {
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        tracing::error!("thread '{name}' {info}");
        let bt = std::backtrace::Backtrace::force_capture();
        let text = format!("backtrace of the panic in thread '{name}':\n{bt}");
        match traceback {
            LogLevel::Trace => tracing::trace!("{text}"),
            LogLevel::Debug => tracing::debug!("{text}"),
            LogLevel::Info => tracing::info!("{text}"),
            LogLevel::Warning => tracing::warn!("{text}"),
            LogLevel::Error | LogLevel::Critical => tracing::error!("{text}"),
        }
        queue.flush(FLUSH_WAIT);
    }));
}
