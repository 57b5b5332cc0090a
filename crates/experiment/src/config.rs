//! The experiment file: the grid (datasets × models × protocols × fractions × methods × seeds) and the
//! configurations handed to training, pre-training, fine-tuning and the baselines.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use unlearnrec_core::error::{Error, Result};
use unlearnrec_core::model::{ModelConfig, ModelKind, model_names};
use unlearnrec_core::train::TrainConfig;
use unlearnrec_core::unlearn::baselines::{FinetuneOnlyConfig, GradientAscentConfig, InfluenceConfig, ShardConfig};
use unlearnrec_core::unlearn::method::{MethodOptions, json};
use unlearnrec_core::unlearn::protocol::Protocol;
use unlearnrec_core::unlearn::scenario::{DEFAULT_SENSITIVE_SHARE, DEFAULT_SUBSET_FRACTION, Scenario};
use unlearnrec_core::unlearn::{FinetuneConfig, MethodId, PretrainConfig};

/// How a cell's request is drawn: one of the [`Protocol`]s, or the adversarial protocol of
/// [`unlearnrec_core::unlearn::poison`] (least-related edges injected before training, then forgotten).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolSpec {
    /// A request of `fraction` of the training edges drawn by [`unlearnrec_core::unlearn::protocol::make_request`].
    Standard(Protocol),
    /// The injected least-related edges: the dataset is poisoned with a model trained on clean data, the
    /// backbone is trained on the poisoned data, and the request is every injected edge (`fraction` is
    /// not used).
    Adversarial,
}

impl ProtocolSpec {
    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolSpec::Standard(p) => p.name(),
            ProtocolSpec::Adversarial => "adversarial",
        }
    }
}

impl fmt::Display for ProtocolSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProtocolSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("adversarial") {
            return Ok(ProtocolSpec::Adversarial);
        }
        s.parse::<Protocol>().map(ProtocolSpec::Standard).map_err(|_| {
            Error::config(
                "protocols",
                format!(
                    "unknown protocol {s:?}; expected one of random, users, items, popular (alias core), tail (alias edge), adversarial"
                ),
            )
        })
    }
}

/// An unlearning method of the grid: a registered method ([`unlearnrec_core::unlearn::method::METHODS`], by
/// its name), or one of the runner's two presets of one. Everything a method needs from the experiment
/// file comes through the registry: its options ([`ExperimentConfig::method_options`], from `[finetune]`
/// and `[baselines.*]`), their check and their part of the cell hash, and whether it needs an unlearner
/// (`[pretrain]`) or a sharded model (`[baselines.sisa]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MethodSpec {
    /// A registered method with the experiment's options. `retrain` is exact retraining from scratch
    /// ([`unlearnrec_core::unlearn::retrain`]); with `audit = true` its model is the reference every cell
    /// of the group is audited against. A method that needs a sharded model (`sisa`): the runner trains
    /// (and caches) a sharded model of the cell's backbone kind on the cell's training data
    /// (`[baselines.sisa]`) and the method forgets from it, not from the single backbone the other
    /// methods start from, so its quality before unlearning differs (see the `sharded_*` columns of its
    /// rows).
    Method(MethodId),
    /// `retrain-seed2`: a second exact retrain with another training seed (the checkpoint's
    /// `train.seed + 1`, through [`unlearnrec_core::unlearn::retrain_seeded`]): the noise floor. It is
    /// audited against the first retrain like every other method (it is never the reference), so its
    /// `agreement_top20`, `agreement_kl` and attacker figures are how far two exact retrains differ: the
    /// best any method can do.
    RetrainSeed2,
    /// `unlearnrec-zero-shot`: UnlearnRec's encoder pass alone ([`unlearnrec_core::unlearn::unlearn`] with 0
    /// fine-tuning epochs).
    UnlearnrecZeroShot,
}

impl MethodSpec {
    /// Exact retraining: the audit's reference.
    pub const RETRAIN: MethodSpec = MethodSpec::Method(MethodId::RETRAIN);
    /// UnlearnRec: encoder pass plus the `[finetune]` epochs.
    pub const UNLEARNREC: MethodSpec = MethodSpec::Method(MethodId::UNLEARNREC);
    /// The presets, each after the method it is a preset of.
    const PRESETS: [MethodSpec; 2] = [MethodSpec::RetrainSeed2, MethodSpec::UnlearnrecZeroShot];

    /// The registered method called `name` (exactly). In a constant, an unregistered name does not compile.
    ///
    /// # Panics
    /// When no method is registered as `name` ([`MethodId::of`]).
    pub const fn registered(name: &str) -> MethodSpec {
        MethodSpec::Method(MethodId::of(name))
    }

