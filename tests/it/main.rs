//! The integration tests, one binary (linking the crate once instead of once per case). See
//! docs/testing.md for what each case makes real.
//!
//! Where a new case goes:
//!
//! - A module of its own, `tests/it/CASE.rs`, named for the behaviour it shows, listed below;
//!   its configuration files in `tests/CASE/` (`@DIR@` in them becomes the test's own
//!   directory: `common::case_config`).
//! - Its harness, in `harness/`, the least that makes what it checks real:
//!   - `common::Milter` (the milter in-process on a loopback port) with `common::Mail` (the
//!     MTA's side, played by indymilter-test): decisions, header edits, events. The usual one.
//!   - `common::Daemon`: the real binary, for what only a process has: signals and reload, the
//!     socket file, its log, its exit, its limits. The commands (`ledger_cmd`, ...) run the
//!     binary too.
//!   - `e2e::PostfixLab` and `e2e::SendmailLab` (or their parts, `Postfix`, `Sendmail`, `Sink`,
//!     `Swaks`): a private MTA on loopback, for what the MTA makes of our answers.
//!   - `wire`: frames written by hand, for what indymilter-test would never send.
//! - A test that needs what this machine may lack (an MTA, root, a program) asks
//!   `harness::can_run` (also `common::can_run`): without it the test skips, or fails under
//!   `PRIVACY_MILTER_E2E=require`, as `scripts/test` runs the suite.

mod harness;
// The cases name the harness's parts from the crate's root: `crate::common::*`, `crate::e2e`.
use harness::{common, e2e, wire};

mod abort;
mod address_literal;
mod architecture;
mod audit;
mod authenticated_submission;
mod cli;
mod config_errors;
mod config_limits;
mod control_characters;
mod daemon;
mod disk_full;
mod dry_run;
mod durability;
mod e2e_dkim;
mod e2e_log_copy;
mod e2e_postfix;
mod e2e_sendmail;
mod e2e_transit;
mod env_typing;
mod events;
mod forged_originating_ip;
mod forged_transit_tag;
mod hostile_input;
mod inbound_external;
mod internal;
mod key_ring;
mod keys;
mod ledger;
mod ledger_contract;
mod ledger_faults;
mod local_submission;
mod log_copy;
mod logging;
mod mixed_recipients;
mod no_header_actions;
mod on_error;
mod policy;
mod postgres;
mod privacy;
mod rcpt_mailer;
mod redaction;
mod relay;
mod reload;
mod report;
mod rules_disabled;
mod second_pass;
mod shipped_config;
mod socket_permissions;
mod track;
mod trusted_network;
mod unit_sandbox;
mod webmail;

mod connection_flood;
mod metrics;
mod protocol_fuzz;
mod session_limits;
mod wire_properties;
