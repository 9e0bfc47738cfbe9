#!/usr/bin/python3
"""bench/bench_search.py — the search API over a large read model (docs/search.md).

Starts `kassa serve` once on a fresh SQLite store (so its migrations make the search tables),
stops it, writes --payments generated payments (and their invoices) of --shops shops straight
into the search tables, starts kassa again and times --queries searches over HTTP, each a
realistic merchant query chosen in turn: a day's payments, by status, by e-mail, by card's last
digits, by RRN, by invoice, invoices with a failed payment, and the next page of a day. Prints a
human summary on stderr and one line on stdout:

  RESULT search payments=N queries=Q p50_us=... p99_us=... max_us=... load_s=...

The rows are written with Python's sqlite3 in one transaction; they look like what the search
relay writes (the same columns; documents with the fields a result shows). Timing is never a
test: exits 1 only when something failed.
"""
import argparse
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time

import requests

DAY_MS = 24 * 3600 * 1000
STATUSES = ["captured"] * 8 + ["failed", "refunded", "cancelled", "processed"]


def start(args, d):
    out = open(os.path.join(d, "serve.out"), "wb")
    err = open(os.path.join(d, "serve.err"), "ab")
    cmd = [args.kassa, "serve", "--store", "sqlite:" + args.db,
           "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
           "--admin-token-file", os.path.join(d, "admin.token"), "--dev-trust-own-key",
           "--signing-key-file", os.path.join(d, "signing.key"),
           "--vault-master-key-file", os.path.join(d, "vault.key"), "--log-level", "warn"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=d)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(r"public API\s+(http://\S+)",
                      open(os.path.join(d, "serve.out"), errors="replace").read())
        if m:
            base = m.group(1).rstrip("/")
            try:
                if requests.get(base + "/health/ready", timeout=2).status_code == 200:
                    return proc, base
            except requests.RequestException:
                pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench_search: kassa serve did not start")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    if proc.wait(60) != 0:
        raise SystemExit("bench_search: kassa serve exited %s" % proc.returncode)


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


