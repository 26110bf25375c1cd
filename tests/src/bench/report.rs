//! Markdown tables for BENCHMARKS.md and the terminal: speed per engine and program (ns/run and ratio to the
//! limit, geometric mean, failures listed), compile times, and compile latency per pipeline stage.

use std::fmt::Write as _;

use super::timing::geometric_mean;

/// The outcome of one (engine, program) cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Nanoseconds per run; the result was checked.
    Time(f64),
    /// The engine ran and failed: wrong result, trap, panic, refusal. Never a time.
    Failed(String),
    /// The engine does not exist yet in this build or on this machine.
    NotAvailable(String),
}

impl Cell {
    pub fn time(&self) -> Option<f64> {
        match self {
            Cell::Time(t) => Some(*t),
            _ => None,
        }
    }
}

/// One engine's row of the speed table.
#[derive(Clone, Debug, PartialEq)]
pub struct SpeedRow {
    pub engine: String,
    /// Cells in program order.
    pub cells: Vec<Cell>,
}

fn short_reason(reason: &str) -> String {
    // Tables stay readable; the full text is listed under the table.
    let first = reason.lines().next().unwrap_or("");
    if first.len() > 24 {
        format!("{}…", &first[..first.char_indices().nth(23).map_or(first.len(), |(i, _)| i)])
    } else {
        first.to_string()
    }
}

/// Renders the speed table: `ns (ratio×)` per cell, ratio to `limit` (a row index), and the geometric mean of
/// each engine's ratios over the programs it ran. Failures and unavailable cells are listed below the table.
pub fn speed_table(programs: &[&str], rows: &[SpeedRow], limit: usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "| implementation |");
    for p in programs {
        let _ = write!(out, " {p} |");
    }
    let _ = writeln!(out, " geomean vs limit |");
    let _ = write!(out, "|---|");
    for _ in programs {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out, "---:|");
    let limit_row = rows.get(limit);
    let mut notes = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let name = if i == limit { format!("**{} (limit)**", row.engine) } else { row.engine.clone() };
        let _ = write!(out, "| {name} |");
        let mut ratios = Vec::new();
        for (j, cell) in row.cells.iter().enumerate() {
            match cell {
                Cell::Time(ns) => {
                    let base = limit_row.and_then(|r| r.cells.get(j)).and_then(Cell::time);
                    match base {
                        Some(b) => {
                            let ratio = ns / b;
                            ratios.push(ratio);
                            let _ = write!(out, " {} ({ratio:.2}x) |", format_ns(*ns));
                        }
                        None => {
                            let _ = write!(out, " {} |", format_ns(*ns));
                        }
                    }
                }
                Cell::Failed(reason) => {
                    let _ = write!(out, " **fail**: {} |", short_reason(reason));
                    notes.push(format!("- {} / {}: failed: {}", row.engine, programs[j], reason));
                }
                Cell::NotAvailable(reason) => {
                    let _ = write!(out, " n/a |");
                    notes.push(format!("- {} / {}: not available: {}", row.engine, programs[j], reason));
                }
            }
        }
        match geometric_mean(&ratios) {
            Some(g) if ratios.len() == programs.len() => {
                let _ = writeln!(out, " {g:.2}x |");
            }
            Some(g) => {
                let _ = writeln!(out, " {g:.2}x ({} of {}) |", ratios.len(), programs.len());
            }
            None => {
                let _ = writeln!(out, " – |");
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out);
        // Identical "not available" reasons for a whole row collapse to one line.
        let mut seen = Vec::new();
        for n in notes {
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        for n in seen {
            let _ = writeln!(out, "{n}");
        }
    }
    out
}

/// `1234.5` → `1,235`; below 100 ns one decimal.
pub fn format_ns(ns: f64) -> String {
    if ns < 100.0 {
        return format!("{ns:.1}");
    }
    group_thousands(ns.round() as u64)
}

/// `1234567` → `1,234,567`.
pub fn group_thousands(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds with sensible precision: `12.3`, `1,234`.
pub fn format_us(us: f64) -> String {
    if us < 100.0 {
        format!("{us:.1}")
    } else {
        group_thousands(us.round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speed_table_computes_ratios_and_geomean_against_the_limit() {
        let rows = vec![
            SpeedRow { engine: "clang".into(), cells: vec![Cell::Time(100.0), Cell::Time(200.0)] },
            SpeedRow { engine: "ours".into(), cells: vec![Cell::Time(200.0), Cell::Time(800.0)] },
        ];
        let t = speed_table(&["a", "b"], &rows, 0);
        assert!(t.contains("| **clang (limit)** | 100 (1.00x) | 200 (1.00x) | 1.00x |"), "{t}");
        assert!(t.contains("| ours | 200 (2.00x) | 800 (4.00x) | 2.83x |"), "{t}");
    }

    #[test]
    fn speed_table_lists_failures_and_leaves_them_out_of_the_mean() {
        let rows = vec![
            SpeedRow { engine: "clang".into(), cells: vec![Cell::Time(100.0), Cell::Time(100.0)] },
            SpeedRow {
                engine: "peer".into(),
                cells: vec![Cell::Time(300.0), Cell::Failed("crashed: signal 4 (SIGILL)".into())],
            },
        ];
        let t = speed_table(&["a", "b"], &rows, 0);
        assert!(t.contains("| peer | 300 (3.00x) | **fail**: crashed: signal 4 (SIGI… | 3.00x (1 of 2) |"), "{t}");
        assert!(t.contains("- peer / b: failed: crashed: signal 4 (SIGILL)"), "{t}");
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_ns(1234.4), "1,234");
        assert_eq!(format_ns(12.34), "12.3");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
        assert_eq!(format_us(99.94), "99.9");
    }
}
