#!/usr/bin/env python3
"""fake_atol.py — a fake ATOL Online v5 service for kassa's tests (docs/receipts-atol.md).

Standard library only. Listens on 127.0.0.1 (port 0 by default: any free port) and prints the
port alone on its first line of standard output, then serves until killed.

    fake_atol.py --login L --password P [--group G] [--port N] [--callback-delay-ms MS]

The protocol, as far as kassa uses it (base URL http://127.0.0.1:PORT/possystem/v5; any path
prefix is accepted):

  POST {base}/getToken {"login", "pass"}
      -> 200 {"error": null, "token": "...", "timestamp": "dd.mm.yyyy HH:MM:SS"}
      -> 401 {"error": {"error_id", "code": 12, "text", "type": "system"}, "token": "", ...}
         for a wrong login or password
  POST {base}/{group}/{operation} with header Token, body {external_id, timestamp,
      receipt | correction, service?: {callback_url}}
      -> 200 {"uuid", "status": "wait", "error": null, "timestamp"}
      -> 401 error 11 (the token expired or is unknown), 10 (no token)
      -> 400 error 33 (external_id already sent; "uuid" names the first document)
      -> 400 error 20 (the group is not the token's), 32 (the body is not a document)
  GET {base}/{group}/report/{uuid} with header Token
      -> 200 report {"uuid", "error", "status": "wait" | "done" | "fail", "payload",
         "timestamp", "group_code", "daemon_code", "device_code", "external_id",
         "callback_url"}
      -> 400 error 34 (the report is not ready) when the control asked for that style
  callback: when a document carries service.callback_url, its report is POSTed there once
      it is done or failed (after --callback-delay-ms).

What could be confirmed from public material on ATOL Online v5: the getToken body {login,
pass} and its {token, error} answer; the Token header; the paths {group}/{operation} and
{group}/report/{uuid}; the error object {code, text, type}; code 11 for an expired token, 10 for
a missing one, 12 for a wrong login or password, 20 for a group the token is not for, and 33 for
an external_id already sent, whose answer names the first document's uuid; the report's status
values and payload members. The others (32 for a malformed document, 34 for a report not
ready) follow kassa's design brief and are not confirmed.

Control (not ATOL's; for tests), POST /control with a JSON body, one action:
  {"action": "expire_tokens"}                    every token issued so far expires
  {"action": "wait", "polls": N, "style": "status" | "error34"}
                                                 the next documents answer "wait" (or error
                                                 34) for N report polls before done
  {"action": "fail_next", "code": C, "text": T, "at": "report" | "accept"}
                                                 the next document fails with C/T in its
                                                 report, or is refused when POSTed
  {"action": "down", "mode": "refuse" | "hang" | "503" | "up"}
                                                 ATOL's paths close the connection at once,
                                                 answer nothing for 30 s, answer 503, or work
  {"action": "callbacks", "on": false}           documents accepted from now on get no callback
                                                 (so kassa must poll their reports)
  {"action": "reset"}                            forget everything
GET /control -> {"documents": [{"uuid", "external_id", "operation", "group", "body",
  "status"}...] in the order received, "token_calls": N, "report_calls": N,
  "callbacks": [{"url", "uuid", "status"}...], "tokens_refused": N}
"""

import argparse
import datetime
import json
import socket
import struct
import sys
import threading
import time
import urllib.request
import uuid as uuidlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPERATIONS = {"sell", "sell_refund", "buy", "buy_refund", "sell_correction", "buy_correction"}
BODY_BYTES_MAX = 256 * 1024
HANG_S = 30


def now_text():
    return datetime.datetime.now().strftime("%d.%m.%Y %H:%M:%S")


def error(code, text, kind="system"):
    return {"error_id": str(uuidlib.uuid4()), "code": code, "text": text, "type": kind}


