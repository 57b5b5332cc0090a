//! Breakdown of one LightGCN training step (development aid).
use std::time::Instant;

use rand::SeedableRng;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::graph::{Graph, NormAdj};
use unlearnrec_core::model::{Backbone, LossInput, ModelConfig};
use unlearnrec_core::tensor::SpMat;
use unlearnrec_core::train::sampler::sample_epoch;
use unlearnrec_core::train::{Adam, AdamConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let users: usize = std::env::args().nth(1).map_or(1000, |s| s.parse().unwrap());
    let ds =
        generate(&SynthConfig { users, items: users * 4 / 5, interactions: users * 30, ..Default::default() }).unwrap();
    let g = Graph::from_interactions(ds.n_users(), ds.n_items(), &ds.train);
    let adj = SpMat::from_norm_adj(&NormAdj::from_graph(&g));
    let m = Backbone::new(ModelConfig { dim: 64, ..Default::default() }, ds.n_users(), ds.n_items(), 1).unwrap();
    let tr = sample_epoch(g.user_items(), 1, 0);
    let batch = tr.batch(0, 2048);
    let mut opt = Adam::new(vec![m.base().clone()], AdamConfig::default()).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for _ in 0..5 {
        let t = Instant::now();
        let e0 = m.base().as_tensor().clone();
        let parts = m
            .loss(LossInput { adj: &adj, e0: &e0, batch: &batch, epoch: None, rng: &mut rng, with_reg: true })
            .unwrap();
        let t1 = t.elapsed();
        let _ = parts.total.to_scalar::<f32>().unwrap();
        let grads = parts.total.backward().unwrap();
        let t2 = t.elapsed();
        opt.step(&grads).unwrap();
        let t3 = t.elapsed();
        println!("forward+loss {:?} backward {:?} adam {:?}", t1, t2 - t1, t3 - t2);
    }
}
