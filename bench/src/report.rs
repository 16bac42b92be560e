//! Collecting samples per (metric, target) across rounds, taking medians,
//! and rendering the result as a markdown table whose first column after the
//! workload is the direct connection and whose other columns show each
//! proxy's figure with its ratio to direct.

use std::collections::HashMap;

/// Samples and failures, keyed by metric name and target index.
#[derive(Default)]
pub struct Samples {
    vals: HashMap<(String, usize), Vec<f64>>,
    errs: HashMap<(String, usize), String>,
}

impl Samples {
    pub fn add(&mut self, key: &str, target: usize, v: f64) {
        if v.is_finite() {
            self.vals.entry((key.to_string(), target)).or_default().push(v);
        }
    }

    /// Record a failed cell; the first message is kept.
    pub fn fail(&mut self, key: &str, target: usize, msg: String) {
        self.errs.entry((key.to_string(), target)).or_insert(msg);
    }

    pub fn median(&self, key: &str, target: usize) -> Option<f64> {
        median(self.vals.get(&(key.to_string(), target))?)
    }

    pub fn sum(&self, key: &str, target: usize) -> Option<f64> {
        Some(self.vals.get(&(key.to_string(), target))?.iter().sum())
    }

    /// Round by round, `subject`'s sample divided by the highest of
    /// `others'`. Samples are kept in the order the rounds ran, so they line
    /// up by round only when each target has one per round; `None` otherwise
    /// (a failed cell), or without samples.
    pub fn round_ratios(&self, key: &str, subject: usize, others: &[usize]) -> Option<Vec<f64>> {
        let get = |t: usize| self.vals.get(&(key.to_string(), t)).filter(|v| !v.is_empty());
        let mine = get(subject)?;
        let theirs: Vec<&Vec<f64>> = others.iter().map(|&t| get(t)).collect::<Option<_>>()?;
        if theirs.is_empty() || theirs.iter().any(|v| v.len() != mine.len()) {
            return None;
        }
        Some((0..mine.len()).map(|r| mine[r] / theirs.iter().map(|v| v[r]).fold(f64::MIN, f64::max)).collect())
    }

    pub fn error(&self, key: &str, target: usize) -> Option<&str> {
        self.errs.get(&(key.to_string(), target)).map(String::as_str)
    }
}

/// The median of `v`; `None` when it is empty.
pub fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// A rendered table: a header and rows of cells.
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(targets: &[&str]) -> Table {
        let mut header = vec!["workload".to_string()];
        header.extend(targets.iter().map(|t| t.to_string()));
        Table { header, rows: Vec::new() }
    }

    pub fn row(&mut self, label: &str, cells: Vec<String>) {
        let mut r = vec![label.to_string()];
        r.extend(cells);
        self.rows.push(r);
    }

    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out += &line(&vec!["---".to_string(); self.header.len()]);
        for r in &self.rows {
            out += &line(r);
        }
        out
    }
}

/// A value with an adaptive number of significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 100_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 10_000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Short form of an error for a table cell (no `|`, bounded length).
pub fn err_cell(msg: &str) -> String {
    let clean: String = msg.replace('|', "/").replace('\n', " ");
    let short: String = clean.chars().take(60).collect();
    format!("error: {short}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_ratios_divide_by_the_best_other_round_by_round() {
        let mut s = Samples::default();
        // Three rounds of targets 1 (subject), 2 and 3.
        for (a, b, c) in [(10.0, 8.0, 12.5), (10.0, 8.0, 4.0), (6.0, 4.0, 5.0)] {
            s.add("rate", 1, a);
            s.add("rate", 2, b);
            s.add("rate", 3, c);
        }
        assert_eq!(s.round_ratios("rate", 1, &[2, 3]), Some(vec![0.8, 1.25, 1.2]));
        assert_eq!(s.round_ratios("rate", 2, &[3]), Some(vec![0.64, 2.0, 0.8]));
        // A failed cell leaves target 3 a sample short: no ratios.
        s.add("rate", 1, 5.0);
        s.add("rate", 2, 4.0);
        assert_eq!(s.round_ratios("rate", 1, &[2, 3]), None);
        assert_eq!(s.round_ratios("rate", 1, &[2]), Some(vec![1.25, 1.25, 1.5, 1.25]));
        assert_eq!(s.round_ratios("missing", 1, &[2]), None);
        assert_eq!(s.round_ratios("rate", 1, &[]), None);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }
}
