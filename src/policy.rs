//! The mail-privacy section of a privacy policy, rendered from the effective configuration
//! (`privacy-milter policy`, and the report). Pure: settings in, text out. The text is the
//! template `templates/policy.j2`, one for Markdown and HTML, which reads the settings' keys
//! itself, so that every sentence that can change follows from a key.

use crate::config::Settings;
use minijinja::{value::Serde, AutoEscape, Environment};

const TEMPLATE: &str = include_str!("templates/policy.j2");

/// Markdown, or an HTML fragment: one `<section class="mail-privacy">`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Markdown,
    Html,
}

/// A template that does not render: a fault of this program, never of the configuration.
#[derive(Debug, thiserror::Error)]
#[error("the policy template: {0:#}")]
pub struct PolicyError(#[from] minijinja::Error);

/// The policy text for these settings.
pub fn render(settings: &Settings, format: Format) -> Result<String, PolicyError> {
    let mut env = Environment::new();
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()?,
    );
    // The HTML form escapes every value (the operator's name and text are free text).
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.add_filter("words", words);
    let name = match format {
        Format::Markdown => "policy.md",
        Format::Html => "policy.html",
    };
    env.add_template(name, TEMPLATE)?;
    let text = env.get_template(name)?.render(minijinja::context! {
        c => Serde(settings),
        html => format == Format::Html,
        longest => crate::config::Period(settings.retention.longest()).to_string(),
    })?;
    Ok(tidy(&text))
}

/// At most one blank line between blocks, none at the ends, one newline at the end.
fn tidy(text: &str) -> String {
    let mut out = String::new();
    let mut blank = false;
    for line in text.lines().map(str::trim_end) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A period as the configuration writes it (`90d`, `1h`, `30m`, `45s`) in words: "90 days",
/// "1 hour".
fn words(period: String) -> Result<String, minijinja::Error> {
    let secs = crate::config::Period::try_from(period)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e))?
        .0
        .as_secs();
    let (n, unit) = match secs {
        s if s > 0 && s % 86400 == 0 => (s / 86400, "day"),
        s if s > 0 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s > 0 && s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    Ok(format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_in_words() {
        let w = |s: &str| words(s.to_string()).unwrap();
        assert_eq!(w("90d"), "90 days");
        assert_eq!(w("1d"), "1 day");
        assert_eq!(w("36h"), "36 hours");
        assert_eq!(w("1h"), "1 hour");
        assert_eq!(w("90m"), "90 minutes");
        assert_eq!(w("61s"), "61 seconds");
    }

    #[test]
    fn html_escapes_the_operators_text() {
        let mut s = Settings::default();
        s.policy.name = "Smith & <Sons>".into();
        let html = render(&s, Format::Html).unwrap();
        assert!(html.contains("Smith &amp; &lt;Sons&gt;"), "{html}");
        assert!(!html.contains("<Sons>"));
        let md = render(&s, Format::Markdown).unwrap();
        assert!(md.contains("Smith & <Sons>"), "{md}");
    }
}
