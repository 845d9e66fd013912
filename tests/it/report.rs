//! `privacy-milter report`: generated from a ledger filled through the real milter behind a
//! private Postfix, and the tracker reading that Postfix's log, then opened in headless
//! Chromium. The DOM holds the counts `ledger stats` prints, the charts are there, the page
//! asks the network for nothing (a proxy of the test's own sees no request; a page that does
//! load something from elsewhere shows the proxy works), and no raw address or IP is in it.
use crate::e2e::{self, compose, new_message_id, wait_for, Milter, Postfix, Sink, Socket, Swaks};
use std::{
    collections::BTreeSet,
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Arc, Mutex},
    time::Duration,
};

const CHROMIUM: &str = "/usr/bin/chromium";

fn chromium_available(test: &str) -> bool {
    crate::common::can_run(
        Path::new(CHROMIUM).exists(),
        &format!("{test}: Chromium is not installed ({CHROMIUM}; scripts/setup-test-deps)"),
    )
}

/// A loopback HTTP proxy that records the host of every request made through it and answers
/// none.
struct Proxy {
    port: u16,
    hosts: Arc<Mutex<BTreeSet<String>>>,
}

impl Proxy {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let hosts = Arc::new(Mutex::new(BTreeSet::new()));
        let seen = Arc::clone(&hosts);
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 2048];
                let n = stream.read(&mut buf).unwrap_or(0);
                // "CONNECT host:443 HTTP/1.1" or "GET http://host/path HTTP/1.1".
                let text = String::from_utf8_lossy(&buf[..n]);
                let target = text.split_whitespace().nth(1).unwrap_or("?");
                let host = target
                    .trim_start_matches("http://")
                    .split(['/', ':'])
                    .next()
                    .unwrap_or("?")
                    .to_string();
                seen.lock().unwrap().insert(host);
                // Dropped unanswered: the browser sees the request fail.
            }
        });
        Self { port, hosts }
    }

    fn seen(&self) -> BTreeSet<String> {
        self.hosts.lock().unwrap().clone()
    }
}

