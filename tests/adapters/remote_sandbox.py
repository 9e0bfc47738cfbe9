#!/usr/bin/python3
"""A sandbox acquirer as a separate process: a remote adapter (docs/adapter-protocol.md, "Remote
adapters") that answers like kassa's in-process sandbox for the test cards of docs/sandbox.md.

    /usr/bin/python3 tests/adapters/remote_sandbox.py [--port N] [--broken]

Listens on 127.0.0.1 (port 0: any free port) and prints one line,
"remote sandbox listening on http://127.0.0.1:PORT", then serves:

  POST /session               a session step (docs/schemas/session-step.json) -> an intent
                              (docs/schemas/intent.json); 503 for the transient test card's failed
                              attempts, 400 for a malformed step, 404 for an inquiry about an
                              unknown session, 409 for a session id reused for another request
  GET  /operations?invoice=&payment=   what it was asked to do, like kassa's sandbox record
  GET  /steps                 the last steps it accepted and the intents it answered (card
                              numbers masked), for tests that check them against the schemas
  GET  /3ds/{tag}             the payer's 3-D Secure page (Confirm / Refuse)
  POST /3ds/{tag}/complete    decision=confirm|refuse: sent on to kassa's callback URL of the
                              session ({"decision": ...}); kassa runs a callback step back here

Idempotent by session id: a repeated step is told the recorded outcome. State is in memory.
--broken answers wrongly on purpose (for `kassa adapter check`'s own test): repeats get new
transaction ids, declines are approved, suspends use a made-up tag, malformed steps are accepted.
Card data is used for the decision and never stored or printed (only its mask).
Standard library only.
"""
import argparse
import collections
import copy
import html
import json
import re
import secrets
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY_MAX = 64 * 1024
STEPS_KEPT = 500
CALLBACK_TIMEOUT_S = 10

SCENARIOS = {
    "approve": None,
    "decline": ("authorization_failed:rejected_by_issuer", "the issuer declined the payment"),
    "insufficient_funds": ("authorization_failed:insufficient_funds",
                           "insufficient funds on the card's account"),
    "expired_card": ("authorization_failed:payment_tool_rejected:bank_card_rejected:card_expired",
                     "the issuer reports the card as expired"),
    "incorrect_cvc": ("authorization_failed:payment_tool_rejected:bank_card_rejected:cvv_invalid",
                      "the card's security code is incorrect"),
    "transient_error": None,
    "acquirer_unavailable": ("authorization_failed:temporarily_unavailable",
                             "the acquirer could not reach the issuer"),
    "three_ds": None,
    "unknown_then_approved": None,
    "unknown_then_declined": ("authorization_failed:rejected_by_issuer",
                              "the issuer declined the payment"),
}
CARDS = {
    "4000000000001000": "decline",
    "4000000000002008": "insufficient_funds",
    "4000000000003006": "expired_card",
    "4000000000004004": "incorrect_cvc",
    "4000000000005001": "transient_error",
    "4000000000006009": "acquirer_unavailable",
    "4000000000007007": "three_ds",
    "4000000000008005": "unknown_then_approved",
    "4000000000009003": "unknown_then_declined",
}
CODE_3DS_REFUSED = "preauthorization_failed:authentication_failed"
CODE_3DS_TIMEOUT = "preauthorization_failed:timeout"
CODE_CLOSED = "authorization_failed:temporarily_unavailable"
OPERATIONS = ("authorize", "capture", "cancel", "refund")
STEPS = ("start", "inquire", "callback")
TOKEN = re.compile(r"^[\x21-\x7e]{1,200}$")
ID = re.compile(r"^[\x21-\x7e]{1,64}$")


class StepError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def opt_int(options, key, lo, hi, default):
    v = (options or {}).get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise StepError(400, "sandbox option %s is out of range" % key)
    return v


def card_mask(pan):
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def payment_system(pan):
    p2, p4 = int(pan[:2]), int(pan[:4])
    if pan[0] == "4":
        return "visa"
    if 2200 <= p4 <= 2204:
        return "mir"
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "mastercard"
    return "unknown"


