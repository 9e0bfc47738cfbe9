#!/usr/bin/python3
"""bench/bench_receipts.py — fiscal receipts through the emulator (docs/receipts.md).

Starts `kassa serve` on a fresh store (SQLite with synchronous=FULL, or --store), and --clients
threads register receipts (`POST /v1/receipts`, a two-line sale) for --seconds, each as fast as
its last one is answered; then waits until every accepted receipt is registered by the emulator.
Prints a human summary on stderr and one line on stdout:

  RESULT receipts accepted=N accept_rate=R accept_p50_us=.. accept_p99_us=.. registered=N
         registered_rate=R cpu_ms_per_receipt=.. errors=E

accept_rate counts 201s per second of the loading window; registered_rate is the receipts done
per second from the first accept to the last registration (the emulator numbers documents
strictly in sequence, one register for all, as a real fiscal storage does); kassa's CPU comes
from /proc/PID/stat over the whole run. Timing is never a test: exits 1 only when something
failed (a refusal, a receipt that never registered, kassa not starting or stopping).
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import requests

RECEIPT = {
    "client": {"email": "payer@example.com"},
    "items": [
        {"name": "Tea", "price": 100.50, "quantity": 2, "sum": 201.00,
         "payment_method": "full_payment", "payment_object": 1,
         "vat": {"type": "vat22", "sum": 36.25}},
        {"name": "Cup", "price": 99.00, "quantity": 1, "sum": 99.00,
         "payment_method": "full_payment", "payment_object": 1, "vat": {"type": "vat10"}},
    ],
    "payments": [{"type": 1, "sum": 300.00}],
    "total": 300.00,
}
SETTLE_S = 120


def cpu_s(pid):
    """User + system CPU seconds of process `pid`, from /proc (clock ticks)."""
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(args):
    d = args.dir
    os.makedirs(d, exist_ok=True)
    cmd = [args.kassa, "serve", "--store", args.store, "--listen", "127.0.0.1:0",
           "--admin-listen", "127.0.0.1:0", "--admin-token-file", os.path.join(d, "admin.token"),
           "--dev-trust-own-key", "--signing-key-file", os.path.join(d, "signing.key"),
           "--vault-master-key-file", os.path.join(d, "vault.key"), "--log-level", "warn"]
    if args.store.startswith("sqlite:"):
        cmd += ["--sqlite-synchronous", "full"]
    out = open(os.path.join(d, "serve.out"), "wb")
    err = open(os.path.join(d, "serve.err"), "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=d)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = open(os.path.join(d, "serve.out"), errors="replace").read()
        m = re.search(r"public API\s+(http://\S+)", text)
        a = re.search(r"admin API\s+(http://\S+)", text)
        if m and a:
            base = m.group(1).rstrip("/")
            try:
                if requests.get(base + "/health/ready", timeout=2).status_code == 200:
                    return proc, base, a.group(1).rstrip("/")
            except requests.RequestException:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench_receipts: kassa serve did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kassa", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--store", default=None, help="default: a SQLite file in --dir")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10)
    args = ap.parse_args()
    args.kassa = os.path.abspath(args.kassa)  # serve runs in --dir
    args.dir = os.path.abspath(args.dir)
    args.store = args.store or "sqlite:" + os.path.join(args.dir, "kassa.db")
    proc, base, admin_base = start(args)
    token = subprocess.run([args.kassa, "token", "issue", "--party", "sandbox",
                            "--signing-key-file", os.path.join(args.dir, "signing.key")],
                           capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    h = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    lock = threading.Lock()
    accepted, lat_us, errors = [], [], []
    cpu0, t0 = cpu_s(proc.pid), time.monotonic()
    deadline = t0 + args.seconds

    def client(n):
        s = requests.Session()
        i = 0
        while time.monotonic() < deadline:
            i += 1
            body = json.dumps({"operation": "sell", "shopID": "TEST",
                               "external_id": "bench-%d-%d-%d" % (os.getpid(), n, i),
                               "receipt": RECEIPT})
            t = time.monotonic()
            try:
                r = s.post(base + "/v1/receipts", data=body, headers=h, timeout=30)
            except requests.RequestException as e:
                with lock:
                    errors.append(str(e))
                continue
            us = int((time.monotonic() - t) * 1e6)
            with lock:
                if r.status_code == 201:
                    accepted.append(r.json()["uuid"])
                    lat_us.append(us)
                else:
                    errors.append("%d %s" % (r.status_code, r.text[:200]))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load_s = time.monotonic() - t0
    # every accepted receipt registered: the emulator's last document number says how many
    s = requests.Session()
    admin = {"Authorization": "Bearer " + open(os.path.join(args.dir, "admin.token")).read().strip()}
    settle = time.monotonic() + SETTLE_S
    done = 0
    while time.monotonic() < settle:
        r = s.get(admin_base + "/admin/v1/receipts/emulator/emulator", headers=admin, timeout=30)
        done = r.json().get("lastDocumentNumber", 0) if r.status_code == 200 else 0
        if done >= len(accepted):
            break
        time.sleep(0.05)
    reg_s = time.monotonic() - t0
    cpu = cpu_s(proc.pid) - cpu0
    last = s.get(base + "/v1/receipts/" + accepted[-1], headers=h, timeout=30).json() \
        if accepted else {}
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(60)
    lat_us.sort()
    pct = (lambda q: lat_us[min(len(lat_us) - 1, int(q * len(lat_us)))] if lat_us else 0)
    n = len(accepted)
    print("receipts: %d accepted in %.1fs (%d/s, p50 %.1f ms, p99 %.1f ms), %d registered by %.1fs"
          " (%d/s); kassa CPU %.2f ms a receipt; %d errors"
          % (n, load_s, n / load_s, pct(0.5) / 1000, pct(0.99) / 1000, done, reg_s,
             done / reg_s, cpu * 1000 / max(n, 1), len(errors)), file=sys.stderr)
    for e in errors[:5]:
        print("  error: " + e, file=sys.stderr)
    print("RESULT receipts accepted=%d accept_rate=%.1f accept_p50_us=%d accept_p99_us=%d "
          "registered=%d registered_rate=%.1f cpu_ms_per_receipt=%.3f errors=%d"
          % (n, n / load_s, pct(0.5), pct(0.99), done, done / reg_s,
             cpu * 1000 / max(n, 1), len(errors)))
    ok = n > 0 and done >= n and not errors and rc == 0 and last.get("status") == "done"
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
