"""Load test of `tagface serve` on loopback: requests/s and latency percentiles of POST /api/generate.

Starts the server as a real process on 127.0.0.1 (a free port), warms it up, then C client threads (keep-alive
HTTP/1.1, standard library only) send requests until R have been sent or T seconds have passed, whichever
comes first. Prints a JSON summary and a Markdown table row; the server is stopped at the end.

    python benchmarks/serve_bench.py --checkpoint runs/hour --n 4 --clients 8 --requests 400 --max-seconds 120
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import threading
import time

from tagface.serving import serve_process

HAIR = ["orange", "white", "aqua", "gray", "green", "red", "purple", "pink", "blue", "black", "brown", "blonde"]
EYES = ["gray", "black", "orange", "pink", "yellow", "aqua", "purple", "green", "brown", "red", "blue"]


def server_args(args) -> list[str]:
    extra = ["--no-access-log", "--threads", str(args.threads), "--queue", str(args.queue)]
    if args.checkpoint:
        extra += ["--checkpoint", args.checkpoint]
    if args.max_concurrent:
        extra += ["--max-concurrent", str(args.max_concurrent)]
    return extra


def one_request(conn: http.client.HTTPConnection, body: dict) -> tuple[int, float]:
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    conn.request("POST", "/api/generate", body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    payload = resp.read()
    dt = time.perf_counter() - t0
    if resp.status == 200:
        assert len(json.loads(payload)["images"]) == body["n"]
    return resp.status, dt


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="run directory or .safetensors (default: the shipped model)")
    p.add_argument("--n", type=int, default=4, help="faces per request (default 4)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=400, help="requests in all, at most (default 400)")
    p.add_argument("--max-seconds", type=float, default=120, help="stop sending after this long (default 120)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--max-concurrent", type=int, help="passed to tagface serve (default: its own)")
    p.add_argument("--threads", type=int, default=1, help="passed to tagface serve (default 1)")
    p.add_argument("--queue", type=int, default=8, help="passed to tagface serve (default 8)")
    args = p.parse_args()

    load_before = os.getloadavg()
    with serve_process(server_args(args)) as (url, log):
        port = int(url.rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(args.warmup):
            one_request(conn, {"hair": "blue", "eyes": "red", "n": args.n, "seed": i})
        conn.close()

        counter = iter(range(args.requests))
        lock = threading.Lock()
        results: list[tuple[int, float]] = []
        errors: list[str] = []
        stop_at = time.monotonic() + args.max_seconds

        def client():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            while time.monotonic() < stop_at:
                with lock:
                    i = next(counter, None)
                if i is None:
                    break
                body = {"hair": HAIR[i % len(HAIR)], "eyes": EYES[i % len(EYES)], "n": args.n, "seed": 1000 + i}
                try:
                    r = one_request(c, body)
                except (OSError, http.client.HTTPException, AssertionError) as err:
                    errors.append(repr(err))
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                    continue
                with lock:
                    results.append(r)
            c.close()

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    ok = [dt for status, dt in results if status == 200]
    summary = {
        "checkpoint": args.checkpoint or "(shipped default)", "n": args.n, "clients": args.clients,
        "sent": len(results) + len(errors), "ok": len(ok), "503": sum(s == 503 for s, _ in results),
        "other_status": sum(s not in (200, 503) for s, _ in results), "errors": len(errors),
        "wall_s": round(wall, 2), "req_per_s": round(len(ok) / wall, 1), "faces_per_s": round(len(ok) * args.n / wall, 1),
        "p50_ms": round(1000 * percentile(ok, 50), 1), "p90_ms": round(1000 * percentile(ok, 90), 1),
        "p99_ms": round(1000 * percentile(ok, 99), 1), "max_ms": round(1000 * max(ok, default=float("nan")), 1),
        "mean_ms": round(1000 * statistics.fmean(ok), 1) if ok else None,
        "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "server": next((line.strip() for line in log if "studio for" in line), ""),
    }
    print(json.dumps(summary, indent=2))
    print(f"| {summary['n']} | {summary['clients']} | {summary['ok']}/{summary['sent']} | {summary['503']} | "
          f"{summary['req_per_s']} | {summary['faces_per_s']} | {summary['p50_ms']} | {summary['p99_ms']} | "
          f"{summary['loadavg_before'][0]} |")
    return 0 if summary["ok"] and not summary["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
