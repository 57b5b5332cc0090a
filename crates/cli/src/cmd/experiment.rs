//! `unlearnrec experiment`: a grid of datasets × models × protocols × methods × seeds, cached and
//! resumable, summarised as results.csv, results.md and SVG plots.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use unlearnrec_core::eval::MetricKey;
use unlearnrec_core::train::{EpochRecord, Observer};
use unlearnrec_experiment::{ExperimentConfig, ExperimentObserver, ResultRow, RunOptions, StreamRow};

use crate::util::{Ctx, check_out_dir};

/// `unlearnrec experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// The experiment file (TOML: datasets, models, protocols, fraction, methods, seeds, [model], [train],
    /// [pretrain], [finetune], [baselines.*], [stream]).
    #[arg(long)]
    config: PathBuf,
    /// Output directory [default: target/runs/<config file stem>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in --out: finished cells (same configuration hash) are skipped.
    #[arg(long)]
    resume: bool,
}

/// Runs `experiment`.
pub fn run(a: ExperimentArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let cfg = ExperimentConfig::from_toml_file(&a.config)?;
    let out = a.out.clone().unwrap_or_else(|| {
        let stem = a.config.file_stem().map_or("experiment".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("target/runs").join(stem)
    });
    check_out_dir(&out, "--out")?;
    let started = Instant::now();
    let mut bars = GridBars::new(ctx.quiet);
    let report = unlearnrec_experiment::run(&cfg, &out, &RunOptions { resume: a.resume }, &mut bars)
        .with_context(|| format!("experiment {} into {}", a.config.display(), out.display()))?;
    bars.finish();
    if !report.rows.is_empty() {
        print!("{}", report.markdown);
    }
    if !report.stream_markdown.is_empty() {
        if !report.rows.is_empty() {
            println!();
        }
        print!("{}", report.stream_markdown);
    }
    if !ctx.quiet {
        let files: Vec<String> = report.files.iter().map(|f| f.display().to_string()).collect();
        eprintln!(
            "{} cells run, {} already finished, in {:.1}s; wrote {}",
            report.ran,
            report.skipped,
            started.elapsed().as_secs_f64(),
            files.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A bar over the grid's cells and, below it, one over the epochs or steps of the current stage.
struct GridBars {
    multi: Option<MultiProgress>,
    grid: Option<ProgressBar>,
    work: Option<ProgressBar>,
    epochs: usize,
}

impl GridBars {
    fn new(quiet: bool) -> Self {
        let multi = (!quiet).then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self { multi, grid: None, work: None, epochs: 0 }
    }

    fn style(template: &str) -> ProgressStyle {
        ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
    }

    fn clear_work(&mut self) {
        if let Some(b) = self.work.take() {
            b.finish_and_clear();
        }
    }

    fn finish(&mut self) {
        self.clear_work();
        if let Some(g) = self.grid.take() {
            g.finish_and_clear();
        }
    }

    fn log(&self, line: String) {
        if let Some(m) = &self.multi {
            let _ = m.println(line);
        }
    }
}

impl Observer for GridBars {
    fn epoch_start(&mut self, epoch: usize, n_steps: usize) {
        self.clear_work();
        let Some(m) = &self.multi else { return };
        let bar = m.add(ProgressBar::new(n_steps as u64));
        bar.set_style(Self::style("  epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})"));
        bar.set_prefix(if self.epochs > 0 {
            format!("{}/{}", epoch + 1, self.epochs)
        } else {
            (epoch + 1).to_string()
        });
        self.work = Some(bar);
    }

    fn step(&mut self, _step: usize, loss: f64) {
        if let Some(b) = &self.work {
            b.inc(1);
            if b.position().is_multiple_of(8) {
                b.set_message(format!("loss {loss:.4}"));
            }
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        self.clear_work();
        if let Some(v) = &r.valid {
            let recall = v.get(&MetricKey::RECALL_20).copied().unwrap_or(f64::NAN);
            tracing::info!("epoch {} loss {:.5} valid {} {recall:.4}", r.epoch + 1, r.loss, MetricKey::RECALL_20);
        }
    }

    fn validation_start(&mut self) {
        crate::util::release_free_memory();
    }
}

impl ExperimentObserver for GridBars {
    fn grid(&mut self, total: usize, done: usize) {
        let Some(m) = &self.multi else { return };
        let bar = m.add(ProgressBar::new(total as u64));
        bar.set_style(Self::style("cells [{bar:30}] {pos}/{len} {wide_msg} ({elapsed})"));
        bar.set_position(done as u64);
        bar.enable_steady_tick(Duration::from_millis(500));
        self.grid = Some(bar);
        if done > 0 {
            self.log(format!("resuming: {done} of {total} cells already finished"));
        }
    }

    fn stage(&mut self, label: &str, epochs: usize) {
        self.epochs = epochs;
        tracing::info!("{label}");
        if let Some(g) = &self.grid {
            g.set_message(label.to_string());
        }
    }

    fn cached(&mut self, label: &str) {
        tracing::info!("reusing cached {label}");
    }

    fn cell(&mut self, row: &ResultRow, skipped: bool) {
        if skipped {
            return;
        }
        if let Some(g) = &self.grid {
            g.inc(1);
        }
        self.log(format!(
            "{} / {} / {} / seed {} / {}: Recall@20 {:.4}, removed-edge score {:.3}, MI-NG {:.3}, {:.2}s",
            row.dataset,
            row.model,
            row.protocol,
            row.seed,
            row.method,
            row.get("recall@20"),
            row.get("removed_after"),
            row.get("mi_ng"),
            row.get("unlearn_secs"),
        ));
    }

    fn stream(&mut self, label: &str, requests: usize) {
        self.log(format!("stream {label}: {requests} requests"));
    }

    fn stream_step(&mut self, row: &StreamRow) {
        let mut line = format!(
            "  {} after {} requests ({} edges): Recall@20 {:.4}, removed-edge score {:.3}",
            row.method, row.step, row.edges, row.recall, row.removed_score
        );
        if row.members.is_finite() {
            line += &format!(", called members {:.3}, top-20 agreement {:.3}", row.members, row.agreement_top20);
        }
        if row.exposure_share.is_finite() {
            line += &format!(", spam exposure {:.3}", row.exposure_share);
        }
        if row.method == "unlearnrec" {
            line += &format!(" ({:.2}s)", row.secs);
        }
        self.log(line);
    }
}
