//! Test counts from the output of a test run: nextest's `Summary` line, or libtest's
//! `test result:` lines when nextest is not installed.

use std::process::Command;

use crate::util::{self, Result};

/// Runs the tests nextest's `filter` selects (`cargo nextest run --workspace --all-features
/// -E filter`: the same build as the main test run, so nothing is rebuilt) — without nextest,
/// `cargo test` of `packages` — with `env` and `CACHE_TEST_REQUIRE_SERVERS=1`; their counts,
/// or why there are none. A run that exits with an error but whose summary shows no failed
/// test counts one failure.
pub(crate) fn run_suite(
    filter: &str,
    packages: &[&str],
    env: &[(&str, String)],
    with_nextest: bool,
) -> Result<Counts> {
    let mut cmd: Command = crate::cargo();
    if with_nextest {
        cmd.args(["nextest", "run", "--workspace", "--all-features"])
            .args(["--no-fail-fast", "--status-level", "slow"])
            .args(["-E", filter]);
    } else {
        cmd.arg("test");
        for package in packages {
            cmd.args(["-p", package]);
        }
        cmd.args(["--all-features", "--no-fail-fast"]);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("CACHE_TEST_REQUIRE_SERVERS", "1");
    let (status, output) = util::run_tee(&mut cmd)?;
    let counts = if with_nextest {
        nextest(&output)
    } else {
        libtest(&output)
    };
    match counts {
        Some(mut c) => {
            if !status.success() && c.failed == 0 {
                c.failed = 1;
            }
            Ok(c)
        }
        None => Err(format!("no test summary ({status})")),
    }
}

/// How many tests passed and failed in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Counts {
    /// Tests that passed (flaky ones included: they passed on a retry).
    pub(crate) passed: u64,
    /// Tests that failed, could not be executed, or timed out.
    pub(crate) failed: u64,
}

/// The counts of nextest's final line, e.g.
/// `Summary [   3.104s] 41 tests run: 40 passed (1 slow), 1 failed, 263 skipped`
/// (colours and the run count prefix `5/41` of a cancelled run are fine). The last such line
/// wins; `None` when there is none.
pub(crate) fn nextest(output: &str) -> Option<Counts> {
    output.lines().rev().find_map(|line| {
        let line = strip_ansi(line);
        let rest = line.trim_start().strip_prefix("Summary [")?;
        let (_, rest) = rest.split_once(']')?;
        let (_, items) = rest.split_once(" run:")?;
        let mut counts = Counts::default();
        let mut saw_passed = false;
        for item in without_parentheses(items).split(',') {
            let Some((number, label)) = item.trim().split_once(' ') else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            match label.trim() {
                "passed" => {
                    counts.passed += n;
                    saw_passed = true;
                }
                "failed" | "exec failed" | "timed out" => counts.failed += n,
                _ => {}
            }
        }
        saw_passed.then_some(counts)
    })
}

/// The sum of libtest's `test result: ok. 5 passed; 1 failed; 0 ignored; ...` lines; `None`
/// when there is none.
pub(crate) fn libtest(output: &str) -> Option<Counts> {
    let mut total: Option<Counts> = None;
    for line in output.lines() {
        let line = strip_ansi(line);
        let Some(rest) = line.trim_start().strip_prefix("test result:") else {
            continue;
        };
        let Some((_, items)) = rest.split_once('.') else {
            continue;
        };
        let sum = total.get_or_insert_with(Counts::default);
        for item in items.split(';') {
            if let Some((number, label)) = item.trim().split_once(' ')
                && let Ok(n) = number.parse::<u64>()
            {
                match label.trim() {
                    "passed" => sum.passed += n,
                    "failed" => sum.failed += n,
                    _ => {}
                }
            }
        }
    }
    total
}

/// `text` without parenthesized parts: `40 passed (1 slow, 2 flaky), 1 failed` becomes
/// `40 passed , 1 failed`.
fn without_parentheses(text: &str) -> String {
    let mut depth = 0usize;
    text.chars()
        .filter(|c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

/// `line` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u64, failed: u64) -> Option<Counts> {
        Some(Counts { passed, failed })
    }

    #[test]
    fn nextest_all_passed() {
        let out = "        PASS [   0.010s] cache-postgres::postgres a\n\
                   ────────────\n     Summary [   3.104s] 41 tests run: 41 passed, 263 skipped\n";
        assert_eq!(nextest(out), counts(41, 0));
    }

    #[test]
    fn nextest_failures_of_every_kind_and_notes_in_parentheses() {
        let out = "     Summary [  12.5s] 44 tests run: 40 passed (1 slow, 2 flaky, 1 leaky), \
                   2 failed (1 due to being leaky), 1 exec failed, 1 timed out, 3 skipped\n\
                   error: test run failed\n";
        assert_eq!(nextest(out), counts(40, 4));
    }

    #[test]
    fn nextest_one_test_colours_and_cancelled_runs() {
        let out = "\u{1b}[32;1m     Summary\u{1b}[0m [   0.2s] \u{1b}[1m1\u{1b}[0m test run: \
                   \u{1b}[1m1\u{1b}[0m \u{1b}[32;1mpassed\u{1b}[0m, \u{1b}[1m0\u{1b}[0m skipped";
        assert_eq!(nextest(out), counts(1, 0));
        let cancelled = "     Summary [   1.0s] 5/41 tests run: 4 passed, 1 failed, 36 skipped";
        assert_eq!(nextest(cancelled), counts(4, 1));
    }

    #[test]
    fn nextest_takes_the_last_summary_and_needs_one() {
        let out =
            "Summary [1s] 2 tests run: 2 passed\nSummary [1s] 3 tests run: 1 passed, 2 failed";
        assert_eq!(nextest(out), counts(1, 2));
        assert_eq!(nextest("error: no tests to run\n"), None);
        assert_eq!(nextest("test result: ok. 3 passed; 0 failed;"), None);
    }

    #[test]
    fn libtest_sums_every_binary() {
        let out = "running 3 tests\n...\ntest result: ok. 3 passed; 0 failed; 0 ignored; \
                   0 measured; 0 filtered out; finished in 0.01s\n\n\
                   test result: FAILED. 10 passed; 2 failed; 1 ignored; 0 measured; 0 filtered \
                   out; finished in 1.20s\n";
        assert_eq!(libtest(out), counts(13, 2));
        assert_eq!(
            libtest("test result: ok. 0 passed; 0 failed; 0 ignored"),
            counts(0, 0)
        );
        assert_eq!(libtest("Summary [1s] 2 tests run: 2 passed"), None);
    }
}
