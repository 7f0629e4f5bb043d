//! `compare`: reads report lines of one side-by-side run and prints a
//! Markdown table of our figures beside the baseline's, with ratios and the
//! targets they are held to. Repeated runs of a scenario give their median.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::report::Report;

/// Which label is ours and which is the baseline.
#[derive(Debug, Clone)]
pub struct Labels {
    /// Our server's label (`edgewire`).
    pub ours: String,
    /// The baseline's label (`nchan`).
    pub baseline: String,
}

/// Parses report JSON lines, skipping anything else (tables, log lines).
pub fn parse(text: &str) -> Vec<Report> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

struct Runs<'a> {
    by_key: BTreeMap<(String, String), Vec<&'a Report>>,
}

impl<'a> Runs<'a> {
    fn metric(&self, name: &str, label: &str, f: impl Fn(&Report) -> f64) -> Option<f64> {
        let runs = self.by_key.get(&(name.to_string(), label.to_string()))?;
        median(runs.iter().map(|r| f(r)).collect())
    }
}

/// How a ratio is judged.
#[derive(Clone, Copy)]
enum Goal {
    /// ours / baseline at least this.
    AtLeast(f64),
    /// ours / baseline at most this.
    AtMost(f64),
    /// ours / baseline strictly below this.
    Below(f64),
    /// No ratio target (shown for reference).
    None,
}

/// How an absolute figure of ours is judged.
#[derive(Clone, Copy)]
enum Limit {
    Max(f64),
    None,
}

struct Row {
    scenario: String,
    metric: &'static str,
    ours: Option<f64>,
    baseline: Option<f64>,
    goal: Goal,
    limit: Limit,
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
    }
}

impl Row {
    fn cells(&self) -> [String; 7] {
        let ratio = match (self.ours, self.baseline) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (target, ratio_ok) = match self.goal {
            Goal::AtLeast(x) => (format!("ratio >= {x}"), ratio.map(|r| r >= x)),
            Goal::AtMost(x) => (format!("ratio <= {x}"), ratio.map(|r| r <= x)),
            Goal::Below(x) => (format!("ratio < {x}"), ratio.map(|r| r < x)),
            Goal::None => (String::new(), None),
        };
        let (target, ok) = match self.limit {
            Limit::Max(m) => (format!("<= {}", fmt(Some(m))), self.ours.map(|v| v <= m)),
            Limit::None => (target, ratio_ok),
        };
        let verdict = match ok {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        };
        [
            self.scenario.clone(),
            self.metric.to_string(),
            fmt(self.ours),
            fmt(self.baseline),
            ratio
                .map(|r| format!("{r:.2}"))
                .unwrap_or_else(|| "-".into()),
            target,
            verdict.to_string(),
        ]
    }
}

