//! The commands beside `run`: each answers once and exits. `ledger` answers for what the
//! ledger holds (query, erase, export, stats, purge); `transit` lists the mail we pass on and
//! what became of it; `ip` opens encrypted `X-Originating-IP` tokens; `verify-tag` tells our
//! transit tags from others'; `policy` renders the policy text the configuration makes true.

pub mod audit;
mod charts;
pub mod ip;
pub mod ledger;
mod log_copy;
pub mod policy;
pub mod report;
pub mod tag;
pub mod transit;

use crate::{keys::KeyError, store::StoreError};

/// How `ledger query` and `transit` print what they found: a table, or one JSON array.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Token(#[from] crate::token::OpenError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Tag(#[from] crate::rules::transit_tag::TagError),
    /// The request cannot be answered as asked; the text says why and what to do.
    #[error("{0}")]
    Refused(String),
}
