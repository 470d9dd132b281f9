//! The results: JSON for machines, a Markdown table and an SVG chart for people, the goals of
//! the connector issues, and the comparison with an earlier run.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::deploy::Deploy;
use crate::fanout::Fanout;
use crate::isolated::Isolated;
use crate::keys::KeyScale;
use crate::propagation::Propagation;
use crate::stampede::{MissCost, Stampede};
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

/// A goal named in an issue, and whether this run met it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Goal {
    /// The goal as the issue words it.
    pub(crate) goal: String,
    /// The measured figure (a ratio, or microseconds for propagation).
    pub(crate) measured: f64,
    /// The figure the goal asks for.
    pub(crate) wanted: f64,
    /// Whether the goal is a ceiling (`measured <= wanted`) rather than a floor.
    #[serde(default)]
    pub(crate) at_most: bool,
    /// The unit shown after the figures (`x`, ` µs`).
    #[serde(default)]
    pub(crate) unit: String,
    /// Whether this run met it.
    pub(crate) met: bool,
}

impl Goal {
    fn at_least(goal: String, measured: f64, wanted: f64) -> Self {
        Goal {
            goal,
            measured,
            wanted,
            at_most: false,
            unit: "x".into(),
            met: measured >= wanted,
        }
    }

    fn at_most(goal: String, measured: f64, wanted: f64, unit: &str) -> Self {
        Goal {
            goal,
            measured,
            wanted,
            at_most: true,
            unit: unit.into(),
            met: measured <= wanted,
        }
    }
}

/// The bound stated for what a set of a 10 000-key object may cost another client's get
/// (the set runs as scripts / statements of 1 000 keys each).
pub(crate) const STALL_BOUND_MS: f64 = 25.0;

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
    /// Hits measured alone (no key building), for the hit-path goals.
    #[serde(default)]
    pub(crate) isolated: Vec<Isolated>,
    /// Near-cache propagation delays per transport.
    #[serde(default)]
    pub(crate) propagation: Vec<Propagation>,
    /// Many misses of one key at once through `get_or_load`.
    #[serde(default)]
    pub(crate) stampede: Vec<Stampede>,
    /// Objects with 1 to 10 000 keys on the shared connectors.
    #[serde(default)]
    pub(crate) keys: Vec<KeyScale>,
    /// Two releases side by side against one alone.
    #[serde(default)]
    pub(crate) deploys: Vec<Deploy>,
    /// Many listening processes, one changing at a steady rate.
    #[serde(default)]
    pub(crate) fanouts: Vec<Fanout>,
    /// A read-through's miss with a lease against without.
    #[serde(default)]
    pub(crate) miss_costs: Vec<MissCost>,
    /// The issues' goals.
    pub(crate) goals: Vec<Goal>,
}

impl Report {
    /// A report of nothing measured yet, on this machine.
    pub(crate) fn empty(quick: bool) -> Self {
        Report {
            machine: crate::machine(),
            quick,
            cells: Vec::new(),
            scale: Vec::new(),
            isolated: Vec::new(),
            propagation: Vec::new(),
            stampede: Vec::new(),
            keys: Vec::new(),
            deploys: Vec::new(),
            fanouts: Vec::new(),
            miss_costs: Vec::new(),
            goals: Vec::new(),
        }
    }

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

