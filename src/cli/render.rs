//! Shows a run's events on the terminal: progress bars when stderr is a terminal, log lines
//! otherwise. Saved files are printed on stdout, one path a line, so scripts can read them.

use crate::exec::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use swapgraph_node_api::MemoryReport;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, error, info};

/// Reads events until the run's sink is dropped.
pub async fn render(mut events: UnboundedReceiver<Event>, interactive: bool) {
    let bars = MultiProgress::with_draw_target(if interactive {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut overall: Option<ProgressBar> = None;
    let mut steps: HashMap<String, ProgressBar> = HashMap::new();
    let log = |line: &dyn Fn()| bars.suspend(line);
    while let Some(event) = events.recv().await {
        match event {
            Event::RunStarted { steps: count } => {
                let bar = bars.add(ProgressBar::new(count as u64));
                bar.set_style(style("{prefix:>6} [{bar:30}] {pos}/{len} nodes {msg}"));
                bar.set_prefix("run");
                overall = Some(bar);
            }
            Event::NodeStarted { node, node_type } => {
                log(&|| debug!("{node} ({node_type}) started"));
                if let Some(bar) = &overall {
                    bar.set_message(format!("{node} ({node_type})"));
                }
            }
            Event::NodeCached { node, node_type } => {
                log(&|| info!("{node} ({node_type}) cached"));
                overall.iter().for_each(|bar| bar.inc(1));
            }
            Event::Progress { node, step, total } => {
                let bar = steps.entry(node.to_string()).or_insert_with(|| {
                    let bar = bars.add(ProgressBar::new(total));
                    bar.set_style(style("{prefix:>6} [{bar:30}] step {pos}/{len} {per_sec}"));
                    bar.set_prefix(node.to_string());
                    bar
                });
                bar.set_position(step);
                log(&|| debug!("{node}: step {step}/{total}"));
            }
            Event::NodeFinished {
                node,
                node_type,
                elapsed_ms,
            } => {
                if let Some(bar) = steps.remove(node.as_str()) {
                    bar.finish_and_clear();
                }
                log(&|| info!("{node} ({node_type}) finished in {elapsed_ms:.1} ms"));
                overall.iter().for_each(|bar| bar.inc(1));
            }
            Event::NodeFailed { node, node_type, error } => {
                log(&|| error!("{node} ({node_type}) failed: {error}"));
            }
            // A node's bare snapshots (a sampler's after each step) are for charts: debug level.
            Event::Memory {
                node: Some(node),
                report,
            } if report.details.is_empty() => {
                log(&|| debug!("{node}: {}", describe(&report)));
            }
            Event::Memory { node, report } => {
                let who = node.map_or_else(|| "engine".to_string(), |n| n.to_string());
                log(&|| info!("{who}: {}", describe(&report)));
            }
            Event::OutputWritten { path, .. } => {
                bars.suspend(|| println!("{}", path.display()));
            }
            // The command line asks for no previews.
            Event::Preview { .. } => {}
            Event::RunFinished { elapsed_ms, .. } => {
                if let Some(bar) = overall.take() {
                    bar.finish_and_clear();
                }
                log(&|| debug!("run took {elapsed_ms:.1} ms"));
            }
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// One line for a memory report: its title, the figures it has, then its details.
fn describe(report: &MemoryReport) -> String {
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    let figures = [
        ("device allocated", report.device_allocated_bytes),
        ("device reserved", report.device_reserved_bytes),
        ("device total", report.device_total_bytes),
        ("host resident", report.host_resident_bytes),
        ("host peak", report.host_peak_bytes),
    ];
    let mut parts: Vec<String> = figures
        .iter()
        .filter_map(|(label, bytes)| bytes.map(|b| format!("{label} {}", mib(b))))
        .collect();
    parts.extend(report.details.iter().map(|(label, value)| format!("{label} {value}")));
    if let Some(timeline) = &report.timeline {
        parts.push(describe_pass(timeline));
    }
    format!("{} memory: {}", report.title, parts.join(", "))
}

/// The last forward pass in one phrase: how long it took, how many units were copied in, and
/// how long copies ran and compute waited for them.
fn describe_pass(timeline: &swapgraph_node_api::PassTimeline) -> String {
    let length = |span: &Option<[f64; 2]>| span.map_or(0.0, |[start, end]| end - start);
    let copied = timeline.units.iter().filter(|unit| unit.copy.is_some()).count();
    let copying: f64 = timeline.units.iter().map(|unit| length(&unit.copy)).sum();
    let waiting: f64 = timeline.units.iter().map(|unit| length(&unit.wait)).sum();
    let ends = timeline
        .units
        .iter()
        .flat_map(|unit| [unit.copy, unit.wait, unit.compute]);
    let end = ends.flatten().map(|[_, end]| end).fold(0.0, f64::max);
    format!(
        "last pass {end:.2} ms with {copied} of {} units copied in (copies {copying:.2} ms, compute waiting {waiting:.2} ms)",
        timeline.units.len()
    )
}
