//! Times UnlearnRec fine-tuning steps on a real checkpoint (development aid, not a test):
//! `cargo run --release --example ftprof -- CKPT UNLEARNER REQUEST [BATCH] [STEPS]`, or encoder pre-training
//! steps: `cargo run --release --example ftprof -- CKPT --pretrain [BATCH] [STEPS]`.
//! Prints the median step time and exits after STEPS steps.
use std::path::PathBuf;
use std::time::Instant;

use unlearnrec_core::checkpoint::Checkpoint;
use unlearnrec_core::train::Observer;
use unlearnrec_core::unlearn::request::{RequestSpec, resolve};
use unlearnrec_core::unlearn::{FinetuneConfig, PretrainConfig, Unlearner, pretrain, unlearn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Timer {
    last: Option<Instant>,
    times: Vec<f64>,
    steps: usize,
}

impl Observer for Timer {
    fn epoch_start(&mut self, _epoch: usize, _n_steps: usize) {
        self.last = Some(Instant::now());
    }
    fn step(&mut self, _step: usize, _loss: f64) {
        let now = Instant::now();
        if let Some(l) = self.last {
            self.times.push((now - l).as_secs_f64() * 1e3);
        }
        self.last = Some(now);
        if self.times.len() == self.steps {
            let mut t = self.times[1..].to_vec();
            t.sort_by(f64::total_cmp);
            println!(
                "median step {:.1} ms over {} steps (min {:.1}, max {:.1})",
                t[t.len() / 2],
                t.len(),
                t[0],
                t[t.len() - 1]
            );
            std::process::exit(0);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let ckpt = Checkpoint::load(&PathBuf::from(&a[1]))?;
    if a[2] == "--pretrain" {
        let batch_size = a.get(3).map_or(1024, |s| s.parse().unwrap());
        let steps = a.get(4).map_or(12, |s| s.parse().unwrap());
        let pc = PretrainConfig { batch_size, max_steps_per_epoch: Some(steps + 1), ..PretrainConfig::default() };
        let mut obs = Timer { last: None, times: vec![], steps };
        pretrain(&ckpt, &pc, &mut obs)?;
        return Ok(());
    }
    let un = Unlearner::load(&PathBuf::from(&a[2]))?;
    let graph =
        unlearnrec_core::graph::Graph::from_interactions(ckpt.model().n_users(), ckpt.model().n_items(), &ckpt.seen());
    let spec = RequestSpec { file: Some(PathBuf::from(&a[3])), users: vec![], items: vec![] };
    let (req, _) = resolve(&spec, ckpt.users(), ckpt.items(), &graph, false)?;
    let batch_size = a.get(4).map_or(2048, |s| s.parse().unwrap());
    let steps = a.get(5).map_or(12, |s| s.parse().unwrap());
    let ft = FinetuneConfig { batch_size, ..FinetuneConfig::default() };
    let mut obs = Timer { last: None, times: vec![], steps };
    unlearn(&ckpt, &un, &req, &ft, &mut obs)?;
    Ok(())
}
