//! Forgetting methods behind one interface: the [`ForgetMethod`] trait and the registry [`METHODS`].
//!
//! Every method takes the checkpoint to forget from, a request (internal ids, as
//! [`super::request::Request::resolve`] returns it) and an [`Observer`], and returns the new checkpoint
//! and its [`UnlearnReport`] ([`Forgotten`]). Its options are fixed when it is built from
//! [`MethodOptions`] by [`forget_method`], by name. The CLI (`unlearnrec unlearn --method`), the experiment
//! runner and the service all build and call methods this way.
//!
//! Adding a method: a file with its function and a `build` function from [`MethodOptions`] (a new field
//! there when it has options of its own) that wraps it in a [`Plain`] (or a type of its own implementing
//! [`ForgetMethod`] when it returns more than a checkpoint and a report, as `sisa` does), plus one line in
//! [`METHODS`] (name, prose name, help, needs, `build`, the `check` and JSON of its options). Its file
//! names it with a [`MethodId`] constant (`MethodId::of("its-name")`, checked when compiled) for its
//! report (the receipt's `method`) and the provenance of the checkpoints it writes; nothing else lists
//! the methods: checkpoints, receipts, `unlearnrec unlearn --method` and an experiment's `methods = [...]`
//! all resolve names through [`METHODS`]. Options of its own also need their flags (CLI) and their
//! `[baselines.*]` table (experiment), which fill the new [`MethodOptions`] field.
//!
//! ```
//! use unlearnrec_core::data::Interactions;
//! use unlearnrec_core::data::synthetic::{SynthConfig, generate};
//! use unlearnrec_core::model::{ModelConfig, ModelKind};
//! use unlearnrec_core::train::{Silent, TrainConfig};
//! use unlearnrec_core::unlearn::method::{MethodOptions, forget_method};
//!
//! let ds = generate(&SynthConfig { users: 40, items: 30, interactions: 500, ..Default::default() }).unwrap();
//! let model = ModelConfig { kind: ModelKind::Mf, dim: 8, ..ModelConfig::default() };
//! let train = TrainConfig { epochs: 2, batch_size: 128, lr: 1e-2, ..TrainConfig::default() };
//! let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &model, &train, &mut Silent).unwrap();
//! let request = Interactions::from_pairs(ckpt.edges().iter().take(5).collect()).0;
//! let method = forget_method("gradient-ascent", &MethodOptions::default()).unwrap();
//! let out = method.forget(&ckpt, &request, &mut Silent).unwrap();
//! assert!(request.iter().all(|(u, i)| !out.checkpoint.edges().contains(u, i)));
//! assert!(forget_method("bogus", &MethodOptions::default()).is_err());
//! ```

use std::borrow::Cow;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::baselines::{
    FinetuneOnlyConfig, GradientAscentConfig, InfluenceConfig, ShardSet, finetune, gradient_ascent, influence, sisa,
};
use super::{FinetuneConfig, UnlearnReport, Unlearner};
use crate::checkpoint::Checkpoint;
use crate::data::Interactions;
use crate::error::{Error, Result};
use crate::train::Observer;

/// A forgetting method with its options.
pub trait ForgetMethod {
    /// Its registry name ([`METHODS`]).
    fn name(&self) -> &'static str;

    /// How many epochs `forget` reports to its observer for `ckpt` (progress only; 0 when it reports none).
    fn epochs(&self, _ckpt: &Checkpoint) -> usize {
        0
    }

    /// Forgets `request` (internal ids: training and validation edges of `ckpt`) and returns the new
    /// checkpoint and its report.
    ///
    /// # Errors
    /// The method's: an invalid request or configuration, a model it cannot update, a diverged loss.
    fn forget(&self, ckpt: &Checkpoint, request: &Interactions, obs: &mut dyn Observer) -> Result<Forgotten>;
}

/// What a [`ForgetMethod`] returns.
pub struct Forgotten {
    /// The unlearned checkpoint (graph: the remaining graph; removed edges: the request added).
    pub checkpoint: Checkpoint,
    /// What it measured.
    pub report: UnlearnReport,
    /// The new sub-models behind `checkpoint` when the method keeps a sharded model (`sisa`), to be saved
    /// with it ([`Forgotten::save`]) so that the result can forget again.
    pub shards: Option<ShardSet>,
}

