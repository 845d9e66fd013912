//! What the cases share: `common` starts the milter in-process or as the real daemon and plays
//! the MTA with indymilter-test; `e2e` starts private Postfix and Sendmail instances, an
//! `smtp-sink` and the daemon; `wire` speaks the milter protocol by hand. And here, once, what a
//! test does when this machine lacks something it needs.

pub mod common;
pub mod e2e;
pub mod wire;

/// True when `PRIVACY_MILTER_E2E=require` (as `scripts/test` and CI set it): a test that finds
/// something it needs missing then fails instead of skipping.
pub fn required() -> bool {
    std::env::var("PRIVACY_MILTER_E2E").is_ok_and(|v| v == "require")
}

/// Whether a test that needs something this machine may lack (`ready`) can run. Without it
/// the test says why and skips, unless [`required`], which makes it fail.
pub fn can_run(ready: bool, why: &str) -> bool {
    if !ready {
        assert!(!required(), "{why}, and PRIVACY_MILTER_E2E=require");
        eprintln!("skipped: {why}; set PRIVACY_MILTER_E2E=require to fail instead");
    }
    ready
}

/// [`can_run`] for a test that needs root (`why` says what for).
pub fn can_run_as_root(why: &str) -> bool {
    can_run(nix::unistd::Uid::effective().is_root(), why)
}
