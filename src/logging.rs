//! Where log lines go (`[log] destination`): stderr (with a priority on each line when stderr
//! is systemd's journal), systemd's journal (with each event's fields as journal fields), or
//! RFC 5424 messages on the local syslog socket.

use crate::config::{Log, LogDestination};
use std::{
    borrow::Cow,
    io::{self, Write},
    sync::{Arc, Mutex},
};
use syslog::{Formatter5424, Logger, LoggerBackend};
use tracing::Level;
use tracing_subscriber::{
    fmt::MakeWriter, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter,
};

/// Installs the global subscriber, or says why the destination cannot be used.
pub fn init(log: &Log) -> Result<(), String> {
    let filter = || EnvFilter::new(format!("{},indymilter=warn", log.level.as_str()));
    match log.destination {
        // Under systemd, stderr usually is the journal: it stamps each line itself, and a
        // `<N>` prefix gives the line its priority (sd-daemon(3)), so `journalctl -p warning`
        // finds the warnings.
        LogDestination::Stderr if stderr_is_the_journal() => tracing_subscriber::fmt()
            .with_writer(Lines::new(JournalStderr))
            .with_ansi(false)
            .without_time()
            .with_env_filter(filter())
            .init(),
        LogDestination::Stderr => {
            // Colours only for a person at a terminal, never into the journal or a file.
            let colours = io::IsTerminal::is_terminal(&io::stderr());
            tracing_subscriber::fmt()
                .with_writer(Lines::new(Stderr { colours }))
                .with_ansi(colours)
                .with_env_filter(filter())
                .init()
        }
        LogDestination::Journald => {
            let journal = tracing_journald::layer().map_err(|e| {
                format!("log.destination = \"journald\": cannot reach the journal: {e}")
            })?;
            tracing_subscriber::registry()
                .with(filter())
                .with(
                    journal
                        .with_syslog_identifier("privacy-milter".into())
                        .with_field_prefix(None),
                )
                .init()
        }
        LogDestination::Syslog => {
            let syslog = Syslog::connect(log)?;
            tracing_subscriber::fmt()
                .with_writer(Lines::new(syslog))
                .with_ansi(false)
                .without_time()
                .with_env_filter(filter())
                .init()
        }
    }
    Ok(())
}

/// An error with each of its causes that its own text does not already say
/// (`error performing TLS handshake: invalid peer certificate: UnknownIssuer`): a library's
/// own message alone rarely says what to fix.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// Writes a command's error to stderr as `privacy-milter: MESSAGE`. When stderr is the journal
/// (a unit's ExecStart), every line of it is at priority err, like the daemon's own errors.
pub fn report_error(message: &str) {
    let text = format!("privacy-milter: {message}\n");
    if stderr_is_the_journal() {
        JournalStderr.deliver(Level::ERROR, text.as_bytes());
    } else {
        Stderr { colours: false }.deliver(Level::ERROR, text.as_bytes());
    }
}