impl Forgotten {
    /// Saves the checkpoint atomically, with its shards when there are any ([`sisa::save`]).
    ///
    /// # Errors
    /// I/O.
    pub fn save(&self, path: &Path) -> Result<()> {
        match &self.shards {
            Some(s) => sisa::save(path, &self.checkpoint, s),
            None => self.checkpoint.save(path),
        }
    }
}

/// Everything a method may be built with; each method reads its own fields and ignores the others.
#[derive(Clone, Default)]
pub struct MethodOptions<'a> {
    /// `unlearnrec`: the pre-trained unlearner of the checkpoint (required).
    pub unlearner: Option<&'a Unlearner>,
    /// `unlearnrec`: fine-tuning and calibration after the encoder pass.
    pub finetune: FinetuneConfig,
    /// `retrain`: the training seed (`None`: the checkpoint's own).
    pub retrain_seed: Option<u64>,
    /// `finetune`.
    pub finetune_only: FinetuneOnlyConfig,
    /// `gradient-ascent`.
    pub gradient_ascent: GradientAscentConfig,
    /// `influence`.
    pub influence: InfluenceConfig,
    /// `sisa`: the sub-models behind the (sharded) checkpoint (required; see [`sisa::load`]).
    pub shards: Option<&'a ShardSet>,
}

/// Builds a method from the options.
pub type Build = for<'a> fn(&MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>>;

/// Checks the options a method reads, before anything runs ([`MethodInfo::check`]).
pub type Check = for<'a> fn(&MethodOptions<'a>) -> Result<()>;

/// The options a method reads as JSON ([`MethodInfo::options_json`]).
pub type OptionsJson = for<'a> fn(&MethodOptions<'a>) -> serde_json::Value;

/// A registered method.
pub struct MethodInfo {
    /// Its name (`unlearnrec unlearn --method NAME`, `methods = [...]` of an experiment).
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// Its name in prose (`forgot … with {display}`: the [`fmt::Display`] of its [`MethodId`]).
    pub display: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Whether it needs [`MethodOptions::unlearner`].
    pub needs_unlearner: bool,
    /// Whether it needs [`MethodOptions::shards`] (a checkpoint trained with `--shards`).
    pub needs_shards: bool,
    /// Its constructor.
    pub build: Build,
    /// Checks the options it reads (its own table of [`MethodOptions`]; not the resources `build` needs).
    pub check: Check,
    /// The options it reads, as JSON (`Null`: none): the part of an experiment's cell hash that is the
    /// method's own, besides the unlearner's and the shards' configurations.
    pub options_json: OptionsJson,
}

/// Every method, once.
pub const METHODS: &[MethodInfo] = &[
    MethodInfo {
        name: "unlearnrec",
        aliases: &[],
        display: "UnlearnRec",
        about: "The pre-trained influence encoder plus fine-tuning",
        needs_unlearner: true,
        needs_shards: false,
        build: unlearnrec,
        check: no_check,
        options_json: |o| json(&o.finetune),
    },
    MethodInfo {
        name: "retrain",
        aliases: &[],
        display: "exact retraining",
        about: "Exact: retrain from scratch on the remaining data",
        needs_unlearner: false,
        needs_shards: false,
        build: retrain,
        check: no_check,
        options_json: |o| o.retrain_seed.map_or(serde_json::Value::Null, |s| serde_json::json!({ "train_seed": s })),
    },
    MethodInfo {
        name: "finetune",
        aliases: &[],
        display: "fine-tuning",
        about: "Fine-tune the backbone on the remaining data only, without the encoder",
        needs_unlearner: false,
        needs_shards: false,
        build: finetune::build,
        check: |o| o.finetune_only.validate(),
        options_json: |o| json(&o.finetune_only),
    },
    MethodInfo {
        name: "gradient-ascent",
        aliases: &["neggrad", "neg-grad"],
        display: "gradient ascent",
        about: "NegGrad+: descend on the remaining data, bounded ascent on the removed edges",
        needs_unlearner: false,
        needs_shards: false,
        build: gradient_ascent::build,
        check: |o| o.gradient_ascent.validate(),
        options_json: |o| json(&o.gradient_ascent),
    },
    MethodInfo {
        name: "influence",
        aliases: &[],
        display: "an influence step",
        about: "One influence-function Newton step on the rows near the request",
        needs_unlearner: false,
        needs_shards: false,
        build: influence::build,
        check: |o| o.influence.validate(),
        options_json: |o| json(&o.influence),
    },
    MethodInfo {
        name: "sisa",
        aliases: &["receraser"],
        display: "SISA",
        about: "SISA / RecEraser: retrain the shards that held removed edges (a `train --shards` checkpoint)",
        needs_unlearner: false,
        needs_shards: true,
        build: sisa::build,
        check: no_check,
        options_json: |_| serde_json::Value::Null,
    },
];

