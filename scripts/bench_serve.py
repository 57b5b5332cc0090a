#!/usr/bin/env python3
"""Loopback benchmark of `unlearnrec serve` (standard library only; bounded in count and time).

Starts the server on 127.0.0.1 with a fresh ledger, then measures
  1. /v1/recommend latency (p50, p99) and throughput with CLIENTS concurrent clients, alone;
  2. the same while a stream of single-user forget requests is being applied;
  3. the time from POST /v1/forget to status `applied` for single-user requests.

With --stream N it measures instead a stream of N single-user forget requests posted one after another (every
--stream-interval-ms, 0: back to back; each POST waits for its 202 only), under the consolidation schedule given
by --retrain-every-secs / --consolidate-after-edges: once every request is applied it reports the server's
forget-to-applied p50/p95 (the /metrics gauges, from the ledger's commit and application times), the same from
the client (202 received to status `applied` seen by a second connection polling every 20 ms), batches, model
versions and consolidations; with --settle-secs S it then waits up to S seconds for a due consolidation to land
and reports the count again.

Usage: bench_serve.py BINARY CKPT UNLEARNER DATA [--requests N] [--clients C] [--forgets F] [--finetune-epochs E]
       bench_serve.py BINARY CKPT UNLEARNER DATA --stream N [--stream-interval-ms MS] [--finetune-epochs E]
                      [--retrain-every-secs S] [--consolidate-after-edges K] [--batch-max B] [--batch-wait-ms W]
                      [--settle-secs S]
"""
import argparse, http.client, json, os, random, signal, statistics, subprocess, sys, tempfile, threading, time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def get(conn, path, token=None):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    conn.request("GET", path, headers=h)
    r = conn.getresponse()
    return r.status, r.read()


