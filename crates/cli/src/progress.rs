//! Progress drawn from the library's observer callbacks: on a terminal, a bar over the epochs (with the
//! overall ETA) above a bar over the current epoch's steps; elsewhere (a log file, CI), one line at most
//! every [`LOG_EVERY`], so a long run is never silent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use unlearnrec_core::eval::MetricKey;
use unlearnrec_core::train::{EpochRecord, Observer};

/// Interval of the one-line progress log when standard error is not a terminal
/// (`UNLEARNREC_LOG_EVERY_SECS` overrides it).
pub const LOG_EVERY: Duration = Duration::from_secs(30);

fn log_every() -> Duration {
    std::env::var("UNLEARNREC_LOG_EVERY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(LOG_EVERY, Duration::from_secs_f64)
}

/// Epoch and step bars, or the periodic log; and a line per validation.
pub struct TrainBars {
    quiet: bool,
    epochs: usize,
    tty: bool,
    log_every: Duration,
    multi: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    bar: Option<ProgressBar>,
    run_started: Instant,
    started: Instant,
    last_log: Instant,
    epoch: usize,
    n_steps: usize,
    epochs_done: usize,
    loss_sum: f64,
    steps: usize,
}

impl TrainBars {
    /// Progress of a run of `epochs` epochs; `quiet` draws and logs nothing.
    pub fn new(quiet: bool, epochs: usize) -> Self {
        let now = Instant::now();
        Self {
            quiet,
            epochs,
            tty: std::io::stderr().is_terminal(),
            log_every: log_every(),
            multi: None,
            overall: None,
            bar: None,
            run_started: now,
            started: now,
            last_log: now,
            epoch: 0,
            n_steps: 0,
            epochs_done: 0,
            loss_sum: 0.0,
            steps: 0,
        }
    }

    /// Clears the bars.
    pub fn finish(&mut self) {
        self.finish_epoch_bar();
        if let Some(b) = self.overall.take() {
            b.finish_and_clear();
        }
        self.multi = None;
    }

    fn finish_epoch_bar(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// The overall ETA from the epochs done so far and the current epoch's progress.
    fn eta(&self) -> Option<Duration> {
        let frac_epoch = if self.n_steps > 0 { self.steps as f64 / self.n_steps as f64 } else { 0.0 };
        let done = self.epochs_done as f64 + frac_epoch;
        if done <= 0.0 || self.epochs == 0 {
            return None;
        }
        let elapsed = self.run_started.elapsed().as_secs_f64();
        Some(Duration::from_secs_f64(elapsed / done * (self.epochs as f64 - done).max(0.0)))
    }

    fn log_line(&mut self) {
        self.last_log = Instant::now();
        let loss = if self.steps > 0 { self.loss_sum / self.steps as f64 } else { f64::NAN };
        eprintln!(
            "progress: epoch {}/{} step {}/{} loss {loss:.4}, elapsed {}, eta {}",
            self.epoch + 1,
            self.epochs,
            self.steps,
            self.n_steps,
            hms(self.run_started.elapsed()),
            self.eta().map_or("-".into(), hms)
        );
    }
}

/// `1h02m03s`, `2m03s` or `3s`.
pub fn hms(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

impl Observer for TrainBars {
    fn epoch_start(&mut self, epoch: usize, n_steps: usize) {
        self.finish_epoch_bar();
        self.started = Instant::now();
        self.epoch = epoch;
        self.n_steps = n_steps;
        self.loss_sum = 0.0;
        self.steps = 0;
        if self.quiet || !self.tty {
            return;
        }
        let multi = self.multi.get_or_insert_with(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        if self.overall.is_none() && self.epochs > 1 {
            let bar = multi.add(ProgressBar::new(self.epochs as u64));
            bar.set_style(
                ProgressStyle::with_template("epochs [{bar:30}] {pos}/{len} ({elapsed}, eta {msg})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_position(epoch as u64);
            self.overall = Some(bar);
        }
        let bar = multi.add(ProgressBar::new(n_steps as u64));
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
        if self.quiet {
            return;
        }
        if !self.tty {
            if self.last_log.elapsed() >= self.log_every {
                self.log_line();
            }
            return;
        }
        if let Some(b) = &self.bar {
            b.inc(1);
            if self.steps.is_multiple_of(8) {
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                b.set_message(format!(
                    "loss {:.4} {:.1} steps/s",
                    self.loss_sum / self.steps as f64,
                    self.steps as f64 / secs
                ));
                if let Some(o) = &self.overall {
                    o.set_message(self.eta().map_or("-".into(), hms));
                }
            }
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        self.finish_epoch_bar();
        self.epochs_done = r.epoch + 1;
        if let Some(o) = &self.overall {
            o.set_position(self.epochs_done as u64);
            o.set_message(self.eta().map_or("-".into(), hms));
        }
        let valid = r.valid.as_ref().map(|m| {
            let g = |k: MetricKey| m.get(&k).copied().unwrap_or(f64::NAN);
            format!(
                " valid {} {:.4} {} {:.4}",
                MetricKey::RECALL_20,
                g(MetricKey::RECALL_20),
                MetricKey::NDCG_20,
                g(MetricKey::NDCG_20)
            )
        });
        tracing::info!(
            "epoch {} loss {:.5} {:.1}s{}",
            r.epoch + 1,
            r.loss,
            r.train_secs,
            valid.clone().unwrap_or_default()
        );
        if self.quiet {
            return;
        }
        if let Some(v) = valid {
            let line = format!("epoch {:>4}: loss {:.5} ({:.1}s){v}", r.epoch + 1, r.loss, r.train_secs);
            match &self.multi {
                Some(m) => {
                    let _ = m.println(line);
                }
                None => eprintln!("{line}"),
            }
        } else if !self.tty && self.last_log.elapsed() >= self.log_every {
            self.log_line();
        }
    }

    fn validation_start(&mut self) {
        crate::util::release_free_memory();
    }
}

#[cfg(test)]
mod tests {
    use super::hms;
    use std::time::Duration;

    #[test]
    fn hms_formats_seconds_minutes_and_hours() {
        assert_eq!(hms(Duration::from_secs(3)), "3s");
        assert_eq!(hms(Duration::from_secs(123)), "2m03s");
        assert_eq!(hms(Duration::from_secs(3723)), "1h02m03s");
    }
}