    /// Every method: the registered ones in registry order, each followed by its presets.
    pub fn all() -> Vec<MethodSpec> {
        MethodId::all()
            .flat_map(|m| {
                let presets = MethodSpec::PRESETS.into_iter().filter(move |p| p.method() == m);
                std::iter::once(MethodSpec::Method(m)).chain(presets)
            })
            .collect()
    }

    /// The name used in files.
    pub fn name(self) -> &'static str {
        match self {
            MethodSpec::Method(m) => m.name(),
            MethodSpec::RetrainSeed2 => "retrain-seed2",
            MethodSpec::UnlearnrecZeroShot => "unlearnrec-zero-shot",
        }
    }

    /// The registered method it runs: `retrain-seed2` is a preset of `retrain`, `unlearnrec-zero-shot`
    /// one of `unlearnrec`.
    pub fn method(self) -> MethodId {
        match self {
            MethodSpec::Method(m) => m,
            MethodSpec::RetrainSeed2 => MethodId::RETRAIN,
            MethodSpec::UnlearnrecZeroShot => MethodId::UNLEARNREC,
        }
    }

    /// Whether it retrains from scratch (`retrain`, `retrain-seed2`): the methods that need no embeddings
    /// of the backbone.
    pub fn is_retrain(self) -> bool {
        self.method() == MethodId::RETRAIN
    }

    /// The training seed of [`MethodSpec::RetrainSeed2`] for a backbone trained with `seed`.
    pub fn second_retrain_seed(seed: u64) -> u64 {
        seed.wrapping_add(1)
    }

    /// Whether it needs a pre-trained unlearner ([`MethodInfo::needs_unlearner`](unlearnrec_core::unlearn::method::MethodInfo::needs_unlearner)).
    pub fn needs_unlearner(self) -> bool {
        self.method().info().needs_unlearner
    }

    /// Whether it forgets from a sharded model ([`MethodInfo::needs_shards`](unlearnrec_core::unlearn::method::MethodInfo::needs_shards)).
    pub fn needs_shards(self) -> bool {
        self.method().info().needs_shards
    }
}

impl From<MethodId> for MethodSpec {
    fn from(m: MethodId) -> Self {
        MethodSpec::Method(m)
    }
}

impl fmt::Display for MethodSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for MethodSpec {
    type Err = Error;

    /// A registered method by name or alias ([`MethodId::named`]), or a preset (`zero-shot` and
    /// `unlearnrec-zeroshot` name `unlearnrec-zero-shot`); case, surrounding space and `_` for `-` do not
    /// matter.
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let norm = match norm.as_str() {
            "zero-shot" | "unlearnrec-zeroshot" => "unlearnrec-zero-shot",
            n => n,
        };
        if let Some(p) = MethodSpec::PRESETS.into_iter().find(|p| p.name() == norm) {
            return Ok(p);
        }
        MethodId::named(norm).map(MethodSpec::Method).map_err(|_| {
            let names: Vec<&str> = MethodSpec::all().into_iter().map(MethodSpec::name).collect();
            Error::config("methods", format!("unknown method {s:?}; expected one of {}", names.join(", ")))
        })
    }
}

/// Which held-out split the stream tracks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamSplit {
    /// The checkpoint's validation edges (the default: the test split stays untouched).
    #[default]
    Valid,
    /// The dataset's test split.
    Test,
}

/// `[stream]`: many small requests applied one after another with UnlearnRec (from the anchor: each
/// request joins everything removed since the last exact model), measured at every `checkpoint_every`
/// requests against an exact retrain on the union of the requests so far and a second retrain seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// Requests per stream.
    pub requests: usize,
    /// How requests are drawn, one stream each: the scenarios `user-subset`, `account`,
    /// `sensitive-items`, `spam` (one fake account per request, the backbone trained on the data with
    /// `requests` injected accounts), or a protocol (`random`, `users`, `items`, `popular`, `tail`:
    /// `fraction` of the current training edges per request).
    #[serde(alias = "protocol", deserialize_with = "one_or_many")]
    pub scenarios: Vec<String>,
    /// `user-subset`: the share of the user's items (default 0.3); a protocol: the share of the current
    /// training edges (default 0.001).
    pub fraction: Option<f64>,
    /// `sensitive-items`: the share of the catalogue marked sensitive.
    pub share: f64,
    /// `spam`: target items promoted by every fake account.
    pub spam_targets: usize,
    /// `spam`: popular filler items per fake account.
    pub spam_filler: usize,
    /// Measure (and retrain on the union so far) after every this many requests, and after the last.
    #[serde(alias = "retrain_every")]
    pub checkpoint_every: usize,
    /// Also retrain with a second seed at each measurement (the noise floor).
    pub seed2: bool,
    /// Apply each request with the fast path ([`FinetuneConfig::fast`]: no fine-tuning epoch, a quarter of
    /// the encoder's change, 50 calibration steps at twice the rate; the default) instead of `[finetune]`.
    pub fast: bool,
    /// Fine-tuning epochs per request, overriding the fast path's or `[finetune]`'s.
    pub finetune_epochs: Option<usize>,
    /// Consolidate (exact retrain of the current model, then the unlearner pre-trained again: a new
    /// anchor) when the edges removed since the anchor exceed this share of the anchor's training
    /// edges; 0 never.
    pub consolidate_share: f64,
    /// The split whose Recall@20/NDCG@20 is tracked.
    pub split: StreamSplit,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            requests: 100,
            scenarios: vec!["user-subset".into()],
            fraction: None,
            share: DEFAULT_SENSITIVE_SHARE,
            spam_targets: 5,
            spam_filler: 20,
            checkpoint_every: 25,
            seed2: true,
            fast: true,
            finetune_epochs: None,
            consolidate_share: 0.0,
            split: StreamSplit::Valid,
        }
    }
}

