//! The HTTP API in process (tower `oneshot`) on a tiny trained model: authentication, input validation,
//! idempotency, status and recommendation semantics.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;
use unlearnrec_core::checkpoint::{MethodId, ServeInfo};
use unlearnrec_core::data::Dataset;
use unlearnrec_core::data::synthetic::{SynthConfig, generate};
use unlearnrec_core::io::sha256_hex;
use unlearnrec_core::model::{ModelConfig, ModelKind};
use unlearnrec_core::train::{Silent, TrainConfig};
use unlearnrec_core::unlearn::Unlearner;
use unlearnrec_core::unlearn::{self, FinetuneConfig, PretrainConfig};
use unlearnrec_serve::api::{AppState, Rate, RateLimiter, router};
use unlearnrec_serve::ledger::Forget;
use unlearnrec_serve::ledger::{Ledger, Status};
use unlearnrec_serve::metrics::Metrics;
use unlearnrec_serve::retrain::{Retrains, Schedule};
use unlearnrec_serve::store::{Outcome, Served, Store, StoreConfig, unlearner_name};
use unlearnrec_serve::worker::{self, BatchConfig, Kick};
use unlearnrec_serve::{Limits, Token};

const TOKEN: &str = "s3cret-token";

/// A trained model and unlearner on a tiny synthetic dataset, shared by the tests (read-only).
struct Trained {
    _dir: tempfile::TempDir,
    ds: Dataset,
    model: PathBuf,
    unlearner: PathBuf,
}

fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ds = generate(&SynthConfig { users: 60, items: 40, interactions: 900, ..Default::default() }).unwrap();
        let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 16, layers: 2, ..Default::default() };
        let tc = TrainConfig { epochs: 1, batch_size: 256, eval_every: 1, ..Default::default() };
        let (ckpt, _) = unlearnrec_core::pipeline::train(&ds, &mc, &tc, &mut Silent).unwrap();
        let model = dir.path().join("model.safetensors");
        ckpt.save(&model).unwrap();
        let pc = PretrainConfig { epochs: 1, batch_size: 256, max_steps_per_epoch: Some(2), ..Default::default() };
        let un = unlearn::pretrain(&ckpt, &pc, &mut Silent).unwrap();
        let unlearner = dir.path().join("unlearner.safetensors");
        un.save(&unlearner).unwrap();
        Trained { _dir: dir, ds, model, unlearner }
    })
}

struct Service {
    _dir: tempfile::TempDir,
    store: Store,
    app: Router,
    ledger: Arc<Mutex<Ledger>>,
}

fn service() -> Service {
    service_with(0)
}

/// A store over the shared trained model with its ledger and state in `dir`; returns it and the ledger path.
fn open_store(dir: &Path, finetune_epochs: usize) -> (Store, PathBuf) {
    let t = trained();
    let db = dir.join("ledger.sqlite");
    let cfg = StoreConfig {
        model: t.model.clone(),
        unlearner: t.unlearner.clone(),
        db: db.clone(),
        state_dir: dir.join("state"),
        finetune: FinetuneConfig { epochs: finetune_epochs, batch_size: 256, ..Default::default() },
        fault: None,
    };
    (Store::open(cfg, t.ds.clone()).unwrap(), db)
}

fn service_with(finetune_epochs: usize) -> Service {
    service_limited(finetune_epochs, Limits::default()).0
}

/// A service with `limits`, and its metrics.
fn service_limited(finetune_epochs: usize, limits: Limits) -> (Service, Arc<Metrics>) {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open_store(dir.path(), finetune_epochs);
    let ledger = Arc::new(Mutex::new(Ledger::open(&db).unwrap()));
    let metrics = Arc::new(Metrics::default());
    let state = AppState {
        served: store.served(),
        ledger: ledger.clone(),
        kick: Arc::new(Kick::default()),
        metrics: metrics.clone(),
        token: Token::new(TOKEN).unwrap(),
        limits,
        rates: Arc::new(RateLimiter::new(limits.rate)),
    };
    (Service { _dir: dir, store, app: router(state), ledger }, metrics)
}

impl Service {
    async fn call(&self, method: &str, uri: &str, auth: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
        call(&self.app, method, uri, auth, body).await
    }

    async fn forget(&self, body: &str) -> (StatusCode, serde_json::Value) {
        self.call("POST", "/v1/forget", Some(&format!("Bearer {TOKEN}")), body).await
    }

    fn recorded(&self) -> usize {
        self.ledger.lock().unwrap().all().unwrap().len()
    }

