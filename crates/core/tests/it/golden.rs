//! The reference's own numbers on a tiny graph (`../shared/golden/unlearnrec_tiny.json`, float64), compared
//! with this f32 port element by element at 1e-5 relative: LightGCN/SimGCL forwards, the influence encoder
//! forward, every loss term and the gradients with respect to `H⁰` and `w`.
//!
//! Without the file the tests print why and skip, unless `UNLEARNREC_GOLDEN` or `CI` is set: then they fail.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde_json::Value;
use unlearnrec_core::data::Interactions;
use unlearnrec_core::graph::{Graph, NormAdj, SparseMat};
use unlearnrec_core::model::loss::bpr;
use unlearnrec_core::model::{Backbone, ModelConfig, ModelKind};
use unlearnrec_core::tensor::{SpMat, bpr_stacked};
use unlearnrec_core::unlearn::objective::{UnlearnLoss, align_loss, contrast_loss, unlearn_loss};
use unlearnrec_core::unlearn::{Encoder, EncoderConfig};

/// The golden file: `$UNLEARNREC_GOLDEN`, else the workspace's `shared/golden` copy. `None` (skip, with the
/// reason printed) when it cannot be read, unless it is required.
fn golden() -> Option<Value> {
    let set = std::env::var("UNLEARNREC_GOLDEN").ok();
    let required = set.is_some() || std::env::var_os("CI").is_some();
    let path = set.unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/golden/unlearnrec_tiny.json").to_string()
    });
    read_golden(&path, required)
}

/// Reads the golden file at `path`; an unreadable file panics when `required`, else prints why and skips.
fn read_golden(path: &str, required: bool) -> Option<Value> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(serde_json::from_str(&s).expect("golden file is JSON")),
        Err(e) if required => panic!("golden file {path}: {e} (required: UNLEARNREC_GOLDEN or CI is set)"),
        Err(e) => {
            println!("skipping golden test: {path}: {e} (set UNLEARNREC_GOLDEN or CI to make this an error)");
            None
        }
    }
}

fn flat(v: &Value) -> (Vec<usize>, Vec<f64>) {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            Value::Number(n) => out.push(n.as_f64().expect("number")),
            _ => panic!("unexpected {v}"),
        }
    }
    let shape = v["shape"].as_array().expect("shape").iter().map(|x| x.as_u64().expect("dim") as usize).collect();
    let mut data = Vec::new();
    walk(&v["data"], &mut data);
    (shape, data)
}

fn tensor(v: &Value) -> Tensor {
    let (shape, data) = flat(v);
    let data: Vec<f32> = data.into_iter().map(|x| x as f32).collect();
    Tensor::from_vec(data, shape, &Device::Cpu).expect("tensor")
}

fn edges(v: &Value) -> Interactions {
    let pairs =
        v.as_array().expect("edges").iter().map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_u64().unwrap() as u32));
    Interactions::from_pairs(pairs.collect()).0
}

/// An element-wise tolerance: `|got − want| <= atol + rtol·|want|` for every entry.
#[derive(Clone, Copy, Debug)]
struct Tol {
    atol: f64,
    rtol: f64,
}

/// Tensors (embeddings, layers, gradients; entries up to ~6): 1e-5 relative, plus 2e-7 absolute (about two
/// f32 ulps at 1) for entries that come out of cancellations of O(1) terms. On the golden file the largest
/// error beyond 1e-5·|want| is 2.4e-8 (`lightgcn remaining`); the largest relative error is 6e-5, on an entry
/// of 1.8e-4 (`dalign_v2/dw`).
const TENSOR: Tol = Tol { atol: 2e-7, rtol: 1e-5 };
/// Loss terms: relative only (the largest error is 9e-7 relative, `align_v2`).
const SCALAR: Tol = Tol { atol: 0.0, rtol: 1e-5 };

