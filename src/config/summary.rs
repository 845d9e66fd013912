//! The account of the effective configuration that `check-config` prints.

use super::{name, Config, Network, SinkKind, Synchronous};

impl Config {
    /// A short account of the effective rules, for `check-config` and the start-up log.
    pub fn summary(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        let nets = |n: &[Network]| {
            if n.is_empty() {
                "none".to_string()
            } else {
                n.iter()
                    .map(|n| n.0.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let oip = &self.rules.originating_ip;
        let tt = &self.rules.transit_tag;
        let mut domains: Vec<&str> = self.local_domains.iter().map(String::as_str).collect();
        domains.sort_unstable();
        let sinks: Vec<String> = self
            .events
            .sinks
            .iter()
            .map(|s| match s {
                SinkKind::Jsonl => format!("jsonl ({})", self.events.jsonl.path.display()),
                SinkKind::Ledger => match self.events.ledger.synchronous {
                    Synchronous::Full => format!("ledger ({})", self.events.ledger.path.display()),
                    Synchronous::Normal => format!(
                        "ledger ({}, synchronous normal)",
                        self.events.ledger.path.display()
                    ),
                },
                SinkKind::Postgres => {
                    let pg = &self.events.postgres;
                    let tls = if !pg.wants_tls() {
                        "no TLS".to_string()
                    } else if pg.ca_file.as_os_str().is_empty() {
                        "TLS verified against the system's CAs".to_string()
                    } else {
                        format!("TLS verified against {}", pg.ca_file.display())
                    };
                    format!(
                        "postgres ({}, {tls}, spool {})",
                        pg.redacted_url(),
                        pg.spool.display()
                    )
                }
                SinkKind::Log => "log".to_string(),
            })
            .collect();
        let r = &self.retention;
        let m = &self.mta_logs;
        let mta_logs = if m.copies() {
            format!(
                "raw lines kept {}, then only a pseudonymised copy in {} (written by privacy-milter track, under [privacy]) until {}",
                m.raw_window,
                m.copy.display(),
                r.mta_logs
            )
        } else {
            format!("no pseudonymised copy; raw lines kept {}", r.mta_logs)
        };
        format!(
            "socket: {socket}\n\
             dry run: {dry}\n\
             trusted networks: {trusted}\n\
             webmail hosts: {webmail}\n\
             local domains: {domains} (plus mailers {mailers})\n\
             rule originating_ip: {oip_on}, header {oip_h}, mode {oip_mode}, skipping {skip}\n\
             rule transit_tag: {tt_on}, header {tt_h}\n\
             events: {ev_on}, sinks {sinks}, durability {durability}, on error {on_error}\n\
             privacy: ip {ip}, address {addr}\n\
             retention: inbound {ri}, outbound {ro}, internal {rn}, relay {rr}, rejected {rj}, aborted {ra}; purge every {rp}; MTA logs {rm}\n\
             MTA logs: {mta_logs}\n\
             tracking (privacy-milter track): {mta} log {log}, place kept in {state}, queue checked every {qi}, alert after {aa}",
            socket = self.socket,
            dry = on(self.dry_run),
            trusted = nets(&self.networks.trusted),
            webmail = nets(&self.networks.webmail),
            domains = if domains.is_empty() { "none".into() } else { domains.join(", ") },
            mailers = self.domains.local_mailers.join(", "),
            oip_on = on(oip.enabled),
            oip_h = oip.header.as_str(),
            oip_mode = name(&oip.mode),
            skip = nets(&oip.skip_networks),
            tt_on = on(tt.enabled),
            tt_h = tt.header.as_str(),
            ev_on = on(self.events.enabled),
            sinks = sinks.join(", "),
            durability = name(&self.events.durability),
            on_error = name(&self.events.on_error),
            ip = name(&self.privacy.ip),
            addr = name(&self.privacy.address),
            ri = r.inbound,
            ro = r.outbound,
            rn = r.internal,
            rr = r.relay,
            rj = r.rejected,
            ra = r.aborted,
            rp = r.purge_interval,
            rm = r.mta_logs,
            mta = name(&self.tracking.mta),
            log = match self.tracking.source {
                super::LogSource::File => self.tracking.path.display().to_string(),
                super::LogSource::Journald => "from the journal".to_string(),
            },
            state = self.tracking.state.display(),
            qi = self.tracking.queue_interval,
            aa = self.tracking.alert_after,
        )
    }
}