/// Chromium, headless, in a fresh profile, every request through `proxy`.
fn chromium(dir: &Path, proxy: &Proxy, args: &[String]) -> Output {
    let profile = tempfile::tempdir_in(dir).unwrap();
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server=http://127.0.0.1:{}", proxy.port))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// The counts `ledger stats` prints: (class, direction, count).
fn stats_counts(text: &str) -> Vec<(String, String, u64)> {
    text.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words[..] {
                ["class", class, "direction", direction, n] => {
                    Some((class.to_string(), direction.to_string(), n.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

struct Lab {
    postfix: Postfix,
    milter: Milter,
    _sink: Sink,
    dir: tempfile::TempDir,
}

impl Lab {
    fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pm-report.")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let base = dir.path().display();
        let sink = Sink::start(dir.path());
        let milter = Milter::start_with_events(
            dir.path(),
            Socket::Unix,
            &["ledger"],
            &format!(
                r#"
[privacy]
ip = "hmac"
address = "hmac"
keys = "{base}/keys"

[networks]
trusted = ["127.0.0.0/8"]

[domains]
local = ["test.example"]

[tracking]
enabled = true
path = "{base}/maillog"
state = "{base}/track.state"
postfix_config_dir = "{base}/etc"

[mta_logs]
copy = "{base}/copy"

[policy]
name = "Report Test Org"
contact = "dpo@operator.example"
"#
            ),
        );
        let postfix = Postfix::start(dir.path(), sink.port, &milter.postfix_spec, "");
        Self {
            postfix,
            milter,
            _sink: sink,
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sends from a trusted client; returns once Postfix removed the message.
    fn send(&self, to: &'static str) {
        let id = new_message_id("report");
        Swaks::new(
            self.postfix.port,
            "alice@test.example",
            &[to],
            compose(&id, "alice@test.example", &[to], "report", &[]),
        )
        .send(self.path());
        wait_for(
            &format!("Postfix to remove <{id}>"),
            || {
                let qid = self.postfix.queue_id(&id)?;
                self.postfix
                    .log_of(&qid)
                    .iter()
                    .any(|l| l.contains(": removed"))
                    .then_some(())
            },
            || self.postfix.context(),
        );
    }

    fn cli(&self, args: &[&str]) -> Output {
        let out = Milter::command()
            .arg("--config")
            .arg(&self.milter.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

#[test]
fn report_in_a_browser() {
    if !e2e::postfix_available("report::report_in_a_browser")
        || !chromium_available("report::report_in_a_browser")
    {
        return;
    }
    let lab = Lab::start();
    for to in [
        "carol@remote.example",
        "dave@remote.example",
        "bob@test.example",
    ] {
        lab.send(to);
    }
    lab.cli(&["track", "--once"]);
    let stats = String::from_utf8(lab.cli(&["ledger", "stats"]).stdout).unwrap();
    let counts = stats_counts(&stats);
    assert!(counts.len() >= 2, "{stats}");

    let html = lab.path().join("report.html");
    let out = lab.cli(&["report", "--output", html.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("report written to"),
        "{out:?}"
    );

    let proxy = Proxy::start();
    let dom = String::from_utf8(
        chromium(lab.path(), &proxy, &["--dump-dom".into(), file_url(&html)]).stdout,
    )
    .unwrap();
    let screenshot = lab.path().join("report.png");
    chromium(
        lab.path(),
        &proxy,
        &[
            format!("--screenshot={}", screenshot.display()),
            "--window-size=1200,2000".into(),
            file_url(&html),
        ],
    );
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 10_000);
    if let Some(keep) = std::env::var_os("PRIVACY_MILTER_KEEP_REPORT") {
        let keep = PathBuf::from(keep);
        std::fs::copy(&html, keep.with_extension("html")).unwrap();
        std::fs::copy(&screenshot, keep.with_extension("png")).unwrap();
    }

    // The counts per class and direction that `ledger stats` prints.
    for (class, direction, n) in &counts {
        let row = format!(r#"data-class="{class}" data-direction="{direction}" data-count="{n}""#);
        assert!(dom.contains(&row), "{row} not in the DOM:\n{dom}");
    }
    // The charts, drawn as SVG inside their figures.
    for chart in ["chart-expiry", "chart-recorded", "chart-transit"] {
        let at = dom
            .find(&format!(r#"id="{chart}""#))
            .unwrap_or_else(|| panic!("no {chart}"));
        let figure = &dom[at..at + dom[at..].find("</figure>").unwrap()];
        assert!(
            figure.contains("<svg") && figure.contains("<rect"),
            "{chart}: {figure}"
        );
    }
    // Transit mail by state: the two remote messages were removed.
    assert!(
        dom.contains(r#"data-state="removed" data-count="2""#),
        "{dom}"
    );
    assert!(dom.contains(r#"data-check="mta_logs.journald""#));
    // The MTA's logs: the raw window, and the copy the tracker wrote, file by file.
    assert!(dom.contains("Raw log lines are kept 1 day"), "{dom}");
    let copied = std::fs::metadata(lab.path().join("copy/mail.log"))
        .unwrap()
        .len();
    assert!(copied > 0);
    assert!(
        dom.contains(&format!(r#"data-file="mail.log" data-bytes="{copied}""#)),
        "{dom}"
    );
    for check in ["mta_logs.copy", "mta_logs.copy_lag", "mta_logs.copy_raw"] {
        assert!(
            dom.contains(&format!(r#"data-check="{check}" data-ok="True""#)),
            "{check}: {dom}"
        );
    }
    assert!(dom.contains("Responsible for this mail service: Report Test Org."));

    // Nothing left the page. Chromium asks its own services for things whatever the page
    // (update.googleapis.com, ...); a page without script can only ask for what it names, so
    // no host the proxy saw may be named in the page, and no attribute names a URL.
    let html_text = std::fs::read_to_string(&html).unwrap();
    let named = |page: &str, hosts: &BTreeSet<String>| -> Vec<String> {
        hosts
            .iter()
            .filter(|h| page.contains(h.as_str()))
            .cloned()
            .collect()
    };
    let asked = named(&html_text, &proxy.seen());
    assert!(asked.is_empty(), "the report asked for {asked:?}");
    for attribute in ["src=", "href=", "url(", "@import"] {
        assert!(!dom.contains(attribute), "{attribute} in the report's DOM");
    }
    let control = lab.path().join("control.html");
    std::fs::write(
        &control,
        r#"<html><body><img src="http://images.example.net/x.png"></body></html>"#,
    )
    .unwrap();
    let controlled = Proxy::start();
    chromium(
        lab.path(),
        &controlled,
        &["--dump-dom".into(), file_url(&control)],
    );
    let control_text = std::fs::read_to_string(&control).unwrap();
    assert_eq!(
        named(&control_text, &controlled.seen()),
        ["images.example.net"],
        "the control page's request never reached the proxy"
    );

    // No raw address or IP of the mail in the report.
    let bytes = std::fs::read_to_string(&html).unwrap() + &dom;
    for raw in [
        "alice@test.example",
        "carol@remote.example",
        "dave@remote.example",
        "bob@test.example",
        "127.0.0.1",
    ] {
        assert!(!bytes.contains(raw), "{raw} in the report");
    }
}

/// A private PostgreSQL cluster (scripts/postgres-test-server), stopped on drop.
struct Pg {
    dir: tempfile::TempDir,
    url: String,
}

impl Pg {
    fn script(&self, action: &str) -> String {
        let out = Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-test-server"),
        )
        .arg(action)
        .arg(self.dir.path().join("pg"))
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "postgres-test-server {action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.script("stop");
    }
}

/// The same report from a PostgreSQL ledger: its counts are those `ledger stats` prints.
#[tokio::test]
async fn report_on_postgresql() {
    let installed = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.flatten()
                .any(|d| d.path().join("bin/initdb").is_file())
        })
        .unwrap_or(false);
    if !crate::common::can_run(
        installed,
        "report::report_on_postgresql: PostgreSQL is not installed",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut pg = Pg {
        dir: tempfile::tempdir().unwrap(),
        url: String::new(),
    };
    std::fs::set_permissions(
        pg.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    pg.url = pg.script("start");
    let milter = Milter::start_with_events(
        dir.path(),
        Socket::Tcp,
        &["postgres"],
        &format!(
            "[events.postgres]\nurl = \"{}\"\nspool = \"{}/spool\"\n[domains]\nlocal = [\"example.org\"]\n[privacy]\nip = \"truncated\"\naddress = \"domain\"\nkeys = \"{}/keys\"\n",
            pg.url,
            dir.path().display(),
            dir.path().display()
        ),
    );
    for mail in [
        crate::common::Mail::from_ip("203.0.113.7")
            .auth("alice")
            .rcpt("carol@transit.example")
            .queue_id("4Out"),
        crate::common::Mail::from_ip("198.51.100.9")
            .sender("eve@remote.example")
            .rcpt("bob@example.org")
            .queue_id("4In"),
        crate::common::Mail::from_ip("198.51.100.9")
            .sender("eve@remote.example")
            .rcpt("dan@example.org")
            .queue_id("4In2"),
    ] {
        let conn = indymilter_test::TestConnection::open(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            milter.port,
        )))
        .await
        .unwrap();
        mail.send_on(conn).await;
    }
    let run = |args: &[&str]| {
        let out = Milter::command()
            .arg("--config")
            .arg(&milter.config_path)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let counts = stats_counts(&run(&["ledger", "stats"]));
    assert_eq!(counts.iter().map(|c| c.2).sum::<u64>(), 3, "{counts:?}");
    let html = dir.path().join("report.html");
    run(&["report", "--output", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    for (class, direction, n) in &counts {
        let row = format!(r#"data-class="{class}" data-direction="{direction}" data-count="{n}""#);
        assert!(page.contains(&row), "{row} not in the report");
    }
    assert!(page.contains("Ledger: PostgreSQL"));
    for raw in [
        "203.0.113.7",
        "198.51.100.9",
        "eve@remote.example",
        "bob@example.org",
        "carol@transit.example",
    ] {
        assert!(!page.contains(raw), "{raw} in the report");
    }
}
