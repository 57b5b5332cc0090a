//! Fuzzes the HTTP API through its real router (tower `oneshot`, no socket) over a tiny trained model with
//! its SQLite ledger: what a client controls is the body of `POST /v1/forget`, the query of
//! `GET /v1/recommend`, the id of `GET /v1/forget/{id}`, and any method and path. No input may panic, and
//! none may get a 5xx status: the API answers every client mistake with a 4xx.
//!
//! The first byte picks the request: `0` a forget body, `1` a recommend query, `2` a status id, `3` a raw
//! `METHOD URI` line followed by a body. Every input is also given to [`parse_forget`] and the served
//! model's checks, the code `POST /v1/forget` runs before the ledger.
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::model::{ModelConfig, ModelKind};
use unlearnrec_core::train::{Silent, TrainConfig};
use unlearnrec_core::unlearn::{self, FinetuneConfig, PretrainConfig};
use unlearnrec_serve::api::{AppState, RateLimiter, parse_forget, router};
use unlearnrec_serve::ledger::Ledger;
use unlearnrec_serve::metrics::Metrics;
use unlearnrec_serve::store::{Served, Store, StoreConfig};
use unlearnrec_serve::worker::Kick;
use unlearnrec_serve::{Limits, Token};

const TOKEN: &str = "fuzz-token";

struct Service {
    _dir: tempfile::TempDir,
    _store: Mutex<Store>,
    served: Arc<ArcSwap<Served>>,
    app: Router,
    rt: tokio::runtime::Runtime,
}

fn service() -> &'static Service {
    static S: OnceLock<Service> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        // Users and items have the ids 0..12 and 0..10 (identity ids of the synthetic dataset).
        let ds = generate(&SynthConfig { users: 12, items: 10, interactions: 60, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 4, layers: 1, ..Default::default() };
        let tc = TrainConfig { epochs: 1, batch_size: 64, eval_every: 1, ..Default::default() };
        let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        let model = dir.path().join("model.safetensors");
        ckpt.save(&model).unwrap();
        let pc = PretrainConfig { epochs: 1, batch_size: 64, max_steps_per_epoch: Some(1), ..Default::default() };
        let unlearner = dir.path().join("unlearner.safetensors");
        unlearn::pretrain(&ckpt, &pc, &mut Silent).unwrap().save(&unlearner).unwrap();
        let db = dir.path().join("ledger.sqlite");
        let cfg = StoreConfig {
            model,
            unlearner,
            db: db.clone(),
            state_dir: dir.path().join("state"),
            finetune: FinetuneConfig::default(),
            fault: None,
        };
        let store = Store::open(cfg, ds).unwrap();
        let served = store.served();
        let state = AppState {
            served: served.clone(),
            ledger: Arc::new(Mutex::new(Ledger::open(&db).unwrap())),
            kick: Arc::new(Kick::default()),
            metrics: Arc::new(Metrics::default()),
            token: Token::new(TOKEN).unwrap(),
            limits: Limits::default(),
            rates: Arc::new(RateLimiter::new(None)),
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Service { _dir: dir, _store: Mutex::new(store), served, app: router(state), rt }
    })
}

/// `bytes` percent-encoded except for the unreserved characters and `keep`.
fn encode(bytes: &[u8], keep: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let s = service();
    let Some((&route, rest)) = data.split_first() else { return };

    // The checks of POST /v1/forget, called directly.
    if let Ok(f) = parse_forget(rest, &Limits::default()) {
        let served = s.served.load();
        let _ = served.check(&f);
        let _ = served.resolve(&f);
    }

    let (method, uri, body) = match route % 4 {
        0 => (Method::POST, "/v1/forget".to_string(), rest.to_vec()),
        1 => (Method::GET, format!("/v1/recommend?{}", encode(rest, b"&=%+")), Vec::new()),
        2 => (Method::GET, format!("/v1/forget/{}", encode(rest, b"%")), Vec::new()),
        _ => {
            let (line, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(n) => (&rest[..n], &rest[n + 1..]),
                None => (rest, &[][..]),
            };
            let line = String::from_utf8_lossy(line);
            let (m, u) = line.split_once(' ').unwrap_or(("GET", &line));
            let Ok(m) = Method::from_bytes(m.as_bytes()) else { return };
            (m, u.to_string(), body.to_vec())
        }
    };
    let Ok(uri) = uri.parse::<Uri>() else { return };
    let Ok(req) = Request::builder()
        .method(method.clone())
        .uri(uri.clone())
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body))
    else {
        return;
    };
    let resp = s.rt.block_on(s.app.clone().oneshot(req)).expect("the router is infallible");
    assert!(!resp.status().is_server_error(), "{method} {uri}: {}", resp.status());
});