/// The comparison table, in Markdown.
pub fn table(reports: &[Report], labels: &Labels) -> String {
    let mut runs = Runs {
        by_key: BTreeMap::new(),
    };
    let mut names: Vec<(String, String)> = Vec::new();
    for r in reports {
        if !names.iter().any(|(n, _)| n == &r.name) {
            names.push((r.name.clone(), r.scenario.clone()));
        }
        runs.by_key
            .entry((r.name.clone(), r.label.clone()))
            .or_default()
            .push(r);
    }
    let (ours, base) = (labels.ours.as_str(), labels.baseline.as_str());
    let mut rows = Vec::new();
    for (name, scenario) in &names {
        let row = |metric, f: &dyn Fn(&Report) -> f64, goal, limit| Row {
            scenario: name.clone(),
            metric,
            ours: runs.metric(name, ours, f),
            baseline: runs.metric(name, base, f),
            goal,
            limit,
        };
        match scenario.as_str() {
            "fanout" => {
                let paced = runs
                    .by_key
                    .get(&(name.clone(), ours.to_string()))
                    .and_then(|r| r.first())
                    .is_some_and(|r| r.rate.is_some());
                // Through Redis the target is less CPU than Nchan with its Redis
                // storage; in memory, at most half of Nchan's.
                let cpu_goal = if name.ends_with(" redis") {
                    Goal::Below(1.0)
                } else {
                    Goal::AtMost(0.5)
                };
                if !paced {
                    rows.push(row(
                        "server CPU us/delivery",
                        &|r| r.server_cpu_us_per_op,
                        cpu_goal,
                        Limit::None,
                    ));
                    rows.push(row(
                        "deliveries/s",
                        &|r| r.deliveries_per_s,
                        Goal::AtLeast(1.0),
                        Limit::None,
                    ));
                }
                rows.push(row(
                    "latency p50 ms",
                    &|r| r.latency.p50_us as f64 / 1000.0,
                    Goal::None,
                    Limit::None,
                ));
                rows.push(row(
                    "latency p99 ms",
                    &|r| r.latency.p99_us as f64 / 1000.0,
                    Goal::None,
                    if paced { Limit::Max(5.0) } else { Limit::None },
                ));
                rows.push(row(
                    "lost+dup+misordered",
                    &|r| (r.lost + r.duplicates + r.order_mismatches + r.wrong_room) as f64,
                    Goal::None,
                    Limit::Max(0.0),
                ));
                if let Some(memory) = name.strip_suffix(" redis") {
                    rows.push(Row {
                        scenario: name.clone(),
                        metric: "deliveries/s vs our memory broker",
                        ours: runs.metric(name, ours, |r| r.deliveries_per_s),
                        baseline: runs.metric(memory, ours, |r| r.deliveries_per_s),
                        goal: Goal::AtLeast(0.7),
                        limit: Limit::None,
                    });
                }
            }
            "connect" => {
                rows.push(row(
                    "server RSS B/connection",
                    &|r| r.rss_per_connection_b,
                    Goal::None,
                    Limit::Max(2048.0),
                ));
                rows.push(row(
                    "connections/s",
                    &|r| r.connects_per_s,
                    Goal::AtLeast(1.0),
                    Limit::None,
                ));
                rows.push(row(
                    "server CPU us/connection",
                    &|r| r.server_cpu_ms as f64 * 1000.0 / r.connected.max(1) as f64,
                    Goal::None,
                    Limit::None,
                ));
                if name.starts_with("storm") {
                    rows.push(row(
                        "all welcomed in s",
                        &|r| r.elapsed_s,
                        Goal::None,
                        Limit::Max(2.0),
                    ));
                    // Nchan has no presence: its column shows 0.
                    rows.push(row(
                        "all with full presence in s",
                        &|r| r.full_presence_s,
                        Goal::None,
                        Limit::Max(2.0),
                    ));
                    rows.push(row(
                        "presence frames received",
                        &|r| r.presence_frames as f64,
                        Goal::None,
                        Limit::None,
                    ));
                    rows.push(row(
                        "presence MB received",
                        &|r| r.presence_bytes as f64 / 1e6,
                        Goal::None,
                        Limit::None,
                    ));
                }
                rows.push(row(
                    "connected",
                    &|r| r.connected as f64,
                    Goal::None,
                    Limit::None,
                ));
            }
            _ => {
                rows.push(row(
                    "publishes/s",
                    &|r| r.publishes_per_s,
                    Goal::AtLeast(2.0),
                    Limit::None,
                ));
                rows.push(row(
                    "server CPU us/publish",
                    &|r| r.server_cpu_us_per_op,
                    Goal::None,
                    Limit::None,
                ));
            }
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | metric | {ours} | {base} | ratio | target | |\n|---|---|---:|---:|---:|---|---|"
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.cells().join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, label: &str, cpu: f64, rate: f64) -> Report {
        Report {
            scenario: "fanout".into(),
            name: name.into(),
            label: label.into(),
            server_cpu_us_per_op: cpu,
            deliveries_per_s: rate,
            ..Report::default()
        }
    }

    #[test]
    fn ratios_and_verdicts() {
        let reports = [
            run("f", "edgewire", 1.0, 300.0),
            run("f", "nchan", 4.0, 200.0),
            run("f", "edgewire", 3.0, 100.0),
            run("f", "edgewire", 2.0, 200.0),
            run("f redis", "edgewire", 2.0, 100.0),
            run("f redis", "nchan", 2.5, 100.0),
        ];
        let labels = Labels {
            ours: "edgewire".into(),
            baseline: "nchan".into(),
        };
        let t = table(
            &parse(
                &reports
                    .iter()
                    .map(Report::json)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            &labels,
        );
        assert!(
            t.contains("| f | server CPU us/delivery | 2.00 | 4.00 | 0.50 | ratio <= 0.5 | met |"),
            "{t}"
        );
        assert!(
            t.contains("| f | deliveries/s | 200 | 200 | 1.00 | ratio >= 1 | met |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| f redis | server CPU us/delivery | 2.00 | 2.50 | 0.80 | ratio < 1 | met |"
            ),
            "{t}"
        );
        assert!(t.contains("| f redis | deliveries/s vs our memory broker | 100 | 200 | 0.50 | ratio >= 0.7 | MISSED |"), "{t}");
    }
}
