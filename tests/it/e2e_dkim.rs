//! DKIM end to end: a real signer (OpenDKIM, as a milter, with a key from opendkim-genkey) and
//! an independent verifier (dkimpy, given the public key record from the generated `.txt`
//! instead of DNS), around a real Postfix or Sendmail with privacy-milter.
//!
//! - Another site's mail (its own Postfix with OpenDKIM), signed with its `X-Transit` in the
//!   signed header fields, relayed by our Postfix and by our Sendmail: their signature still
//!   verifies where it arrives (we delete no foreign copy and put ours above theirs), and our
//!   tag verifies under our key.
//! - Our own outbound through `smtpd_milters = privacy-milter, opendkim`: OpenDKIM signs the
//!   header as privacy-milter left it (X-Originating-IP and our tag included), and the
//!   signature verifies where it arrives. The reverse order shows why it must not be used.

use crate::e2e::{
    self, assert_actions, compose, new_message_id, wait_for, Delivered, Milter, Postfix,
    PostfixLab, SendmailLab, Sink, Socket,
};
use std::{
    fs,
    net::TcpStream,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
};
use tempfile::TempDir;

/// OpenDKIM, opendkim-genkey and dkimpy are there.
fn dkim_available(test: &str) -> bool {
    let dkimpy = Command::new("/usr/bin/python3")
        .args(["-c", "import dkim"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    e2e::postfix_available(test)
        && crate::common::can_run(
            Path::new("/usr/sbin/opendkim").is_file()
                && Path::new("/usr/sbin/opendkim-genkey").is_file()
                && dkimpy,
            &format!(
                "{test}: OpenDKIM (opendkim, opendkim-tools) or dkimpy (python3-dkim) missing; \
                 run scripts/setup-test-deps"
            ),
        )
}

/// OpenDKIM as a signing milter on a loopback port, for one domain, with its own key.
struct OpenDkim {
    child: Child,
    port: u16,
    /// The public key record (`v=DKIM1; k=rsa; p=...`) that DNS would publish.
    record: String,
    dir: TempDir,
}

impl OpenDkim {
    /// `sign_headers`: the fields it signs (OpenDKIM's `SignHeaders`; its default is RFC
    /// 6376's short list, which covers neither X-Transit nor X-Originating-IP).
    fn start(domain: &str, selector: &str, sign_headers: &str) -> Self {
        // OpenDKIM refuses a configuration or key below a world-writable directory such as
        // /tmp: /run is root's, 0755.
        let tmp = tempfile::Builder::new()
            .prefix("pm-e2e-opendkim.")
            .tempdir_in("/run")
            .unwrap();
        let dir = tmp.path();
        let genkey = Command::new("/usr/sbin/opendkim-genkey")
            .arg("-D")
            .arg(dir)
            .args(["-d", domain, "-s", selector])
            .output()
            .unwrap();
        assert!(
            genkey.status.success(),
            "opendkim-genkey: {}",
            String::from_utf8_lossy(&genkey.stderr)
        );
        let txt = fs::read_to_string(dir.join(format!("{selector}.txt"))).unwrap();
        // The record is the quoted strings of the zone file line, joined.
        let record: String = txt.split('"').skip(1).step_by(2).collect();
        assert!(record.contains("p=MI"), "no public key in {txt}");
        let port = e2e::free_port();
        let conf = dir.join("opendkim.conf");
        // Signs whatever passes (InternalHosts: any client), From oversigned as Debian's
        // shipped configuration does.
        fs::write(
            &conf,
            format!(
                "Syslog no\nMode s\nDomain {domain}\nSelector {selector}\nKeyFile {}\n\
                 Socket inet:{port}@127.0.0.1\nInternalHosts 0.0.0.0/0\n\
                 SignHeaders {sign_headers}\nOversignHeaders From\n\
                 Canonicalization relaxed/simple\nPidFile {}\nBackground no\n",
                dir.join(format!("{selector}.private")).display(),
                dir.join("opendkim.pid").display(),
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("opendkim.log")).unwrap();
        let child = Command::new("/usr/sbin/opendkim")
            .arg("-x")
            .arg(&conf)
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("opendkim starts");
        let mut child = child;
        let log_path = dir.join("opendkim.log");
        let read_log = || fs::read_to_string(&log_path).unwrap_or_default();
        wait_for(
            "OpenDKIM to listen",
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("opendkim exited at start ({status}):\n{}", read_log());
                }
                TcpStream::connect(("127.0.0.1", port))
                    .is_ok()
                    .then_some(())
            },
            read_log,
        );
        Self {
            child,
            port,
            record,
            dir: tmp,
        }
    }

    /// The milter as Postfix names it.
    fn postfix_spec(&self) -> String {
        format!("inet:127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("opendkim.log")).unwrap_or_default()
    }
}

impl Drop for OpenDkim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// dkimpy's verdict on the message's (one) DKIM signature, with `record` as the key's DNS
/// record.
const DKIMPY: &str = r#"
import sys, dkim
message = open(sys.argv[1], "rb").read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
record = open(sys.argv[2], "rb").read()
ok = dkim.DKIM(message).verify(dnsfunc=lambda name, timeout=5: record)
print("pass" if ok else "fail")
"#;

fn dkimpy_verifies(dir: &Path, delivered: &Delivered, record: &str) -> bool {
    let message = dir.join("verify.eml");
    let key = dir.join("verify.txt");
    fs::write(&message, &delivered.raw).unwrap();
    fs::write(&key, record).unwrap();
    let out = Command::new("/usr/bin/python3")
        .args(["-c", DKIMPY])
        .arg(&message)
        .arg(&key)
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        verdict == "pass" || verdict == "fail",
        "dkimpy: {verdict}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    verdict == "pass"
}

/// The header fields the message's DKIM signature covers (`h=`), in lower case.
fn signed_fields(delivered: &Delivered) -> Vec<String> {
    let signatures = delivered.header_values("DKIM-Signature");
    assert_eq!(
        signatures.len(),
        1,
        "one signature in:\n{}",
        String::from_utf8_lossy(&delivered.raw)
    );
    let tags: String = signatures[0].split_whitespace().collect();
    let h = tags
        .split(';')
        .find_map(|t| t.strip_prefix("h="))
        .expect("an h= tag");
    h.split(':').map(str::to_ascii_lowercase).collect()
}

/// `privacy-milter verify-tag` with the lab's configuration: its output when the tag is ours.
fn verify_tag(milter: &Milter, value: &str, message_id: &str) -> Result<String, String> {
    let out = Milter::command()
        .arg("--config")
        .arg(&milter.config_path)
        .args(["verify-tag", "--message-id", message_id, value])
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Our Postfix with privacy-milter, `milters` making its `smtpd_milters` from the milter's
/// socket; the milter configured with `milter_toml`.
fn our_site(milter_toml: &str, milters: impl FnOnce(&str) -> String) -> PostfixLab {
    let dir = private_dir("pm-e2e-dkim.");
    let sink = Sink::start(dir.path());
    let milter = Milter::start(dir.path(), Socket::Unix, milter_toml);
    let postfix = Postfix::start(
        dir.path(),
        sink.port,
        &milter.postfix_spec,
        &format!("smtpd_milters = {}", milters(&milter.postfix_spec)),
    );
    PostfixLab {
        postfix,
        milter,
        sink,
        dir,
    }
}

/// A tag as another site running privacy-milter writes it: not verifiable under our ring.
const FOREIGN_TAG: &str =
    "outbound; by=mx.other.example; k=20260101T000000Z; mac=QUJDREVGR0hJSktMTU5PUA";

/// Our milter's configuration for mail from another site: loopback, where the other site's
/// Postfix connects from, is outside our trusted networks.
const FROM_OUTSIDE: &str =
    "[networks]\ntrusted = [\"192.0.2.0/24\"]\n\n[domains]\nlocal = [\"test.example\"]\n";

/// Another site's mail, its X-Transit signed by its OpenDKIM, relayed by us (Postfix) to a
/// domain we relay for: the signature survives, their tag stays the bottom-most copy, ours sits
/// above it and verifies.
#[test]
fn a_foreign_signature_over_x_transit_survives_our_postfix() {
    let test = "e2e_dkim::a_foreign_signature_over_x_transit_survives_our_postfix";
    if !dkim_available(test) {
        return;
    }
    let lab = our_site(FROM_OUTSIDE, |ours| ours.to_string());
    let (signer, other, mid) = send_from_other_site(lab.postfix.port);
    let (_, got, event) = lab.delivered(&mid, 1);
    assert_foreign_signature_survives(&got[0], &event, &signer, &other, &lab.milter, &mid);
}

/// The same behind Sendmail.
#[test]
fn a_foreign_signature_over_x_transit_survives_our_sendmail() {
    let test = "e2e_dkim::a_foreign_signature_over_x_transit_survives_our_sendmail";
    if !dkim_available(test) || !e2e::sendmail_available(test) {
        return;
    }
    let lab = SendmailLab::start(FROM_OUTSIDE);
    let (signer, other, mid) = send_from_other_site(lab.sendmail.port);
    // Two hops, two queue ids in Received: the lab's `delivered` expects one.
    let got = lab.sink.wait(&mid, 1, || lab.context());
    let events = lab.milter.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let event = &events[0];
    assert_foreign_signature_survives(&got[0], event, &signer, &other, &lab.milter, &mid);
}

/// Another site (its own Postfix with OpenDKIM, signing X-Transit as one running privacy-milter
/// before its signer would) sends a message with its tag to `next_hop_port`, our MTA.
fn send_from_other_site(next_hop_port: u16) -> (OpenDkim, OtherSite, String) {
    let dir = private_dir("pm-e2e-dkim-other.");
    let signer = OpenDkim::start(
        "other.example",
        "sel",
        "From,To,Subject,Date,Message-ID,X-Transit",
    );
    let postfix = Postfix::start(
        dir.path(),
        next_hop_port,
        &signer.postfix_spec(),
        "myhostname = mx.other.example\nmydomain = other.example\nmyorigin = other.example",
    );
    let mid = new_message_id("dkim-foreign");
    let msg = compose(
        &mid,
        "dave@other.example",
        &["carol@transit.example"],
        "signed elsewhere",
        &[("X-Transit", FOREIGN_TAG)],
    );
    e2e::Swaks::new(
        postfix.port,
        "dave@other.example",
        &["carol@transit.example"],
        msg,
    )
    .send(dir.path());
    (signer, OtherSite { postfix, _dir: dir }, mid)
}

/// The other site's Postfix, in a directory of its own (dropped after it).
struct OtherSite {
    postfix: Postfix,
    _dir: TempDir,
}

/// A fresh directory that Postfix's users can traverse.
fn private_dir(prefix: &str) -> TempDir {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    dir
}

fn assert_foreign_signature_survives(
    got: &Delivered,
    event: &serde_json::Value,
    signer: &OpenDkim,
    other: &OtherSite,
    milter: &Milter,
    mid: &str,
) {
    let context = || {
        format!(
            "{}\n--- OpenDKIM ---\n{}\n--- other site ---\n{}",
            String::from_utf8_lossy(&got.raw),
            signer.log(),
            other.postfix.context()
        )
    };
    // The other site's signer covers X-Transit: deleting it, or adding ours below it, breaks
    // the signature.
    assert!(
        signed_fields(got).contains(&"x-transit".to_string()),
        "{}",
        context()
    );
    assert!(
        dkimpy_verifies(signer.dir.path(), got, &signer.record),
        "the other site's signature broke on the way through us:\n{}",
        context()
    );

    // Ours on top, theirs kept as the bottom-most copy (the one the signature covers).
    let tags = got.header_values("X-Transit");
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert_eq!(tags[1], FOREIGN_TAG);
    assert!(
        tags[0].starts_with("relay; by=mx.test.example; k="),
        "{tags:?}"
    );
    let ours = verify_tag(milter, &tags[0], &format!("<{mid}>"));
    assert!(
        ours.as_deref()
            .is_ok_and(|o| o.starts_with("ours: relay by mx.test.example")),
        "{ours:?}"
    );
    assert!(verify_tag(milter, FOREIGN_TAG, &format!("<{mid}>")).is_err());
    assert_actions(
        event,
        &["transit_tag.foreign_kept", "transit_tag.added"],
        &["transit_tag.already_tagged", "transit_tag.returned_kept"],
    );
}

const OURS: &str =
    "[networks]\ntrusted = [\"127.0.0.0/8\"]\n\n[domains]\nlocal = [\"test.example\"]\n";

/// Our user's mail, with a forged X-Originating-IP, through the milters in this order.
fn outbound_signed(
    test: &str,
    privacy_milter_first: bool,
) -> Option<(PostfixLab, OpenDkim, Delivered, String)> {
    if !dkim_available(test) {
        return None;
    }
    let signer = OpenDkim::start(
        "test.example",
        "ours",
        "From,To,Subject,Date,Message-ID,X-Originating-IP,X-Transit",
    );
    let lab = our_site(OURS, |ours| {
        if privacy_milter_first {
            format!("{ours}, {}", signer.postfix_spec())
        } else {
            format!("{}, {ours}", signer.postfix_spec())
        }
    });
    let mid = new_message_id("dkim-ours");
    let msg = compose(
        &mid,
        "alice@test.example",
        &["bob@remote.example"],
        "signed by us",
        &[("X-Originating-IP", "[192.0.2.66]")],
    );
    lab.swaks("alice@test.example", &["bob@remote.example"], msg)
        .xclient("ADDR=203.0.113.7 LOGIN=alice")
        .send(lab.path());
    let (_, got, _) = lab.delivered(&mid, 1);
    let got = got.into_iter().next().unwrap();
    Some((lab, signer, got, mid))
}

/// privacy-milter first: OpenDKIM signs our X-Originating-IP and our tag, and the signature
/// verifies where the mail arrives.
#[test]
fn privacy_milter_before_opendkim_signs_our_headers() {
    let Some((lab, signer, got, mid)) = outbound_signed(
        "e2e_dkim::privacy_milter_before_opendkim_signs_our_headers",
        true,
    ) else {
        return;
    };
    got.assert_header("X-Originating-IP", &["[203.0.113.7]"]);
    let tags = got.header_values("X-Transit");
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert!(
        verify_tag(&lab.milter, &tags[0], &format!("<{mid}>"))
            .is_ok_and(|o| o.starts_with("ours: outbound by mx.test.example")),
        "{tags:?}"
    );
    let signed = signed_fields(&got);
    for field in ["x-originating-ip", "x-transit", "from", "message-id"] {
        assert!(
            signed.contains(&field.to_string()),
            "{field} not signed: {signed:?}\n{}",
            lab.context()
        );
    }
    assert!(
        dkimpy_verifies(signer.dir.path(), &got, &signer.record),
        "our own signature does not verify:\n{}\n{}",
        String::from_utf8_lossy(&got.raw),
        signer.log()
    );
}

/// OpenDKIM first (the order docs/postfix.md warns against): it signs the header as the
/// client sent it, so our headers go unsigned and the client's X-Originating-IP, which
/// privacy-milter then replaces, was signed: the signature no longer matches the message.
#[test]
fn opendkim_before_privacy_milter_is_why_the_order_matters() {
    let Some((_lab, signer, got, _)) = outbound_signed(
        "e2e_dkim::opendkim_before_privacy_milter_is_why_the_order_matters",
        false,
    ) else {
        return;
    };
    got.assert_header("X-Originating-IP", &["[203.0.113.7]"]);
    let signed = signed_fields(&got);
    assert!(
        signed.contains(&"x-originating-ip".to_string())
            && !signed.contains(&"x-transit".to_string()),
        "OpenDKIM signed the client's X-Originating-IP and never saw our tag: {signed:?}"
    );
    assert!(
        !dkimpy_verifies(signer.dir.path(), &got, &signer.record),
        "with OpenDKIM first the signature covers a copy privacy-milter deleted"
    );
}