#[track_caller]
fn close(got: &Tensor, want: &Value, tol: Tol, what: &str) {
    let (_, w) = flat(want);
    let g: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(g.len(), w.len(), "{what}: length");
    for (k, (a, b)) in g.iter().zip(&w).enumerate() {
        let err = ((*a as f64) - b).abs();
        assert!(err <= tol.atol + tol.rtol * b.abs(), "{what}[{k}]: got {a}, want {b} (|error| {err:.3e}, {tol:?})");
    }
}

#[track_caller]
fn close_scalar(got: &Tensor, want: f64, tol: Tol, what: &str) {
    let g = got.to_scalar::<f32>().unwrap() as f64;
    assert!((g - want).abs() <= tol.atol + tol.rtol * want.abs(), "{what}: got {g}, want {want} ({tol:?})");
}

struct Case {
    g: Value,
    nu: usize,
    ni: usize,
    full: SpMat,
    pk: SpMat,
    idm: SpMat,
    request: Interactions,
    backbone: Backbone,
}

fn case(kind: ModelKind) -> Option<Case> {
    let g = golden()?;
    let i = &g["inputs"];
    let (nu, ni) = (i["n_users"].as_u64().unwrap() as usize, i["n_items"].as_u64().unwrap() as usize);
    let train = edges(&i["train_edges"]);
    let request = edges(&i["request_edges"]);
    let graph = Graph::from_interactions(nu, ni, &train);
    let full = SpMat::from_norm_adj(&NormAdj::from_graph(&graph));
    let pk = SpMat::from_norm_adj(&NormAdj::from_graph(&graph.remove(&request)));
    let idm = SpMat::from_norm_adj(&NormAdj::idm(nu, ni, &request));
    let (_, e0) = flat(&i["E0"]);
    let cfg = ModelConfig { kind, dim: 4, layers: 3, reg: 1e-7, ..ModelConfig::default() };
    let backbone = Backbone::from_embeddings(cfg, nu, ni, e0.iter().map(|&x| x as f32).collect()).unwrap();
    Some(Case { g, nu, ni, full, pk, idm, request, backbone })
}

fn encoder(c: &Case) -> Encoder {
    let enc = Encoder::new(EncoderConfig::default(), c.nu + c.ni, 4, 3).unwrap();
    enc.h0.set(&tensor(&c.g["inputs"]["H0"])).unwrap();
    enc.w.set(&tensor(&c.g["inputs"]["w"])).unwrap();
    enc
}

fn dropped(c: &Case) -> Vec<SpMat> {
    let n = c.nu + c.ni;
    c.g["graph"]["idm_dropped_per_layer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let (_, d) = flat(m);
            let d: Vec<f32> = d.into_iter().map(|x| x as f32).collect();
            SpMat::new(Arc::new(SparseMat::from_dense(n, n, &d)))
        })
        .collect()
}

#[test]
fn lightgcn_and_simgcl_forwards_match_the_reference() {
    let Some(c) = case(ModelKind::LightGcn) else { return };
    let e0 = c.backbone.base().as_tensor().clone();
    let layers = c.backbone.layers(&c.full, &e0).unwrap();
    for (l, want) in c.g["lightgcn"]["full_layers"].as_array().unwrap().iter().enumerate() {
        close(&layers[l], want, TENSOR, &format!("lightgcn layer {l}"));
    }
    close(&c.backbone.forward(&c.full, &e0).unwrap(), &c.g["lightgcn"]["full_final"], TENSOR, "lightgcn final");
    close(&c.backbone.forward(&c.pk, &e0).unwrap(), &c.g["lightgcn"]["remaining_final"], TENSOR, "lightgcn remaining");
    let s = case(ModelKind::SimGcl).unwrap();
    let e0 = s.backbone.base().as_tensor().clone();
    close(&s.backbone.forward(&s.full, &e0).unwrap(), &s.g["simgcl_eval"]["full_final"], TENSOR, "simgcl final");
    close(&s.backbone.forward(&s.pk, &e0).unwrap(), &s.g["simgcl_eval"]["remaining_final"], TENSOR, "simgcl remaining");
}