    fn apply_queued(&mut self) -> Outcome {
        let rows = self.store.ledger().queued(100).unwrap();
        self.store.apply(&rows, &AtomicBool::new(false)).unwrap()
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(req.header("content-type", "application/json").body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, json)
}

fn is_error(v: &serde_json::Value) -> bool {
    v.get("error").is_some_and(|e| e.is_string() && !e.as_str().unwrap().is_empty())
}

/// A user with at least two training interactions, and two of its items.
fn some_user() -> (String, Vec<String>) {
    let ds = &trained().ds;
    let u = ds.train.users()[0];
    let items: Vec<String> =
        ds.train.iter().filter(|&(uu, _)| uu == u).take(2).map(|(_, i)| ds.items.external(i).to_string()).collect();
    (ds.users.external(u).to_string(), items)
}

#[tokio::test]
async fn forget_without_the_right_token_is_401_and_records_nothing() {
    let s = service();
    let (user, _) = some_user();
    let body = format!("{{\"user\": \"{user}\"}}");
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic czNjcmV0LXRva2Vu"),
        Some("Bearer"),
        Some(""),
        Some("Bearer s3cret-toke"),
    ] {
        let (st, v) = s.call("POST", "/v1/forget", auth, &body).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(is_error(&v), "{v}");
    }
    // Even a malformed or oversized body without a token is refused as unauthorised, before anything else.
    let (st, _) = s.call("POST", "/v1/forget", None, "{nope").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = s.call("GET", "/v1/forget/0123456789abcdef", Some("Bearer nope"), "").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(s.recorded(), 0);
    // The right token, with the scheme in any case.
    let (st, v) = s.call("POST", "/v1/forget", Some(&format!("bearer {TOKEN}")), &body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(s.recorded(), 1);
}

#[tokio::test]
async fn bad_input_is_a_4xx_json_error_and_records_nothing() {
    let s = service();
    let (user, items) = some_user();
    let ds = &trained().ds;
    // An item this user never interacted with.
    let u = ds.users.get(&user).unwrap();
    let stranger = (0..ds.n_items() as u32)
        .find(|&i| {
            !ds.train.contains(u, i) && !ds.test.contains(u, i) && ds.valid.as_ref().is_none_or(|v| !v.contains(u, i))
        })
        .map(|i| ds.items.external(i).to_string())
        .unwrap();
    let oversized = format!("{{\"user\": \"{user}\", \"items\": [{}]}}", vec!["\"1\""; 20_000].join(","));
    let too_many = format!("{{\"user\": \"{user}\", \"items\": [{}]}}", vec!["\"1\""; 1001].join(","));
    let long_id = format!("{{\"user\": \"{}\"}}", "x".repeat(300));
    let cases: Vec<(String, StatusCode)> = vec![
        (String::new(), StatusCode::BAD_REQUEST),
        ("   ".into(), StatusCode::BAD_REQUEST),
        ("{\"user\": ".into(), StatusCode::BAD_REQUEST),
        ("not json".into(), StatusCode::BAD_REQUEST),
        ("[1, 2]".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("{}".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("null".into(), StatusCode::UNPROCESSABLE_ENTITY),
        (format!("{{\"user\": \"{user}\", \"item\": \"{}\"}}", items[0]), StatusCode::UNPROCESSABLE_ENTITY),
        (format!("{{\"items\": [\"{}\"]}}", items[0]), StatusCode::UNPROCESSABLE_ENTITY),
        (format!("{{\"user\": \"{user}\", \"items\": []}}"), StatusCode::UNPROCESSABLE_ENTITY),
        (format!("{{\"user\": \"{user}\", \"extra\": 1}}"), StatusCode::UNPROCESSABLE_ENTITY),
        ("{\"user\": -1}".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("{\"user\": 1.5}".into(), StatusCode::UNPROCESSABLE_ENTITY),
        ("{\"user\": \"\"}".into(), StatusCode::UNPROCESSABLE_ENTITY),
        (long_id, StatusCode::UNPROCESSABLE_ENTITY),
        (too_many, StatusCode::UNPROCESSABLE_ENTITY),
        (oversized, StatusCode::PAYLOAD_TOO_LARGE),
        ("{\"user\": \"no-such-user\"}".into(), StatusCode::NOT_FOUND),
        ("{\"item\": \"no-such-item\"}".into(), StatusCode::NOT_FOUND),
        (format!("{{\"user\": \"{user}\", \"items\": [\"no-such-item\"]}}"), StatusCode::NOT_FOUND),
        (format!("{{\"user\": \"{user}\", \"items\": [\"{stranger}\"]}}"), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (body, want) in &cases {
        let (st, v) = s.forget(body).await;
        assert_eq!(st, *want, "{body:.80}: {v}");
        assert!(is_error(&v), "{body:.80}: {v}");
    }
    assert_eq!(s.recorded(), 0);
    for (uri, want) in [
        ("/v1/recommend", StatusCode::BAD_REQUEST),
        ("/v1/recommend?user=no-such-user", StatusCode::NOT_FOUND),
        (&*format!("/v1/recommend?user={user}&k=0"), StatusCode::BAD_REQUEST),
        (&*format!("/v1/recommend?user={user}&k=1001"), StatusCode::BAD_REQUEST),
        (&*format!("/v1/recommend?user={user}&k=-3"), StatusCode::BAD_REQUEST),
        (&*format!("/v1/recommend?user={user}&k=abc"), StatusCode::BAD_REQUEST),
        (&*format!("/v1/recommend?user={user}&k=99999999999999999999999"), StatusCode::BAD_REQUEST),
        ("/no/such/route", StatusCode::NOT_FOUND),
    ] {
        let (st, v) = s.call("GET", uri, None, "").await;
        assert_eq!(st, want, "{uri}: {v}");
        assert!(is_error(&v), "{uri}: {v}");
    }
    let (st, v) = s.call("GET", "/v1/forget/unknown", Some(&format!("Bearer {TOKEN}")), "").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _) = s.call("DELETE", "/v1/forget", Some(&format!("Bearer {TOKEN}")), "").await;
    assert_eq!(st, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn requests_are_idempotent_and_report_their_status_and_receipt() {
    // With the default one fine-tuning epoch.
    let mut s = service_with(1);
    let (user, items) = some_user();
    let (st, a) = s.forget(&format!("{{\"user\": \"{user}\", \"items\": [\"{}\", \"{}\"]}}", items[1], items[0])).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    assert_eq!(a["status"], "queued");
    assert_eq!(a["duplicate"], false);
    // Same content, other order and a repeat: same id.
    let (st, b) = s
        .forget(&format!("{{\"user\": \"{user}\", \"items\": [\"{}\", \"{}\", \"{}\"]}}", items[0], items[1], items[0]))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(a["id"], b["id"]);
    assert_eq!(b["duplicate"], true);
    let (_, c) = s.forget(&format!("{{\"user\": \"{user}\"}}")).await;
    assert_ne!(a["id"], c["id"]);
    assert_eq!(s.recorded(), 2);
    let auth = format!("Bearer {TOKEN}");
    let (st, q) = s.call("GET", &format!("/v1/forget/{}", a["id"].as_str().unwrap()), Some(&auth), "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(q["status"], "queued");
    assert_eq!(q["request"]["kind"], "pairs");

    let before = s.store.served().load().version;
    assert!(matches!(s.apply_queued(), Outcome::Applied { changed: true, requests: 2, .. }));
    let served = s.store.served().load_full();
    assert_eq!(served.version, before + 1);
    let (_, q) = s.call("GET", &format!("/v1/forget/{}", a["id"].as_str().unwrap()), Some(&auth), "").await;
    assert_eq!(q["status"], "applied", "{q}");
    assert_eq!(q["model_version"], before + 1);
    assert_eq!(q["edges"].as_array().unwrap().len(), 2, "{q}");
    assert_eq!(q["receipt"]["edges"], 2, "{q}");
    assert_eq!(q["receipt"]["checkpoint_after_sha256"], served.sha256);
    // One request id: the receipt's is the ledger's, the id POST returned and GET was asked for.
    assert_eq!(q["receipt"]["request_id"], a["id"], "{q}");
    assert_eq!(q["id"], a["id"]);
    // The user request took the rest of the user's interactions.
    let (_, q) = s.call("GET", &format!("/v1/forget/{}", c["id"].as_str().unwrap()), Some(&auth), "").await;
    assert_eq!(q["status"], "applied");
    assert_eq!(q["receipt"]["request_id"], c["id"], "{q}");
    let (st, v) = s.call("GET", &format!("/v1/recommend?user={user}"), None, "").await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    // Posting an applied request again returns it, applied; nothing new is queued.
    let (st, again) = s.forget(&format!("{{\"user\": \"{user}\"}}")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(
        (&again["id"], &again["status"], &again["duplicate"]),
        (&c["id"], &serde_json::json!("applied"), &serde_json::json!(true))
    );
    assert!(s.store.ledger().queued(10).unwrap().is_empty());
    let rows = s.ledger.lock().unwrap().all().unwrap();
    assert!(rows.iter().all(|r| r.status == Status::Applied));
}

#[tokio::test]
async fn recommendations_match_the_checkpoint_and_exclude_seen_items() {
    let s = service();
    let served = s.store.served().load_full();
    let ds = &trained().ds;
    for u in [0u32, 7, 31] {
        let ext = ds.users.external(u);
        let (st, v) = s.call("GET", &format!("/v1/recommend?user={ext}&k=5"), None, "").await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let got: Vec<(String, f32)> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["item"].as_str().unwrap().to_string(), x["score"].as_f64().unwrap() as f32))
            .collect();
        let want = served.ckpt.recommend(u, 5).unwrap();
        assert_eq!(got.len(), 5);
        for ((gi, gs), (wi, ws)) in got.iter().zip(&want) {
            assert_eq!(gi, wi);
            assert!((gs - ws).abs() <= 1e-5 * ws.abs().max(1.0));
        }
        let seen = served.ckpt.seen();
        assert!(got.iter().all(|(i, _)| !seen.contains(u, ds.items.get(i).unwrap())));
    }
    let (_, v) = s.call("GET", &format!("/v1/recommend?user={}&k=1000", ds.users.external(0)), None, "").await;
    assert!(v["items"].as_array().unwrap().len() < ds.n_items());
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let s = service();
    let (st, h) = s.call("GET", "/v1/health", None, "").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(h["status"], "ok");
    let _ = s.call("GET", "/v1/recommend?user=nobody", None, "").await;
    let (st, m) = s.call("GET", "/metrics", None, "").await;
    assert_eq!(st, StatusCode::OK);
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains("unlearnrec_http_requests_total{route=\"/v1/recommend\",method=\"GET\",status=\"404\"} 1"),
        "{m}"
    );
    assert!(m.contains("unlearnrec_http_request_duration_seconds_bucket{route=\"/v1/health\""), "{m}");
    assert!(m.contains("unlearnrec_model_version 0"));
    assert!(m.contains("unlearnrec_forget_queue_depth"));
    let (st, doc) = s.call("GET", "/openapi.json", None, "").await;
    assert_eq!(st, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for p in ["/v1/recommend", "/v1/forget", "/v1/forget/{id}", "/v1/health", "/metrics", "/openapi.json"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["ForgetRequest"]["oneOf"].as_array().is_some_and(|a| a.len() == 3));
}

/// Polls `f` every 20 ms until it returns `Some`, for at most 10 s.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The service in process with its worker and, when `schedule` is on, the consolidation schedule, over a
/// fresh ledger in `dir` (the HTTP side through `app`).
struct Running {
    app: Router,
    served: Arc<ArcSwap<Served>>,
    ledger: Arc<Mutex<Ledger>>,
    kick: Arc<Kick>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Running {
    fn start(dir: &Path, schedule: Schedule) -> Self {
        let (store, db) = open_store(dir, 0);
        let served = store.served();
        let ledger = Arc::new(Mutex::new(Ledger::open(&db).unwrap()));
        let (kick, metrics, retrains) =
            (Arc::new(Kick::default()), Arc::new(Metrics::default()), Arc::new(Retrains::default()));
        let app = router(AppState {
            served: served.clone(),
            ledger: ledger.clone(),
            kick: kick.clone(),
            metrics: metrics.clone(),
            token: Token::new(TOKEN).unwrap(),
            limits: Limits::default(),
            rates: Arc::new(RateLimiter::new(None)),
        });
        let mut threads = Vec::new();
        if schedule.is_on() {
            let (served, retrains, kick, pretrain) =
                (served.clone(), retrains.clone(), kick.clone(), store.pretrain_config());
            threads.push(std::thread::spawn(move || {
                unlearnrec_serve::retrain::run(schedule, pretrain, served, retrains, kick)
            }));
        }
        let (k, batch) = (kick.clone(), BatchConfig { max: 64, wait: Duration::from_millis(10) });
        threads.push(std::thread::spawn(move || {
            let mut store = store;
            worker::run(&mut store, batch, &k, &metrics, &retrains)
        }));
        Self { app, served, ledger, kick, threads }
    }

    /// The version that applied request `id`, once applied.
    fn applied(&self, id: &serde_json::Value) -> Option<u64> {
        let row = self.ledger.lock().unwrap().get(id.as_str().unwrap()).unwrap().unwrap();
        (row.status == Status::Applied).then(|| row.version.unwrap())
    }

    async fn forget(&self, body: &str) -> serde_json::Value {
        let (st, v) = call(&self.app, "POST", "/v1/forget", Some(&format!("Bearer {TOKEN}")), body).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        v
    }

    async fn metrics(&self) -> String {
        call(&self.app, "GET", "/metrics", None, "").await.1.as_str().unwrap().to_string()
    }

    fn stop(self) {
        self.kick.stop();
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// The first `n` users with training interactions, internal ids.
fn distinct_users(n: usize) -> Vec<u32> {
    let mut users = trained().ds.train.users().to_vec();
    users.dedup();
    users.truncate(n);
    users
}

/// The value of an unlabelled Prometheus sample.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retrain_schedule_swaps_in_an_exact_retrain_that_keeps_erasures() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(dir.path(), Schedule { every: Some(Duration::from_millis(100)), after_edges: None });
    let Running { app, served, ledger, .. } = &run;
    let auth = format!("Bearer {TOKEN}");
    let applied = |id: &str| run.applied(&serde_json::json!(id));

    // Erase a user; the batch becomes version 1.
    let (user, _) = some_user();
    let u = served.load().user(&user).unwrap();
    let erased: Vec<(u32, u32)> = served.load().ckpt.seen().iter().filter(|&(uu, _)| uu == u).collect();
    assert!(!erased.is_empty());
    let (st, a) = call(app, "POST", "/v1/forget", Some(&auth), &format!("{{\"user\": \"{user}\"}}")).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    let v1 = eventually("the forget", || applied(a["id"].as_str().unwrap())).await;
    assert_eq!(v1, 1);

    // The schedule retrains version 1 exactly and the worker swaps it in as version 2.
    let row =
        eventually("a retrain version", || ledger.lock().unwrap().versions().unwrap().into_iter().find(|r| r.retrain))
            .await;
    assert_eq!(row.version, 2);
    eventually("the swap", || (served.load().version == 2).then_some(())).await;
    let cur = served.load_full();
    assert_eq!(cur.sha256, row.sha256);
    assert!(erased.iter().all(|&(uu, i)| cur.ckpt.removed().contains(uu, i)));
    let prov = &cur.ckpt.meta().provenance;
    assert_eq!(prov.method, Some(MethodId::RETRAIN));
    assert_eq!(prov.encoder_offset, None);
    assert_eq!(prov.serve, Some(ServeInfo { version: 2, retrain_of: Some(1) }));
    assert!(cur.ckpt.anchor().is_none());
    // The consolidation came with an unlearner pre-trained for the retrained backbone, written beside it
    // and recorded in the ledger.
    let (un_path, un_sha) = row.unlearner.clone().expect("the consolidation records its unlearner");
    assert_eq!(un_path, dir.path().join("state").join(unlearner_name(2)));
    assert_eq!(sha256_hex(&std::fs::read(&un_path).unwrap()), un_sha);
    let un = Unlearner::load(&un_path).unwrap();
    assert_eq!(un.meta.backbone_sha256, Some(cur.ckpt.backbone_sha256().unwrap()));
    assert_eq!(un.meta.pretrain, Unlearner::load(&trained().unlearner).unwrap().meta.pretrain);
    let (st, v) = call(app, "GET", &format!("/v1/recommend?user={user}"), None, "").await;
    assert_eq!(st, StatusCode::GONE, "{v}");
    // The worker records the retrain's metric just after the swap: poll for it.
    let want = "unlearnrec_last_retrain_timestamp_seconds{version=\"2\"}";
    let mut m = serde_json::Value::Null;
    for _ in 0..500 {
        m = call(app, "GET", "/metrics", None, "").await.1;
        if m.as_str().unwrap().contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(m.as_str().unwrap().contains(want), "{m}");
    assert!(m.as_str().unwrap().contains("unlearnrec_consolidations_total 1\n"), "{m}");
    assert!(m.as_str().unwrap().contains("unlearnrec_edges_since_anchor 0\n"), "{m}");

    // A later forget is applied on top of the retrained model with the new unlearner (the old one is refused
    // on it), keeping the first erasure.
    let (u2, i2) = cur.ckpt.edges().iter().find(|&(uu, _)| uu != u).unwrap();
    let body = format!("{{\"user\": \"{}\", \"items\": [\"{}\"]}}", cur.users().external(u2), cur.items().external(i2));
    let (st, b) = call(app, "POST", "/v1/forget", Some(&auth), &body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    let v3 = eventually("the second forget", || applied(b["id"].as_str().unwrap())).await;
    assert_eq!(v3, 3);
    let versions = ledger.lock().unwrap().versions().unwrap();
    assert!(!versions[3].retrain);
    let now = served.load_full();
    assert!(now.version >= 3);
    assert!(now.ckpt.removed().contains(u2, i2));
    assert!(erased.iter().all(|&(uu, i)| now.ckpt.removed().contains(uu, i)));
    let prov = &now.ckpt.meta().provenance;
    assert_eq!(prov.method, Some(MethodId::UNLEARNREC));
    assert!(prov.encoder_offset.is_some());
    assert_eq!(prov.serve.as_ref().map(|s| s.retrain_of), Some(None));
    assert_eq!(prov.encoder_offset.as_ref().and_then(|o| o.unlearner_sha256.clone()), Some(un.sha256().unwrap()));
    // Its anchor is the retrained model, with the one edge removed since.
    let anchor = now.ckpt.anchor().expect("unlearned from the new anchor");
    assert_eq!(anchor.base, cur.ckpt.model().base_vec().unwrap());
    assert_eq!(anchor.since_train.len() + anchor.since_valid.len(), 1);
    let (_, m) = call(app, "GET", "/metrics", None, "").await;
    assert!(m.as_str().unwrap().contains("unlearnrec_edges_since_anchor 1\n"), "{m}");
    let (st, _) = call(app, "GET", &format!("/v1/recommend?user={user}"), None, "").await;
    assert_eq!(st, StatusCode::GONE);
    run.stop();

    // A restart loads the consolidation's unlearner (not --unlearner, which no longer fits) and keeps
    // applying requests.
    let (mut store, _) = open_store(dir.path(), 0);
    assert_eq!(store.served().load().version, 3);
    let (u3, i3) = now.ckpt.edges().iter().find(|&(uu, _)| uu != u && uu != u2).unwrap();
    let f = Forget::Pairs { user: now.users().external(u3).into(), items: vec![now.items().external(i3).into()] };
    store.ledger().submit(&f).unwrap();
    let rows = store.ledger().queued(10).unwrap();
    assert!(matches!(store.apply(&rows, &AtomicBool::new(false)).unwrap(), Outcome::Applied { version: 4, .. }));
    assert!(dir.path().join("state").join(unlearner_name(2)).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_size_trigger_consolidates_once_enough_edges_were_removed_since_the_anchor() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(dir.path(), Schedule { every: None, after_edges: Some(4) });
    let ds = &trained().ds;
    let cur = run.served.load_full();
    // Users with at least two training interactions: one pair each, so the count since the anchor is known.
    let mut pairs = Vec::new();
    for u in ds.train.users().iter().copied() {
        let row = cur.ckpt.train_graph().user_items().row(u as usize).to_vec();
        if row.len() >= 2 && pairs.iter().all(|&(uu, _)| uu != u) {
            pairs.push((u, row[0]));
        }
        if pairs.len() == 4 {
            break;
        }
    }
    let body = |&(u, i): &(u32, u32)| {
        format!("{{\"user\": \"{}\", \"items\": [\"{}\"]}}", cur.users().external(u), cur.items().external(i))
    };
    // Three edges: below the trigger, no consolidation.
    for p in &pairs[..3] {
        let a = run.forget(&body(p)).await;
        eventually("a forget", || run.applied(&a["id"])).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = run.metrics().await;
    assert_eq!(sample(&m, "unlearnrec_edges_since_anchor"), Some(3.0), "{m}");
    assert_eq!(sample(&m, "unlearnrec_consolidations_total"), Some(0.0), "{m}");
    assert!(run.ledger.lock().unwrap().versions().unwrap().iter().all(|v| !v.retrain));
    // The fourth reaches it: a consolidation is swapped in, exact again.
    let a = run.forget(&body(&pairs[3])).await;
    let v = eventually("the fourth forget", || run.applied(&a["id"])).await;
    let row = eventually("a consolidation", || {
        run.ledger.lock().unwrap().versions().unwrap().into_iter().find(|r| r.retrain)
    })
    .await;
    assert_eq!(row.version, v + 1);
    assert!(row.unlearner.is_some());
    eventually("the swap", || (run.served.load().version == row.version).then_some(())).await;
    let mut m = String::new();
    for _ in 0..500 {
        m = run.metrics().await;
        if sample(&m, "unlearnrec_consolidations_total") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sample(&m, "unlearnrec_consolidations_total"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "unlearnrec_edges_since_anchor"), Some(0.0), "{m}");
    assert_eq!(run.served.load().ckpt.removed().len(), cur.ckpt.removed().len() + 4);
    run.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_to_applied_metrics_appear_and_are_sane() {
    let dir = tempfile::tempdir().unwrap();
    let run = Running::start(dir.path(), Schedule::default());
    let m = run.metrics().await;
    assert_eq!(sample(&m, "unlearnrec_forget_to_applied_seconds_count"), Some(0.0), "{m}");
    assert_eq!(sample(&m, "unlearnrec_forget_to_applied_p50_seconds"), None, "{m}");
    let ds = &trained().ds;
    let t0 = Instant::now();
    let mut ids = Vec::new();
    for u in distinct_users(3) {
        ids.push(run.forget(&format!("{{\"user\": \"{}\"}}", ds.users.external(u))).await["id"].clone());
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    for id in &ids {
        eventually("a forget", || run.applied(id)).await;
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut m = String::new();
    for _ in 0..500 {
        m = run.metrics().await;
        if sample(&m, "unlearnrec_forget_to_applied_seconds_count") == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sample(&m, "unlearnrec_forget_to_applied_seconds_count"), Some(3.0), "{m}");
    assert!(m.contains("# TYPE unlearnrec_forget_to_applied_seconds histogram"), "{m}");
    assert_eq!(sample(&m, "unlearnrec_forget_to_applied_seconds_bucket{le=\"+Inf\"}"), Some(3.0), "{m}");
    let sum = sample(&m, "unlearnrec_forget_to_applied_seconds_sum").unwrap();
    let (p50, p95) = (
        sample(&m, "unlearnrec_forget_to_applied_p50_seconds").unwrap(),
        sample(&m, "unlearnrec_forget_to_applied_p95_seconds").unwrap(),
    );
    // Each wait is positive and within the wall time of the test; the percentiles are among them.
    assert!(sum > 0.0 && sum <= 3.0 * wall, "{sum} {wall}");
    assert!(0.0 < p50 && p50 <= p95 && p95 <= wall, "{p50} {p95} {wall}");
    // The ledger's recorded times are what was measured.
    let rows = run.ledger.lock().unwrap().all().unwrap();
    let waits: Vec<f64> = rows.iter().map(|r| r.done_unix.unwrap() - r.created_unix.unwrap()).collect();
    assert!((waits.iter().sum::<f64>() - sum).abs() < 1e-6, "{waits:?} {sum}");
    assert_eq!(sample(&m, "unlearnrec_consolidations_total"), Some(0.0), "{m}");
    let removed = run.served.load().ckpt.removed().len() as f64;
    assert!(removed > 0.0);
    assert_eq!(sample(&m, "unlearnrec_edges_since_anchor"), Some(removed), "{m}");
    run.stop();
}

#[tokio::test]
async fn forgetting_what_is_already_forgotten_is_accepted_and_removes_nothing() {
    let mut s = service();
    let auth = format!("Bearer {TOKEN}");
    let ds = &trained().ds;
    let status = async |s: &Service, id: &serde_json::Value| {
        s.call("GET", &format!("/v1/forget/{}", id.as_str().unwrap()), Some(&auth), "").await.1
    };
    // A user with three interactions in the model.
    let served = s.store.served().load_full();
    let (u, items) = ds
        .train
        .users()
        .iter()
        .map(|&u| (u, served.ckpt.train_graph().user_items().row(u as usize).to_vec()))
        .find(|(_, row)| row.len() >= 3)
        .unwrap();
    let (user, item) = (ds.users.external(u).to_string(), |k: usize| ds.items.external(items[k]).to_string());
    let (st, a) = s.forget(&format!("{{\"user\": \"{user}\", \"items\": [\"{}\", \"{}\"]}}", item(0), item(1))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{a}");
    assert!(matches!(s.apply_queued(), Outcome::Applied { changed: true, .. }));
    let v = s.store.served().load().version;
    assert_eq!(status(&s, &a["id"]).await["already_forgotten"], false);

    // 1. A different request repeating a pair already forgotten: accepted as new, applied, nothing removed,
    // no new model version.
    let (st, b) = s.forget(&format!("{{\"user\": \"{user}\", \"items\": [\"{}\"]}}", item(0))).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{b}");
    assert_eq!((&b["duplicate"], &b["status"]), (&serde_json::json!(false), &serde_json::json!("queued")));
    assert_ne!(a["id"], b["id"]);
    assert!(matches!(s.apply_queued(), Outcome::Applied { changed: false, edges: 0, requests: 1, .. }));
    let q = status(&s, &b["id"]).await;
    assert_eq!(q["status"], "applied", "{q}");
    assert_eq!(q["edges"], serde_json::json!([]), "{q}");
    assert_eq!(q["already_forgotten"], true, "{q}");
    assert!(q.get("receipt").is_none(), "{q}");
    assert_eq!(q["model_version"], v);
    assert_eq!(s.store.served().load().version, v);
    // A request naming a forgotten pair and a remaining one removes the remaining one only.
    let (_, c) = s.forget(&format!("{{\"user\": \"{user}\", \"items\": [\"{}\", \"{}\"]}}", item(1), item(2))).await;
    assert!(matches!(s.apply_queued(), Outcome::Applied { changed: true, edges: 1, .. }));
    let q = status(&s, &c["id"]).await;
    assert_eq!(q["edges"], serde_json::json!([[user.clone(), item(2)]]), "{q}");
    assert_eq!(q["already_forgotten"], false, "{q}");

    // 2. An erased user (every interaction forgotten): a request naming it is accepted by the same rule and
    // removes nothing new, while recommendations for it are 410.
    let (_, d) = s.forget(&format!("{{\"user\": \"{user}\"}}")).await;
    assert!(matches!(s.apply_queued(), Outcome::Applied { .. }));
    let (st, _) = s.call("GET", &format!("/v1/recommend?user={user}"), None, "").await;
    assert_eq!(st, StatusCode::GONE);
    let v = s.store.served().load().version;
    for body in [format!("{{\"user\": \"{user}\", \"items\": [\"{}\"]}}", item(2)), format!("{{\"user\": \"{user}\"}}")]
    {
        let (st, e) = s.forget(&body).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{body}: {e}");
        if e["id"] == d["id"] {
            // The same request again: the row it has, applied.
            assert_eq!((&e["duplicate"], &e["status"]), (&serde_json::json!(true), &serde_json::json!("applied")));
            continue;
        }
        assert!(matches!(s.apply_queued(), Outcome::Applied { changed: false, edges: 0, .. }));
        let q = status(&s, &e["id"]).await;
        assert_eq!(
            (&q["status"], &q["already_forgotten"]),
            (&serde_json::json!("applied"), &serde_json::json!(true)),
            "{q}"
        );
    }
    assert_eq!(s.store.served().load().version, v);
    // An item never in the user's history is still a 422 (it names no interaction, past or present).
    let never =
        (0..ds.n_items() as u32).find(|&i| !served.ckpt.seen().contains(u, i) && !ds.test.contains(u, i)).unwrap();
    let (st, e) = s.forget(&format!("{{\"user\": \"{user}\", \"items\": [\"{}\"]}}", ds.items.external(never))).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
}

#[test]
fn a_consolidation_overtaken_by_batches_applies_their_edges_on_top_with_its_unlearner() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open_store(dir.path(), 0);
    let ds = &trained().ds;
    let users: Vec<String> = distinct_users(3).into_iter().map(|u| ds.users.external(u).to_string()).collect();
    let apply = |store: &mut Store, f: Forget| {
        store.ledger().submit(&f).unwrap();
        let rows = store.ledger().queued(10).unwrap();
        store.apply(&rows, &AtomicBool::new(false)).unwrap()
    };
    assert!(matches!(apply(&mut store, Forget::User { user: users[0].clone() }), Outcome::Applied { version: 1, .. }));
    // The schedule consolidates version 1 while a batch commits version 2.
    let v1 = store.served().load_full();
    let p = unlearnrec_serve::retrain::consolidation(1, &v1.ckpt, &store.pretrain_config()).unwrap();
    let retrained = p.ckpt.model().base_vec().unwrap();
    let fresh_sha = p.unlearner.sha256().unwrap();
    assert!(matches!(apply(&mut store, Forget::User { user: users[1].clone() }), Outcome::Applied { version: 2, .. }));
    let v2 = store.served().load_full();
    assert_eq!(store.consolidate(p).unwrap(), Some(3));
    let v3 = store.served().load_full();
    // Same edges as version 2; the model is version 1's retrain with version 2's batch unlearned on top.
    assert_eq!(
        (v3.ckpt.edges(), v3.ckpt.valid(), v3.ckpt.removed()),
        (v2.ckpt.edges(), v2.ckpt.valid(), v2.ckpt.removed())
    );
    let anchor = v3.ckpt.anchor().unwrap();
    assert_eq!(anchor.base, retrained);
    let since = v2.ckpt.removed().difference(v1.ckpt.removed()).0;
    assert_eq!(unlearnrec_core::pipeline::union(&anchor.since_train, &anchor.since_valid), since);
    let prov = &v3.ckpt.meta().provenance;
    assert_eq!(prov.serve, Some(ServeInfo { version: 3, retrain_of: Some(1) }));
    assert_eq!(prov.encoder_offset.as_ref().and_then(|o| o.unlearner_sha256.clone()), Some(fresh_sha));
    let row = store.ledger().version(3).unwrap().unwrap();
    assert!(row.retrain && row.edges == 0);
    assert_eq!(row.unlearner.unwrap().0, dir.path().join("state").join(unlearner_name(3)));
    // The next batch unlearns with the new unlearner, from the new anchor.
    assert!(matches!(apply(&mut store, Forget::User { user: users[2].clone() }), Outcome::Applied { version: 4, .. }));
    assert_eq!(store.served().load().ckpt.anchor().unwrap().base, retrained);
    // A consolidation of a version that is not an ancestor of the current one is discarded.
    let v4 = store.served().load_full();
    let mut stale = unlearnrec_serve::retrain::consolidation(4, &v4.ckpt, &store.pretrain_config()).unwrap();
    stale.base = 9;
    assert_eq!(store.consolidate(stale).unwrap(), None);
    assert_eq!(store.served().load().version, 4);
}

#[test]
fn a_restart_pretrains_an_unlearner_a_consolidation_did_not_record_and_refuses_a_foreign_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, db) = open_store(dir.path(), 0);
    let users: Vec<String> = distinct_users(2).into_iter().map(|u| trained().ds.users.external(u).into()).collect();
    let apply = |store: &mut Store, f: Forget| {
        store.ledger().submit(&f).unwrap();
        let rows = store.ledger().queued(10).unwrap();
        store.apply(&rows, &AtomicBool::new(false)).unwrap()
    };
    apply(&mut store, Forget::User { user: users[0].clone() });
    let v1 = store.served().load_full();
    let p = unlearnrec_serve::retrain::consolidation(1, &v1.ckpt, &store.pretrain_config()).unwrap();
    assert_eq!(store.consolidate(p).unwrap(), Some(2));
    drop(store);
    // A consolidation as written before consolidations recorded their unlearner.
    let un2 = dir.path().join("state").join(unlearner_name(2));
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE versions SET unlearner = NULL, unlearner_sha256 = NULL", []).unwrap();
    drop(conn);
    std::fs::remove_file(&un2).unwrap();
    let (mut store, _) = open_store(dir.path(), 0);
    let row = store.ledger().version(2).unwrap().unwrap();
    assert_eq!(row.unlearner.as_ref().map(|u| &u.0), Some(&un2));
    let un = Unlearner::load(&un2).unwrap();
    assert_eq!(un.meta.backbone_sha256, Some(store.served().load().ckpt.backbone_sha256().unwrap()));
    assert!(matches!(apply(&mut store, Forget::User { user: users[1].clone() }), Outcome::Applied { version: 3, .. }));
    drop(store);

    // An unlearner pre-trained for another model of the same data is refused on start.
    let t = trained();
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let mc = ModelConfig { kind: ModelKind::LightGcn, dim: 16, layers: 2, ..Default::default() };
    let tc = TrainConfig { epochs: 1, batch_size: 256, eval_every: 1, seed: 99, ..Default::default() };
    let (ckpt, _) = unlearnrec_core::pipeline::train(&t.ds, &mc, &tc, &mut Silent).unwrap();
    let pc = PretrainConfig { epochs: 1, batch_size: 256, max_steps_per_epoch: Some(2), ..Default::default() };
    let foreign = other.join("un.safetensors");
    unlearn::pretrain(&ckpt, &pc, &mut Silent).unwrap().save(&foreign).unwrap();
    let cfg = StoreConfig {
        model: t.model.clone(),
        unlearner: foreign,
        db: other.join("ledger.sqlite"),
        state_dir: other.join("state"),
        finetune: FinetuneConfig::default(),
        fault: None,
    };
    let err = Store::open(cfg, t.ds.clone()).err().expect("a foreign unlearner is refused");
    assert!(err.to_string().contains("pre-trained for another model"), "{err}");
}

/// A raw response of the router: status, `Retry-After` and JSON body.
async fn call_raw(app: &Router, uri: &str, body: &str) -> (StatusCode, Option<u64>, serde_json::Value) {
    let req = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
    (status, retry, serde_json::from_slice(&bytes).unwrap())
}

/// `n` single-pair forget bodies for distinct interactions.
fn pair_bodies(n: usize) -> Vec<String> {
    let ds = &trained().ds;
    ds.train
        .iter()
        .take(n)
        .map(|(u, i)| format!("{{\"user\": \"{}\", \"items\": [\"{}\"]}}", ds.users.external(u), ds.items.external(i)))
        .collect()
}

#[tokio::test]
async fn a_full_queue_is_429_with_retry_after_and_records_nothing_new() {
    let (mut s, metrics) = service_limited(0, Limits { max_queue: Some(3), ..Limits::default() });
    let bodies = pair_bodies(5);
    for b in &bodies[..3] {
        let (st, _, v) = call_raw(&s.app, "/v1/forget", b).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    }
    let (st, retry, v) = call_raw(&s.app, "/v1/forget", &bodies[3]).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(is_error(&v) && v["error"].as_str().unwrap().contains("queue is full"), "{v}");
    assert!(retry.is_some_and(|r| (1..=60).contains(&r)), "{retry:?}");
    assert_eq!(s.recorded(), 3, "a refused request is recorded");
    // A repeat of a recorded request is still answered with its id.
    let (st, _, v) = call_raw(&s.app, "/v1/forget", &bodies[0]).await;
    assert_eq!((st, &v["duplicate"]), (StatusCode::ACCEPTED, &serde_json::json!(true)), "{v}");
    assert!(metrics.render().contains("unlearnrec_forget_rejected_total{reason=\"queue_full\"} 1"));
    // Once the worker drained the queue, new requests are accepted again.
    assert!(matches!(s.apply_queued(), Outcome::Applied { requests: 3, .. }));
    let (st, _, v) = call_raw(&s.app, "/v1/forget", &bodies[3]).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn the_rate_limit_per_token_is_429_with_retry_after_and_refills() {
    let rate = Rate { per_sec: 2, burst: 3 };
    let (s, metrics) = service_limited(0, Limits { rate: Some(rate), ..Limits::default() });
    let bodies = pair_bodies(6);
    // A wrong token is 401 and does not spend the bucket.
    let (st, _) = s.call("POST", "/v1/forget", Some("Bearer wrong"), &bodies[0]).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    for b in &bodies[..3] {
        let (st, _, v) = call_raw(&s.app, "/v1/forget", b).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    }
    let (st, retry, v) = call_raw(&s.app, "/v1/forget", &bodies[3]).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(retry, Some(1));
    assert_eq!(s.recorded(), 3);
    // The status route shares the bucket.
    let (st, _) = s.call("GET", "/v1/forget/nope", Some(&format!("Bearer {TOKEN}")), "").await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    assert!(metrics.render().contains("unlearnrec_forget_rejected_total{reason=\"rate_limited\"} 2"));
    // Recommendations are not limited.
    let user = trained().ds.users.external(trained().ds.train.users()[0]).to_string();
    for _ in 0..10 {
        let (st, _) = s.call("GET", &format!("/v1/recommend?user={user}"), None, "").await;
        assert_eq!(st, StatusCode::OK);
    }
    // Half a second refills one request.
    tokio::time::sleep(Duration::from_millis(550)).await;
    let (st, _, v) = call_raw(&s.app, "/v1/forget", &bodies[3]).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
}

#[tokio::test]
async fn health_is_503_with_the_reason_while_the_worker_is_down() {
    let (s, metrics) = service_limited(0, Limits::default());
    metrics.worker_down("the worker panicked (boom); restart 1 of 3 in 1s");
    let (st, h) = s.call("GET", "/v1/health", None, "").await;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{h}");
    assert_eq!(h["status"], "unhealthy");
    assert!(h["reason"].as_str().unwrap().contains("panicked"), "{h}");
    assert!(metrics.render().contains("unlearnrec_worker_up 0"));
    // Recommendations are still served meanwhile.
    let user = trained().ds.users.external(trained().ds.train.users()[0]).to_string();
    let (st, _) = s.call("GET", &format!("/v1/recommend?user={user}"), None, "").await;
    assert_eq!(st, StatusCode::OK);
    metrics.worker_restarted();
    let (st, h) = s.call("GET", "/v1/health", None, "").await;
    assert_eq!(
        (st, &h["status"], &h["worker_restarts"]),
        (StatusCode::OK, &serde_json::json!("ok"), &serde_json::json!(1))
    );
    assert!(h.get("reason").is_none(), "{h}");
    let m = metrics.render();
    assert!(m.contains("unlearnrec_worker_up 1") && m.contains("unlearnrec_worker_restarts_total 1"), "{m}");
}

#[test]
fn the_ledger_and_the_state_directory_agree_after_garbage_collection() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, db) = open_store(dir.path(), 0);
    let bodies = distinct_users(6);
    let ds = &trained().ds;
    for &u in &bodies {
        store.ledger().submit(&Forget::User { user: ds.users.external(u).to_string() }).unwrap();
        let rows = store.ledger().queued(1).unwrap();
        assert!(matches!(store.apply(&rows, &AtomicBool::new(false)).unwrap(), Outcome::Applied { changed: true, .. }));
        assert_eq!(store.ledger().dangling().unwrap(), Vec::<String>::new());
    }
    let l = Ledger::open(&db).unwrap();
    let current = l.current().unwrap().version;
    assert_eq!(current, 6);
    // Versions 1 to current - 2 are collected: recorded so, and their files gone; the rest are there.
    assert_eq!(l.collected().unwrap(), (1..current - 1).collect::<Vec<_>>());
    for v in l.versions().unwrap() {
        let gone = l.collected().unwrap().contains(&v.version);
        assert_eq!(!v.checkpoint.exists(), gone, "version {}", v.version);
        if let Some(d) = &v.data_dir {
            assert_eq!(!d.exists(), gone, "version {}", v.version);
        }
    }
    // A reopen collects the same way and finds nothing dangling.
    drop(store);
    let (store, _) = open_store(dir.path(), 0);
    assert_eq!(Ledger::open(&db).unwrap().dangling().unwrap(), Vec::<String>::new());
    drop(store);
    // A file deleted behind the ledger's back is reported.
    std::fs::remove_file(l.current().unwrap().checkpoint).unwrap();
    assert_eq!(l.dangling().unwrap().len(), 1);
}

#[test]
fn a_write_error_leaves_the_batch_queued_and_the_current_version_served() {
    use unlearnrec_serve::store::{DISK_FULL_FAILURES, FaultPoint};
    let dir = tempfile::tempdir().unwrap();
    let t = trained();
    let cfg = StoreConfig {
        model: t.model.clone(),
        unlearner: t.unlearner.clone(),
        db: dir.path().join("ledger.sqlite"),
        state_dir: dir.path().join("state"),
        finetune: FinetuneConfig { epochs: 0, ..Default::default() },
        fault: Some(FaultPoint::DiskFull),
    };
    let mut store = Store::open(cfg, t.ds.clone()).unwrap();
    let user = t.ds.users.external(distinct_users(1)[0]).to_string();
    let id = store.ledger().submit(&Forget::User { user }).unwrap().row.id;
    for _ in 0..DISK_FULL_FAILURES {
        let rows = store.ledger().queued(10).unwrap();
        let err = store.apply(&rows, &AtomicBool::new(false)).unwrap_err();
        assert!(err.to_string().contains("no space left"), "{err}");
        // Still queued, version 0 current and served, nothing of version 1 left behind.
        assert_eq!(store.ledger().get(&id).unwrap().unwrap().status, Status::Queued);
        assert_eq!(store.ledger().current().unwrap().version, 0);
        assert_eq!(store.served().load().version, 0);
        let left: Vec<String> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| !n.contains("v000001")), "{left:?}");
    }
    // The disk has room again: the batch applies, once.
    let rows = store.ledger().queued(10).unwrap();
    assert!(matches!(store.apply(&rows, &AtomicBool::new(false)).unwrap(), Outcome::Applied { version: 1, .. }));
    assert_eq!(store.ledger().get(&id).unwrap().unwrap().status, Status::Applied);
    assert!(store.ledger().queued(10).unwrap().is_empty());
}
