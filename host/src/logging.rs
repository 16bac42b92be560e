//! Log setup: level from `RUST_LOG` when set, else from the config's
//! `log.level`; text or JSON lines on stderr (stdout is kept for command
//! output). Access-log events use the target `refractium::access`. A panic
//! is one log line too ([`log_panics`]).

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

/// `text` with control characters (newlines, carriage returns, escape
/// sequences, Unicode line separators) and backslashes escaped, for text a
/// client or a plugin controls that goes into a log message: on one line,
/// it cannot pass for a line of its own or repaint a terminal. Field values
/// recorded as strings are escaped by the formatter itself.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() || c == '\\' || c == '\u{2028}' || c == '\u{2029}';
    if !text.chars().any(unsafe_char) {
        return text.into();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if unsafe_char(c) => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.into()
}

/// Install the global subscriber. Safe to call more than once (later calls
/// are ignored).
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Report every panic as one `ERROR` line of the log (thread, place,
/// message) instead of the standard hook's text; with `RUST_BACKTRACE` set
/// the line carries the backtrace. Whoever catches the panic says what
/// became of the work (a connection's access-log line, a restarted task).
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = match (info.payload().downcast_ref::<&str>(), info.payload().downcast_ref::<String>()) {
            (Some(text), _) => text,
            (_, Some(text)) => text.as_str(),
            _ => "(no message)",
        };
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!(thread, at, backtrace = %backtrace, "panic: {message}");
        } else {
            tracing::error!(thread, at, "panic: {message}");
        }
    }));
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_keeps_a_message_on_one_line() {
        assert_eq!(super::escape("plain text: fine"), "plain text: fine");
        let forged = "ok\n2026-12-07T00:00:00Z  INFO refractium::access: client=6.6.6.6\r\u{1b}[2J\u{2028}\\";
        let escaped = super::escape(forged);
        assert!(!escaped.chars().any(|c| c.is_control() || c == '\u{2028}'), "{escaped}");
        assert_eq!(
            escaped,
            "ok\\n2026-12-07T00:00:00Z  INFO refractium::access: client=6.6.6.6\\r\\u{1b}[2J\\u{2028}\\\\"
        );
    }
}
