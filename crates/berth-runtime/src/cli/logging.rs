//! Log lines in runc's (logrus's) two formats, because containerd and
//! podman read them back to report a runtime's errors:
//!
//! text: `time="2026-11-23T19:45:49Z" level=error msg="container does not exist"`
//! json: `{"level":"error","msg":"container does not exist","time":"2026-11-23T19:45:49Z"}`
//!
//! An error whose cause is a failed exec of the container's program adds
//! logrus's way of carrying a field, `errno` (json: `{"errno":2,"level":..}`,
//! keys sorted as logrus sorts them; text: `... msg="..." errno=2`), so a
//! caller (berth-oci-cli) maps it to 127/126 without reading the words.
//! containerd, podman and runc's own readers ignore fields they do not know.
//!
//! Written by hand as a small tracing layer: tracing-subscriber's
//! formatters cannot produce logrus's field names and order.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context as _, Result};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, filter::LevelFilter, util::SubscriberInitExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

enum Sink {
    Stderr,
    File(Mutex<File>),
}

struct LogrusLayer {
    sink: Sink,
    format: Format,
}

/// Where logs go; the fatal-error path also prints to stderr when logs do
/// not already go there (as runc does).
pub struct Logging {
    pub to_stderr: bool,
}

/// Sets up logging from --log, --log-format and --debug.
pub fn init(g: &liboci_cli::GlobalOpts) -> Result<Logging> {
    let format = match g.log_format.as_deref() {
        None | Some("text") => Format::Text,
        Some("json") => Format::Json,
        Some(other) => anyhow::bail!("invalid --log-format {other:?}: use text or json"),
    };
    let sink = match g.log.as_deref() {
        None => Sink::Stderr,
        Some(p) if p == Path::new("/dev/stderr") => Sink::Stderr,
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("open log file {}", p.display()))?;
            Sink::File(Mutex::new(f))
        }
    };
    let to_stderr = matches!(sink, Sink::Stderr);
    let level = if g.debug { LevelFilter::DEBUG } else { LevelFilter::WARN };
    tracing_subscriber::registry().with(LogrusLayer { sink, format }.with_filter(level)).init();
    Ok(Logging { to_stderr })
}

/// logrus's level names.
fn level_name(l: &Level) -> &'static str {
    match *l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// One log line, without the trailing newline; `errno` as logrus writes
/// a field.
pub fn format_line(format: Format, level: &str, msg: &str, time: &str, errno: Option<i64>) -> String {
    match format {
        Format::Text => {
            let mut s = format!("time={time:?} level={level} msg={}", quote(msg));
            if let Some(n) = errno {
                let _ = write!(s, " errno={n}");
            }
            s
        }
        Format::Json => {
            // logrus sorts keys: errno, level, msg, time.
            let mut s = String::from("{");
            if let Some(n) = errno {
                let _ = write!(s, "\"errno\":{n},");
            }
            s.push_str("\"level\":");
            s.push_str(&serde_json::to_string(level).unwrap_or_default());
            s.push_str(",\"msg\":");
            s.push_str(&serde_json::to_string(msg).unwrap_or_default());
            s.push_str(",\"time\":");
            s.push_str(&serde_json::to_string(time).unwrap_or_default());
            s.push('}');
            s
        }
    }
}

/// Go's %q-style quoting, as logrus uses for msg.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl LogrusLayer {
    fn write(&self, line: &str) {
        match &self.sink {
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr(), "{line}");
            }
            Sink::File(f) => {
                if let Ok(mut f) = f.lock() {
                    let _ = writeln!(f, "{line}");
                }
            }
        }
    }
}

impl<S: Subscriber> Layer<S> for LogrusLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut v = MessageVisitor::default();
        event.record(&mut v);
        let level = level_name(event.metadata().level());
        let line = format_line(self.format, level, &v.text, &berth_proc::time::now_secs(), v.errno);
        self.write(&line);
    }
}

#[derive(Default)]
struct MessageVisitor {
    text: String,
    /// The `errno` field: a line field of its own, not part of the text.
    errno: Option<i64>,
}

impl Visit for MessageVisitor {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "errno" {
            self.errno = Some(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_match_logrus() {
        let line = format_line(Format::Text, "error", "exec: \"x\": not found", "2026-11-23T19:45:49Z", None);
        assert_eq!(line, r#"time="2026-11-23T19:45:49Z" level=error msg="exec: \"x\": not found""#);
        let line = format_line(Format::Text, "error", "exec: \"x\": not found", "2026-11-23T19:45:49Z", Some(2));
        assert_eq!(line, r#"time="2026-11-23T19:45:49Z" level=error msg="exec: \"x\": not found" errno=2"#);
    }

    #[test]
    fn json_lines_match_logrus() {
        let line = format_line(Format::Json, "warning", "a \"b\"\n", "2026-11-23T19:45:49Z", None);
        assert_eq!(line, r#"{"level":"warning","msg":"a \"b\"\n","time":"2026-11-23T19:45:49Z"}"#);
        let line = format_line(Format::Json, "error", "exec: \"x\": not found", "2026-11-23T19:45:49Z", Some(2));
        assert_eq!(line, r#"{"errno":2,"level":"error","msg":"exec: \"x\": not found","time":"2026-11-23T19:45:49Z"}"#);
    }
}
