//! Stopping long training steps (a batch's fine-tuning, a consolidation's retrain and pre-training) when the
//! service stops.
//!
//! The core's training loops report every minibatch to an [`Observer`]; [`cancellable`] runs a step with an
//! observer that, once the stop flag is set, unwinds out of the loop at the next minibatch (with
//! [`std::panic::resume_unwind`], which does not run the panic hook: nothing is printed) and returns `None`.
//! Whatever the step was building is dropped; nothing it would have written exists yet.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};

use unlearnrec_core::train::Observer;

/// The unwinding payload of a cancelled step.
struct Cancelled;

/// An observer that unwinds out of training once `stop` is set.
struct StopOnFlag<'a>(&'a AtomicBool);

impl StopOnFlag<'_> {
    fn check(&self) {
        if self.0.load(Ordering::SeqCst) {
            std::panic::resume_unwind(Box::new(Cancelled));
        }
    }
}

impl Observer for StopOnFlag<'_> {
    fn epoch_start(&mut self, _epoch: usize, _n_steps: usize) {
        self.check();
    }
    fn step(&mut self, _step: usize, _loss: f64) {
        self.check();
    }
}

/// Runs `f` with an observer that stops it at the next minibatch once `stop` is set: `Some(result)` when
/// it finished, `None` when it was cancelled (also when `stop` was set before it started). A real panic
/// inside `f` propagates.
pub fn cancellable<T>(stop: &AtomicBool, f: impl FnOnce(&mut dyn Observer) -> T) -> Option<T> {
    if stop.load(Ordering::SeqCst) {
        return None;
    }
    let mut obs = StopOnFlag(stop);
    match std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut obs))) {
        Ok(v) => Some(v),
        Err(payload) if payload.is::<Cancelled>() => None,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use unlearnrec_core::data::synthetic::{SynthConfig, generate};
    use unlearnrec_core::model::{ModelConfig, ModelKind};
    use unlearnrec_core::train::TrainConfig;

    use super::*;

    #[test]
    fn a_long_training_run_stops_at_the_next_minibatch_once_the_flag_is_set() {
        let ds = generate(&SynthConfig { users: 200, items: 150, interactions: 5000, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 16, layers: 2, ..Default::default() };
        // Thousands of epochs: minutes if it ran to the end.
        let tc = TrainConfig { epochs: 5000, batch_size: 256, eval_every: 10_000, ..Default::default() };
        let stop = Arc::new(AtomicBool::new(false));
        let setter = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::SeqCst);
                Instant::now()
            })
        };
        let out = cancellable(&stop, |obs| unlearnrec_core::pipeline::train(&ds, &mc, &tc, obs));
        let stopped = Instant::now();
        let set = setter.join().unwrap();
        assert!(out.is_none(), "the run was not cancelled");
        assert!(stopped.duration_since(set) < Duration::from_secs(2), "{:?}", stopped.duration_since(set));
        // Already set: nothing runs.
        assert!(cancellable(&stop, |_| -> u8 { unreachable!("not started") }).is_none());
        // A real panic still propagates.
        let flag = AtomicBool::new(false);
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| cancellable(&flag, |_| -> u8 { panic!("boom") })));
        assert!(r.is_err());
    }
}