    /// Evaluates the goals of the issues on this run's figures.
    pub(crate) fn evaluate_goals(&mut self) {
        let mut goals = Vec::new();
        for i in &self.isolated {
            let threads = if i.threads == 1 { "thread" } else { "threads" };
            let (what, wanted) = if i.subject.starts_with("near") {
                (
                    "near-cache memory-level hit at most 1.2x the memory connector's",
                    1.2,
                )
            } else {
                (
                    "memory hit through ObjectCache at most 1.5x raw quick_cache",
                    1.5,
                )
            };
            goals.push(Goal::at_most(
                format!(
                    "{what} ({} objects, {} {threads}; isolated)",
                    i.objects, i.threads
                ),
                i.ratio(),
                wanted,
                "x",
            ));
        }
        let throughput: [(&str, &str, &str, Workload, u64, f64); 6] = [
            (
                "memory get-hit throughput at least moka's (1 task)",
                "memory",
                "raw moka",
                Workload::GetHit,
                1,
                1.0,
            ),
            (
                "redis get-hit at least 0.8x the raw GET, decoded (1 task)",
                "redis",
                "raw redis GET/SET/DEL",
                Workload::GetHit,
                1,
                0.8,
            ),
            (
                "redis get-hit at least 0.8x the raw GET, decoded (8 tasks)",
                "redis",
                "raw redis GET/SET/DEL",
                Workload::GetHit,
                8,
                0.8,
            ),
            (
                "redis get-hit at least 0.8x the raw GET, decoded (32 tasks)",
                "redis",
                "raw redis GET/SET/DEL",
                Workload::GetHit,
                32,
                0.8,
            ),
            (
                "postgres get-hit at least 0.8x the raw prepared SELECT (1 task)",
                "postgres",
                "raw prepared SELECT",
                Workload::GetHit,
                1,
                0.8,
            ),
            (
                "postgres get-hit at least 2x the update-per-hit read (16 tasks)",
                "postgres",
                "update per hit (reference)",
                Workload::GetHit,
                16,
                2.0,
            ),
        ];
        for (goal, a, b, workload, tasks, wanted) in throughput {
            if let Some(measured) = self.ratio(a, b, workload, tasks) {
                goals.push(Goal::at_least(goal.to_owned(), measured, wanted));
            }
        }
        // A near change is one round trip (the server announces it): as fast as the plain one.
        for (near, plain) in [("near (redis)", "redis"), ("near (postgres)", "postgres")] {
            for (workload, what) in [(Workload::Set, "set"), (Workload::Invalidate, "invalidate")] {
                for tasks in [1, 8, 32] {
                    if let Some(measured) = self.ratio(near, plain, workload, tasks) {
                        goals.push(Goal::at_least(
                            format!("{near} {what} at least 0.9x plain {plain} ({tasks} tasks)"),
                            measured,
                            0.9,
                        ));
                    }
                }
            }
            // Mixed 95/5 against what a consistent near cache can reach: gets at the memory
            // connector's speed, sets at the plain connector's.
            let tasks = 8;
            if let (Some(mixed), Some(get), Some(set)) = (
                self.find(near, Workload::Mixed, tasks),
                self.find("memory", Workload::GetHit, tasks),
                self.find(plain, Workload::Set, tasks),
            ) {
                let bound = 1.0 / (0.95 / get.ops_per_sec + 0.05 / set.ops_per_sec);
                goals.push(Goal::at_least(
                    format!(
                        "{near} mixed 95/5 at least 0.9x the bound of memory gets and plain \
                         {plain} sets ({tasks} tasks; bound {bound:.0} ops/s)"
                    ),
                    mixed.ops_per_sec / bound,
                    0.9,
                ));
            }
        }
        for p in self.propagation.iter().filter(|p| p.transport == "redis") {
            goals.push(Goal::at_most(
                "near-cache propagation over redis: p99 at most 500 µs".to_owned(),
                p.p99_us,
                500.0,
                " µs",
            ));
            goals.push(Goal::at_most(
                "near-cache propagation over redis: max at most 5 ms".to_owned(),
                p.max_us,
                5_000.0,
                " µs",
            ));
            goals.push(Goal::at_most(
                format!(
                    "near-cache propagation over redis from the start of the change: p50 within \
                     2 loopback round trips (PING {:.0} µs)",
                    p.round_trip_us
                ),
                p.from_start_p50_us,
                2.0 * p.round_trip_us,
                " µs",
            ));
            goals.push(Goal::at_most(
                "near-cache propagation over redis from the start of the change: p99 at most 1 ms"
                    .to_owned(),
                p.from_start_p99_us,
                1_000.0,
                " µs",
            ));
        }
        for f in self.fanouts.iter().filter(|f| f.transport == "redis") {
            goals.push(Goal::at_most(
                format!(
                    "fan-out over redis: {} processes at {} changes/s, propagation p99 at most 2 ms",
                    f.listeners, f.rate
                ),
                f.p99_us,
                2_000.0,
                " µs",
            ));
            goals.push(Goal::at_most(
                format!(
                    "fan-out over redis: no hub unhealthy ({} processes)",
                    f.listeners
                ),
                f.outages as f64,
                0.0,
                " outages",
            ));
        }
        for s in &self.stampede {
            let place = if s.processes > 1 {
                format!(" across {} {} processes", s.processes, s.connector)
            } else {
                String::new()
            };
            goals.push(Goal::at_most(
                format!(
                    "a stampede of {} misses of one key{place} runs one load",
                    s.tasks
                ),
                s.loads as f64,
                1.0,
                " loads",
            ));
        }
        for m in &self.miss_costs {
            goals.push(Goal::at_most(
                format!(
                    "{}: a read-through miss with a lease makes at most one round trip more than \
                     without ({:.1} against {:.1})",
                    m.connector, m.leased_round_trips, m.plain_round_trips
                ),
                m.leased_round_trips - m.plain_round_trips,
                1.0,
                " round trips",
            ));
        }
        for k in &self.keys {
            goals.push(Goal::at_most(
                format!(
                    "{}: bytes stored per object within 2x of payload + keys ({} keys)",
                    k.connector, k.keys
                ),
                k.ratio(),
                2.0,
                "x",
            ));
        }
        for k in self.keys.iter().filter(|k| k.keys == 10_000) {
            goals.push(Goal::at_most(
                format!(
                    "{}: another client's longest get while a 10 000-key object is set",
                    k.connector
                ),
                k.other_get_max_ms,
                STALL_BOUND_MS,
                " ms",
            ));
        }
        for d in &self.deploys {
            for (release, ratio) in ["v1", "v2"].iter().zip(d.hit_ratios) {
                goals.push(Goal::at_least(
                    format!(
                        "{}: release {release}'s hit ratio beside the other at least one \
                         release's alone, within 1 %",
                        d.target
                    ),
                    ratio / d.alone_hit_ratio.max(f64::MIN_POSITIVE),
                    0.99,
                ));
            }
        }
        self.goals = goals;
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
        if !self.isolated.is_empty() {
            let _ = writeln!(out, "### hits measured alone (no key building)\n");
            let _ = writeln!(
                out,
                "| hit | objects | threads | ns | baseline | ns | ratio |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | --- | ---: | ---: |");
            for i in &self.isolated {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {} | {:.1} | {:.2}x |",
                    i.subject,
                    i.objects,
                    i.threads,
                    i.subject_ns,
                    i.baseline,
                    i.baseline_ns,
                    i.ratio()
                );
            }
            out.push('\n');
        }
        if !self.propagation.is_empty() {
            let _ = writeln!(
                out,
                "### near-cache propagation (invalidate started / returned → the other process's \
                 last hit)\n"
            );
            let _ = writeln!(
                out,
                "| transport | invalidations | from start p50 µs | p99 µs | from return p50 µs | \
                 p99 µs | max µs | round trip µs |"
            );
            let _ = writeln!(
                out,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for p in &self.propagation {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    p.transport,
                    p.rounds,
                    p.from_start_p50_us,
                    p.from_start_p99_us,
                    p.p50_us,
                    p.p99_us,
                    p.max_us,
                    p.round_trip_us
                );
            }
            out.push('\n');
        }
        if !self.stampede.is_empty() {
            let _ = writeln!(
                out,
                "### stampede (one key missed by many tasks at once, through get_or_load)\n"
            );
            let _ = writeln!(
                out,
                "| connector | processes | tasks | loads | one load alone µs | waiters p50 µs | \
                 p99 µs | max µs | p99 / one load |"
            );
            let _ = writeln!(
                out,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for s in &self.stampede {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x |",
                    s.connector,
                    s.processes.max(1),
                    s.tasks,
                    s.loads,
                    s.single_us,
                    s.p50_us,
                    s.p99_us,
                    s.max_us,
                    s.p99_us / s.single_us.max(f64::MIN_POSITIVE)
                );
            }
            out.push('\n');
        }
        if !self.miss_costs.is_empty() {
            let _ = writeln!(
                out,
                "### read-through miss (get_or_load of a missing key, instant load): with a \
                 lease against without\n"
            );
            let _ = writeln!(
                out,
                "| connector | round trips leased | without | leased µs | without µs | \
                 difference µs | one get µs |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            for m in &self.miss_costs {
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
                    m.connector,
                    m.leased_round_trips,
                    m.plain_round_trips,
                    m.leased_us,
                    m.plain_us,
                    m.leased_us - m.plain_us,
                    m.round_trip_us
                );
            }
            out.push('\n');
        }
        if !self.keys.is_empty() {
            let _ = writeln!(
                out,
                "### objects with many keys (the payload lists the keys)\n"
            );
            let _ = writeln!(
                out,
                "| connector | keys | bytes / object | worth | ratio | set ms | get µs | \
                 invalidate ms | other client's longest get ms (idle) |"
            );
            let _ = writeln!(
                out,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for k in &self.keys {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.0} | {:.2}x | {:.2} | {:.0} | {:.2} | {:.2} ({:.2}) |",
                    k.connector,
                    k.keys,
                    k.bytes_per_object,
                    k.logical_bytes,
                    k.ratio(),
                    k.set_ms,
                    k.get_us,
                    k.invalidate_ms,
                    k.other_get_max_ms,
                    k.other_get_idle_max_ms
                );
            }
            out.push('\n');
        }
        if !self.deploys.is_empty() {
            let _ = writeln!(
                out,
                "### rolling deploy (two releases reading and writing 200 objects alternately)\n"
            );
            let _ = writeln!(
                out,
                "| target | alone: hits | loads | v1: hits | loads | v2: hits | loads |"
            );
            let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
            for d in &self.deploys {
                let _ = writeln!(
                    out,
                    "| {} | {:.2} % | {} | {:.2} % | {} | {:.2} % | {} |",
                    d.target,
                    d.alone_hit_ratio * 100.0,
                    d.alone_loads,
                    d.hit_ratios[0] * 100.0,
                    d.loads[0],
                    d.hit_ratios[1] * 100.0,
                    d.loads[1]
                );
            }
            out.push('\n');
        }
        if !self.fanouts.is_empty() {
            let _ = writeln!(
                out,
                "### fan-out (listening processes; delay from the start of the change)\n"
            );
            let _ = writeln!(
                out,
                "| transport | processes | changes/s | delivered | p50 µs | p99 µs | max µs | \
                 outages | server CPU µs / change |"
            );
            let _ = writeln!(
                out,
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
            );
            for f in &self.fanouts {
                let cpu = f
                    .server_cpu_us_per_change
                    .map_or_else(|| "—".to_owned(), |c| format!("{c:.1}"));
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} of {} | {:.0} | {:.0} | {:.0} | {} | {cpu} |",
                    f.transport,
                    f.listeners,
                    f.rate,
                    f.delivered,
                    f.expected,
                    f.p50_us,
                    f.p99_us,
                    f.max_us,
                    f.outages
                );
            }
            out.push('\n');
        }
        if !self.goals.is_empty() {
            let _ = writeln!(out, "### goals of the issues\n");
            let _ = writeln!(out, "| goal | measured | wanted | met |");
            let _ = writeln!(out, "| --- | ---: | ---: | --- |");
            for g in &self.goals {
                let (unit, sign) = (&g.unit, if g.at_most { "≤" } else { "≥" });
                let _ = writeln!(
                    out,
                    "| {} | {:.2}{unit} | {sign} {:.2}{unit} | {} |",
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
