//! Fuzzing of every decoder of network input on stable Rust: millions of random and mutated
//! inputs (see `tests/fuzz_support`), each under `catch_unwind`.
//!
//! `cargo bench --bench fuzz` (FUZZ_INPUTS=n for another count, FUZZ_SEED=s for another start).
//! Exits with a failure and the panicking seeds if any input panics.

#[path = "../tests/fuzz_support/mod.rs"]
mod fuzz_support;

use std::time::Instant;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() -> std::process::ExitCode {
    let count = env_u64("FUZZ_INPUTS", 1_000_000);
    let start = env_u64("FUZZ_SEED", 1);
    // Panics are counted, not printed one by one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let began = Instant::now();
    let mut failed = Vec::new();
    let step = 100_000;
    let mut done = 0;
    while done < count {
        let n = step.min(count - done);
        failed.extend(fuzz_support::run(start + done, n));
        done += n;
        eprintln!(
            "  {done} inputs, {} panics, {:.1} s",
            failed.len(),
            began.elapsed().as_secs_f64()
        );
    }
    std::panic::set_hook(hook);
    println!(
        "fuzz: {done} inputs ({} kinds: argument lists with binary, JSON payloads, stream frames, \
         handshake queries, wire JSON text, random bytes, JSON trees) from seed {start} in {:.1} s: \
         {} panics",
        fuzz_support::KINDS,
        began.elapsed().as_secs_f64(),
        failed.len()
    );
    if failed.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        let shown: Vec<_> = failed.iter().take(20).collect();
        println!("panicking seeds (rerun one with fuzz_support::one(seed)): {shown:?}");
        std::process::ExitCode::FAILURE
    }
}
