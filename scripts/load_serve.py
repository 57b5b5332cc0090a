#!/usr/bin/env python3
"""Loopback load test of `unlearnrec serve` at saturation (standard library only; loopback only; bounded in time
and in count).

Starts the server on 127.0.0.1 with a fresh ledger and the overload settings given (--max-queue, --rate-limit),
then CLIENTS threads, each on its own keep-alive connection, send requests back to back (no think time: the
service is saturated) until --secs pass or --max-requests were sent: a forget request (one random training
interaction of a random user, `{"user", "items": [item]}`) with probability --forget-share, else a
recommendation for a random user. 429 answers are counted (the clients do not wait for Retry-After: the point
is to keep the queue full).

Reports, as JSON: throughput (all, recommend, forget), p50/p99 latency per route, the status codes, the
server's resident memory (VmRSS) at the start (once ready) and at the end (after the queue drained), and checks
from the ledger (SQLite, read after the server stopped) and the API that every forget answered 202 was applied
exactly once: its row is `applied`, no edge was removed by two requests, and the versions' edge counts add up
to the edges the requests removed. Exits non-zero when a check fails.

Usage: load_serve.py BINARY CKPT UNLEARNER DATA [--clients 8] [--secs 20] [--max-requests 200000]
                     [--forget-share 0.2] [--max-queue 256] [--rate-limit R] [--rate-burst B]
                     [--finetune-epochs 0] [--batch-max 64] [--batch-wait-ms 50] [--port 18191]
"""
import argparse, http.client, json, os, random, signal, sqlite3, subprocess, sys, tempfile, threading, time


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))] if xs else None


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def load_pairs(data):
    """(user, item) external-id pairs of the training data, and the users."""
    def id_map(name):
        path = os.path.join(data, name)
        if not os.path.exists(path):
            return None
        return dict(reversed(l.split()[:2]) for l in list(open(path))[1:] if len(l.split()) >= 2)

    users, items = id_map("user_list.txt"), id_map("item_list.txt")
    pairs = []
    for line in open(os.path.join(data, "train.txt")):
        f = line.split()
        if len(f) < 2:
            continue
        u = users[f[0]] if users else f[0]
        for i in f[1:]:
            pairs.append((u, items[i] if items else i))
    return pairs, sorted({u for u, _ in pairs})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary"); ap.add_argument("ckpt"); ap.add_argument("unlearner"); ap.add_argument("data")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--secs", type=float, default=20)
    ap.add_argument("--max-requests", type=int, default=200000)
    ap.add_argument("--forget-share", type=float, default=0.2)
    ap.add_argument("--max-queue", type=int, default=256)
    ap.add_argument("--rate-limit", type=int)
    ap.add_argument("--rate-burst", type=int)
    ap.add_argument("--finetune-epochs", type=int, default=0)
    ap.add_argument("--batch-max", type=int, default=64)
    ap.add_argument("--batch-wait-ms", type=int, default=50)
    ap.add_argument("--drain-secs", type=float, default=120, help="wait at most this long for the queue to drain")
    ap.add_argument("--port", type=int, default=18191)
    a = ap.parse_args()
    pairs, users = load_pairs(a.data)
    token = "load-token"
    out = {"command": " ".join(sys.argv), "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    with tempfile.TemporaryDirectory() as tmp:
        open(os.path.join(tmp, "token"), "w").write(token + "\n")
        db = os.path.join(tmp, "ledger.sqlite")
        cmd = [a.binary, "-q", "serve", "--model", a.ckpt, "--unlearner", a.unlearner, "--data", a.data, "--db", db,
               "--token-file", os.path.join(tmp, "token"), "--listen", f"127.0.0.1:{a.port}",
               "--finetune-epochs", str(a.finetune_epochs), "--max-queue", str(a.max_queue),
               "--batch-max", str(a.batch_max), "--batch-wait-ms", str(a.batch_wait_ms)]
        if a.rate_limit:
            cmd += ["--rate-limit", str(a.rate_limit)] + (["--rate-burst", str(a.rate_burst)] if a.rate_burst else [])
        log = open(os.path.join(tmp, "serve.log"), "w")
        srv = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        ok = True
        try:
            t_ready = time.time() + 120
            while True:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
                    c.request("GET", "/v1/health")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    pass
                if time.time() > t_ready or srv.poll() is not None:
                    raise SystemExit("the server did not start: " + open(os.path.join(tmp, "serve.log")).read())
                time.sleep(0.2)
            rss_start = rss_kib(srv.pid)
            lock = threading.Lock()
            lat = {"recommend": [], "forget": []}
            codes = {}
            accepted = {}  # id -> duplicate flag of its first 202
            sent = [0]
            deadline = time.time() + a.secs

            def client(k):
                rng = random.Random(k)
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
                mine = {"recommend": [], "forget": []}
                my_codes, my_acc = {}, {}
                while time.time() < deadline:
                    with lock:
                        if sent[0] >= a.max_requests:
                            break
                        sent[0] += 1
                    if rng.random() < a.forget_share:
                        u, i = rng.choice(pairs)
                        kind = "forget"
                        body = json.dumps({"user": u, "items": [i]})
                        hdr = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                        t = time.perf_counter()
                        conn.request("POST", "/v1/forget", body=body, headers=hdr)
                    else:
                        kind = "recommend"
                        t = time.perf_counter()
                        conn.request("GET", f"/v1/recommend?user={rng.choice(users)}&k=20")
                    r = conn.getresponse()
                    data = r.read()
                    mine[kind].append(time.perf_counter() - t)
                    key = f"{kind} {r.status}"
                    if r.status == 429:
                        key += " rate limit" if b"rate limit" in data else " queue full"
                    my_codes[key] = my_codes.get(key, 0) + 1
                    if kind == "forget" and r.status == 202:
                        v = json.loads(data)
                        my_acc.setdefault(v["id"], v["duplicate"])
                    if kind == "forget" and r.status == 429 and r.getheader("Retry-After") is None:
                        my_codes["429 without Retry-After"] = my_codes.get("429 without Retry-After", 0) + 1
                with lock:
                    for kk in lat:
                        lat[kk].extend(mine[kk])
                    for kk, n in my_codes.items():
                        codes[kk] = codes.get(kk, 0) + n
                    for kk, d in my_acc.items():
                        accepted.setdefault(kk, d)

            t0 = time.perf_counter()
            ts = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            wall = time.perf_counter() - t0
            rss_peak_load = rss_kib(srv.pid)
            # Drain: every accepted request applied.
            c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=30)
            t_drain = time.time()
            while time.time() - t_drain < a.drain_secs:
                c.request("GET", "/v1/health")
                h = json.loads(c.getresponse().read())
                if h["queued"] == 0:
                    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
                    q = con.execute("SELECT COUNT(*) FROM requests WHERE status = 'queued'").fetchone()[0]
                    con.close()
                    if q == 0:
                        break
                time.sleep(0.1)
            drained = time.time() - t_drain
            rss_end = rss_kib(srv.pid)
            # Each accepted id through the API (one connection, sequential; honouring Retry-After under a rate limit).
            api_status = {}
            for rid in accepted:
                while True:
                    c.request("GET", f"/v1/forget/{rid}", headers={"Authorization": f"Bearer {token}"})
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 429:
                        break
                    time.sleep(float(r.getheader("Retry-After", "1")))
                s = json.loads(body).get("status", f"http {r.status}") if r.status == 200 else f"http {r.status}"
                api_status[s] = api_status.get(s, 0) + 1
            out["uptime_during"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
            n = sum(len(v) for v in lat.values())
            out.update({
                "clients": a.clients, "secs": round(wall, 2), "requests": n,
                "throughput_rps": round(n / wall, 1),
                "recommend": {"n": len(lat["recommend"]), "rps": round(len(lat["recommend"]) / wall, 1),
                              "p50_ms": round(1e3 * (pct(lat["recommend"], 50) or 0), 3),
                              "p99_ms": round(1e3 * (pct(lat["recommend"], 99) or 0), 3)},
                "forget": {"n": len(lat["forget"]), "rps": round(len(lat["forget"]) / wall, 1),
                           "p50_ms": round(1e3 * (pct(lat["forget"], 50) or 0), 3),
                           "p99_ms": round(1e3 * (pct(lat["forget"], 99) or 0), 3)},
                "status_codes": dict(sorted(codes.items())),
                "accepted_forget_ids": len(accepted),
                "drain_secs": round(drained, 2),
                "rss_kib": {"start": rss_start, "after_load": rss_peak_load, "end": rss_end},
                "api_status_of_accepted": api_status,
            })
        finally:
            t_stop = time.time()
            srv.send_signal(signal.SIGTERM)
            try:
                rc = srv.wait(timeout=60)
            except subprocess.TimeoutExpired:
                srv.kill()
                rc = "killed"
            out["sigterm_exit"] = {"rc": rc, "secs": round(time.time() - t_stop, 2)}
        # Exactly once, from the ledger.
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        rows = {rid: (st, edges) for rid, st, edges in con.execute("SELECT id, status, edges FROM requests")}
        version_edges = con.execute("SELECT COALESCE(SUM(edges), 0) FROM versions").fetchone()[0]
        versions = con.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
        con.close()
        missing = [r for r in accepted if r not in rows]
        not_applied = [r for r in accepted if r in rows and rows[r][0] != "applied"]
        removed = [tuple(e) for st, edges in rows.values() if edges for e in json.loads(edges)]
        checks = {
            "every_accepted_forget_in_ledger": not missing,
            "every_accepted_forget_applied": not not_applied,
            "no_rows_beyond_accepted": len(rows) == len(accepted),
            "no_edge_removed_twice": len(removed) == len(set(removed)),
            "versions_add_up_to_removed_edges": version_edges == len(removed),
        }
        out.update({"ledger": {"rows": len(rows), "versions": versions, "edges_removed": len(removed)}, "checks": checks})
        ok = all(checks.values()) and out["api_status_of_accepted"].keys() <= {"applied"}
        print(json.dumps(out, indent=2))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
