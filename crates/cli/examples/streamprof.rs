//! Per-request cost of a chained stream on the fast path (development aid, not a test):
//! `cargo run --release --example streamprof -- CKPT UNLEARNER [REQUESTS] [SCENARIO] [DATA]` (defaults 30,
//! `user-subset`; also `account`; with DATA, each result is evaluated on validation between requests, untimed,
//! as the runner's streams do). Each request is applied to the previous result (from its anchor, as the
//! runner's streams do); prints every request's wall time and `unlearn`'s phases, then p50 / p95.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use unlearnrec_core::checkpoint::{Checkpoint, Split};
use unlearnrec_core::data::{LoadOptions, load};
use unlearnrec_core::eval::EvalConfig;
use unlearnrec_core::graph::Graph;
use unlearnrec_core::train::Silent;
use unlearnrec_core::unlearn::scenario::{DEFAULT_SUBSET_FRACTION, Scenario, stream};
use unlearnrec_core::unlearn::{FinetuneConfig, Unlearner, unlearn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let orig = Checkpoint::load(&PathBuf::from(&a[1]))?;
    let un = Unlearner::load(&PathBuf::from(&a[2]))?;
    let n: usize = a.get(3).map_or(30, |s| s.parse().unwrap());
    let scenario = match a.get(4).map_or("user-subset", String::as_str) {
        "account" => Scenario::Account,
        _ => Scenario::UserSubset { fraction: DEFAULT_SUBSET_FRACTION },
    };
    let data = a.get(5).map(|p| load(std::path::Path::new(p), &LoadOptions::default())).transpose()?;
    let graph = Graph::from_interactions(orig.model().n_users(), orig.model().n_items(), &orig.seen());
    let requests = stream(&graph, &scenario, n, 1)?;
    let ft = FinetuneConfig::fast();
    let mut cur: Option<Checkpoint> = None;
    let mut walls = Vec::new();
    let mut phases: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (k, r) in requests.iter().enumerate() {
        let base = cur.as_ref().unwrap_or(&orig);
        let t = Instant::now();
        let (next, report) = unlearn(base, &un, r, &ft, &mut Silent)?;
        let wall = t.elapsed().as_secs_f64();
        let accounted: f64 = report.phase_secs.values().sum();
        let mut line = format!("request {:3} ({:3} edges): {:6.3} s", k + 1, r.len(), wall);
        for (name, s) in &report.phase_secs {
            line += &format!("  {name} {s:.3}");
            phases.entry(name.clone()).or_default().push(*s);
        }
        line += &format!("  rest {:.3}", wall - accounted);
        phases.entry("rest".into()).or_default().push(wall - accounted);
        println!("{line}");
        walls.push(wall);
        if let Some(ds) = &data {
            next.evaluate(ds, Split::Valid, &EvalConfig { ks: vec![20], ..EvalConfig::default() })?;
        }
        cur = Some(next);
    }
    println!("wall p50 {:.3} s, p95 {:.3} s", quantile(&walls, 0.5), quantile(&walls, 0.95));
    for (name, v) in &phases {
        println!("  {name}: p50 {:.3} s, p95 {:.3} s", quantile(v, 0.5), quantile(v, 0.95));
    }
    Ok(())
}