/// How the requests of one stream are drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamScenario {
    /// A scenario of single-user requests ([`unlearnrec_core::unlearn::scenario`]); for `spam` the fake
    /// accounts are filled in once they are injected.
    Scenario(Scenario),
    /// A protocol: `fraction` of the current training edges per request.
    Protocol(Protocol, f64),
}

impl StreamScenario {
    /// The name in files.
    pub fn name(&self) -> String {
        match self {
            StreamScenario::Scenario(s) => s.name().to_string(),
            StreamScenario::Protocol(p, _) => p.to_string(),
        }
    }
}

impl StreamConfig {
    /// The streams' scenarios, parsed.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unknown name or `adversarial`.
    pub fn parsed(&self) -> Result<Vec<StreamScenario>> {
        self.scenarios
            .iter()
            .map(|name| {
                let n = name.trim().to_ascii_lowercase();
                Ok(match n.as_str() {
                    "user-subset" => StreamScenario::Scenario(Scenario::UserSubset {
                        fraction: self.fraction.unwrap_or(DEFAULT_SUBSET_FRACTION),
                    }),
                    "account" => StreamScenario::Scenario(Scenario::Account),
                    "sensitive-items" => StreamScenario::Scenario(Scenario::SensitiveItems { share: self.share }),
                    "spam" => StreamScenario::Scenario(Scenario::Spam { fake_users: Vec::new() }),
                    _ => match n.parse::<Protocol>() {
                        Err(_) => {
                            return Err(Error::config(
                                "stream.scenarios",
                                format!(
                                    "unknown scenario {name:?}; expected one of user-subset, account, \
                                     sensitive-items, spam, random, users, items, popular, tail"
                                ),
                            ));
                        }
                        Ok(p) => StreamScenario::Protocol(p, self.fraction.unwrap_or(0.001)),
                    },
                })
            })
            .collect()
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if self.requests == 0 {
            return Err(Error::config("stream.requests", "must be at least 1"));
        }
        if self.scenarios.is_empty() {
            return Err(Error::config("stream.scenarios", "must name at least one scenario"));
        }
        if let Some(f) = self.fraction
            && !(f > 0.0 && f <= 1.0)
        {
            return Err(Error::config("stream.fraction", format!("must be in (0, 1], got {f}")));
        }
        if !(self.share > 0.0 && self.share <= 1.0) {
            return Err(Error::config("stream.share", format!("must be in (0, 1], got {}", self.share)));
        }
        if self.spam_targets == 0 {
            return Err(Error::config("stream.spam_targets", "must be at least 1"));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::config("stream.checkpoint_every", "must be at least 1"));
        }
        if !(self.consolidate_share >= 0.0 && self.consolidate_share < 1.0) {
            return Err(Error::config(
                "stream.consolidate_share",
                format!("must be in [0, 1), got {}", self.consolidate_share),
            ));
        }
        let parsed = self.parsed()?;
        if parsed.iter().any(|s| matches!(s, StreamScenario::Protocol(_, f) if *f >= 1.0)) {
            return Err(Error::config("stream.fraction", "a protocol's share of the edges must be below 1"));
        }
        Ok(())
    }
}

/// `[baselines.*]`: the configurations of the baseline methods (their own defaults when absent; the
/// seed is always the cell's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselinesConfig {
    /// `[baselines.finetune]`.
    pub finetune: FinetuneOnlyConfig,
    /// `[baselines.gradient_ascent]`.
    pub gradient_ascent: GradientAscentConfig,
    /// `[baselines.influence]`.
    pub influence: InfluenceConfig,
    /// `[baselines.sisa]`: `shards`, `partition` (`"user"`: RecEraser's balanced user groups, or
    /// `"random"`: SISA's hashed edges), `kmeans_iters` and `pretrain_epochs` (user partition),
    /// `aggregation` (`"own"`, `"mean"` or `"attention"`) and `attention_epochs` of the sharded model; the
    /// backbone kind, `[model]` and `[train]` (seed included) are the cell's.
    pub sisa: ShardConfig,
}