def post(conn, path, body, token):
    conn.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def metric(text, name):
    """The value of an unlabelled sample of the Prometheus text, or None."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def forget_stream(a, token, users, deadline):
    """N single-user forget requests one after another while a second connection polls their status; waits
    until all are applied (then, with --settle-secs, until no consolidation is due); reports latencies and
    counts."""
    rng = random.Random(11)
    victims = rng.sample(users, a.stream)
    sent, seen = {}, {}  # id -> time its 202 arrived / status `applied` was first seen
    lock, posting_done = threading.Lock(), threading.Event()

    def poll():
        c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
        while time.time() < deadline:
            with lock:
                pending = [i for i in sent if i not in seen]
            if not pending and posting_done.is_set():
                return
            for i in pending:
                _, b = get(c, f"/v1/forget/{i}", token)
                st = json.loads(b)["status"]
                assert st in ("queued", "applied"), b
                if st == "applied":
                    with lock:
                        seen[i] = time.perf_counter()
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
    t0 = time.perf_counter()
    for u in victims:
        status, body = post(conn, "/v1/forget", {"user": u}, token)
        assert status == 202, (status, body)
        with lock:
            sent[body["id"]] = time.perf_counter()
        if a.stream_interval_ms:
            time.sleep(a.stream_interval_ms / 1e3)
    posted = time.perf_counter() - t0
    posting_done.set()
    poller.join()
    drained = time.perf_counter() - t0
    m = get(conn, "/metrics")[1].decode()
    consolidations = metric(m, "unlearnrec_consolidations_total")
    settle_t = time.perf_counter()
    while a.settle_secs and time.perf_counter() - settle_t < a.settle_secs and time.time() < deadline:
        # Settled: nothing left for the size trigger (or, without it, a consolidation since the stream ended).
        ms = get(conn, "/metrics")[1].decode()
        since = metric(ms, "unlearnrec_edges_since_anchor")
        if (a.consolidate_after_edges and since < a.consolidate_after_edges) or (
                not a.consolidate_after_edges and metric(ms, "unlearnrec_consolidations_total") > consolidations):
            break
        time.sleep(0.5)
    ms = get(conn, "/metrics")[1].decode()
    client = [seen[i] - sent[i] for i in seen]
    return {
        "requests": a.stream, "applied": len(seen), "interval_ms": a.stream_interval_ms,
        "post_secs": round(posted, 2), "all_applied_secs": round(drained, 2),
        "server_forget_to_applied_p50_s": metric(m, "unlearnrec_forget_to_applied_p50_seconds"),
        "server_forget_to_applied_p95_s": metric(m, "unlearnrec_forget_to_applied_p95_seconds"),
        "server_forget_to_applied_mean_s": (metric(m, "unlearnrec_forget_to_applied_seconds_sum") or 0) / max(1, metric(m, "unlearnrec_forget_to_applied_seconds_count") or 0),
        "client_forget_to_applied_p50_s": pct(client, 50) if client else None,
        "client_forget_to_applied_p95_s": pct(client, 95) if client else None,
        "batches": metric(m, "unlearnrec_batches_total"),
        "model_version": metric(m, "unlearnrec_model_version"),
        "consolidations_when_all_applied": consolidations,
        "edges_since_anchor_when_all_applied": metric(m, "unlearnrec_edges_since_anchor"),
        "settle_secs": round(time.perf_counter() - settle_t, 1) if a.settle_secs else 0,
        "consolidations_after_settling": metric(ms, "unlearnrec_consolidations_total"),
        "edges_since_anchor_after_settling": metric(ms, "unlearnrec_edges_since_anchor"),
        "finetune_epochs": a.finetune_epochs, "retrain_every_secs": a.retrain_every_secs,
        "consolidate_after_edges": a.consolidate_after_edges,
    }


def recommend_load(port, users, n, clients, deadline, until=None):
    """`n` requests over `clients` connections, or, with `until`, as many as fit until that event is set."""
    lat, errors = [], [0]
    lock = threading.Lock()

    def worker(k):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        rng = random.Random(k)
        mine = []
        while len(mine) < n // clients or (until is not None and not until.is_set()):
            if time.time() > deadline or (until is not None and until.is_set()):
                break
            t = time.perf_counter()
            status, _ = get(conn, f"/v1/recommend?user={rng.choice(users)}&k=20")
            mine.append(time.perf_counter() - t)
            if status not in (200, 410):
                errors[0] += 1
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "p50_ms": 1e3 * pct(lat, 50), "p99_ms": 1e3 * pct(lat, 99), "throughput_rps": len(lat) / wall, "errors": errors[0]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary"); ap.add_argument("ckpt"); ap.add_argument("unlearner"); ap.add_argument("data")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--forgets", type=int, default=10)
    ap.add_argument("--finetune-epochs", type=int, default=0)
    ap.add_argument("--fast", action="store_true", help="serve --fast (the stream fast path)")
    ap.add_argument("--port", type=int, default=18181)
    ap.add_argument("--max-secs", type=float, default=300)
    ap.add_argument("--stream", type=int, default=0, help="stream mode: this many single-user forget requests")
    ap.add_argument("--stream-interval-ms", type=float, default=0)
    ap.add_argument("--retrain-every-secs", type=int)
    ap.add_argument("--consolidate-after-edges", type=int)
    ap.add_argument("--batch-max", type=int)
    ap.add_argument("--batch-wait-ms", type=int)
    ap.add_argument("--settle-secs", type=float, default=0, help="stream mode: then wait this long at most for a due consolidation")
    a = ap.parse_args()
    deadline = time.time() + a.max_secs
    users = [l.split()[0] for l in open(os.path.join(a.data, "train.txt")) if len(l.split()) > 1]
    # Where the data has an id map (LightGCN's user_list.txt: `org_id remap_id`), the service speaks original ids.
    id_map = os.path.join(a.data, "user_list.txt")
    if os.path.exists(id_map):
        org = dict(reversed(l.split()[:2]) for l in list(open(id_map))[1:] if len(l.split()) >= 2)
        users = [org[u] for u in users if u in org]
    with tempfile.TemporaryDirectory() as tmp:
        token = "bench-token"
        open(os.path.join(tmp, "token"), "w").write(token + "\n")
        srv = subprocess.Popen([a.binary, "-q", "serve", "--model", a.ckpt, "--unlearner", a.unlearner, "--data", a.data,
                                "--db", os.path.join(tmp, "ledger.sqlite"), "--token-file", os.path.join(tmp, "token"),
                                "--listen", f"127.0.0.1:{a.port}", "--finetune-epochs", str(a.finetune_epochs)]
                               + (["--fast"] if a.fast else [])
                               + [x for flag, v in [("--retrain-every-secs", a.retrain_every_secs),
                                                    ("--consolidate-after-edges", a.consolidate_after_edges),
                                                    ("--batch-max", a.batch_max), ("--batch-wait-ms", a.batch_wait_ms)]
                                  if v is not None for x in (flag, str(v))],
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "serve.log"), "w"))
        try:
            conn = None
            while time.time() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
                    if get(conn, "/v1/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            if a.stream:
                print(json.dumps(forget_stream(a, token, users, deadline), indent=2))
                return
            alone = recommend_load(a.port, users, a.requests, a.clients, deadline)
            # Forget stream: single-user requests posted one after another; each is timed to `applied`.
            rng = random.Random(7)
            victims = rng.sample(users, a.forgets)
            applied_secs = []
            done = threading.Event()

            def stream():
                c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=60)
                for u in victims:
                    t = time.perf_counter()
                    status, body = post(c, "/v1/forget", {"user": u}, token)
                    assert status == 202, (status, body)
                    while time.time() < deadline:
                        s, b = get(c, f"/v1/forget/{body['id']}", token)
                        if json.loads(b)["status"] != "queued":
                            break
                        time.sleep(0.02)
                    applied_secs.append(time.perf_counter() - t)
                done.set()

            st = threading.Thread(target=stream)
            st.start()
            under = recommend_load(a.port, [u for u in users if u not in victims], a.requests, a.clients, deadline, until=done)
            st.join()
            out = {"recommend_alone": alone, "recommend_during_forgets": under,
                   "forget_to_applied_s": {"n": len(applied_secs), "median": statistics.median(applied_secs), "max": max(applied_secs)},
                   "finetune_epochs": a.finetune_epochs, "clients": a.clients}
            print(json.dumps(out, indent=2))
        finally:
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=30)
            except subprocess.TimeoutExpired:
                srv.kill()


if __name__ == "__main__":
    sys.exit(main())