/// A formatted log line (or lines) with every control character escaped as `\xHH` (C1
/// characters as `\u{HH}`) but the line breaks, which a multi-line message (a configuration
/// error) keeps, and the tab; with `colours`, the SGR sequences (`ESC [ digits ; m`) the
/// formatter writes for a terminal are kept too. Values from the wire are escaped where they
/// are logged (`facts::Escaped`), line breaks included; this catches any other way a control
/// character could reach a terminal or a log file (an error quoting a path, a library's text).
fn defanged(text: &[u8], colours: bool) -> Cow<'_, [u8]> {
    let is_sgr = |rest: &[u8]| -> Option<usize> {
        let body = rest.strip_prefix(b"\x1b[")?;
        let end = body
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b';'))?;
        (body[end] == b'm').then_some(2 + end + 1)
    };
    let unsafe_at = |i: usize| -> bool {
        let b = text[i];
        match b {
            b'\n' | b'\t' => false,
            0xc2 => text.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n)),
            b => b.is_ascii_control(),
        }
    };
    if !(0..text.len()).any(|i| unsafe_at(i) && !(colours && is_sgr(&text[i..]).is_some())) {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < text.len() {
        if colours {
            if let Some(len) = is_sgr(&text[i..]) {
                out.extend_from_slice(&text[i..i + len]);
                i += len;
                continue;
            }
        }
        if !unsafe_at(i) {
            out.push(text[i]);
            i += 1;
        } else if text[i] == 0xc2 {
            out.extend_from_slice(format!("\\u{{{:x}}}", text[i + 1]).as_bytes());
            i += 2;
        } else {
            out.extend_from_slice(format!("\\x{:02x}", text[i]).as_bytes());
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// stderr when it is not the journal: a file, a pipe, or a person's terminal.
struct Stderr {
    /// The formatter writes colours (stderr is a terminal): keep its SGR sequences.
    colours: bool,
}

impl Deliver for Stderr {
    fn deliver(&self, _level: Level, text: &[u8]) {
        // Nowhere to report a failed log write.
        let _ = io::stderr().lock().write_all(&defanged(text, self.colours));
    }
}

/// Whether stderr is the stream systemd connected to the journal: it names that stream's device
/// and inode in `JOURNAL_STREAM` (systemd.exec(5)). A redirection by a shell keeps the variable
/// but not the stream.
fn stderr_is_the_journal() -> bool {
    use std::os::{fd::AsFd, unix::fs::MetadataExt};
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(stderr).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// Hands each event's text, once formatted, in one piece to `D` (the formatter writes it in
/// several).
struct Lines<D>(Arc<D>);

/// Where a formatted event goes, with its level.
trait Deliver: Send + Sync + 'static {
    fn deliver(&self, level: Level, text: &[u8]);
}

/// One event's text, delivered when the formatter is done with it.
struct Line<D: Deliver> {
    to: Arc<D>,
    level: Level,
    buf: Vec<u8>,
}

impl<D: Deliver> Write for Line<D> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<D: Deliver> Drop for Line<D> {
    fn drop(&mut self) {
        self.to.deliver(self.level, &self.buf);
    }
}

impl<'a, D: Deliver> MakeWriter<'a> for Lines<D> {
    type Writer = Line<D>;

    fn make_writer(&'a self) -> Line<D> {
        self.line(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line<D> {
        self.line(*meta.level())
    }
}

impl<D: Deliver> Lines<D> {
    fn new(to: D) -> Self {
        Self(Arc::new(to))
    }

    fn line(&self, level: Level) -> Line<D> {
        Line {
            to: Arc::clone(&self.0),
            level,
            buf: Vec::new(),
        }
    }
}

/// stderr when it is the journal's stream: each line prefixed with its syslog priority.
struct JournalStderr;

impl Deliver for JournalStderr {
    fn deliver(&self, level: Level, text: &[u8]) {
        let prefix: &[u8] = match level {
            Level::ERROR => b"<3>",
            Level::WARN => b"<4>",
            Level::INFO => b"<6>",
            _ => b"<7>",
        };
        let text = defanged(text, false);
        // Every line of a multi-line message (a configuration error) gets the prefix: the
        // journal reads each line as an entry of its own, and an empty one as an empty entry.
        let mut out = Vec::with_capacity(text.len() + 8);
        for line in text.split_inclusive(|&b| b == b'\n') {
            if line == b"\n" {
                continue;
            }
            out.extend_from_slice(prefix);
            out.extend_from_slice(line);
        }
        // Nowhere to report a failed log write.
        let _ = io::stderr().lock().write_all(&out);
    }
}

type SyslogLogger = Logger<LoggerBackend, Formatter5424>;

/// Sends each formatted log line as one RFC 5424 message, facility mail.
struct Syslog(Mutex<SyslogLogger>);

impl Syslog {
    fn connect(log: &Log) -> Result<Self, String> {
        let formatter = Formatter5424 {
            facility: syslog::Facility::LOG_MAIL,
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok()),
            process: "privacy-milter".into(),
            pid: std::process::id(),
        };
        let logger = syslog::unix_custom(formatter, &log.syslog_socket).map_err(|e| {
            format!(
                "log.destination = \"syslog\": cannot reach {} (log.syslog_socket): {e}",
                log.syslog_socket.display()
            )
        })?;
        Ok(Self(Mutex::new(logger)))
    }
}

impl Deliver for Syslog {
    fn deliver(&self, level: Level, text: &[u8]) {
        let text = defanged(text, false);
        let text = String::from_utf8_lossy(&text);
        let message = (0, Default::default(), text.trim_end().to_string());
        let mut logger = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // A syslog daemon that is away loses the line; the milter carries on.
        let _ = match level {
            Level::ERROR => logger.err(message),
            Level::WARN => logger.warning(message),
            Level::INFO => logger.info(message),
            _ => logger.debug(message),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::defanged;
    use proptest::prelude::*;

    fn shown(text: &str, colours: bool) -> String {
        String::from_utf8(defanged(text.as_bytes(), colours).into_owned()).unwrap()
    }

    #[test]
    fn control_characters_are_escaped_but_line_breaks() {
        assert_eq!(
            shown("plain\nlines\tand tabs\n", false),
            "plain\nlines\tand tabs\n"
        );
        assert_eq!(
            shown("a\x1b[2J\x07\r\u{85}b\n", false),
            "a\\x1b[2J\\x07\\x0d\\u{85}b\n"
        );
        // Colours stay for a terminal; any other escape sequence does not.
        assert_eq!(
            shown(
                "\x1b[2m2026\x1b[0m \x1b[32mINFO\x1b[0m \x1b]0;x\x07\n",
                true
            ),
            "\x1b[2m2026\x1b[0m \x1b[32mINFO\x1b[0m \\x1b]0;x\\x07\n"
        );
        assert_eq!(shown("\x1b[2m", false), "\\x1b[2m");
    }

    proptest! {
        #[test]
        fn nothing_but_line_breaks_tabs_and_colours_get_through(
            text in "[\\x00-\\x7f\u{80}-\u{a0}é]{0,60}",
            colours in any::<bool>(),
        ) {
            let out = defanged(text.as_bytes(), colours);
            let out = std::str::from_utf8(&out).unwrap();
            let mut rest = out;
            while let Some(at) = rest.find(|c: char| c.is_control() && c != '\n' && c != '\t') {
                let tail = &rest[at..];
                // Only an SGR sequence, and only with colours.
                prop_assert!(colours && tail.starts_with("\x1b["), "{:?}", out);
                let end = tail[2..].find(|c: char| !(c.is_ascii_digit() || c == ';')).unwrap();
                prop_assert_eq!(&tail[2 + end..3 + end], "m");
                rest = &tail[3 + end..];
            }
        }
    }
}