#[test]
fn encoder_forward_matches_the_reference() {
    let Some(c) = case(ModelKind::LightGcn) else { return };
    let ie = &c.g["ie_forward"];
    let e0 = c.backbone.base().as_tensor().clone();
    let e_fnl = c.backbone.forward(&c.full, &e0).unwrap();
    close(&e_fnl, &ie["E_fnl"], TENSOR, "E_fnl");
    let enc = encoder(&c);
    let drops = dropped(&c);
    let out = enc.forward(&c.idm, Some(&drops), &e_fnl, &c.pk).unwrap();
    for l in 0..3 {
        close(&out.h[l], &ie["H_layers"][l], TENSOR, &format!("H{}", l + 1));
        close(&out.h_dropped[l], &ie["H_dropped_layers"][l], TENSOR, &format!("H'{}", l + 1));
    }
    // With W = I and b = 0 the MLP is LeakyReLU applied twice; Δ before the MLP is checked through it.
    let e_tilde = (&e0 + &out.delta).unwrap();
    close(&e_tilde, &ie["E0_tilde"], TENSOR, "E0_tilde");
    // Fine-tuning's shortcut (the MLP input computed once) gives the same Δ, bit for bit.
    let x = enc.mlp_input(&c.idm, &e_fnl, &c.pk).unwrap();
    let delta = enc.mlp(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(delta, out.delta.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    close(&c.backbone.forward(&c.pk, &e_tilde).unwrap(), &ie["unlearned_final"], TENSOR, "unlearned_final");
    // The reference's own initial state: H⁰ = 0, w = 2·lr.
    let init = Encoder::new(EncoderConfig::default(), c.nu + c.ni, 4, 3).unwrap();
    let out = init.forward(&c.idm, None, &e_fnl, &c.pk).unwrap();
    let e_tilde = (&e0 + &out.delta).unwrap();
    close(&e_tilde, &c.g["ie_forward_reference_init"]["E0_tilde"], TENSOR, "E0_tilde at init");
    // SimGCL backbone.
    let s = case(ModelKind::SimGcl).unwrap();
    let e_fnl = s.backbone.forward(&s.full, &e0).unwrap();
    close(&e_fnl, &s.g["ie_forward_simgcl"]["E_fnl"], TENSOR, "simgcl E_fnl");
    let out = encoder(&s).forward(&s.idm, None, &e_fnl, &s.pk).unwrap();
    let e_tilde = (&e0 + &out.delta).unwrap();
    close(&e_tilde, &s.g["ie_forward_simgcl"]["E0_tilde"], TENSOR, "simgcl E0_tilde");
    close(
        &s.backbone.forward(&s.pk, &e_tilde).unwrap(),
        &s.g["ie_forward_simgcl"]["unlearned_final"],
        TENSOR,
        "simgcl unlearned",
    );
}

/// Loss terms of the reference's `cal_loss` (pre-training branch) on the recorded batch.
struct Terms {
    bpr: Tensor,
    unlearn: Tensor,
    align_sum: Tensor,
    ssl: Tensor,
    ssl_parts: Vec<(Tensor, Tensor)>,
}

/// How the encoder's pass is computed: composed from primitive ops ([`Encoder::forward`]), through the hops op
/// with the MLP and sum outside ([`Encoder::forward_rows`], the path of encoders `forward_table` does not fuse),
/// or all in one op ([`Encoder::forward_table`], pre-training's).
#[derive(Clone, Copy, Debug)]
enum Path {
    Composed,
    Rows,
    Table,
}

const PATHS: [Path; 3] = [Path::Composed, Path::Rows, Path::Table];

fn terms(c: &Case, enc: &Encoder, path: Path) -> Terms {
    let b = &c.g["inputs"]["batch"];
    let col = |k: &str| -> Vec<u32> { b[k].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    let (users, pos, neg) = (col("users"), col("pos_items"), col("neg_items"));
    let e0 = c.backbone.base().as_tensor().clone();
    let e_fnl = c.backbone.forward(&c.full, &e0).unwrap().detach();
    let drops = dropped(c);
    let nu = c.nu as u32;
    let mut uu = users.clone();
    uu.sort_unstable();
    uu.dedup();
    let mut ii: Vec<u32> = pos.iter().map(|x| x + nu).collect();
    ii.sort_unstable();
    ii.dedup();
    // The contrastive views (full tables, or the contrast nodes' rows) and the nodes' positions in them.
    let rows = [uu.clone(), ii.clone()].concat();
    let at = |v: &[u32]| v.iter().map(|r| rows.binary_search(r).unwrap() as u32).collect::<Vec<_>>();
    let (e_tilde, views, uu_at, ii_at) = match path {
        Path::Table => {
            let out = enc.forward_table(&c.idm, Some((&drops, &rows)), &e_fnl, &c.pk, &e0, None).unwrap();
            (out.e_tilde, out.views, at(&uu), at(&ii))
        }
        Path::Rows => {
            let out = enc.forward_rows(&c.idm, Some((&drops, &rows)), &e_fnl, &c.pk).unwrap();
            ((&e0 + &out.delta).unwrap(), out.views, at(&uu), at(&ii))
        }
        Path::Composed => {
            let out = enc.forward(&c.idm, Some(&drops), &e_fnl, &c.pk).unwrap();
            let views = out.h.into_iter().zip(out.h_dropped).collect();
            ((&e0 + &out.delta).unwrap(), views, uu.clone(), ii.clone())
        }
    };
    let fin = c.backbone.forward(&c.pk, &e_tilde).unwrap();
    let idx = |v: &[u32], off: u32| {
        Tensor::from_vec(v.iter().map(|x| x + off).collect::<Vec<_>>(), v.len(), &Device::Cpu).unwrap()
    };
    let (fu, fp, fng) = (
        fin.index_select(&idx(&users, 0), 0).unwrap(),
        fin.index_select(&idx(&pos, nu), 0).unwrap(),
        fin.index_select(&idx(&neg, nu), 0).unwrap(),
    );
    // The composed path checks the composed BPR; the fused paths the one op training runs, over the stacked
    // rows (users, positives, negatives).
    let bpr_t = match path {
        Path::Composed => bpr(&fu, &fp, &fng).unwrap(),
        Path::Rows | Path::Table => {
            let stacked: Vec<u32> = users.iter().copied().chain(pos.iter().chain(&neg).map(|i| i + nu)).collect();
            bpr_stacked(&fin.index_select(&idx(&stacked, 0), 0).unwrap(), users.len()).unwrap()
        }
    };
    let unlearn = unlearn_loss(&fin, c.nu, &c.request, UnlearnLoss::V1).unwrap();
    let tu = e_fnl.index_select(&idx(&users, 0), 0).unwrap();
    let tp = e_fnl.index_select(&idx(&pos, nu), 0).unwrap();
    let align_sum = (align_loss(&fu, &fp, &tu, &tp, 10.0).unwrap() * users.len() as f64).unwrap();
    let mut ssl_parts = Vec::new();
    let mut ssl = Tensor::new(0f32, &Device::Cpu).unwrap();
    for (h, hd) in &views {
        let a = contrast_loss(&h.detach(), hd, &uu_at, 1.0).unwrap();
        let bb = contrast_loss(&h.detach(), hd, &ii_at, 1.0).unwrap();
        ssl = ((ssl + &a).unwrap() + &bb).unwrap();
        ssl_parts.push((a, bb));
    }
    Terms { bpr: bpr_t, unlearn, align_sum, ssl, ssl_parts }
}

#[test]
fn loss_terms_match_the_reference() {
    let Some(c) = case(ModelKind::LightGcn) else { return };
    let l = &c.g["loss"];
    for path in PATHS {
        let t = terms(&c, &encoder(&c), path);
        // BPR and L_u use softplus instead of log(σ + 1e-10): equal to ~1e-9 here.
        close_scalar(&t.bpr, l["bpr"].as_f64().unwrap(), SCALAR, "bpr");
        close_scalar(&t.unlearn, l["unlearn_v1"].as_f64().unwrap(), SCALAR, "unlearn_v1");
        close_scalar(&t.align_sum, l["align_v2"].as_f64().unwrap(), SCALAR, "align_v2 (batch sum)");
        for (k, (u, i)) in t.ssl_parts.iter().enumerate() {
            close_scalar(u, l["ssl_per_layer"][k]["users"].as_f64().unwrap(), SCALAR, "ssl users");
            close_scalar(i, l["ssl_per_layer"][k]["items"].as_f64().unwrap(), SCALAR, "ssl items");
        }
        close_scalar(&t.ssl, l["ssl"].as_f64().unwrap(), SCALAR, "ssl");
    }
    // The regulariser of the frozen backbone is a constant: reg·‖E⁰‖².
    let reg = (c.backbone.base().as_tensor().sqr().unwrap().sum_all().unwrap() * 1e-7).unwrap();
    close_scalar(&reg, l["reg"].as_f64().unwrap(), SCALAR, "reg");
}

#[test]
fn gradients_wrt_h0_and_w_match_the_reference() {
    let Some(c) = case(ModelKind::LightGcn) else { return };
    let gr = &c.g["grads"];
    let enc = encoder(&c);
    let check = |name: &str, loss: &Tensor| {
        let grads = loss.backward().unwrap();
        let gh = grads.get(enc.h0.as_tensor()).expect("H0 gradient");
        close(gh, &gr[name]["H0"], TENSOR, &format!("d{name}/dH0"));
        match grads.get(enc.w.as_tensor()) {
            Some(gw) => close(gw, &gr[name]["w"], TENSOR, &format!("d{name}/dw")),
            None => {
                let (_, w) = flat(&gr[name]["w"]);
                assert!(w.iter().all(|x| x.abs() < 1e-12), "{name}: reference has a w gradient");
            }
        }
    };
    for path in PATHS {
        let t = terms(&c, &enc, path);
        check("bpr", &t.bpr);
        check("unlearn_v1", &t.unlearn);
        check("align_v2", &t.align_sum);
        check("ssl", &t.ssl);
        let total = (((&t.bpr + (&t.unlearn * 0.5).unwrap()).unwrap() + (&t.align_sum * 0.02).unwrap()).unwrap()
            + (&t.ssl * 1e-3).unwrap())
        .unwrap();
        check("total", &total);
    }
}

#[test]
fn the_comparator_rejects_a_small_entry_that_is_far_off_while_the_largest_is_right() {
    let want: Value = serde_json::json!({ "shape": [3], "data": [1000.0, 1.0, 1e-3] });
    let ok = Tensor::new(&[1000.0f32, 1.0, 1e-3], &Device::Cpu).unwrap();
    close(&ok, &want, TENSOR, "exact");
    // The smallest entry 100 % off (2e-3 for 1e-3) while the largest is right: must fail.
    let bad = Tensor::new(&[1000.0f32, 1.0, 2e-3], &Device::Cpu).unwrap();
    let caught =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| close(&bad, &want, TENSOR, "small entry off")));
    assert!(caught.is_err(), "a 100 % error on a small entry passed");
}

#[test]
fn a_missing_golden_file_skips_unless_required() {
    let missing = concat!(env!("CARGO_MANIFEST_DIR"), "/no/such/golden.json");
    assert!(read_golden(missing, false).is_none());
    assert!(std::panic::catch_unwind(|| read_golden(missing, true)).is_err(), "a required golden file was skipped");
}
