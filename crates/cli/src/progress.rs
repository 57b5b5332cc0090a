//! Progress bars drawn from the library's observer callbacks.

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use unlearnrec_core::train::{EpochRecord, Observer};

/// One bar per epoch with the running loss and throughput, and a log line per validation.
pub struct TrainBars {
    quiet: bool,
    epochs: usize,
    bar: Option<ProgressBar>,
    started: Instant,
    loss_sum: f64,
    steps: usize,
}

impl TrainBars {
    /// Bars for a run of `epochs` epochs; `quiet` draws nothing.
    pub fn new(quiet: bool, epochs: usize) -> Self {
        Self { quiet, epochs, bar: None, started: Instant::now(), loss_sum: 0.0, steps: 0 }
    }

    /// Clears the last bar.
    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Observer for TrainBars {
    fn epoch_start(&mut self, epoch: usize, n_steps: usize) {
        self.finish();
        self.started = Instant::now();
        self.loss_sum = 0.0;
        self.steps = 0;
        if self.quiet {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(n_steps as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{}/{}", epoch + 1, self.epochs));
        self.bar = Some(bar);
    }

    fn step(&mut self, _step: usize, loss: f64) {
        self.loss_sum += loss;
        self.steps += 1;
        if let Some(b) = &self.bar {
            b.inc(1);
            if self.steps.is_multiple_of(8) {
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                b.set_message(format!(
                    "loss {:.4} {:.1} steps/s",
                    self.loss_sum / self.steps as f64,
                    self.steps as f64 / secs
                ));
            }
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        self.finish();
        let valid = r.valid.as_ref().map(|m| {
            let g = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
            format!(" valid recall@20 {:.4} ndcg@20 {:.4}", g("recall@20"), g("ndcg@20"))
        });
        tracing::info!(
            "epoch {} loss {:.5} {:.1}s{}",
            r.epoch + 1,
            r.loss,
            r.train_secs,
            valid.clone().unwrap_or_default()
        );
        if !self.quiet && valid.is_some() {
            eprintln!(
                "epoch {:>4}: loss {:.5} ({:.1}s){}",
                r.epoch + 1,
                r.loss,
                r.train_secs,
                valid.unwrap_or_default()
            );
        }
    }
}
