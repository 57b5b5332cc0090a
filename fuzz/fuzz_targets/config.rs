//! Fuzzes the TOML configuration files: `train --config` / `import --config` ([`RunConfig`]),
//! `pretrain --config` / `unlearn --config` (`[pretrain]` and `[finetune]` tables) and `experiment`
//! ([`ExperimentConfig`]), each parsed as the CLI parses it, validated, and (when valid) turned into the
//! per-cell configurations an experiment runs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use unlearnrec_core::pipeline::RunConfig;
use unlearnrec_core::unlearn::{FinetuneConfig, PretrainConfig};
use unlearnrec_experiment::ExperimentConfig;

/// The CLI's `pretrain`/`unlearn --config` file (a private type of the CLI, mirrored here).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(dead_code)]
struct UnlearnToml {
    pretrain: PretrainConfig,
    finetune: FinetuneConfig,
}

fuzz_target!(|data: &[u8]| {
    let Ok(tmp) = tempfile::tempdir() else { return };
    let path = tmp.path().join("config.toml");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(cfg) = RunConfig::from_toml_file(&path) {
        let _ = cfg.validate();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(u) = toml::from_str::<UnlearnToml>(text) {
            let _ = u.pretrain.validate();
            let _ = u.finetune.validate();
        }
    }
    if let Ok(cfg) = ExperimentConfig::from_toml_file(&path) {
        for &kind in &cfg.models {
            let _ = cfg.model_config(kind).validate();
        }
        for &seed in &cfg.seeds {
            let _ = cfg.train_config(seed).validate();
            let _ = cfg.pretrain_config(seed).validate();
            for &m in &cfg.methods {
                let _ = cfg.finetune_config(m, seed).validate();
                let _ = cfg.method_options(m, seed);
                let _ = cfg.method_json(m, seed);
            }
        }
        if let Some(s) = &cfg.stream {
            let _ = s.parsed();
        }
    }
});
