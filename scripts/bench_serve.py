#!/usr/bin/env python3
"""Loopback benchmark of `unlearnrec serve` (standard library only; bounded in count and time).

Starts the server on 127.0.0.1 with a fresh ledger, then measures
  1. /v1/recommend latency (p50, p99) and throughput with CLIENTS concurrent clients, alone;
  2. the same while a stream of single-user forget requests is being applied;
  3. the time from POST /v1/forget to status `applied` for single-user requests.

Usage: bench_serve.py BINARY CKPT UNLEARNER DATA [--requests N] [--clients C] [--forgets F] [--finetune-epochs E]
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
    ap.add_argument("--port", type=int, default=18181)
    ap.add_argument("--max-secs", type=float, default=300)
    a = ap.parse_args()
    deadline = time.time() + a.max_secs
    users = [l.split()[0] for l in open(os.path.join(a.data, "train.txt")) if len(l.split()) > 1]
    with tempfile.TemporaryDirectory() as tmp:
        token = "bench-token"
        open(os.path.join(tmp, "token"), "w").write(token + "\n")
        srv = subprocess.Popen([a.binary, "-q", "serve", "--model", a.ckpt, "--unlearner", a.unlearner, "--data", a.data,
                                "--db", os.path.join(tmp, "ledger.sqlite"), "--token-file", os.path.join(tmp, "token"),
                                "--listen", f"127.0.0.1:{a.port}", "--finetune-epochs", str(a.finetune_epochs)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            conn = None
            while time.time() < deadline:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
                    if get(conn, "/v1/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
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
