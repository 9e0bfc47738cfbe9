#!/usr/bin/python3
"""bench/bench_payments.py — full card payments over HTTP against a real `kassa serve`.

Starts `kassa serve` on the given store (its own ports, keys and admin token in --dir), issues a
development merchant token, then runs --payers concurrent payers (threads, one keep-alive HTTP
session each) for --seconds. Each payer loops over the flow of tests/blackbox/test_payments.py:

  POST /v2/processing/invoices                       (merchant token)       "invoice"
  POST /v2/processing/payment-resources              (invoice access token) "resource"
  POST /v2/processing/invoices/{id}/payments         (PaymentFlowInstant)   "payment"
  GET  /v2/processing/invoices/{id}/payments/{pid}   until "captured"       "whole" = all four

A payer starts no payment after the deadline; the one in flight finishes (bounded by
--payment-timeout). Payments/s = captured payments / time from start to the last capture.
Prints a human summary on stderr and one line on stdout:

  RESULT payments bench=... payments=N rate=R invoice_p50_us=... invoice_p99_us=... ...

With --webhook, a receiver on loopback takes every event of the run through a webhook that
hears all fifteen types (docs/webhooks.md): after the payments it waits (up to --drain-seconds)
for the deliveries the run made and adds webhooks=N (deliveries received), webhook_rate (per
second, from the first payment to the last delivery) and webhook_lag_p50/p99_us (receipt time
minus the event's occuredAt).

With --kafka-mock PATH (tests/harness/kafka_mock.c's program), kassa publishes every event to
that broker (--kafka-brokers) and a consumer (python3-confluent-kafka) reads the invoice topic
back: adds kafka_events (read back), kafka_rate (per second, first payment to last event) and
kafka_lag_p50/p99_us (receipt time minus the envelope's occurredAt).

Exits 1 if anything failed (a wrong status, a failed payment, a timeout, kassa exiting badly).
Timing is never a test: a missed goal is not a failure.
"""
import argparse
import calendar
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import requests

CARD = "4242424242424242"


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def future(seconds=86400):
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + seconds))


class Failed(Exception):
    pass


def start_serve(args):
    d = args.dir
    os.makedirs(d, exist_ok=True)
    out = open(os.path.join(d, "serve.out"), "wb")
    err = open(os.path.join(d, "serve.err"), "wb")
    cmd = [args.kassa, "serve", "--store", args.store,
           "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
           "--admin-token-file", os.path.join(d, "admin.token"),
           "--dev-trust-own-key",
           "--signing-key-file", os.path.join(d, "signing.key"),
           "--vault-master-key-file", os.path.join(d, "vault.key"),
           "--log-level", "warn"]
    if args.store.startswith("sqlite:"):
        cmd += ["--sqlite-synchronous", "full"]
    if args.webhook:
        cmd += ["--webhook-allow-loopback"]
    if args.kafka_brokers:
        cmd += ["--kafka-brokers", args.kafka_brokers]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=d)
    deadline = time.monotonic() + 30
    base = None
    while time.monotonic() < deadline:
        text = open(os.path.join(d, "serve.out"), errors="replace").read()
        m = re.search(r"public API\s+(http://\S+)", text)
        if m:
            base = m.group(1).rstrip("/")
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    while base and time.monotonic() < deadline:
        try:
            if requests.get(base + "/health/ready", timeout=2).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.05)
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    tail = open(os.path.join(d, "serve.err"), errors="replace").read()[-3000:]
    raise Failed("kassa serve did not become ready:\n" + tail)


