//! The results: JSON for machines, a Markdown table and an SVG chart for people, the goals of
//! the connector issues, and the comparison with an earlier run.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::workload::{Measurement, Workload};

/// One measured cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cell {
    /// Target row label.
    pub(crate) target: String,
    /// Backend family.
    pub(crate) family: String,
    /// Whether the target is a raw baseline.
    pub(crate) baseline: bool,
    /// The load.
    pub(crate) workload: Workload,
    /// Concurrent tasks.
    pub(crate) tasks: u64,
    /// What was measured.
    pub(crate) measured: Measurement,
}

/// The 1-million-object run of one connector.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Scale {
    /// Connector.
    pub(crate) connector: String,
    /// Objects stored (3 keys each).
    pub(crate) objects: u64,
    /// What was measured for memory: process RSS, Redis `used_memory`, PostgreSQL table size.
    pub(crate) measure: String,
    /// Bytes per object.
    pub(crate) bytes_per_object: f64,
    /// Seconds to store them through the API.
    pub(crate) load_secs: f64,
    /// Milliseconds to prune the expired objects (prunable connectors).
    pub(crate) prune_ms: Option<f64>,
    /// Expired objects pruned.
    pub(crate) pruned: u64,
}

/// A goal named in a connector issue, and whether this run met it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Goal {
    /// The goal as the issue words it.
    pub(crate) goal: String,
    /// The measured ratio.
    pub(crate) measured: f64,
    /// The ratio the goal asks for (at least).
    pub(crate) wanted: f64,
    /// Whether `measured >= wanted`.
    pub(crate) met: bool,
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Report {
    /// CPU, cores and memory of the machine.
    pub(crate) machine: String,
    /// `--quick` or full.
    pub(crate) quick: bool,
    /// Every measured cell.
    pub(crate) cells: Vec<Cell>,
    /// The scale run.
    pub(crate) scale: Vec<Scale>,
    /// The connector issues' goals.
    pub(crate) goals: Vec<Goal>,
}

impl Report {
    fn find(&self, target: &str, workload: Workload, tasks: u64) -> Option<&Measurement> {
        self.cells
            .iter()
            .find(|c| c.target == target && c.workload == workload && c.tasks == tasks)
            .map(|c| &c.measured)
    }

    /// Throughput ratio of `a` to `b` for `workload` at `tasks`.
    fn ratio(&self, a: &str, b: &str, workload: Workload, tasks: u64) -> Option<f64> {
        Some(
            self.find(a, workload, tasks)?.ops_per_sec / self.find(b, workload, tasks)?.ops_per_sec,
        )
    }

    /// Evaluates the goals of the connector issues on this run's cells.
    pub(crate) fn evaluate_goals(&mut self) {
        let checks: [(&str, &str, &str, u64, f64); 5] = [
            (
                "memory get-hit throughput at least moka's (1 task)",
                "memory",
                "raw moka",
                1,
                1.0,
            ),
            (
                "memory get-hit costs at most 1.5x raw quick_cache (1 task)",
                "memory",
                "raw quick_cache",
                1,
                1.0 / 1.5,
            ),
            (
                "redis get-hit at 32 tasks at least 0.6x raw GET",
                "redis",
                "raw redis GET/SET/DEL",
                32,
                0.6,
            ),
            (
                "postgres get-hit at 16 tasks at least 0.8x raw SELECT",
                "postgres",
                "raw prepared SELECT",
                16,
                0.8,
            ),
            (
                "postgres get-hit at 16 tasks at least 2x update-per-hit",
                "postgres",
                "update per hit (reference)",
                16,
                2.0,
            ),
        ];
        self.goals = checks
            .iter()
            .filter_map(|(goal, a, b, tasks, wanted)| {
                let measured = self.ratio(a, b, Workload::GetHit, *tasks)?;
                Some(Goal {
                    goal: (*goal).to_owned(),
                    measured,
                    wanted: *wanted,
                    met: measured >= *wanted,
                })
            })
            .collect();
    }

