//! The integration tests, one binary (linking the crate once instead of once per case): a
//! module per case, each with its configuration files in `tests/<case>/`. `common` starts the
//! milter in-process or as the real daemon and plays the MTA; `e2e` starts private Postfix and
//! Sendmail instances. See docs/testing.md.

mod common;
mod e2e;

mod abort;
mod address_literal;
mod architecture;
mod audit;
mod authenticated_submission;
mod config_errors;
mod config_limits;
mod control_characters;
mod daemon;
mod disk_full;
mod dry_run;
mod durability;
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
mod ledger_faults;
mod local_submission;
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
mod wire;
mod wire_properties;