class Sandbox:
    """The record and the decisions, one lock for all (steps are short)."""

    def __init__(self, broken):
        self.broken = broken
        self.lock = threading.Lock()
        self.ops = {}     # session id -> operation
        self.order = []   # session ids in arrival order
        self.base = ""    # this server's URL, for the 3-D Secure page
        self.steps = collections.deque(maxlen=STEPS_KEPT)  # (step, intent), cards masked

    # --- checking a step -------------------------------------------------------------------

    def check(self, s):
        if not isinstance(s, dict):
            raise StepError(400, "a session step must be a JSON object")
        if s.get("protocol") != 1:
            raise StepError(400, "protocol must be 1")
        if s.get("unit") != "acquiring":
            raise StepError(400, "this adapter runs acquiring sessions only")
        if s.get("operation") not in OPERATIONS:
            raise StepError(400, "operation must be one of %s" % ", ".join(OPERATIONS))
        if s.get("step") not in STEPS:
            raise StepError(400, "step must be start, inquire or callback")
        if not isinstance(s.get("session"), str) or not TOKEN.match(s["session"]):
            raise StepError(400, "session must be 1 to 200 printable characters")
        subject = s.get("subject")
        if not isinstance(subject, dict) or not isinstance(subject.get("id"), str) or \
                not ID.match(subject["id"]) or not isinstance(subject.get("within"), dict) or \
                not ID.match(str(subject["within"].get("payment", ""))):
            raise StepError(400, "subject must name the invoice and the payment")
        payload = s.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("amount"), int) or \
                isinstance(payload.get("amount"), bool) or \
                not re.match(r"^[A-Z]{3}$", str(payload.get("currency", ""))):
            raise StepError(400, "payload must be {amount, currency}")
        minimum = 0 if s["operation"] == "cancel" else 1
        if s["step"] == "start" and payload["amount"] < minimum:
            raise StepError(400, "amount must be positive")
        if s["operation"] == "refund" and not ID.match(str(subject["within"].get("refund", ""))):
            raise StepError(400, "a refund names its refund in subject.within")

    def opts(self, s):
        o = s.get("options") or {}
        return {"three_ds_ms": opt_int(o, "threeDSTimeoutMs", 1000, 86400000, 600000),
                "pending_ms": opt_int(o, "pendingSleepMs", 1, 86400000, 2000),
                "transient": opt_int(o, "transientFailures", 0, 100, 2)}

    # --- one step ---------------------------------------------------------------------------

    def step(self, s):
        if not self.broken:
            self.check(s)
        elif not isinstance(s, dict) or not isinstance(s.get("session"), str):
            return {"intent": "finish", "success": True, "trx": {"id": "broken"}}
        o = self.opts(s)
        now = s.get("now") if isinstance(s.get("now"), int) else int(time.time() * 1000)
        with self.lock:
            if s["step"] == "start" and s["operation"] == "authorize":
                op, retry = self.authorize(s, o, now)
            elif s["step"] == "start":
                op, retry = self.money(s, now), False
            else:
                op, retry = self.follow(s, now), False
            if retry:
                raise StepError(503, "transient processing error (test card), try again")
            intent = self.tell(op, s, o, now)
            self.steps.append((masked(s), intent))
            return intent

    def request_of(self, s, mask=None):
        w = s["subject"]["within"]
        return {"kind": s["operation"], "invoice": s["subject"]["id"], "payment": w["payment"],
                "refund": w.get("refund") if s["operation"] == "refund" else None,
                "amount": s["payload"]["amount"], "currency": s["payload"]["currency"],
                "cardMask": mask}

    def new_op(self, s, scenario, now, mask=None, system=None):
        op = dict(self.request_of(s, mask), session=s["session"], scenario=scenario,
                  paymentSystem=system, status=None, failureCode=None, failureReason=None,
                  providerTrx=None, rrn=None, approvalCode=None, callbackTag=None,
                  callbackUrl=None, deadline=0, attempts=1, inquiries=0, created=now, updated=now,
                  pos=len(self.order) + 1)
        self.ops[s["session"]] = op
        self.order.append(s["session"])
        return op

    def approve(self, op):
        op["providerTrx"] = "rsb_" + secrets.token_hex(10)
        if op["kind"] == "authorize":
            op["rrn"] = "".join(secrets.choice("0123456789") for _ in range(12))
            op["approvalCode"] = "".join(secrets.choice("0123456789") for _ in range(6))

    @staticmethod
    def decline(op, status, code, reason):
        op.update(status=status, failureCode=code, failureReason=reason)

    def same_request(self, op, s, mask=None):
        mine = {k: op[k] for k in ("kind", "invoice", "payment", "refund", "amount", "currency")}
        req = self.request_of(s)
        del req["cardMask"]
        return mine == req and (mask is None or op["cardMask"] == mask)

    def take_tag(self, op, s):
        tag = s.get("callbackTag")
        if not isinstance(tag, str) or not tag:
            raise StepError(400, "3-D Secure needs the step's callbackTag")
        op["callbackTag"] = tag
        op["callbackUrl"] = s.get("callbackUrl")

    def authorize(self, s, o, now):
        card = (s.get("secrets") or {}).get("card") or {}
        pan = card.get("pan")
        if not isinstance(pan, str) or not re.match(r"^[0-9]{12,19}$", pan):
            raise StepError(400, "authorize needs the card (secrets.card.pan)")
        mask = card_mask(pan)
        op = self.ops.get(s["session"])
        if op is not None:
            if not self.same_request(op, s, mask):
                raise StepError(409, "session id %s was used for a different request"
                                % s["session"])
            op["attempts"] += 1
            op["updated"] = now
            if self.broken:
                self.approve(op)  # a new transaction for every repeat: not idempotent
            if op["status"] == "processing":
                if op["attempts"] > o["transient"]:
                    self.approve(op)
                    op["status"] = "authorized"
                else:
                    return op, True
            elif op["status"] == "awaiting_3ds":
                if now >= op["deadline"]:
                    self.decline(op, "declined", CODE_3DS_TIMEOUT,
                                 "the payer did not answer 3-D Secure")
                else:
                    self.take_tag(op, s)
            return op, False
        scenario = CARDS.get(pan, "approve")
        exp_m, exp_y = card.get("expMonth", ""), card.get("expYear", "")
        if re.match(r"^[0-9]{2}$", exp_m) and re.match(r"^[0-9]{4}$", exp_y):
            t = time.gmtime(now / 1000)
            if int(exp_y) * 12 + int(exp_m) - 1 < t.tm_year * 12 + t.tm_mon - 1:
                scenario = "expired_card"
        if self.broken and SCENARIOS[scenario]:
            scenario = "approve"  # declines approved
        op = self.new_op(s, scenario, now, mask, payment_system(pan))
        if scenario == "approve" or (scenario == "transient_error" and o["transient"] == 0):
            op["status"] = "authorized"
            self.approve(op)
        elif scenario == "transient_error":
            op["status"] = "processing"
            return op, True
        elif scenario == "three_ds":
            op["status"] = "awaiting_3ds"
            op["deadline"] = now + o["three_ds_ms"]
            self.take_tag(op, s)
        elif scenario == "unknown_then_approved":
            op["status"] = "pending"
            self.approve(op)
        elif scenario == "unknown_then_declined":
            self.decline(op, "pending", *SCENARIOS[scenario])
        else:
            self.decline(op, "declined", *SCENARIOS[scenario])
        return op, False

    def latest_auth(self, invoice, payment):
        for sid in reversed(self.order):
            op = self.ops[sid]
            if op["kind"] == "authorize" and op["invoice"] == invoice and \
                    op["payment"] == payment:
                return op
        return None

    def totals(self, invoice, payment):
        captured = refunded = 0
        cancelled = False
        for op in self.ops.values():
            if op["invoice"] != invoice or op["payment"] != payment or \
                    op["status"] != "succeeded":
                continue
            if op["kind"] == "capture":
                captured += op["amount"]
            elif op["kind"] == "refund":
                refunded += op["amount"]
            elif op["kind"] == "cancel":
                cancelled = True
        return captured, refunded, cancelled

    def money(self, s, now):
        op = self.ops.get(s["session"])
        if op is not None:
            if not self.same_request(op, s):
                raise StepError(409, "session id %s was used for a different request"
                                % s["session"])
            op["attempts"] += 1
            op["updated"] = now
            return op
        kind, amount = s["operation"], s["payload"]["amount"]
        auth = self.latest_auth(s["subject"]["id"], s["subject"]["within"]["payment"])
        op = self.new_op(s, "operation", now)
        why = None
        if auth is None or auth["status"] != "authorized":
            why = ("not_authorized", "the payment has no approved authorization")
        elif auth["currency"] != s["payload"]["currency"]:
            why = ("currency_mismatch", "the currency differs from the authorization's")
        else:
            captured, refunded, cancelled = self.totals(op["invoice"], op["payment"])
            if kind == "capture":
                if cancelled:
                    why = ("authorization_cancelled", "the authorization was cancelled")
                elif captured + amount > auth["amount"]:
                    why = ("amount_exceeded", "captures would exceed the authorized amount")
            elif kind == "cancel":
                if cancelled:
                    why = ("already_cancelled", "the authorization was already cancelled")
                elif captured > 0:
                    why = ("already_captured", "the authorization has captures; refund them")
            else:
                if captured == 0:
                    why = ("not_captured", "nothing was captured to refund")
                elif refunded + amount > captured:
                    why = ("amount_exceeded", "refunds would exceed the captured amount")
        if why:
            self.decline(op, "refused", "%s_failed:%s" % (kind, why[0]), why[1])
        else:
            op["status"] = "succeeded"
            self.approve(op)
        return op

    def follow(self, s, now):
        state = s.get("adapterState") if isinstance(s.get("adapterState"), dict) else {}
        named = state.get("session")
        target = named if isinstance(named, str) and TOKEN.match(named) else s["session"]
        op = self.ops.get(target)
        if op is None:
            raise StepError(404, "the sandbox has no operation for session %s" % target)
        auth = op["kind"] == "authorize"
        if s["step"] == "inquire":
            op["inquiries"] += 1
            op["updated"] = now
            reveal = 2 if op["scenario"] == "unknown_then_declined" else 1
            if auth and op["status"] == "pending" and op["inquiries"] >= reveal:
                op["status"] = "declined" if op["failureCode"] else "authorized"
            elif auth and op["status"] == "awaiting_3ds" and now >= op["deadline"]:
                self.decline(op, "declined", CODE_3DS_TIMEOUT,
                             "the payer did not answer 3-D Secure")
            elif auth and op["status"] == "processing":
                self.decline(op, "declined", CODE_CLOSED, "the authorization was never completed")
            return op
        if not auth:
            raise StepError(400, "session %s is not an authorization" % target)
        if op["status"] != "awaiting_3ds":
            return op
        decision = (s.get("callback") or {}).get("decision")
        if decision not in ("confirm", "refuse"):
            raise StepError(400, "a 3-D Secure callback needs decision confirm or refuse")
        op["updated"] = now
        if now >= op["deadline"]:
            self.decline(op, "declined", CODE_3DS_TIMEOUT,
                         "the payer did not answer 3-D Secure in time")
        elif decision == "confirm":
            op["status"] = "authorized"
            self.approve(op)
        else:
            self.decline(op, "declined", CODE_3DS_REFUSED, "the payer refused 3-D Secure")
        return op

    def tell(self, op, s, o, now):
        st = op["status"]
        if st in ("authorized", "succeeded"):
            extra = {"rrn": op["rrn"], "approvalCode": op["approvalCode"]} \
                if op["kind"] == "authorize" else {"operation": op["kind"]}
            return {"intent": "finish", "success": True,
                    "trx": {"id": op["providerTrx"], "extra": extra}}
        if st in ("declined", "refused"):
            return {"intent": "finish", "success": False,
                    "failure": {"code": op["failureCode"], "reason": op["failureReason"]}}
        state = {"session": op["session"], "stage": st}
        if st == "pending":
            return {"intent": "sleep", "sleepMs": o["pending_ms"], "adapterState": state}
        left = max(1, op["deadline"] - now)
        if s["step"] != "start":
            return {"intent": "sleep", "sleepMs": left, "adapterState": state}
        tag = op["callbackTag"]
        url = "%s/3ds/%s" % (self.base, urllib.parse.quote(tag, safe="~"))
        return {"intent": "suspend", "tag": "broken~tag~x" if self.broken else tag,
                "timeoutMs": left, "adapterState": state,
                "interaction": {"interactionType": "Redirect",
                                "request": {"requestType": "BrowserPostRequest",
                                            "uriTemplate": url,
                                            "form": [{"key": "session",
                                                      "template": op["session"]}]}}}

    # --- reads and the page -----------------------------------------------------------------

    def listing(self, invoice=None, payment=None):
        with self.lock:
            rows = [self.ops[sid] for sid in self.order]
            return [public(op) for op in rows
                    if (invoice is None or op["invoice"] == invoice) and
                    (payment is None or op["payment"] == payment)]

    def by_tag(self, tag):
        with self.lock:
            for sid in reversed(self.order):
                if self.ops[sid]["callbackTag"] == tag:
                    return dict(self.ops[sid])
        return None