    /// The Markdown tables: per workload, every target and concurrency with throughput,
    /// latency and the ratio to its family's first baseline; then scale and goals.
    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        for workload in Workload::ALL {
            let _ = writeln!(out, "### {}\n", workload.label());
            let _ = writeln!(
                out,
                "| target | tasks | ops/s | p50 µs | p99 µs | p99.9 µs | vs baseline | noise |"
            );
            let _ = writeln!(
                out,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for cell in self.cells.iter().filter(|c| c.workload == workload) {
                let m = &cell.measured;
                let baseline = self
                    .cells
                    .iter()
                    .find(|b| b.baseline && b.family == cell.family && b.workload == workload);
                let vs = match baseline {
                    Some(b) if !cell.baseline => self
                        .ratio(&cell.target, &b.target, workload, cell.tasks)
                        .map(|r| format!("{r:.2}x {}", b.target))
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {vs} | {:.0} % |",
                    cell.target,
                    cell.tasks,
                    m.ops_per_sec,
                    m.p50_us,
                    m.p99_us,
                    m.p999_us,
                    m.noise * 100.0
                );
            }
            out.push('\n');
        }
        if !self.scale.is_empty() {
            let _ = writeln!(out, "### scale\n");
            let _ = writeln!(
                out,
                "| connector | objects | load | bytes / object (measured as) | prune of expired |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | --- | --- |");
            for s in &self.scale {
                let prune = s
                    .prune_ms
                    .map(|ms| format!("{} in {ms:.0} ms", s.pruned))
                    .unwrap_or_else(|| "— (the server expires keys)".to_owned());
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} s | {:.0} ({}) | {prune} |",
                    s.connector, s.objects, s.load_secs, s.bytes_per_object, s.measure
                );
            }
            out.push('\n');
        }
        if !self.goals.is_empty() {
            let _ = writeln!(out, "### goals of the connector issues\n");
            let _ = writeln!(out, "| goal | measured | met |");
            let _ = writeln!(out, "| --- | ---: | --- |");
            for g in &self.goals {
                let _ = writeln!(
                    out,
                    "| {} | {:.2}x (wanted ≥ {:.2}x) | {} |",
                    g.goal,
                    g.measured,
                    g.wanted,
                    if g.met { "yes" } else { "**no**" }
                );
            }
        }
        out
    }

    /// An SVG chart of get-hit latency percentiles per target at `tasks` tasks.
    pub(crate) fn chart(&self, path: &Path, tasks: u64) -> Result<(), String> {
        let cells: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| c.workload == Workload::GetHit && c.tasks == tasks)
            .collect();
        let max = cells
            .iter()
            .map(|c| c.measured.p999_us)
            .fold(1.0f64, f64::max);
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("get-hit latency by percentile, {tasks} concurrent tasks (log scale)"),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..2f64, (0.01f64..max * 2.0).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(3)
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p50".to_owned(),
                1 => "p99".to_owned(),
                _ => "p99.9".to_owned(),
            })
            .y_desc("µs")
            .draw()
            .map_err(|e| e.to_string())?;
        for (n, cell) in cells.iter().enumerate() {
            let color = Palette99::pick(n).to_rgba();
            let m = &cell.measured;
            let points =
                [(0.0, m.p50_us), (1.0, m.p99_us), (2.0, m.p999_us)].map(|(x, y)| (x, y.max(0.01)));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(cell.target.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())
    }

    /// Each figure's change against `old`; a drop larger than the noise either run measured
    /// (and at least 5 %) is flagged as a regression. Returns the text and the regressions.
    pub(crate) fn compare(&self, old: &Report) -> (String, usize) {
        let mut out = String::new();
        let mut regressions = 0;
        let _ = writeln!(
            out,
            "| workload | target | tasks | old ops/s | new ops/s | change | |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | --- |");
        for cell in &self.cells {
            let Some(before) = old.find(&cell.target, cell.workload, cell.tasks) else {
                continue;
            };
            let change = cell.measured.ops_per_sec / before.ops_per_sec - 1.0;
            let noise = cell.measured.noise.max(before.noise).max(0.05);
            let flag = if change < -noise {
                regressions += 1;
                "**regression**"
            } else if change > noise {
                "faster"
            } else {
                "within noise"
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {:+.1} % | {flag} |",
                cell.workload.label(),
                cell.target,
                cell.tasks,
                before.ops_per_sec,
                cell.measured.ops_per_sec,
                change * 100.0
            );
        }
        (out, regressions)
    }
}
