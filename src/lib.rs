//! privacy-milter: a milter that makes a mail privacy policy true on Postfix and Sendmail,
//! and lets the operator prove it.
//!
//! The modules follow the data flow, and depend only on those below them:
//!
//! ```text
//! main.rs            ->  cli (the command line), daemon / commands
//! daemon             ->  callbacks -> session        (one per milter connection)
//! session            ->  classify, rules, event      (the pure core: facts in, edits out)
//!                    ->  writer -> store             (group commit into SQLite, PostgreSQL,
//!                                                     JSON lines, the log)
//! track              ->  store, transit              (the MTA's log and queue after the milter)
//! track, audit       ->  maillog                     (a leaf: syslog lines, the MTA's programs)
//! everything         ->  config -> keys, token, ip   (the leaves)
//! ```
//!
//! `callbacks` are thin adapters from the milter protocol; `session` collects the
//! [`facts`](crate) of a connection and a message; at end of message `classify` decides
//! direction and transit, each rule in `rules/` turns facts into header edits, and the
//! `event`, pseudonymised by `privacy`, goes to the `writer`, which owns every `store`.
//! `docs/architecture.md` is the map (the layers, and every file with what it holds; a test
//! holds it to the code), walks through the data flow and says where to add a rule, a sink
//! or a command.
//!
//! The library exists for the binary and for tests: [`run`] serves a bound [`Listener`]
//! in-process. [`internals`] is what the crate's own benches reach inside for; it is not a
//! stable interface.

mod audit;
mod callbacks;
mod classify;
pub mod cli;
pub mod commands;
mod config;
mod daemon;
mod event;
mod facts;
mod ip;
mod keys;
mod listener;
mod logcopy;
mod logging;
mod maillog;
mod metrics;
mod policy;
mod privacy;
mod rules;
mod session;
mod store;
mod token;
mod track;
mod transit;
mod writer;

pub use config::{Config, ConfigError, LogOverride, Overrides, Source, DEFAULT_PATH};
pub use daemon::{fit_descriptor_limit, run, Reload, ReloadError, Reloaded, SHUTDOWN_GRACE};
pub use listener::Listener;
pub use logging::{chain as error_chain, init as init_logging, report_error};
pub use track::{run as track, serve_metrics as track_metrics, Counts as TrackCounts, TrackError};

/// Not a stable interface: what the crate's benches and tests use inside the crate.
#[doc(hidden)]
pub mod internals {
    pub use crate::track::parse;
    pub use crate::{
        classify::Direction,
        config::{Durability, Settings, SinkKind, Synchronous},
        event::{Client, Event, Outcome, RecipientView, Retention, SCHEMA},
        listener::MAX_FRAME,
        privacy::AddressView,
        store::PURGE_CHUNK,
        writer::{EventWriter, GROUP_COMMIT_WINDOW},
    };

    /// The ledgers as the ledger contract asks them (tests/it/ledger_contract.rs).
    pub mod store {
        pub use crate::store::{
            open_ledger, open_sinks, purge_all, DayCount, Filter, Flush, Ledger, Lifecycle,
            Overdue, Sink, Stats, TransitQuery, TransitTimes,
        };
    }

    /// Transit records, as the tracker changes them.
    pub mod transit {
        pub use crate::transit::{Delivery, State, Status, Step, Transit};
    }

    /// The log copy's rewriter and what it is made of: what benches/logcopy.rs measures.
    pub mod logcopy {
        pub use crate::config::{AddressPrivacy, IpPrivacy, Privacy};
        pub use crate::keys::Key;
        pub use crate::logcopy::*;
        pub use crate::privacy::Pseudonymiser;
    }

    /// The mail log's lines: what benches/maillog.rs measures.
    pub mod maillog {
        pub use crate::maillog::*;
    }
}