def masked(step):
    """A copy of `step` with its card number masked and its CVV dropped."""
    out = copy.deepcopy(step)
    card = (out.get("secrets") or {}).get("card")
    if isinstance(card, dict) and isinstance(card.get("pan"), str):
        card["pan"] = card["pan"][:6] + "0" * (len(card["pan"]) - 10) + card["pan"][-4:]
        card.pop("cvv", None)
    return out


def rfc3339(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + ".%03dZ" % (ms % 1000)


def public(op):
    """An operation as kassa's sandbox lists it (docs/sandbox.md, "The record")."""
    out = {k: v for k, v in op.items() if k not in ("callbackUrl", "deadline", "created",
                                                    "updated")}
    out["createdAt"], out["updatedAt"] = rfc3339(op["created"]), rfc3339(op["updated"])
    if op["deadline"]:
        out["deadlineAt"] = rfc3339(op["deadline"])
    return out


PAGE = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>remote sandbox: 3-D Secure</title></head><body><main>%s</main></body></html>\n")


class Handler(BaseHTTPRequestHandler):
    server_version = "remote-sandbox/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # quiet: the tests read kassa's log, not this one
        pass

    def reply(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise StepError(400, "Content-Length is not a number")
        if n > BODY_MAX:
            raise StepError(413, "the body is larger than %d bytes" % BODY_MAX)
        return self.rfile.read(n) if n > 0 else b""

    def do_GET(self):
        sb = self.server.sandbox
        url = urllib.parse.urlparse(self.path)
        if url.path == "/operations":
            q = urllib.parse.parse_qs(url.query)
            ops = sb.listing((q.get("invoice") or [None])[0], (q.get("payment") or [None])[0])
            return self.reply(200, {"operations": ops, "next": None})
        if url.path == "/steps":
            with sb.lock:
                steps = [{"step": st, "intent": it} for st, it in sb.steps]
            return self.reply(200, {"steps": steps})
        m = re.match(r"^/3ds/([^/]+)$", url.path)
        if m:
            return self.page(urllib.parse.unquote(m.group(1)))
        return self.reply(404, {"error": "no such page"})

    def page(self, tag):
        op = self.server.sandbox.by_tag(tag)
        facts = ""
        if op:
            facts = "<p>Amount %s %s, card %s</p>" % (op["amount"], html.escape(op["currency"]),
                                                      html.escape(op["cardMask"] or ""))
        form = ("<h1>3-D Secure check</h1>%s<form method=\"post\" action=\"/3ds/%s/complete\">"
                "<button name=\"decision\" value=\"confirm\">Confirm</button>"
                "<button name=\"decision\" value=\"refuse\">Refuse</button></form>"
                % (facts, html.escape(urllib.parse.quote(tag, safe="~"))))
        return self.reply(200, PAGE % form, "text/html; charset=utf-8")

    def do_POST(self):
        sb = self.server.sandbox
        url = urllib.parse.urlparse(self.path)
        try:
            raw = self.body()
            if url.path == "/session":
                try:
                    step = json.loads(raw)
                except ValueError:
                    raise StepError(400, "the body is not JSON")
                return self.reply(200, sb.step(step))
            m = re.match(r"^/3ds/([^/]+)(/complete)?$", url.path)
            if m and not m.group(2):
                return self.page(urllib.parse.unquote(m.group(1)))
            if m:
                return self.complete(urllib.parse.unquote(m.group(1)), raw)
            raise StepError(404, "no such page")
        except StepError as e:
            return self.reply(e.status, {"error": str(e)})

    def complete(self, tag, raw):
        """The payer answered: tell kassa at the session's callback URL, as an ACS would."""
        decision = (urllib.parse.parse_qs(raw.decode("utf-8", "replace")).get("decision")
                    or [None])[0]
        if decision not in ("confirm", "refuse"):
            raise StepError(400, "decision must be confirm or refuse")
        op = self.server.sandbox.by_tag(tag)
        if not op or not op["callbackUrl"]:
            raise StepError(404, "no payment waits for this confirmation")
        req = urllib.request.Request(op["callbackUrl"],
                                     data=json.dumps({"decision": decision}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=CALLBACK_TIMEOUT_S) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError:
            status = 0
        if status != 200:
            return self.reply(502, PAGE % "<p>The shop could not be told; try again.</p>",
                              "text/html; charset=utf-8")
        return self.reply(200, PAGE % "<h1>Thank you</h1><p>You can return to the shop.</p>",
                          "text/html; charset=utf-8")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--broken", action="store_true")
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.sandbox = Sandbox(args.broken)
    server.sandbox.base = "http://127.0.0.1:%d" % server.server_address[1]
    print("remote sandbox listening on %s" % server.sandbox.base, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
