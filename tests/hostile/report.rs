//! The hostile-traffic report (`docs/hostile.md`): each scenario adds a row
//! of what it measured when `REFRACTIUM_HOSTILE_REPORT` names a file, which
//! `tests/hostile/report.sh` sets before it runs the suite and turns into
//! the table. Without the variable nothing is written.

use std::io::Write;

/// Record one row: the scenario, the load it put on the proxy, what the
/// proxy did, and what ordinary clients lost. Tabs and newlines in the
/// texts become spaces (the file is one tab-separated row per line).
pub fn row(scenario: &str, load: &str, did: &str, lost: &str) {
    let Ok(path) = std::env::var("REFRACTIUM_HOSTILE_REPORT") else { return };
    let clean = |s: &str| s.replace(['\t', '\n'], " ");
    let line = format!("{}\t{}\t{}\t{}\n", clean(scenario), clean(load), clean(did), clean(lost));
    // One write of the whole line to a file opened for appending: rows of
    // tests running at once do not mix.
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
    let written = file.and_then(|mut f| f.write_all(line.as_bytes()));
    written.unwrap_or_else(|e| panic!("writing the report row to {path}: {e}"));
}
