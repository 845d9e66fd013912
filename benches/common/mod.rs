//! What every bench shares: its command line and the median of its rounds. Under `cargo test`
//! (no `--bench` argument) a bench runs as a smoke test: one short round.

/// The bench's command line.
pub struct Args(Vec<String>);

impl Args {
    pub fn get() -> Self {
        Self(std::env::args().collect())
    }

    /// Whether it runs as a smoke test (under `cargo test`).
    pub fn smoke(&self) -> bool {
        !self.has("--bench")
    }

    pub fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    /// The number after `flag` (`--rounds 5`); None without the flag or a number after it.
    pub fn number(&self, flag: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|a| a == flag)
            .and_then(|i| self.0.get(i + 1))
            .and_then(|n| n.parse().ok())
    }

    /// `--rounds N`, else `default`.
    pub fn rounds(&self, default: usize) -> usize {
        self.number("--rounds").unwrap_or(default)
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