/// The registered names, in registry order.
pub fn method_names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

/// The registered method called `name` (or one of its aliases; case, surrounding space and `_` for `-`
/// do not matter).
///
/// # Errors
/// [`Error::InvalidConfig`] (field `method`) naming every registered method.
pub fn method_info(name: &str) -> Result<&'static MethodInfo> {
    let norm = name.trim().to_ascii_lowercase().replace('_', "-");
    METHODS.iter().find(|m| m.name == norm || m.aliases.contains(&norm.as_str())).ok_or_else(|| {
        Error::config("method", format!("unknown method {name:?}; expected one of {}", method_names().join(", ")))
    })
}

/// A registered method: what a report, a receipt and a checkpoint's provenance name. Copied and compared
/// by name; its [`MethodInfo`] has the rest.
///
/// Serialized as its name in snake case ([`MethodId::key`]: `gradient_ascent`, the spelling of every
/// checkpoint and receipt written so far); read from that or the name itself. Displayed as
/// [`MethodInfo::display`].
#[derive(Clone, Copy)]
pub struct MethodId(&'static MethodInfo);

impl MethodId {
    /// UnlearnRec ([`super::unlearn`]).
    pub const UNLEARNREC: MethodId = MethodId::of("unlearnrec");
    /// Exact retraining ([`super::retrain`]).
    pub const RETRAIN: MethodId = MethodId::of("retrain");

    /// The method registered as `name` (exactly; no alias). In a constant, an unregistered name does not
    /// compile.
    ///
    /// # Panics
    /// When no method is registered as `name`.
    pub const fn of(name: &str) -> MethodId {
        let mut i = 0;
        while i < METHODS.len() {
            if const_eq(METHODS[i].name, name) {
                return MethodId(&METHODS[i]);
            }
            i += 1;
        }
        panic!("no method is registered under this name in unlearn::method::METHODS")
    }

    /// The method called `name` ([`method_info`]: aliases, case and `_` for `-` accepted).
    ///
    /// # Errors
    /// As [`method_info`].
    pub fn named(name: &str) -> Result<MethodId> {
        method_info(name).map(MethodId)
    }

    /// Every registered method, in registry order.
    pub fn all() -> impl Iterator<Item = MethodId> {
        METHODS.iter().map(MethodId)
    }

    /// Its registry entry.
    pub const fn info(self) -> &'static MethodInfo {
        self.0
    }

    /// Its registry name.
    pub const fn name(self) -> &'static str {
        self.0.name
    }

    /// Its name in files: the registry name with `_` for `-`.
    pub fn key(self) -> Cow<'static, str> {
        match self.0.name.contains('-') {
            true => Cow::Owned(self.0.name.replace('-', "_")),
            false => Cow::Borrowed(self.0.name),
        }
    }
}

/// Byte equality of two strings, in a constant.
const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

impl PartialEq for MethodId {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for MethodId {}

impl std::hash::Hash for MethodId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.name.hash(state);
    }
}

impl fmt::Debug for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MethodId").field(&self.0.name).finish()
    }
}

impl fmt::Display for MethodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.display)
    }
}

impl Serialize for MethodId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.key())
    }
}

impl<'de> Deserialize<'de> for MethodId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        let name = s.replace('_', "-");
        METHODS.iter().find(|m| m.name == name).map(MethodId).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown method {s:?}; expected one of {}",
                METHODS.iter().map(|m| MethodId(m).key()).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// The [`MethodInfo::check`] of a method whose options need none.
pub fn no_check(_: &MethodOptions<'_>) -> Result<()> {
    Ok(())
}