def fill(args, shops, t0):
    """Writes the invoices and payments; returns samples to query for."""
    db = sqlite3.connect(args.db)
    db.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(7)
    span = 30 * DAY_MS
    inv_rows, pay_rows, samples = [], [], []
    for i in range(args.payments):
        shop = shops[i % len(shops)]
        at = t0 - rnd.randrange(span)
        inv_id = "b%010d" % i
        status = rnd.choice(STATUSES)
        amount = rnd.randrange(100, 1000000)
        email = "payer%d@example.com" % rnd.randrange(args.payments // 3 + 1)
        last4 = "%04d" % rnd.randrange(10000)
        rrn = "%012d" % rnd.randrange(10 ** 12)
        pay = {"id": "1", "invoiceID": inv_id, "shopID": shop, "createdAt": iso(at),
               "amount": amount, "currency": "RUB", "status": status,
               "flow": {"type": "PaymentFlowInstant"}, "metadata": {},
               "payer": {"payerType": "PaymentResourcePayer", "paymentSession": "s",
                         "contactInfo": {"email": email},
                         "paymentToolDetails": {"detailsType": "PaymentToolDetailsBankCard",
                                                "cardNumberMask": "424242******" + last4,
                                                "bin": "424242", "lastDigits": last4,
                                                "paymentSystem": "visa"}},
               "transactionInfo": {"rrn": rrn, "approvalCode": "A%05d" % (i % 100000)}}
        inv = {"id": inv_id, "shopID": shop, "createdAt": iso(at), "amount": amount,
               "currency": "RUB", "product": "Order %d" % i, "metadata": {},
               "status": "paid" if status in ("captured", "refunded") else "unpaid"}
        inv_rows.append((inv_id, "sandbox", shop, at, inv["status"], amount, "RUB",
                         json.dumps(inv)))
        pay_rows.append((inv_id, "1", "sandbox", shop, at, status, "instant", amount, "RUB",
                         email, "10.0.0.1", "fp", "424242", last4, "visa", rrn, pay[
                             "transactionInfo"]["approvalCode"], json.dumps(pay)))
        if i % (args.payments // 200 + 1) == 0:
            samples.append({"shop": shop, "at": at, "email": email, "last4": last4, "rrn": rrn,
                            "invoice": inv_id})
        if len(pay_rows) >= 50000:
            flush(db, inv_rows, pay_rows)
    flush(db, inv_rows, pay_rows)
    db.execute("ANALYZE")
    db.commit()
    db.close()
    return samples


def flush(db, inv_rows, pay_rows):
    db.executemany("INSERT INTO search_invoices (id, party_id, shop_id, created_at, status, amount,"
                   " currency, doc) VALUES (?,?,?,?,?,?,?,?)", inv_rows)
    db.executemany("INSERT INTO search_payments (invoice_id, payment_id, party_id, shop_id,"
                   " created_at, status, flow, amount, currency, payer_email, payer_ip,"
                   " fingerprint, first6, last4, payment_system, rrn, approval_code, doc)"
                   " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", pay_rows)
    db.commit()
    inv_rows.clear()
    pay_rows.clear()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kassa", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--payments", type=int, default=1000000)
    ap.add_argument("--shops", type=int, default=10)
    ap.add_argument("--queries", type=int, default=400)
    args = ap.parse_args()
    args.kassa = os.path.abspath(args.kassa)
    d = os.path.abspath(args.dir)
    os.makedirs(d, exist_ok=True)
    args.db = os.path.join(d, "kassa.db")
    shops = ["BENCH-%d" % i for i in range(args.shops)]

    proc, base = start(args, d)
    admin = re.search(r"admin API\s+(http://\S+)",
                      open(os.path.join(d, "serve.out")).read()).group(1).rstrip("/")
    token_h = {"Authorization": "Bearer " + open(os.path.join(d, "admin.token")).read().strip()}
    cur = requests.get(admin + "/admin/v1/config", headers=token_h, timeout=30).json()
    doc = cur["document"]
    for s in shops:
        doc["parties"]["sandbox"]["shops"][s] = dict(doc["parties"]["sandbox"]["shops"]["TEST"])
    r = requests.put(admin + "/admin/v1/config", headers=token_h, timeout=30, json={
        "baseRevision": cur["revision"], "document": doc, "reason": "bench shops"})
    if r.status_code != 200:
        raise SystemExit("bench_search: config: " + r.text)
    stop(proc)

    t0 = int(time.time() * 1000)
    load0 = time.monotonic()
    samples = fill(args, shops, t0)
    load_s = time.monotonic() - load0
    proc, base = start(args, d)
    token = subprocess.run([args.kassa, "token", "issue", "--party", "sandbox",
                            "--signing-key-file", os.path.join(d, "signing.key")],
                           capture_output=True, text=True, timeout=60).stdout.strip()
    s = requests.Session()
    s.headers["Authorization"] = "Bearer " + token
    times, failures, found = [], 0, 0
    try:
        for q in range(args.queries):
            smp = samples[q % len(samples)]
            day_from, day_to = iso(smp["at"] - DAY_MS // 2), iso(smp["at"] + DAY_MS // 2)
            wide_from, wide_to = iso(t0 - 31 * DAY_MS), iso(t0 + 1)
            kind = q % 8
            what, params = "payments", {"fromTime": day_from, "toTime": day_to, "limit": 100}
            if kind == 1:
                params["paymentStatus"] = "failed"
            elif kind == 2:
                params.update(fromTime=wide_from, toTime=wide_to, payerEmail=smp["email"])
            elif kind == 3:
                params.update(fromTime=wide_from, toTime=wide_to, last4=smp["last4"],
                              first6="424242")
            elif kind == 4:
                params.update(fromTime=wide_from, toTime=wide_to, rrn=smp["rrn"])
            elif kind == 5:
                params.update(fromTime=wide_from, toTime=wide_to, invoiceID=smp["invoice"])
            elif kind == 6:
                what = "invoices"
                params["paymentStatus"] = "failed"
            url = "%s/v2/analytics/shops/%s/%s" % (base, smp["shop"], what)
            t = time.monotonic()
            r = s.get(url, params=params, timeout=60)
            if kind == 7 and r.status_code == 200 and r.json().get("continuationToken"):
                params["continuationToken"] = r.json()["continuationToken"]
                t = time.monotonic()
                r = s.get(url, params=params, timeout=60)
            times.append(time.monotonic() - t)
            if r.status_code != 200:
                failures += 1
            else:
                found += len(r.json()["result"])
    finally:
        stop(proc)
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(round(p / 100.0 * (len(times) - 1))))]  # noqa
    print("%d payments in %d shops written in %.1f s; %d searches: p50 %.1f ms, p99 %.1f ms, "
          "max %.1f ms; %d results; %d failed" % (args.payments, args.shops, load_s, len(times),
                                                  pct(50) * 1e3, pct(99) * 1e3, times[-1] * 1e3,
                                                  found, failures), file=sys.stderr)
    print("RESULT search payments=%d queries=%d p50_us=%.0f p99_us=%.0f max_us=%.0f load_s=%.1f"
          % (args.payments, len(times), pct(50) * 1e6, pct(99) * 1e6, times[-1] * 1e6, load_s))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