/// `fraction = 0.01` or `fraction = [0.01, 0.05]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
enum Fractions {
    One(f64),
    Many(Vec<f64>),
}

impl<'de> Deserialize<'de> for Fractions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fractions;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a list of numbers")
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Fractions, E> {
                Ok(Fractions::One(v))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Fractions, E> {
                Ok(Fractions::One(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Fractions, E> {
                Ok(Fractions::One(v as f64))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Fractions, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<f64>()? {
                    v.push(x);
                }
                Ok(Fractions::Many(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The file as written; [`ExperimentConfig::from_toml_str`] resolves the names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    datasets: Vec<String>,
    models: Vec<String>,
    protocols: Vec<String>,
    fraction: Fractions,
    methods: Vec<String>,
    seeds: Vec<u64>,
    audit: bool,
    poison_ratio: f64,
    model: ModelConfig,
    train: TrainConfig,
    pretrain: PretrainConfig,
    finetune: FinetuneConfig,
    baselines: BaselinesConfig,
    stream: Option<StreamConfig>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = ExperimentConfig::default();
        Self {
            datasets: Vec::new(),
            models: d.models.iter().map(|m| m.name().to_string()).collect(),
            protocols: d.protocols.iter().map(|p| p.name().to_string()).collect(),
            fraction: Fractions::Many(d.fractions),
            methods: d.methods.iter().map(|m| m.name().to_string()).collect(),
            seeds: d.seeds,
            audit: d.audit,
            poison_ratio: d.poison_ratio,
            model: d.model,
            train: d.train,
            pretrain: d.pretrain,
            finetune: d.finetune,
            baselines: d.baselines,
            stream: None,
        }
    }
}

/// A resolved experiment (see the [module docs](super) for the file format).
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentConfig {
    /// Dataset paths (relative to the working directory), or `synth` for the built-in synthetic dataset.
    pub datasets: Vec<String>,
    /// Backbones; each replaces `model.kind`.
    pub models: Vec<ModelKind>,
    /// Request protocols.
    pub protocols: Vec<ProtocolSpec>,
    /// Request sizes, each in `(0, 1)` (not used by `adversarial`).
    pub fractions: Vec<f64>,
    /// Methods.
    pub methods: Vec<MethodSpec>,
    /// Seeds: each sets the training, pre-training, fine-tuning, request and poisoning seeds of its cells.
    pub seeds: Vec<u64>,
    /// Audit every cell (membership inference, agreement with the retrained model of the same cell).
    pub audit: bool,
    /// Share of users (and of items) that get a least-related edge under `adversarial`, in `(0, 1]`.
    pub poison_ratio: f64,
    /// `[model]` (its `kind` is replaced by each of `models`).
    pub model: ModelConfig,
    /// `[train]` (its `seed` is replaced by each of `seeds`).
    pub train: TrainConfig,
    /// `[pretrain]`.
    pub pretrain: PretrainConfig,
    /// `[finetune]`: UnlearnRec's fine-tuning (`unlearnrec-zero-shot` uses 0 epochs).
    pub finetune: FinetuneConfig,
    /// `[baselines.*]`.
    pub baselines: BaselinesConfig,
    /// `[stream]`, when present.
    pub stream: Option<StreamConfig>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            datasets: Vec::new(),
            models: vec![ModelConfig::default().kind],
            protocols: vec![ProtocolSpec::Standard(Protocol::Random)],
            fractions: vec![0.01],
            methods: vec![MethodSpec::RETRAIN, MethodSpec::UnlearnrecZeroShot, MethodSpec::UNLEARNREC],
            seeds: vec![1],
            audit: false,
            poison_ratio: 0.5,
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            pretrain: PretrainConfig::default(),
            finetune: FinetuneConfig::default(),
            baselines: BaselinesConfig::default(),
            stream: None,
        }
    }
}

fn parse_all<T: FromStr<Err = Error>>(names: &[String]) -> Result<Vec<T>> {
    names.iter().map(|s| s.parse()).collect()
}

fn no_repeats<T: PartialEq + fmt::Debug>(field: &str, v: &[T]) -> Result<()> {
    for (k, x) in v.iter().enumerate() {
        if v[..k].contains(x) {
            return Err(Error::config(field, format!("{x:?} is listed twice")));
        }
    }
    Ok(())
}

impl ExperimentConfig {
    /// Parses and validates an experiment file's text; `path` names it in errors.
    ///
    /// # Errors
    /// [`Error::Format`] with the line of a TOML error (unknown keys included, named with the keys
    /// expected); [`Error::InvalidConfig`] naming the field of a bad value (unknown protocol, model or
    /// method, a fraction outside `(0, 1)`, …).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            Error::format(path, line, e.message().trim().to_string())
        })?;
        let fractions = match raw.fraction {
            Fractions::One(f) => vec![f],
            Fractions::Many(v) => v,
        };
        let models = raw
            .models
            .iter()
            .map(|s| {
                s.parse::<ModelKind>().map_err(|_| {
                    Error::config(
                        "models",
                        format!("unknown model {s:?}; expected one of {}", model_names().join(", ")),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let cfg = Self {
            datasets: raw.datasets,
            models,
            protocols: parse_all(&raw.protocols)?,
            fractions,
            methods: parse_all(&raw.methods)?,
            seeds: raw.seeds,
            audit: raw.audit,
            poison_ratio: raw.poison_ratio,
            model: raw.model,
            train: raw.train,
            pretrain: raw.pretrain,
            finetune: raw.finetune,
            baselines: raw.baselines,
            stream: raw.stream,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates an experiment file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read; otherwise as [`ExperimentConfig::from_toml_str`].
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml_str(&text, path)
    }

    /// Checks the grid and every table; nothing is allocated or written before this passes.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for (field, empty) in [
            ("datasets", self.datasets.is_empty()),
            ("models", self.models.is_empty()),
            ("protocols", self.protocols.is_empty()),
            ("fraction", self.fractions.is_empty()),
            ("methods", self.methods.is_empty() && self.stream.is_none()),
            ("seeds", self.seeds.is_empty()),
        ] {
            if empty {
                return Err(Error::config(field, "must list at least one value"));
            }
        }
        for &f in &self.fractions {
            if !(f > 0.0 && f < 1.0) {
                return Err(Error::config("fraction", format!("must be in (0, 1), got {f}")));
            }
        }
        no_repeats("datasets", &self.datasets)?;
        no_repeats("models", &self.models)?;
        no_repeats("protocols", &self.protocols)?;
        no_repeats("fraction", &self.fractions)?;
        no_repeats("methods", &self.methods)?;
        no_repeats("seeds", &self.seeds)?;
        let without_embeddings = self.models.iter().find(|k| !k.architecture().learns_embeddings());
        if let Some(k) = without_embeddings
            && self.methods.iter().any(|m| !m.is_retrain())
        {
            return Err(Error::config(
                "models",
                format!(
                    "{k} has no embeddings to unlearn; only the retrain methods (retrain, retrain-seed2) apply to it"
                ),
            ));
        }
        if !(self.poison_ratio > 0.0 && self.poison_ratio <= 1.0) {
            return Err(Error::config("poison_ratio", format!("must be in (0, 1], got {}", self.poison_ratio)));
        }
        for &kind in &self.models {
            self.model_config(kind).validate()?;
        }
        self.train.validate()?;
        if self.methods.iter().any(|m| m.needs_unlearner()) || self.stream.is_some() {
            self.pretrain.validate()?;
        }
        let ft = &self.finetune;
        if ft.batch_size == 0 {
            return Err(Error::config("finetune.batch_size", "must be at least 1"));
        }
        for (k, v) in [("finetune.lr", ft.lr), ("finetune.align_temp", ft.align_temp)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(Error::config(k, "must be positive"));
            }
        }
        for &m in &self.methods {
            (m.method().info().check)(&self.method_options(m, 0))?;
            if m.needs_shards() {
                self.baselines.sisa.validate().map_err(|e| match e {
                    Error::InvalidConfig { field, reason } => {
                        let field = field.strip_prefix("shards.").unwrap_or(&field);
                        Error::config(format!("baselines.sisa.{field}"), reason)
                    }
                    e => e,
                })?;
            }
        }
        if let Some(s) = &self.stream {
            s.validate()?;
            if let Some(k) = without_embeddings {
                return Err(Error::config(
                    "stream",
                    format!("the stream unlearns with UnlearnRec, which {k} cannot use"),
                ));
            }
        }
        Ok(())
    }

    /// `[model]` with `kind`.
    pub fn model_config(&self, kind: ModelKind) -> ModelConfig {
        ModelConfig { kind, ..self.model.clone() }
    }

    /// `[train]` with `seed`.
    pub fn train_config(&self, seed: u64) -> TrainConfig {
        TrainConfig { seed, ..self.train.clone() }
    }

    /// `[pretrain]` with `seed`.
    pub fn pretrain_config(&self, seed: u64) -> PretrainConfig {
        PretrainConfig { seed, ..self.pretrain.clone() }
    }

    /// `[finetune]` with `seed`; 0 epochs for the zero-shot method.
    pub fn finetune_config(&self, method: MethodSpec, seed: u64) -> FinetuneConfig {
        let epochs = if method == MethodSpec::UnlearnrecZeroShot { 0 } else { self.finetune.epochs };
        FinetuneConfig { seed, epochs, ..self.finetune.clone() }
    }

    /// The options `method` is built with for a cell of `seed`, from `[finetune]` and `[baselines.*]` (the
    /// seed is always the cell's; the unlearner and the shards are the runner's). The presets are options:
    /// `retrain-seed2` sets the training seed to `seed + 1`, `unlearnrec-zero-shot` 0 fine-tuning epochs.
    pub fn method_options(&self, method: MethodSpec, seed: u64) -> MethodOptions<'static> {
        let b = &self.baselines;
        MethodOptions {
            unlearner: None,
            finetune: self.finetune_config(method, seed),
            retrain_seed: (method == MethodSpec::RetrainSeed2).then(|| MethodSpec::second_retrain_seed(seed)),
            finetune_only: FinetuneOnlyConfig { seed, ..b.finetune.clone() },
            gradient_ascent: GradientAscentConfig { seed, ..b.gradient_ascent.clone() },
            influence: InfluenceConfig { seed, ..b.influence.clone() },
            shards: None,
        }
    }

    /// The configuration of `method` as JSON, the part of a cell's [`config hash`](hash_json) that
    /// belongs to the method: `[pretrain]` when it needs an unlearner, `[baselines.sisa]` when it needs a
    /// sharded model, and its own options ([`MethodInfo::options_json`](unlearnrec_core::unlearn::method::MethodInfo::options_json)
    /// of [`ExperimentConfig::method_options`]); one of them alone, an array of several, `null` for none.
    pub fn method_json(&self, method: MethodSpec, seed: u64) -> serde_json::Value {
        let info = method.method().info();
        let mut parts = Vec::new();
        if info.needs_unlearner {
            parts.push(json(&self.pretrain_config(seed)));
        }
        if info.needs_shards {
            parts.push(json(&self.baselines.sisa));
        }
        let own = (info.options_json)(&self.method_options(method, seed));
        if !own.is_null() {
            parts.push(own);
        }
        match parts.len() {
            0 => serde_json::Value::Null,
            1 => parts.remove(0),
            _ => serde_json::Value::Array(parts),
        }
    }
}

/// The first 16 hex digits of the SHA-256 of `value`'s JSON: the key of cached files and of finished
/// cells.
pub fn hash_json(value: &impl Serialize) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&json);
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ExperimentConfig> {
        ExperimentConfig::from_toml_str(text, Path::new("exp.toml"))
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = parse(
            r#"
datasets = ["synth"]
models = ["lightgcn", "simgcl"]
protocols = ["random", "users", "core", "adversarial"]
fraction = [0.01, 0.05]
methods = ["retrain", "unlearnrec-zero-shot", "unlearnrec", "gradient-ascent", "sisa"]
seeds = [1, 2]
audit = true
poison_ratio = 0.3

[model]
dim = 16

[train]
epochs = 3

[pretrain]
epochs = 2

[finetune]
epochs = 1

[baselines.gradient_ascent]
steps = 4

[baselines.sisa]
shards = 8
partition = "random"

[stream]
requests = 5
fraction = 0.002
retrain_every = 2
"#,
        )
        .unwrap();
        assert_eq!(cfg.models, vec![ModelKind::LightGcn, ModelKind::SimGcl]);
        assert_eq!(cfg.protocols[2], ProtocolSpec::Standard(Protocol::Popular));
        assert_eq!(cfg.protocols[3], ProtocolSpec::Adversarial);
        assert_eq!(cfg.fractions, vec![0.01, 0.05]);
        assert_eq!(cfg.methods[1], MethodSpec::UnlearnrecZeroShot);
        assert_eq!(cfg.model_config(ModelKind::SimGcl).dim, 16);
        assert_eq!(cfg.train_config(7).seed, 7);
        assert_eq!(cfg.finetune_config(MethodSpec::UnlearnrecZeroShot, 1).epochs, 0);
        assert_eq!(cfg.baselines.gradient_ascent.steps, 4);
        assert_eq!(cfg.methods[4], MethodSpec::registered("sisa"));
        assert_eq!(
            cfg.baselines.sisa,
            ShardConfig {
                shards: 8,
                partition: unlearnrec_core::unlearn::baselines::Partition::Random,
                ..Default::default()
            }
        );
        assert_eq!(cfg.stream.as_ref().unwrap().checkpoint_every, 2);
        // A single fraction and the defaults.
        let cfg = parse("datasets = [\"synth\"]\nfraction = 0.02\n").unwrap();
        assert_eq!(cfg.fractions, vec![0.02]);
        assert_eq!(cfg.methods, ExperimentConfig::default().methods);
        assert_eq!(cfg.baselines.sisa, ShardConfig::default());
    }

    #[test]
    fn every_grid_method_is_a_registered_method_and_every_registered_method_is_in_the_grid() {
        use unlearnrec_core::unlearn::method::{method_info, method_names};
        for m in MethodSpec::all() {
            assert_eq!(method_info(m.method().name()).unwrap().name, m.method().name(), "{m}");
        }
        for name in method_names() {
            assert_eq!(name.parse::<MethodSpec>().unwrap().method().name(), name);
        }
    }

    #[test]
    fn the_second_retrain_parses() {
        for name in ["retrain-seed2", "retrain_seed2", " Retrain-Seed2 "] {
            assert_eq!(name.parse::<MethodSpec>().unwrap(), MethodSpec::RetrainSeed2, "{name}");
        }
        assert_eq!(MethodSpec::RetrainSeed2.to_string(), "retrain-seed2");
        assert!(MethodSpec::all().contains(&MethodSpec::RetrainSeed2));
        let m = MethodSpec::RetrainSeed2;
        assert!(!m.needs_unlearner() && m.is_retrain());
        assert_eq!(MethodSpec::second_retrain_seed(7), 8);
        let cfg = parse("datasets = [\"synth\"]\nmethods = [\"retrain\", \"retrain-seed2\"]\naudit = true\n").unwrap();
        assert_eq!(cfg.methods, vec![MethodSpec::RETRAIN, MethodSpec::RetrainSeed2]);
        // An exact retrain applies to pop as well.
        let cfg = parse("datasets = [\"synth\"]\nmodels = [\"pop\"]\nmethods = [\"retrain-seed2\"]\n").unwrap();
        assert_eq!(cfg.methods, vec![MethodSpec::RetrainSeed2]);
        let msg = parse("datasets = [\"synth\"]\nmethods = [\"retrain-seed3\"]\n").unwrap_err().to_string();
        assert!(msg.contains("retrain-seed2"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = parse("datasets = [\"synth\"]\nfractions = 0.1\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Format { line: 2, .. }), "{msg}");
        assert!(msg.contains("unknown field `fractions`") && msg.contains("`fraction`"), "{msg}");
        let msg = parse("datasets = [\"synth\"]\n[train]\nepoch = 3\n").unwrap_err().to_string();
        assert!(msg.contains("exp.toml:3") && msg.contains("unknown field `epoch`"), "{msg}");
        let msg = parse("datasets = [\"synth\"]\n[stream]\nrequest = 3\n").unwrap_err().to_string();
        assert!(msg.contains("unknown field `request`"), "{msg}");
        let msg = parse("datasets = [\"synth\"]\n[baselines.sisa]\nshard = 3\n").unwrap_err().to_string();
        assert!(
            msg.contains("exp.toml:3") && msg.contains("unknown field `shard`") && msg.contains("`shards`"),
            "{msg}"
        );
        let msg = parse("datasets = [\"synth\"]\n[baselines.sisa]\npartition = \"items\"\n").unwrap_err().to_string();
        assert!(msg.contains("exp.toml:3") && msg.contains("`user`") && msg.contains("`random`"), "{msg}");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (text, field, needle) in [
            ("fraction = 1.5", "fraction", "(0, 1), got 1.5"),
            ("fraction = [0.01, 0]", "fraction", "got 0"),
            ("methods = [\"retrain\", \"forget-harder\"]", "methods", "unknown method \"forget-harder\""),
            ("protocols = [\"hubs\"]", "protocols", "adversarial"),
            ("models = [\"gcn\"]", "models", "lightgcn"),
            ("seeds = []", "seeds", "at least one"),
            ("methods = [\"retrain\", \"retrain\"]", "methods", "twice"),
            ("methods = [\"sisa\"]\n[baselines.sisa]\nshards = 0", "baselines.sisa.shards", "at least 1"),
            ("methods = [\"sisa\"]\n[baselines.sisa]\nkmeans_iters = 0", "baselines.sisa.kmeans_iters", "at least 1"),
            ("methods = [\"sisa\"]\nmodels = [\"pop\"]", "models", "only the retrain"),
            ("poison_ratio = 0", "poison_ratio", "(0, 1]"),
            ("[stream]\nfraction = 2.0", "stream.fraction", "(0, 1]"),
            ("[stream]\nprotocol = \"adversarial\"", "stream.scenarios", "unknown scenario"),
            ("[stream]\nscenarios = [\"user-subset\", \"gdpr\"]", "stream.scenarios", "sensitive-items"),
            ("[stream]\ncheckpoint_every = 0", "stream.checkpoint_every", "at least 1"),
            ("[stream]\nconsolidate_share = 1.0", "stream.consolidate_share", "[0, 1)"),
        ] {
            let err = parse(&format!("datasets = [\"synth\"]\n{text}\n")).unwrap_err();
            let msg = err.to_string();
            assert!(
                matches!(&err, Error::InvalidConfig { field: f, .. } if f == field) && msg.contains(needle),
                "{text}: {msg}"
            );
        }
        let msg = parse("methods = [\"retrain\"]").unwrap_err().to_string();
        assert!(msg.contains("`datasets`"), "{msg}");
    }

    #[test]
    fn hashes_follow_the_configuration() {
        let cfg = ExperimentConfig { datasets: vec!["synth".into()], ..Default::default() };
        let a = hash_json(&cfg.method_json(MethodSpec::UNLEARNREC, 1));
        assert_eq!(a.len(), 16);
        assert_eq!(a, hash_json(&cfg.method_json(MethodSpec::UNLEARNREC, 1)));
        assert_ne!(a, hash_json(&cfg.method_json(MethodSpec::UNLEARNREC, 2)));
        assert_ne!(a, hash_json(&cfg.method_json(MethodSpec::UnlearnrecZeroShot, 1)));
        // The second retrain hashes apart from the first (and follows the seed).
        let retrain = hash_json(&cfg.method_json(MethodSpec::RETRAIN, 1));
        let seed2 = hash_json(&cfg.method_json(MethodSpec::RetrainSeed2, 1));
        assert_ne!(retrain, seed2);
        assert_ne!(seed2, hash_json(&cfg.method_json(MethodSpec::RetrainSeed2, 2)));
        let sisa = hash_json(&cfg.method_json(MethodSpec::registered("sisa"), 1));
        let mut more = cfg.clone();
        more.baselines.sisa.shards += 1;
        assert_ne!(sisa, hash_json(&more.method_json(MethodSpec::registered("sisa"), 1)));
    }

    #[test]
    fn the_grid_accepts_every_registered_method_and_the_presets_and_refuses_others() {
        let mut names: Vec<&str> = MethodId::all().map(MethodId::name).collect();
        names.extend(["retrain-seed2", "unlearnrec-zero-shot"]);
        let list = names.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
        let cfg = parse(&format!("datasets = [\"synth\"]\nmethods = [{list}]\n")).unwrap();
        assert_eq!(cfg.methods.iter().map(|m| m.name()).collect::<Vec<_>>(), names);
        let mut all: Vec<&str> = MethodSpec::all().into_iter().map(MethodSpec::name).collect();
        all.sort_unstable();
        names.sort_unstable();
        assert_eq!(all, names);
        for m in MethodSpec::all() {
            assert_eq!(m.name().parse::<MethodSpec>().unwrap(), m);
            assert_eq!(m.needs_unlearner(), m.method().info().needs_unlearner, "{m}");
        }
        let err = parse("datasets = [\"synth\"]\nmethods = [\"retrain\", \"forget-harder\"]\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(&err, Error::InvalidConfig { field, .. } if field == "methods"), "{msg}");
        assert!(msg.contains("unknown method \"forget-harder\""), "{msg}");
        for n in &names {
            assert!(msg.contains(n), "{n}: {msg}");
        }
    }

    /// A cell's hash is what it was when every method had its own arm: finished cells of earlier runs
    /// are still found.
    #[test]
    fn method_hashes_are_those_of_the_per_method_configurations() {
        let mut cfg = ExperimentConfig { datasets: vec!["synth".into()], ..Default::default() };
        cfg.baselines.gradient_ascent.steps = 7;
        let b = &cfg.baselines;
        fn j(v: &impl Serialize) -> serde_json::Value {
            serde_json::to_value(v).unwrap()
        }
        for (m, want) in [
            (MethodSpec::RETRAIN, serde_json::Value::Null),
            (MethodSpec::RetrainSeed2, serde_json::json!({ "train_seed": 4 })),
            (MethodSpec::registered("sisa"), j(&b.sisa)),
            (MethodSpec::UNLEARNREC, j(&(cfg.pretrain_config(3), cfg.finetune_config(MethodSpec::UNLEARNREC, 3)))),
            (
                MethodSpec::UnlearnrecZeroShot,
                j(&(cfg.pretrain_config(3), cfg.finetune_config(MethodSpec::UnlearnrecZeroShot, 3))),
            ),
            (MethodSpec::registered("finetune"), j(&FinetuneOnlyConfig { seed: 3, ..b.finetune.clone() })),
            (
                MethodSpec::registered("gradient-ascent"),
                j(&GradientAscentConfig { seed: 3, ..b.gradient_ascent.clone() }),
            ),
            (MethodSpec::registered("influence"), j(&InfluenceConfig { seed: 3, ..b.influence.clone() })),
        ] {
            assert_eq!(cfg.method_json(m, 3), want, "{m}");
        }
    }

    #[test]
    fn the_shipped_example_experiments_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if (name.starts_with("exp-") || name.starts_with("stream-")) && name.ends_with(".toml") {
                let cfg = ExperimentConfig::from_toml_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!cfg.datasets.is_empty(), "{name}");
                n += 1;
            }
        }
        assert!(n >= 8, "expected the example experiments and streams in {}", dir.display());
    }
}
