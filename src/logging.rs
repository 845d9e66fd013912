//! Where log lines go (`[log] destination`): stderr (with a priority on each line when stderr
//! is systemd's journal), systemd's journal (with each event's fields as journal fields), or
//! RFC 5424 messages on the local syslog socket.

use crate::config::{Log, LogDestination};
use std::{
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
        LogDestination::Stderr => tracing_subscriber::fmt()
            .with_writer(io::stderr)
            // Colours only for a person at a terminal, never into the journal or a file.
            .with_ansi(io::IsTerminal::is_terminal(&io::stderr()))
            .with_env_filter(filter())
            .init(),
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

/// Writes a command's error to stderr as `privacy-milter: MESSAGE`. When stderr is the journal
/// (a unit's ExecStart), every line of it is at priority err, like the daemon's own errors.
pub fn report_error(message: &str) {
    let text = format!("privacy-milter: {message}\n");
    if stderr_is_the_journal() {
        JournalStderr.deliver(Level::ERROR, text.as_bytes());
    } else {
        eprint!("{text}");
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
        let text = String::from_utf8_lossy(text);
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
