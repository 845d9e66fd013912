//! Flush benchmark: how long an `fdatasync` takes after a write that extends a file, and
//! after one that overwrites blocks already written, on the disk under `TMPDIR`.
//!
//! The ledger keeps its WAL at its working size ahead of the commits (src/sinks/ledger.rs,
//! `Runway`) on the strength of this difference: extending a file makes the flush commit the
//! file's new size and blocks to the file system's journal as well. A third variant writes
//! over blocks reserved with `fallocate` (unwritten, so the first write over them changes the
//! journal too), which is why the runway is written with zeros instead.
//!
//! The variants alternate, each round in a fresh file, and the medians of the rounds are
//! printed with their ratio to `extend` measured in the same run (these machines are shared).
//!
//! Run: `cargo bench --bench flush` (`-- --rounds N`). Under `cargo test` (no `--bench`) it
//! only checks that every variant runs, on a few writes.

mod common;
use common::{median, Args};

use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::fs::FileExt},
    path::Path,
    time::Instant,
};

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Extend,
    Fallocate,
    Overwrite,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Extend, Variant::Fallocate, Variant::Overwrite];

    fn name(self) -> &'static str {
        match self {
            Variant::Extend => "extend",
            Variant::Fallocate => "fallocate",
            Variant::Overwrite => "overwrite",
        }
    }
}

/// `writes` writes of `size` bytes, each followed by `fdatasync`; the waits in µs, sorted.
fn run(dir: &Path, variant: Variant, writes: usize, size: usize) -> Vec<f64> {
    let path = dir.join("flush.bin");
    let mut file = File::create(&path).expect("file");
    let total = (writes * size) as i64;
    match variant {
        Variant::Extend => {}
        Variant::Fallocate => {
            nix::fcntl::fallocate(
                file.as_raw_fd(),
                nix::fcntl::FallocateFlags::empty(),
                0,
                total,
            )
            .expect("fallocate");
            file.sync_all().expect("sync");
        }
        Variant::Overwrite => {
            file.write_all(&vec![0; writes * size]).expect("zeros");
            file.sync_all().expect("sync");
        }
    }
    let data = vec![b'x'; size];
    let mut waits = Vec::with_capacity(writes);
    for i in 0..writes {
        let t = Instant::now();
        file.write_all_at(&data, (i * size) as u64).expect("write");
        file.sync_data().expect("fdatasync");
        waits.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(file);
    std::fs::remove_file(&path).expect("remove");
    waits.sort_by(f64::total_cmp);
    waits
}

fn main() {
    let args = Args::get();
    let smoke = args.smoke();
    let rounds = args.rounds(if smoke { 1 } else { 5 });
    let writes = if smoke { 16 } else { 1_000 };
    let dir = tempfile::tempdir().expect("temporary directory");
    println!(
        "flush: {writes} writes per run, each followed by fdatasync, in {}; median of {rounds} alternating rounds",
        dir.path().display()
    );
    println!(
        "{:>9}  {:<10}  {:>9}  {:>9}  {:>14}  {:>14}",
        "write", "variant", "p50 µs", "p99 µs", "p50÷extend", "p99÷extend"
    );
    // One page, and the ten or so pages of a ledger commit.
    for size in [4_096, 45_056] {
        let mut p50 = vec![Vec::new(); Variant::ALL.len()];
        let mut p99 = vec![Vec::new(); Variant::ALL.len()];
        for _ in 0..rounds {
            for (i, variant) in Variant::ALL.into_iter().enumerate() {
                let waits = run(dir.path(), variant, writes, size);
                p50[i].push(waits[waits.len() / 2]);
                p99[i].push(waits[(waits.len() * 99 / 100).min(waits.len() - 1)]);
            }
        }
        let p50: Vec<f64> = p50.into_iter().map(median).collect();
        let p99: Vec<f64> = p99.into_iter().map(median).collect();
        for (i, variant) in Variant::ALL.into_iter().enumerate() {
            println!(
                "{:>9}  {:<10}  {:>9.0}  {:>9.0}  {:>14.2}  {:>14.2}",
                size,
                variant.name(),
                p50[i],
                p99[i],
                p50[i] / p50[0],
                p99[i] / p99[0]
            );
        }
    }
}