/// `value` as JSON, for [`MethodInfo::options_json`] (`Null` if it cannot be: no option type fails).
pub fn json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

/// Builds the method called `name` with `opts`.
///
/// # Errors
/// An unknown name ([`method_info`]), or options the method cannot use (an `unlearnrec` without
/// unlearner, a `sisa` without shards).
pub fn forget_method<'a>(name: &str, opts: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    (method_info(name)?.build)(opts)
}

/// The function of a [`Plain`] method.
pub type Run<C> = fn(&Checkpoint, &Interactions, &C, &mut dyn Observer) -> Result<(Checkpoint, UnlearnReport)>;

/// A method that is a function of the checkpoint, the request, its configuration `C` and the observer;
/// every registered method is one.
pub struct Plain<C> {
    /// Its registry name.
    pub name: &'static str,
    /// Its configuration.
    pub cfg: C,
    /// The function.
    pub run: Run<C>,
    /// The epochs it reports to its observer ([`ForgetMethod::epochs`]).
    pub epochs: fn(&C, &Checkpoint) -> usize,
}

impl<C> ForgetMethod for Plain<C> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn epochs(&self, ckpt: &Checkpoint) -> usize {
        (self.epochs)(&self.cfg, ckpt)
    }

    fn forget(&self, ckpt: &Checkpoint, request: &Interactions, obs: &mut dyn Observer) -> Result<Forgotten> {
        let (checkpoint, report) = (self.run)(ckpt, request, &self.cfg, obs)?;
        Ok(Forgotten { checkpoint, report, shards: None })
    }
}

/// UnlearnRec ([`super::unlearn`]) with [`MethodOptions::unlearner`] (required) and
/// [`MethodOptions::finetune`]: the encoder pass, then `finetune.epochs` of fine-tuning and the calibration
/// phase.
fn unlearnrec<'a>(o: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    let unlearner = o
        .unlearner
        .ok_or_else(|| Error::config("unlearner", "unlearnrec needs a pre-trained unlearner (unlearnrec pretrain)"))?;
    Ok(Box::new(Plain {
        name: MethodId::UNLEARNREC.name(),
        cfg: (unlearner, o.finetune.clone()),
        run: |ckpt, request, (un, ft), obs| super::unlearn(ckpt, un, request, ft, obs),
        epochs: |(_, ft), _| ft.epochs,
    }))
}

