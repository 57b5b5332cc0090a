//! Breakdown of one LightGCN training step (development aid): medians over repeats, interleaved, of the
//! fused propagation against the composition it replaced (every layer in full, summed, gathered).
use std::time::Instant;

use rand::SeedableRng;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::graph::{Graph, NormAdj};
use unlearnrec_core::model::loss::bpr;
use unlearnrec_core::model::{Backbone, LossInput, ModelConfig, RegTerm, combine, gather_rows};
use unlearnrec_core::tensor::{SpMat, propagate_rows, spmm};
use unlearnrec_core::train::sampler::sample_epoch;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let arg = |k: usize| std::env::args().nth(k);
    let users: usize = arg(1).map_or(30000, |s| s.parse().unwrap());
    let reps: usize = arg(2).map_or(15, |s| s.parse().unwrap());
    let ds =
        generate(&SynthConfig { users, items: users * 4 / 5, interactions: users * 30, ..Default::default() }).unwrap();
    let g = Graph::from_interactions(ds.n_users(), ds.n_items(), &ds.train);
    let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&g));
    let m = Backbone::new(ModelConfig { dim: 64, ..Default::default() }, ds.n_users(), ds.n_items(), 1).unwrap();
    let batch = sample_epoch(g.user_items(), 1, 0).batch(0, 2048);
    let nu = ds.n_users() as u32;
    let ids: Vec<u32> =
        batch.users.iter().copied().chain(batch.pos.iter().chain(&batch.neg).map(|&i| i + nu)).collect();
    let e0 = m.base().as_tensor().clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (mut t_spmm, mut t_old, mut t_new, mut t_pf, mut t_pb) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..reps {
        let t = Instant::now();
        std::hint::black_box(spmm(&adj, &e0).unwrap());
        t_spmm.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let fin = combine(&m.layers(&adj, &e0).unwrap(), m.config.combine()).unwrap();
        let r = gather_rows(&fin, &[(&ids, 0)]).unwrap().remove(0);
        let b = batch.len();
        let loss = (bpr(&r.narrow(0, 0, b).unwrap(), &r.narrow(0, b, b).unwrap(), &r.narrow(0, 2 * b, b).unwrap())
            .unwrap()
            + (e0.sqr().unwrap().sum_all().unwrap() * 1e-7).unwrap())
        .unwrap();
        std::hint::black_box(loss.backward().unwrap());
        t_old.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let parts = m
            .loss(LossInput {
                adj: &adj,
                e0: &e0,
                batch: &batch,
                epoch: None,
                rng: &mut rng,
                reg: RegTerm::Differentiated,
                sink: None,
            })
            .unwrap();
        std::hint::black_box(parts.total.backward().unwrap());
        t_new.push(t.elapsed().as_secs_f64() * 1e3);

        let t = Instant::now();
        let r = propagate_rows(&adj, &e0, 3, 0, 1.0, &ids, None, None).unwrap();
        t_pf.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(r.sum_all().unwrap().backward().unwrap());
        t_pb.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let s = median(t_spmm);
    let (o, n) = (median(t_old), median(t_new));
    println!(
        "spmm {s:.2} ms | composed loss+backward {o:.2} ms ({:.1} SpMMs) | fused {n:.2} ms ({:.1} SpMMs)",
        o / s,
        n / s
    );
    println!("propagate_rows forward {:.2} ms, backward {:.2} ms", median(t_pf), median(t_pb));
    // The contrastive term's InfoNCE on S rows (fwd + bwd), from rows of the table (a stand-in for two views).
    for s in [1000usize, 2000, 4000] {
        let ids: Vec<u32> = (0..s as u32).collect();
        let v = gather_rows(&e0, &[(&ids, 0), (&ids, 1)]).unwrap();
        let t = (0..reps.min(7))
            .map(|_| {
                let t = Instant::now();
                let l = unlearnrec_core::model::loss::info_nce(&v[0], &v[1], 0.2).unwrap();
                std::hint::black_box(l.backward().unwrap());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        println!("info_nce S={s} fwd+bwd {:.2} ms", median(t));
    }
}
