//! `fuzz-loop`: a time-boxed, seeded mutation fuzzer over the harnesses, on stable.
//!
//! libFuzzer (the `fuzz/` targets) is coverage-guided and needs nightly; this loop is
//! what runs anywhere: it starts from the saved corpus (`fuzz/corpus/<target>/`) and
//! the harness's own examples, mutates them (bit flips, byte inserts and deletes,
//! interesting integers, truncation, splicing two inputs, fresh random bytes) with one
//! seeded generator, runs the harness on each input, catches panics and saves each
//! panicking input under `--crashes` (default `fuzz/artifacts/<target>/`). It is
//! not coverage-guided; it keeps an input as a new seed when its outcome (accepted,
//! or the first words of the refusal) was not seen before, and writes those to
//! `--keep DIR` if given.
//!
//! ```text
//! fuzz-loop <target|all> [--runs N] [--seconds S] [--seed X] [--keep DIR] [--crashes DIR]
//! ```
//! Prints one line per target: executions, seconds, executions per second, distinct
//! outcomes, crashes. Exits 1 if any input panicked.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use symphony_fuzz::{structured_spec, Harness, Outcome, TARGETS};

struct Args {
    target: String,
    runs: u64,
    seconds: u64,
    seed: u64,
    keep: Option<PathBuf>,
    crashes: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        target: it.next().ok_or("usage: fuzz-loop <target|all> [--runs N] [--seconds S] [--seed X] [--keep DIR] [--crashes DIR]")?,
        runs: u64::MAX,
        seconds: 60,
        seed: 1,
        keep: None,
        crashes: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--runs" => args.runs = number()?,
            "--seconds" => args.seconds = number()?,
            "--seed" => args.seed = number()?,
            "--keep" => args.keep = Some(PathBuf::from(&value)),
            "--crashes" => args.crashes = Some(PathBuf::from(&value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// xorshift64*: the loop's only source of randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0xffff_ffff,
    u64::MAX,
    1 << 62,
];

fn mutate(rng: &mut Rng, pool: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    let edits = 1 + rng.below(6);
    for _ in 0..edits {
        let at = rng.below(data.len().max(1));
        match rng.below(9) {
            0 if !data.is_empty() => data[at] ^= 1 << rng.below(8),
            1 if !data.is_empty() => data[at] = rng.next() as u8,
            2 => data.insert(at.min(data.len()), rng.next() as u8),
            3 if !data.is_empty() => {
                let n = 1 + rng.below(16.min(data.len() - at));
                data.drain(at..at + n);
            }
            4 => {
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)];
                let bytes = v.to_le_bytes();
                for (i, b) in bytes.iter().take(width).enumerate() {
                    if let Some(slot) = data.get_mut(at + i) {
                        *slot = *b;
                    }
                }
            }
            5 => data.truncate(at),
            6 if !pool.is_empty() => {
                // Splice: the head of this input, the tail of another.
                let other = &pool[rng.below(pool.len())];
                let from = rng.below(other.len().max(1));
                data.truncate(at);
                data.extend_from_slice(other.get(from..).unwrap_or_default());
            }
            7 if !data.is_empty() => {
                // Copy a chunk inside the input.
                let from = rng.below(data.len());
                let n = 1 + rng.below(32.min(data.len() - from));
                let chunk = data[from..from + n].to_vec();
                let to = rng.below(data.len());
                data.splice(to..to, chunk);
            }
            _ => {
                let n = rng.below(64);
                data.extend((0..n).map(|_| rng.next() as u8));
            }
        }
        data.truncate(64 << 10);
    }
    data
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The first words of an outcome: a rough class of what the parser did.
fn class(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Accepted => "accepted".into(),
        Outcome::Refused(m) => m
            .split(|c: char| c.is_ascii_digit() || c == '"' || c == '`')
            .next()
            .unwrap_or_default()
            .chars()
            .take(48)
            .collect(),
    }
}

fn structured(data: &[u8]) -> Outcome {
    match structured_spec(data) {
        None => Outcome::Refused("input too short".into()),
        Some(outcomes) => {
            for o in &outcomes {
                if !o.is_clear() {
                    return Outcome::Refused(String::new());
                }
            }
            outcomes[2].clone()
        }
    }
}

fn corpus(root: &Path, target: &str) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::new()];
    if let Ok(entries) = std::fs::read_dir(root.join("fuzz/corpus").join(target)) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| std::fs::read(p).ok()));
    }
    if target == "gateway_request" {
        out.extend(symphony_fuzz::gateway::example_bodies());
    }
    out
}

struct Stats {
    runs: u64,
    elapsed: Duration,
    outcomes: usize,
    crashes: u64,
}

fn save(dir: &Path, data: &[u8]) -> PathBuf {
    let path = dir.join(format!("{:016x}", fnv(data)));
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, data)) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    path
}

fn run(root: &Path, name: &str, harness: Harness, args: &Args) -> Stats {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut pool = corpus(root, name);
    let mut seen = BTreeSet::new();
    let crashes_dir = args
        .crashes
        .clone()
        .unwrap_or_else(|| root.join("fuzz/artifacts"))
        .join(name);
    let started = Instant::now();
    let deadline = Duration::from_secs(args.seconds);
    let (mut runs, mut crashes) = (0u64, 0u64);
    while runs < args.runs && started.elapsed() < deadline {
        for _ in 0..256 {
            let base = &pool[rng.below(pool.len())];
            let input = if rng.below(16) == 0 {
                (0..rng.below(512)).map(|_| rng.next() as u8).collect()
            } else {
                mutate(&mut rng, &pool, base)
            };
            runs += 1;
            match catch_unwind(AssertUnwindSafe(|| harness(&input))) {
                Ok(outcome) => {
                    let c = if outcome.is_clear() {
                        class(&outcome)
                    } else {
                        "UNCLEAR refusal without a message".into()
                    };
                    if !outcome.is_clear() {
                        crashes += 1;
                        let path = save(&crashes_dir, &input);
                        eprintln!("{name}: refusal without a message: {}", path.display());
                    }
                    if seen.insert(c) && pool.len() < 4096 {
                        if let Some(dir) = &args.keep {
                            save(&dir.join(name), &input);
                        }
                        pool.push(input);
                    }
                }
                Err(_) => {
                    crashes += 1;
                    let path = save(&crashes_dir, &input);
                    eprintln!("{name}: PANIC, input saved to {}", path.display());
                }
            }
        }
    }
    Stats {
        runs,
        elapsed: started.elapsed(),
        outcomes: seen.len(),
        crashes,
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut targets: Vec<(&str, Harness)> = TARGETS.to_vec();
    targets.push(("structured_spec", structured));
    let chosen: Vec<(&str, Harness)> = targets
        .into_iter()
        .filter(|(n, _)| args.target == "all" || *n == args.target)
        .collect();
    if chosen.is_empty() {
        eprintln!("unknown target {:?}", args.target);
        std::process::exit(2);
    }
    // Panics are expected findings: report them on one line, not with a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let mut failed = false;
    for (name, harness) in chosen {
        let s = run(&root, name, harness, &args);
        let secs = s.elapsed.as_secs_f64();
        println!(
            "{name}: {} executions in {secs:.0} s ({:.0}/s), {} distinct outcomes, {} crashes (seed {})",
            s.runs,
            s.runs as f64 / secs.max(1e-9),
            s.outcomes,
            s.crashes,
            args.seed
        );
        failed |= s.crashes > 0;
    }
    if failed {
        std::process::exit(1);
    }
}