class State:
    """Everything the fake knows, behind one lock."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.tokens = {}  # token -> alive
        self.documents = []  # in order received
        self.by_uuid = {}
        self.by_external = {}  # (group, external_id) -> document
        self.token_calls = 0
        self.tokens_refused = 0
        self.report_calls = 0
        self.callbacks = []
        self.wait_polls = 0
        self.wait_style = "status"
        self.callbacks_on = True
        self.fail_next = None
        self.down = "up"
        self.fiscal_number = 0

    def view(self):
        return {
            "documents": [
                {k: d[k] for k in ("uuid", "external_id", "operation", "group", "body", "status")}
                for d in self.documents
            ],
            "token_calls": self.token_calls,
            "tokens_refused": self.tokens_refused,
            "report_calls": self.report_calls,
            "callbacks": list(self.callbacks),
        }


def receipt_total(body):
    for key in ("receipt", "correction"):
        part = body.get(key)
        if isinstance(part, dict):
            total = part.get("total")
            if isinstance(total, (int, float)):
                return total
    return 0


def report_of(doc):
    return {
        "uuid": doc["uuid"],
        "error": doc["error"],
        "status": doc["status"],
        "payload": doc["payload"],
        "timestamp": now_text(),
        "group_code": doc["group"],
        "daemon_code": "fake-daemon",
        "device_code": "KKT000000",
        "external_id": doc["external_id"],
        "callback_url": doc["callback_url"],
    }


def settle(state, doc):
    """Makes a waiting document done (or failed, as the control asked). Under state.lock."""
    if doc["status"] != "wait":
        return
    if doc["fail"]:
        doc["status"] = "fail"
        doc["error"] = error(doc["fail"]["code"], doc["fail"]["text"])
        return
    state.fiscal_number += 1
    n = state.fiscal_number
    doc["status"] = "done"
    doc["payload"] = {
        "fn_number": "9999078900012345",
        "shift_number": 1,
        "fiscal_document_number": 100 + n,
        "fiscal_document_attribute": 3000000000 + n,
        "fiscal_receipt_number": n,
        "ecr_registration_number": "0000000001012345",
        "receipt_datetime": now_text(),
        "ofd_receipt_url": "https://ofd.example/receipt/%d" % n,
        "fns_site": "www.nalog.gov.ru",
        "ofd_inn": "7704211201",
        "total": receipt_total(doc["body"]),
    }


def post_callback(state, doc):
    time.sleep(state.args.callback_delay_ms / 1000.0)
    with state.lock:
        doc["waits_left"] = 0
        settle(state, doc)
        body = json.dumps(report_of(doc)).encode()
        url = doc["callback_url"]
    status = "sent"
    try:
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read(4096)
    except Exception as e:  # the receiver is down: ATOL gives up too
        status = "failed: %s" % type(e).__name__
    with state.lock:
        state.callbacks.append({"url": url, "uuid": doc["uuid"], "status": status})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-atol/1"

    def log_message(self, fmt, *args):  # quiet: tests read the control view instead
        pass

    @property
    def state(self):
        return self.server.state

    def reply(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > BODY_BYTES_MAX:
            return None
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    def outage(self):
        """Acts out the control's "down" mode; True when the request got no real answer."""
        mode = self.state.down
        if mode == "refuse":
            # reset the connection without a word (SO_LINGER 0 sends RST)
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.close_connection = True
            return True
        if mode == "hang":
            time.sleep(HANG_S)
            self.close_connection = True
            return True
        if mode == "503":
            self.reply(503, {"error": error(503, "service unavailable")})
            return True
        return False

    def parts(self):
        return [p for p in self.path.split("?")[0].split("/") if p]

    def token_ok(self):
        """None when the Token header is alive, else the (status, body) to answer."""
        token = self.headers.get("Token")
        if not token:
            return 401, {"error": error(10, "no token"), "timestamp": now_text()}
        if not self.state.tokens.get(token):
            return 401, {"error": error(11, "the token expired"), "timestamp": now_text()}
        return None

    # --- control ----------------------------------------------------------------------------

    def control(self, body):
        st = self.state
        action = body.get("action") if isinstance(body, dict) else None
        with st.lock:
            if action == "expire_tokens":
                for t in st.tokens:
                    st.tokens[t] = False
            elif action == "wait":
                st.wait_polls = int(body.get("polls", 0))
                st.wait_style = body.get("style", "status")
            elif action == "fail_next":
                st.fail_next = {"code": int(body["code"]), "text": str(body.get("text", "")),
                                "at": body.get("at", "report")}
            elif action == "down":
                st.down = body.get("mode", "up")
            elif action == "callbacks":
                st.callbacks_on = bool(body.get("on", True))
            elif action == "reset":
                st.reset()
            else:
                return self.reply(400, {"error": "unknown action"})
            return self.reply(200, {"ok": True})

    # --- ATOL ---------------------------------------------------------------------------------

    def get_token(self, body):
        st = self.state
        with st.lock:
            st.token_calls += 1
            if (not isinstance(body, dict) or body.get("login") != st.args.login or
                    body.get("pass") != st.args.password):
                st.tokens_refused += 1
                return self.reply(401, {"error": error(12, "wrong login or password"),
                                        "token": "", "timestamp": now_text()})
            token = uuidlib.uuid4().hex + uuidlib.uuid4().hex
            st.tokens[token] = True
        return self.reply(200, {"error": None, "token": token, "timestamp": now_text()})

    def operation(self, group, op, body):
        st = self.state
        bad = self.token_ok()
        if bad:
            return self.reply(*bad)
        if group != st.args.group:
            return self.reply(400, {"error": error(20, "the group is not the token's"),
                                    "timestamp": now_text()})
        if (op not in OPERATIONS or not isinstance(body, dict) or
                not isinstance(body.get("external_id"), str) or not body["external_id"]):
            return self.reply(400, {"error": error(32, "the document is not valid"),
                                    "timestamp": now_text()})
        with st.lock:
            old = st.by_external.get((group, body["external_id"]))
            if old:
                return self.reply(400, {
                    "uuid": old["uuid"], "status": "fail", "timestamp": now_text(),
                    "error": error(33, "a document with this external_id exists")})
            fail = st.fail_next
            st.fail_next = None
            if fail and fail["at"] == "accept":
                return self.reply(400, {"error": error(fail["code"], fail["text"]),
                                        "timestamp": now_text()})
            service = body.get("service") if isinstance(body.get("service"), dict) else {}
            doc = {
                "uuid": str(uuidlib.uuid4()), "external_id": body["external_id"],
                "operation": op, "group": group, "body": body, "status": "wait",
                "error": None, "payload": None, "fail": fail,
                "callback_url": service.get("callback_url", ""),
                "waits_left": st.wait_polls, "wait_style": st.wait_style,
            }
            st.documents.append(doc)
            st.by_uuid[doc["uuid"]] = doc
            st.by_external[(group, doc["external_id"])] = doc
        if doc["callback_url"] and st.callbacks_on:
            threading.Thread(target=post_callback, args=(st, doc), daemon=True).start()
        return self.reply(200, {"uuid": doc["uuid"], "status": "wait", "error": None,
                                "timestamp": now_text()})

    def report(self, group, doc_uuid):
        st = self.state
        bad = self.token_ok()
        if bad:
            return self.reply(*bad)
        with st.lock:
            st.report_calls += 1
            doc = st.by_uuid.get(doc_uuid)
            if not doc or doc["group"] != group:
                return self.reply(400, {"error": error(34, "no such document, or not ready"),
                                        "timestamp": now_text()})
            if doc["status"] == "wait" and doc["waits_left"] > 0:
                doc["waits_left"] -= 1
                if doc["wait_style"] == "error34":
                    return self.reply(400, {"error": error(34, "the report is not ready"),
                                            "timestamp": now_text()})
                return self.reply(200, report_of(doc))
            settle(st, doc)
            return self.reply(200, report_of(doc))

    def do_GET(self):
        parts = self.parts()
        if parts == ["control"]:
            with self.state.lock:
                return self.reply(200, self.state.view())
        if self.outage():
            return
        if len(parts) >= 3 and parts[-2] == "report":
            return self.report(parts[-3], parts[-1])
        return self.reply(404, {"error": error(404, "no such path")})

    def do_POST(self):
        parts = self.parts()
        body = self.read_json()
        if parts == ["control"]:
            return self.control(body)
        if self.outage():
            return
        if parts and parts[-1] == "getToken":
            return self.get_token(body)
        if len(parts) >= 2:
            return self.operation(parts[-2], parts[-1], body)
        return self.reply(404, {"error": error(404, "no such path")})


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--login", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--group", default="group1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--callback-delay-ms", type=int, default=100)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
