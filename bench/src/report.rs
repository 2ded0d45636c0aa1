//! What the run prints on standard output: a header saying what is compared, each round's
//! figures as soon as the round ends, and the summary: per figure, each side's median [min–max]
//! over the rounds and the median [min–max] of the rounds' ratios of the measured contender to
//! the baseline (Lepus/raw, or with `--metrics` metrics on/off).

use crate::figures::{Figures, RoundFigures, spread};
use crate::options::Options;
use crate::role::{Contender, Feature};

/// One line of the tables.
struct Metric {
    name: &'static str,
    value: fn(&Figures) -> f64,
    show: fn(f64) -> String,
}

const METRICS: [Metric; 7] = [
    Metric { name: "(a) jobs/s, first publish → N-th ack", value: |f| f.jobs_per_s, show: per_second },
    Metric { name: "(b) jobs/s with results → N-th result", value: |f| f.results_per_s, show: per_second },
    Metric { name: "(c) call round trip p50, ms", value: |f| f.call_p50_ms, show: millis },
    Metric { name: "(c) call round trip p99, ms", value: |f| f.call_p99_ms, show: millis },
    Metric { name: "worker CPU per job, µs", value: |f| f.cpu_us_per_job, show: micros },
    Metric { name: "worker RSS at rest, MiB", value: |f| f.rest_mib, show: mebibytes },
    Metric { name: "worker peak RSS (VmHWM), MiB", value: |f| f.peak_mib, show: mebibytes },
];

/// The column heads: the figure, the two contenders, their ratio.
fn columns([baseline, measured]: [Contender; 2]) -> [String; 4] {
    let ratio =
        if measured.feature.is_some() { "on/off".to_owned() } else { format!("{}/{}", measured.tag(), baseline.tag()) };
    ["figure".to_owned(), baseline.to_string(), measured.to_string(), ratio]
}

/// Says what is being compared, before the first round.
pub(crate) fn header(options: &Options, lepus_body: usize) {
    let o = options;
    let compared = match o.feature() {
        Some(Feature::Metrics) => "Lepus with metrics against Lepus without",
        Some(Feature::Events) => "Lepus with events against Lepus without",
        None => "Lepus against the raw-lapin ceiling",
    };
    println!("lepus-bench: {compared}, in one run on {}", lepus::internal::redact(&o.amqp_url));
    println!("  both sides: quorum work queues declared by lepus::WorkQueue, persistent messages,");
    println!("    publisher confirms (mandatory), up to {} publishes awaiting their confirm at once;", o.window);
    println!(
        "    the worker in its own process, {} jobs at once (prefetch {}), multi-thread tokio runtime,",
        o.concurrency, o.concurrency
    );
    println!("    acking after the work (raw: each delivery on its own; Lepus: runs of finished");
    println!("    deliveries in one multiple ack); results published persistent, confirmed before the ack");
    println!(
        "  (a) and (b): {} jobs each; (c): {} calls one at a time after {} untimed ones; {} round(s),",
        o.jobs(),
        o.calls,
        o.warmup,
        o.rounds
    );
    println!("    alternating which side goes first");
    if o.raw_headers {
        println!(
            "  jobs: raw sends the very headers and {lepus_body}-byte body of a Lepus `demo.noop` job (--raw-headers);"
        );
    } else {
        println!(
            "  job bodies: {} bytes raw (no headers), {lepus_body} bytes Lepus (`demo.noop`, plus Celery v2 headers);",
            crate::raw_producer::BODY.len()
        );
    }
    if o.raw_headers {
        println!("    results: a Celery result message on both sides");
    } else {
        println!(
            "    results: a fixed {}-byte body raw, a Celery result message Lepus",
            crate::raw_worker_role::RESULT.len()
        );
    }
    if o.metrics {
        println!("  compared: Lepus with its worker serving /metrics (--metrics-addr) against Lepus without;");
        println!("    after each run the worker's /metrics must count every job it ran");
        println!("  on/off above 1 is better for jobs/s, below 1 is better for latency and memory");
    } else if o.events {
        println!("  compared: Lepus with its worker sending Celery's events (--events) against Lepus without;");
        println!("    a monitor consumes celeryev meanwhile, as Flower would, and counts the events");
        println!("  on/off above 1 is better for jobs/s, below 1 is better for latency and memory");
    } else {
        println!("  Lepus/raw above 1 is better for jobs/s, below 1 is better for latency and memory");
    }
    println!();
}

/// Prints one round's figures.
pub(crate) fn round(number: u32, rounds: u32, first: Contender, pair: [Contender; 2], figures: &RoundFigures) {
    println!("round {number} of {rounds} ({first} first)");
    let rows = METRICS.iter().map(|m| {
        let (baseline, measured) = ((m.value)(&figures.baseline), (m.value)(&figures.measured));
        [m.name.to_owned(), (m.show)(baseline), (m.show)(measured), format!("{:.2}", measured / baseline)]
    });
    print_table(columns(pair), rows.collect());
    println!();
}

/// Prints the summary over all rounds.
pub(crate) fn summary(pair: [Contender; 2], rounds: &[RoundFigures]) {
    println!("summary over {} round(s): median [min–max]", rounds.len());
    let rows = METRICS.iter().map(|m| {
        let of =
            |side: fn(&RoundFigures) -> &Figures| -> Vec<f64> { rounds.iter().map(|r| (m.value)(side(r))).collect() };
        let baseline = of(|r| &r.baseline);
        let measured = of(|r| &r.measured);
        let ratios: Vec<f64> = measured.iter().zip(&baseline).map(|(m, b)| m / b).collect();
        [
            m.name.to_owned(),
            spread_of(&baseline, m.show),
            spread_of(&measured, m.show),
            spread_of(&ratios, |r| format!("{r:.2}")),
        ]
    });
    print_table(columns(pair), rows.collect());
}

fn spread_of(values: &[f64], show: fn(f64) -> String) -> String {
    let (median, min, max) = spread(values);
    if values.len() < 2 { show(median) } else { format!("{} [{}–{}]", show(median), show(min), show(max)) }
}

fn print_table(columns: [String; 4], rows: Vec<[String; 4]>) {
    let mut widths = columns.each_ref().map(|c| c.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let [figure, raw, lepus, ratio] = cells;
        let [w0, w1, w2, w3] = widths;
        println!("  {figure:<w0$}  {raw:>w1$}  {lepus:>w2$}  {ratio:>w3$}");
    };
    line([&columns[0], &columns[1], &columns[2], &columns[3]]);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3]]);
    }
}

fn per_second(rate: f64) -> String {
    if rate >= 1000.0 { format!("{:.2}k", rate / 1000.0) } else { format!("{rate:.0}") }
}

fn millis(ms: f64) -> String {
    format!("{ms:.2}")
}

fn micros(us: f64) -> String {
    format!("{us:.1}")
}

fn mebibytes(mib: f64) -> String {
    format!("{mib:.1}")
}
