//! Repeating a bench's measurement in fresh processes.
//!
//! On a small VM one process's figures can sit 10-20% off another's: each process lays out
//! its code and heap differently, and that layout stays fixed for the whole run, so more
//! rounds in one process do not average it out. The benches that print a target ratio
//! therefore re-run themselves a few times and print the spread across processes.

use std::process::Command;

/// How many fresh processes to run: `variable` if set, else `default`.
pub fn count(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|processes| processes.parse().ok())
        .unwrap_or(default)
}

/// Whether this process is one that [`figures`] started.
pub fn is_child(marker: &str) -> bool {
    std::env::var_os(marker).is_some()
}

/// Prints one figure for the parent to collect (in a child).
pub fn report(marker: &str, name: &str, value: f64) {
    println!("{marker} {name} {value}");
}

/// Runs this bench again `processes` times with `marker` set in the environment and returns,
/// for every figure name in the order first reported, the values the children reported.
pub fn figures(marker: &str, processes: usize, args: &[&str]) -> Vec<(String, Vec<f64>)> {
    let exe = std::env::current_exe().expect("the bench's own path");
    let mut figures: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..processes {
        let output = Command::new(&exe)
            .args(args)
            .env(marker, "1")
            .output()
            .expect("run the bench again");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Some(rest) = line.strip_prefix(marker) else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let (Some(name), Some(Ok(value))) = (words.next(), words.next().map(str::parse)) else {
                continue;
            };
            match figures.iter_mut().find(|(known, _)| known == name) {
                Some((_, values)) => values.push(value),
                None => figures.push((name.to_owned(), vec![value])),
            }
        }
    }
    figures
}

/// `median m (min a, max b)` of `values`, each written by `format`.
pub fn spread(mut values: Vec<f64>, format: impl Fn(f64) -> String) -> String {
    values.sort_by(f64::total_cmp);
    format!(
        "median {} (min {}, max {})",
        format(values[values.len() / 2]),
        format(values[0]),
        format(values[values.len() - 1])
    )
}
