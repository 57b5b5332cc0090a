//! Development aid (not a test): compares calibration targets with where a retrain puts the removed edges.
//! `cargo run --release --example calibdbg -- ZEROSHOT_CKPT RETRAIN_CKPT UNLEARNED_CKPT REQUEST`
use std::path::PathBuf;

use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::eval::audit::{FEATURE_NAMES, auc, pair_features, pair_percentiles};
use unlearnrec_core::graph::Graph;
use unlearnrec_core::pipeline::union;
use unlearnrec_core::unlearn::calibrate;
use unlearnrec_core::unlearn::request::{RequestSpec, resolve};

fn q(v: &[f64]) -> String {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |c: f64| v[((v.len() - 1) as f64 * c) as usize];
    format!("p10 {:.4} p25 {:.4} p50 {:.4} p75 {:.4} p90 {:.4}", at(0.1), at(0.25), at(0.5), at(0.75), at(0.9))
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let zs = Checkpoint::load(&PathBuf::from(&a[1]))?;
    let rt = Checkpoint::load(&PathBuf::from(&a[2]))?;
    let un = Checkpoint::load(&PathBuf::from(&a[3]))?;
    let (users, items) = (zs.users(), zs.items());
    let (nu, ni) = (zs.model().n_users(), zs.model().n_items());
    let before = union(&zs.seen(), zs.removed());
    let graph = Graph::from_interactions(nu, ni, &before);
    let spec = RequestSpec { file: Some(PathBuf::from(&a[4])), users: vec![], items: vec![] };
    let (req, _) = resolve(&spec, users, items, &graph, false)?;
    let remaining = zs.train_graph();
    let seen = Graph::from_interactions(nu, ni, &zs.seen());
    let pairs: Vec<(u32, u32)> = req.iter().collect();
    let fin = zs.final_embeddings()?;
    let t = calibrate::targets(&fin, &remaining, seen.user_items(), zs.valid(), &req, 1)?;
    println!("targets      {} (cold {}, map pairs {})", q(&t.percentiles), t.cold, t.valid_pairs);
    println!("zero-shot    {}", q(&pair_percentiles(&fin, seen.user_items(), &pairs)?));
    println!("unlearned    {}", q(&pair_percentiles(&un.final_embeddings()?, seen.user_items(), &pairs)?));
    let rp = pair_percentiles(&rt.final_embeddings()?, seen.user_items(), &pairs)?;
    println!("retrain      {}", q(&rp));
    let vp: Vec<(u32, u32)> = zs.valid().iter().collect();
    println!("valid@zs     {}", q(&pair_percentiles(&fin, seen.user_items(), &vp)?));
    println!("valid@rt     {}", q(&pair_percentiles(&rt.final_embeddings()?, seen.user_items(), &vp)?));
    // Correlation of target and retrain percentiles.
    let n = rp.len() as f64;
    let (mx, my) = (t.percentiles.iter().sum::<f64>() / n, rp.iter().sum::<f64>() / n);
    let cov: f64 = t.percentiles.iter().zip(&rp).map(|(x, y)| (x - mx) * (y - my)).sum::<f64>();
    let vx: f64 = t.percentiles.iter().map(|x| (x - mx).powi(2)).sum::<f64>();
    let vy: f64 = rp.iter().map(|y| (y - my).powi(2)).sum::<f64>();
    println!("corr(target, retrain) {:.3}", cov / (vx * vy).sqrt());
    // Univariate AUC of each attacker feature: removed edges vs held-out test edges of the same users.
    if let Some(data) = a.get(5) {
        let ds = unlearnrec_core::data::format::load(&PathBuf::from(data), &Default::default())?;
        let held: Vec<(u32, u32)> = ds.test.iter().filter(|&(u, _)| req.users().binary_search(&u).is_ok()).collect();
        let degrees = Graph::from_interactions(nu, ni, &union(&remaining.to_interactions(), &req));
        for (name, c) in [("zero-shot", &zs), ("unlearned", &un), ("retrain", &rt)] {
            let orig = None;
            let e = c.final_embeddings()?;
            let fr = pair_features(&e, orig, seen.user_items(), &degrees, &pairs)?;
            let fh = pair_features(&e, orig, seen.user_items(), &degrees, &held)?;
            let aucs: Vec<String> = (0..FEATURE_NAMES.len())
                .map(|f| {
                    let x: Vec<f64> = fr.iter().map(|r| r[f]).collect();
                    let y: Vec<f64> = fh.iter().map(|r| r[f]).collect();
                    format!("{} {:.3}", FEATURE_NAMES[f], auc(&x, &y))
                })
                .collect();
            println!("{name:10} {}", aucs.join(", "));
        }
    }
    Ok(())
}