def issue_token(args):
    out = subprocess.run([args.kassa, "token", "issue", "--party", "sandbox",
                          "--signing-key-file", os.path.join(args.dir, "signing.key")],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise Failed("kassa token issue: " + out.stderr)
    return out.stdout.strip()


class Receiver:
    """Counts webhook deliveries and their lag behind the event (occuredAt)."""

    def __init__(self):
        self.lags, self.received, self.last = [], 0, 0.0
        self.lock = threading.Lock()
        rec = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                at = json.loads(body)["occuredAt"]
                sec = calendar.timegm(time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S"))
                lag = now - (sec + float("0" + at[19:-1]))
                with rec.lock:
                    rec.received += 1
                    rec.lags.append(lag)
                    rec.last = time.monotonic()

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return self.received


class KafkaReader:
    """Reads the invoice topic back with confluent-kafka, timing each event's lag."""

    def __init__(self, brokers, topic):
        from confluent_kafka import Consumer  # python3-confluent-kafka
        self.c = Consumer({"bootstrap.servers": brokers, "group.id": "bench",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.c.subscribe([topic])
        self.lags, self.received, self.last = [], 0, 0.0
        self.lock = threading.Lock()
        self.stop = False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.stop:
            m = self.c.poll(0.2)
            if m is None or m.error():
                continue
            now = time.time()
            at = json.loads(m.value())["occurredAt"]
            sec = calendar.timegm(time.strptime(at[:19], "%Y-%m-%dT%H:%M:%S"))
            with self.lock:
                self.received += 1
                self.lags.append(now - (sec + float("0" + at[19:-1])))
                self.last = time.monotonic()
        self.c.close()

    def count(self):
        with self.lock:
            return self.received


def kafka_mock_start(path):
    proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    brokers = proc.stdout.readline().strip()
    if not brokers:
        raise Failed("kafka-mock printed no bootstrap address")
    proc.stdin.write("topic kassa.invoice 1\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ok":
        raise Failed("kafka-mock refused to make the topic")
    return proc, brokers


def set_up_webhook(base, token, url):
    types = ["InvoiceCreated", "InvoicePaid", "InvoiceCancelled", "InvoiceFulfilled",
             "PaymentStarted", "PaymentProcessed", "PaymentCaptured", "PaymentCancelled",
             "PaymentRefunded", "PaymentFailed", "PaymentRefundCreated",
             "PaymentRefundSucceeded", "PaymentRefundFailed", "PaymentUserInteractionRequested",
             "PaymentUserInteractionCompleted"]
    r = requests.post(base + "/v2/processing/webhooks", headers={"Authorization": "Bearer " + token},
                      json={"scope": {"topic": "InvoicesTopic", "shopID": "TEST",
                                      "eventTypes": types}, "url": url}, timeout=30)
    if r.status_code != 201:
        raise Failed("webhook set up: %s %s" % (r.status_code, r.text[:300]))


class Payer(threading.Thread):
    def __init__(self, base, token, deadline, args, stats, lock):
        super().__init__(daemon=True)
        self.base, self.token, self.deadline, self.args = base, token, deadline, args
        self.stats, self.lock = stats, lock
        self.s = requests.Session()

    def call(self, method, path, token, body, expect):
        h = {"Authorization": "Bearer " + token}
        t0 = time.monotonic()
        r = self.s.request(method, self.base + path, json=body, headers=h, timeout=30)
        dt = time.monotonic() - t0
        if r.status_code != expect:
            raise Failed("%s %s -> %s %s" % (method, path, r.status_code, r.text[:300]))
        return r.json(), dt

    def one(self):
        t0 = time.monotonic()
        out, d_inv = self.call("POST", "/v2/processing/invoices", self.token,
                               {"shopID": "TEST", "dueDate": future(), "amount": 6000,
                                "currency": "RUB", "product": "Bench %s" % uuid.uuid4().hex[:8],
                                "metadata": {"bench": 1}}, 201)
        inv_id = out["invoice"]["id"]
        inv_tok = out["invoiceAccessToken"]["payload"]
        res, d_res = self.call("POST", "/v2/processing/payment-resources", inv_tok,
                               {"paymentTool": {"paymentToolType": "CardData", "cardNumber": CARD,
                                                "expDate": "12/30", "cvv": "123",
                                                "cardHolder": "IVAN PETROV"},
                                "clientInfo": {"fingerprint": "bench"}}, 201)
        pay, d_pay = self.call("POST", "/v2/processing/invoices/%s/payments" % inv_id, inv_tok,
                               {"flow": {"type": "PaymentFlowInstant"},
                                "payer": {"payerType": "PaymentResourcePayer",
                                          "paymentToolToken": res["paymentToolToken"],
                                          "paymentSession": res["paymentSession"],
                                          "contactInfo": {"email": "payer@example.com"}}}, 201)
        pid = pay["id"]
        polls = 0
        limit = t0 + self.args.payment_timeout
        status = pay.get("status")
        while status != "captured":
            if status in ("failed", "cancelled", "refunded"):
                raise Failed("payment %s/%s ended %s" % (inv_id, pid, status))
            if time.monotonic() > limit:
                raise Failed("payment %s/%s stuck in %s" % (inv_id, pid, status))
            time.sleep(self.args.poll_interval)
            p, _ = self.call("GET", "/v2/processing/invoices/%s/payments/%s" % (inv_id, pid),
                             self.token, None, 200)
            polls += 1
            status = p["status"]
        t1 = time.monotonic()
        return d_inv, d_res, d_pay, t1 - t0, polls, t1

    def run(self):
        local = {"invoice": [], "resource": [], "payment": [], "whole": []}
        polls, last, err = 0, 0.0, None
        n = 0
        while time.monotonic() < self.deadline and n < self.args.max_per_payer:
            try:
                d_inv, d_res, d_pay, whole, p, t1 = self.one()
            except Exception as e:  # noqa: BLE001 — any failure fails the run
                err = "%s: %s" % (type(e).__name__, e)
                break
            n += 1
            local["invoice"].append(d_inv)
            local["resource"].append(d_res)
            local["payment"].append(d_pay)
            local["whole"].append(whole)
            polls += p
            last = max(last, t1)
        with self.lock:
            for k, v in local.items():
                self.stats[k].extend(v)
            self.stats["polls"] += polls
            self.stats["last"] = max(self.stats["last"], last)
            if err:
                self.stats["errors"].append(err)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kassa", required=True)
    ap.add_argument("--store", required=True, help="sqlite:PATH or postgres://...")
    ap.add_argument("--dir", required=True, help="serve's working directory (keys, logs)")
    ap.add_argument("--label", default="")
    ap.add_argument("--payers", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--max-per-payer", type=int, default=100000)
    ap.add_argument("--poll-interval", type=float, default=0.05)
    ap.add_argument("--payment-timeout", type=float, default=30)
    ap.add_argument("--webhook", action="store_true", help="deliver every event to a receiver")
    ap.add_argument("--drain-seconds", type=float, default=60)
    ap.add_argument("--kafka-mock", default="", help="publish every event to this mock broker")
    args = ap.parse_args()
    args.kafka_brokers = ""
    args.kassa = os.path.abspath(args.kassa)
    args.dir = os.path.abspath(args.dir)

    proc = None
    mock = None
    kafka = None
    rc = 0
    try:
        if args.kafka_mock:
            mock, args.kafka_brokers = kafka_mock_start(args.kafka_mock)
        proc, base = start_serve(args)
        token = issue_token(args)
        receiver = Receiver() if args.webhook else None
        if receiver:
            set_up_webhook(base, token, receiver.url)
        # one warm-up payment (connection setup, first-use paths) outside the clock
        warm = {"invoice": [], "resource": [], "payment": [], "whole": [], "polls": 0,
                "last": 0.0, "errors": []}
        w = Payer(base, token, time.monotonic() + 60, argparse.Namespace(
            **dict(vars(args), max_per_payer=1)), warm, threading.Lock())
        w.run()
        if warm["errors"]:
            raise Failed("warm-up payment: " + warm["errors"][0])

        stats = {"invoice": [], "resource": [], "payment": [], "whole": [], "polls": 0,
                 "last": 0.0, "errors": []}
        lock = threading.Lock()
        before = receiver.count() if receiver else 0
        if args.kafka_mock:
            kafka = KafkaReader(args.kafka_brokers, "kassa.invoice")
            time.sleep(1)  # its first fetch; the warm-up payment's events count as before
            kafka_before = kafka.count()
        cpu0 = os.times()
        start = time.monotonic()
        payers = [Payer(base, token, start + args.seconds, args, stats, lock)
                  for _ in range(args.payers)]
        for p in payers:
            p.start()
        for p in payers:
            p.join(args.seconds + args.payment_timeout + 30)
        cpu1 = os.times()
        hung = sum(1 for p in payers if p.is_alive())
        if hung:
            stats["errors"].append("%d payers did not finish" % hung)
        n = len(stats["whole"])
        elapsed = (stats["last"] - start) if n else args.seconds
        rate = n / elapsed if elapsed > 0 else 0.0
        gen_cpu = ((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)) / max(elapsed, 1e-9)

        us = lambda x: "-" if x is None else "%.0f" % (x * 1e6)  # noqa: E731
        fields = ["bench=payments", "label=%s" % (args.label or "-"), "payments=%d" % n,
                  "rate=%.1f" % rate, "seconds=%.2f" % elapsed, "payers=%d" % args.payers,
                  "polls=%d" % stats["polls"], "errors=%d" % len(stats["errors"]),
                  "gen_cpu=%.2f" % gen_cpu]
        for k in ("invoice", "resource", "payment", "whole"):
            fields.append("%s_p50_us=%s" % (k, us(pct(stats[k], 50))))
            fields.append("%s_p99_us=%s" % (k, us(pct(stats[k], 99))))
        if kafka:
            # every committed event of an invoice is published: wait until the topic stops
            # growing (bounded), then count what the run added
            drain_end, last_n = time.monotonic() + args.drain_seconds, -1
            while time.monotonic() < drain_end:
                time.sleep(1.0)
                if kafka.count() == last_n:
                    break
                last_n = kafka.count()
            with kafka.lock:
                got, lags, last_at = kafka.received - kafka_before, list(kafka.lags), kafka.last
            if got == 0:
                stats["errors"].append("kafka: no event read back")
            span = max(last_at - start, 1e-9)
            fields += ["kafka_events=%d" % got, "kafka_rate=%.1f" % (got / span),
                       "kafka_lag_p50_us=%s" % us(pct(lags, 50)),
                       "kafka_lag_p99_us=%s" % us(pct(lags, 99))]
            print("  kafka: %d events read back, %.0f/s (%.1f a payment), lag p50 %.1f ms p99 "
                  "%.1f ms" % (got, got / span, got / max(n, 1),
                               pct(lags, 50) * 1e3 if lags else 0,
                               pct(lags, 99) * 1e3 if lags else 0), file=sys.stderr)
        if receiver:
            # each captured payment makes five deliveries (invoice created, payment started,
            # processed, captured, invoice paid); wait for those of the run
            want = before + 5 * n
            drain_end = time.monotonic() + args.drain_seconds
            while receiver.count() < want and time.monotonic() < drain_end:
                time.sleep(0.05)
            with receiver.lock:
                got, lags, last_at = receiver.received - before, list(receiver.lags), receiver.last
            if got < 5 * n:
                stats["errors"].append("webhooks: %d of %d deliveries in %.0f s" %
                                       (got, 5 * n, args.drain_seconds))
            span = max(last_at - start, 1e-9)
            fields += ["webhooks=%d" % got, "webhook_rate=%.1f" % (got / span),
                       "webhook_lag_p50_us=%s" % us(pct(lags, 50)),
                       "webhook_lag_p99_us=%s" % us(pct(lags, 99))]
            print("  webhooks: %d deliveries, %.0f/s, lag p50 %.1f ms p99 %.1f ms" %
                  (got, got / span, pct(lags, 50) * 1e3 if lags else 0,
                   pct(lags, 99) * 1e3 if lags else 0), file=sys.stderr)
        print("%d payers, %.1f s: %d payments captured, %.0f payments/s; %d polls "
              "(%.1f per payment); load generator used %.2f cores" %
              (args.payers, elapsed, n, rate, stats["polls"], stats["polls"] / max(n, 1),
               gen_cpu), file=sys.stderr)
        for k in ("invoice", "resource", "payment", "whole"):
            a, b = pct(stats[k], 50), pct(stats[k], 99)
            if a is not None:
                print("  %-9s p50 %7.2f ms  p99 %7.2f ms" % (k, a * 1e3, b * 1e3),
                      file=sys.stderr)
        for e in stats["errors"][:5]:
            print("  ERROR " + e, file=sys.stderr)
        if stats["errors"] or n == 0:
            rc = 1
        print("RESULT " + " ".join(fields))
    except Failed as e:
        print("bench_payments: " + str(e), file=sys.stderr)
        rc = 1
    finally:
        if kafka:
            kafka.stop = True
            kafka.t.join(5)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait(10)
                print("bench_payments: kassa serve did not stop on SIGTERM", file=sys.stderr)
                rc = 1
            if code != 0:
                print("bench_payments: kassa serve exited %s; its stderr:" % code, file=sys.stderr)
                sys.stderr.write(open(os.path.join(args.dir, "serve.err"),
                                      errors="replace").read()[-2000:])
                rc = 1
        if mock is not None:
            mock.stdin.close()
            try:
                mock.wait(10)
            except subprocess.TimeoutExpired:
                mock.kill()
    return rc


if __name__ == "__main__":
    sys.exit(main())