/// Exact retraining ([`super::retrain_seeded`]) with the checkpoint's configuration and
/// [`MethodOptions::retrain_seed`] (`None`: the checkpoint's own seed, [`super::retrain`]).
fn retrain<'a>(o: &MethodOptions<'a>) -> Result<Box<dyn ForgetMethod + 'a>> {
    Ok(Box::new(Plain {
        name: MethodId::RETRAIN.name(),
        cfg: o.retrain_seed,
        run: |ckpt, request, seed, obs| {
            super::retrain_seeded(ckpt, request, seed.unwrap_or(ckpt.meta().train.seed), obs)
        },
        epochs: |_, ckpt| ckpt.meta().train.epochs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synthetic::{SynthConfig, generate};
    use crate::model::{ModelConfig, ModelKind};
    use crate::train::{Silent, TrainConfig};
    use crate::unlearn::baselines::{self, Partition, ShardConfig, train_sharded};
    use crate::unlearn::{PretrainConfig, pretrain, retrain, unlearn};

    #[test]
    fn the_registry_finds_every_method_by_name_and_alias_and_refuses_others() {
        let names = method_names();
        assert_eq!(names, ["unlearnrec", "retrain", "finetune", "gradient-ascent", "influence", "sisa"]);
        for n in &names {
            assert_eq!(method_info(n).unwrap().name, *n);
        }
        assert_eq!(method_info("receraser").unwrap().name, "sisa");
        assert_eq!(method_info(" Gradient_Ascent ").unwrap().name, "gradient-ascent");
        assert_eq!(method_info("neggrad").unwrap().name, "gradient-ascent");
        let opts = MethodOptions::default();
        for n in ["retrain", "finetune", "gradient-ascent", "influence"] {
            assert_eq!(forget_method(n, &opts).unwrap().name(), n);
        }
        let msg = forget_method("bogus", &opts).err().expect("unknown").to_string();
        assert!(msg.contains("\"bogus\""), "{msg}");
        for n in &names {
            assert!(msg.contains(n), "{msg}");
        }
        // Methods that need a resource say so instead of failing later.
        let msg = forget_method("unlearnrec", &opts).err().expect("no unlearner").to_string();
        assert!(msg.contains("unlearner"), "{msg}");
        let msg = forget_method("sisa", &opts).err().expect("no shards").to_string();
        assert!(msg.contains("shard"), "{msg}");
        // Names are distinct, aliases too.
        let mut all: Vec<&str> =
            METHODS.iter().flat_map(|m| std::iter::once(m.name).chain(m.aliases.iter().copied())).collect();
        all.sort_unstable();
        let n = all.len();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    /// Every method round-trips through its name in files, which is its registry name in snake case (the
    /// spelling of format-1 checkpoints and of receipts), and reads from the registry name as well.
    #[test]
    fn every_method_round_trips_through_its_serialized_name() {
        let keys: Vec<String> =
            MethodId::all().map(|m| serde_json::to_value(m).unwrap().as_str().unwrap().into()).collect();
        assert_eq!(keys, ["unlearnrec", "retrain", "finetune", "gradient_ascent", "influence", "sisa"]);
        for (m, info) in MethodId::all().zip(METHODS) {
            assert_eq!(m.info().name, info.name);
            assert_eq!(MethodId::of(info.name), m);
            assert_eq!(MethodId::named(info.name).unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("{:?}", info.name.replace('-', "_")));
            assert_eq!(serde_json::from_str::<MethodId>(&json).unwrap(), m);
            assert_eq!(serde_json::from_value::<MethodId>(info.name.into()).unwrap(), m);
            assert_eq!(m.to_string(), info.display);
            assert!(!info.display.is_empty());
        }
        // The prose names of messages (`forgot … with {method}`) are those of the former enum.
        let prose: Vec<String> = MethodId::all().map(|m| m.to_string()).collect();
        assert_eq!(
            prose,
            ["UnlearnRec", "exact retraining", "fine-tuning", "gradient ascent", "an influence step", "SISA"]
        );
        assert_eq!(MethodId::RETRAIN.name(), "retrain");
        assert_eq!(MethodId::UNLEARNREC.name(), "unlearnrec");
        let err = serde_json::from_str::<MethodId>("\"neggrad\"").unwrap_err().to_string();
        assert!(err.contains("unknown method") && err.contains("gradient_ascent"), "{err}");
    }

    /// A method's options check and JSON read its own table only.
    #[test]
    fn every_method_checks_and_records_its_own_options() {
        let ok = MethodOptions::default();
        for m in METHODS {
            (m.check)(&ok).unwrap_or_else(|e| panic!("{}: {e}", m.name));
        }
        let bad = MethodOptions {
            finetune_only: FinetuneOnlyConfig { epochs: 0, ..Default::default() },
            gradient_ascent: GradientAscentConfig { steps: 0, ..Default::default() },
            influence: InfluenceConfig { cg_iters: 0, ..Default::default() },
            ..Default::default()
        };
        for m in METHODS {
            let refused = (m.check)(&bad).is_err();
            assert_eq!(refused, ["finetune", "gradient-ascent", "influence"].contains(&m.name), "{}", m.name);
        }
        assert_eq!((MethodId::RETRAIN.info().options_json)(&ok), serde_json::Value::Null);
        let seeded = MethodOptions { retrain_seed: Some(4), ..Default::default() };
        assert_eq!((MethodId::RETRAIN.info().options_json)(&seeded), serde_json::json!({ "train_seed": 4 }));
        assert_eq!((MethodId::UNLEARNREC.info().options_json)(&ok), json(&ok.finetune));
    }

    fn same(a: &(Checkpoint, UnlearnReport), b: &Forgotten) {
        assert_eq!(a.0.model().base_vec().unwrap(), b.checkpoint.model().base_vec().unwrap());
        assert_eq!(
            (a.0.edges(), a.0.valid(), a.0.removed()),
            (b.checkpoint.edges(), b.checkpoint.valid(), b.checkpoint.removed())
        );
        assert_eq!(a.0.meta().provenance, b.checkpoint.meta().provenance);
        assert_eq!(a.0.meta().train, b.checkpoint.meta().train);
        let (r, s) = (&a.1, &b.report);
        assert_eq!((r.method, r.edges, r.users, r.items), (s.method, s.edges, s.users, s.items));
        assert_eq!((&r.forgetting, &r.valid, &r.valid_recall), (&s.forgetting, &s.valid, &s.valid_recall));
        assert_eq!(r.solver_residual, s.solver_residual);
        let mut phases: Vec<&String> = r.phase_secs.keys().collect();
        let mut others: Vec<&String> = s.phase_secs.keys().collect();
        phases.sort();
        others.sort();
        assert_eq!(phases, others);
    }

    /// Every registered method through the trait gives what its function gives, to the bit.
    #[test]
    fn every_method_through_the_trait_matches_its_function() {
        let ds = generate(&SynthConfig { users: 60, items: 40, interactions: 900, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 8, layers: 2, ..Default::default() };
        let tc = TrainConfig { epochs: 2, batch_size: 256, eval_every: 2, seed: 7, ..Default::default() };
        let (ckpt, _) = crate::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        let pc = PretrainConfig { epochs: 1, batch_size: 256, max_steps_per_epoch: Some(2), ..Default::default() };
        let un = pretrain(&ckpt, &pc, &mut Silent).unwrap();
        let request = Interactions::from_pairs(ckpt.edges().iter().step_by(19).collect()).0;
        let ft = FinetuneConfig { epochs: 1, batch_size: 256, calibration_steps: 5, ..Default::default() };
        let ga = GradientAscentConfig { steps: 3, ..Default::default() };
        let inf = InfluenceConfig { cg_iters: 5, ..Default::default() };
        let fo = FinetuneOnlyConfig { epochs: 1, seed: 5 };
        let sc = ShardConfig { shards: 2, partition: Partition::Random, ..ShardConfig::default() };
        let (sharded, _) = train_sharded(&ds, &mc, &tc, &sc, &mut Silent).unwrap();
        let opts = MethodOptions {
            unlearner: Some(&un),
            finetune: ft.clone(),
            retrain_seed: None,
            finetune_only: fo.clone(),
            gradient_ascent: ga.clone(),
            influence: inf.clone(),
            shards: Some(&sharded.shards),
        };
        let run = |name: &str, opts: &MethodOptions<'_>, c: &Checkpoint| {
            forget_method(name, opts).unwrap().forget(c, &request, &mut Silent).unwrap()
        };
        same(&unlearn(&ckpt, &un, &request, &ft, &mut Silent).unwrap(), &run("unlearnrec", &opts, &ckpt));
        same(&retrain(&ckpt, &request, &mut Silent).unwrap(), &run("retrain", &opts, &ckpt));
        let seeded = MethodOptions { retrain_seed: Some(8), ..opts.clone() };
        same(&super::super::retrain_seeded(&ckpt, &request, 8, &mut Silent).unwrap(), &run("retrain", &seeded, &ckpt));
        same(&baselines::finetune(&ckpt, &request, &fo, &mut Silent).unwrap(), &run("finetune", &opts, &ckpt));
        same(
            &baselines::gradient_ascent(&ckpt, &request, &ga, &mut Silent).unwrap(),
            &run("gradient-ascent", &opts, &ckpt),
        );
        same(&baselines::influence(&ckpt, &request, &inf, &mut Silent).unwrap(), &run("influence", &opts, &ckpt));
        let (direct, report) = baselines::sisa(&sharded, &request, &mut Silent).unwrap();
        let via = run("sisa", &opts, &sharded.checkpoint);
        let shards = via.shards.as_ref().expect("sisa returns its shards");
        assert_eq!(shards.meta, direct.shards.meta);
        for (a, b) in shards.models.iter().zip(&direct.shards.models) {
            assert_eq!(a.base_vec().unwrap(), b.base_vec().unwrap());
        }
        same(&(direct.checkpoint, report), &via);
        // SISA refuses a checkpoint that is not the one its shards serve.
        let err = forget_method("sisa", &opts).unwrap().forget(&ckpt, &request, &mut Silent).err().expect("mismatch");
        assert!(err.to_string().contains("shard"), "{err}");
    }
}
