"""The Kafka event stream end to end (docs/kafka.md): the real binary publishes to a Kafka-protocol
broker (tests/harness/kafka_mock.c: librdkafka's mock cluster in its own process, built beside
kassa as kafka-mock), and independent clients read the topics back: confluent-kafka and kcat,
never kassa's own code.

What is checked: every event of the run arrives once per (ns, id, eventID), in per-machine
order, as the documented envelope, with no card number or CVV; kassa's log lines reach the log
topic; with the broker down payments go on, the relay's lag grows and then catches up with
nothing lost; across a SIGKILL events come again at most as duplicates, none is lost."""
import json
import os
import re
import signal
import subprocess
import time

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, Kassa, kassa_bin
from test_payments import CARDS, Api, issue_token
from test_relays import relays, wait_for

WAIT_S = 60
CVV = "907"
PAN = CARDS["visa"]


def mock_bin():
    return os.path.join(os.path.dirname(kassa_bin()), "kafka-mock")


class KafkaMock:
    """tests/harness/kafka_mock.c: one broker; `down()` and `up()` keep its data."""

    def __init__(self):
        path = mock_bin()
        assert os.path.exists(path), "%s is missing: make VARIANT=san build/san/kafka-mock" % path
        self.proc = subprocess.Popen([path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.bootstrap = self.proc.stdout.readline().strip()
        assert self.bootstrap.startswith("127.0.0.1:"), self.bootstrap

    def command(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", "kafka-mock %s: %s" % (line, answer)

    def down(self):
        self.command("down")

    def up(self):
        self.command("up")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def broker():
    m = KafkaMock()
    yield m
    m.stop()


def kafka_args(broker, *extra):
    return ["--kafka-brokers", broker.bootstrap, "--kafka-topic-prefix", "kassa.",
            "--kafka-client-id", "kassa-bb"] + list(extra)


def start(workdir, broker, *extra):
    workdir.mkdir(exist_ok=True)
    return Kassa(workdir, ["--dev-trust-own-key", "--payment-hold-ms", "3000"] +
                 kafka_args(broker, *extra))


def stop_checked(k):
    problems = k.stop()
    assert not problems, "kassa serve: " + "\n".join(problems)


def relay(k):
    return relays(k)["kafka"]


def outbox_head(k):
    """The last outbox position now (the events before it are not this test's)."""
    return wait_for(lambda: (lambda s: s if s["held"] else None)(relay(k)), "held relay")["head"]


def outbox_after(k, pos):
    """Every outbox entry after `pos`: kassa's own record of the events, to compare with."""
    entries = []
    while True:
        r = requests.get(k.admin + "/admin/v1/outbox", params={"after": pos, "limit": 1000},
                         headers=k.auth(), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        page = r.json()["entries"]
        entries.extend(page)
        if len(page) < 1000:
            return entries
        pos = page[-1]["pos"]


def caught_up(k):
    """Waits until the relay has confirmed everything committed so far and stays healthy."""
    head = relay(k)["head"]
    try:
        return wait_for(lambda: (lambda s: s if s["held"] and s["failing"] == 0 and
                                 s["cursor"] >= head else None)(relay(k)),
                        "caught-up Kafka relay")
    except AssertionError as e:
        raise AssertionError("%s (head was %d, now: %s)" % (e, head, relay(k))) from None


def pay(api, card=PAN):
    inv, tok = api.invoice()
    res = api.resource(tok, card, cvv=CVV)
    body = {"flow": {"type": "PaymentFlowInstant"},
            "payer": {"payerType": "PaymentResourcePayer",
                      "paymentToolToken": res["paymentToolToken"],
                      "paymentSession": res["paymentSession"],
                      "contactInfo": {"email": "payer@example.com"}}}
    api.call("POST", "/v2/processing/invoices/%s/payments" % inv["id"], token=tok, body=body,
             expect=201)
    return inv


def settle(api, invoices):
    for inv in invoices:
        p = api.wait_payment(inv["id"], "1", {"captured", "failed"}, timeout=WAIT_S)
        assert p["status"] in ("captured", "failed")


# --- independent consumers ---------------------------------------------------------------------

def topics(bootstrap, prefix="kassa."):
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kassa-bb-list"})
    try:
        md = c.list_topics(timeout=10)
        return sorted(t for t in md.topics if t.startswith(prefix))
    finally:
        c.close()


def read_python(bootstrap, topic_names):
    """Every message of the topics, as [(topic, partition, offset, key, value)], partition by
    partition in offset order, read with confluent-kafka up to each partition's end."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kassa-bb-read",
                  "enable.auto.commit": False})
    out = []
    try:
        md = c.list_topics(timeout=10)
        want = {}
        for t in topic_names:
            for p in md.topics[t].partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if hi > lo:
                    want[(t, p)] = (lo, hi)
        c.assign([TopicPartition(t, p, lo) for (t, p), (lo, hi) in want.items()])
        got = {tp: [] for tp in want}
        deadline = time.monotonic() + WAIT_S
        while any(len(got[tp]) < hi - lo for tp, (lo, hi) in want.items()):
            assert time.monotonic() < deadline, "confluent-kafka did not read every message"
            for m in c.consume(500, timeout=0.5):
                if m.error():
                    continue
                tp = (m.topic(), m.partition())
                if tp in got and m.offset() < want[tp][1]:
                    got[tp].append((m.topic(), m.partition(), m.offset(),
                                    (m.key() or b"").decode(), m.value().decode()))
        for tp in sorted(got):
            out.extend(got[tp])
    finally:
        c.close()
    return out


def read_kcat(bootstrap, topic_names):
    """The same, read with kcat (-J: one JSON object per message)."""
    out = []
    for t in topic_names:
        run = subprocess.run(["kcat", "-b", bootstrap, "-C", "-t", t, "-o", "beginning", "-e",
                              "-q", "-J"], capture_output=True, text=True, timeout=WAIT_S)
        assert run.returncode == 0, run.stderr
        msgs = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]
        msgs.sort(key=lambda m: (m["partition"], m["offset"]))
        out.extend((m["topic"], m["partition"], m["offset"], m["key"] or "", m["payload"])
                   for m in msgs)
    return out


TAG = re.compile(r"^([a-z0-9_]{1,32}~[A-Za-z0-9._-]{1,64}~)[A-Za-z0-9]{1,24}$")


def redacted(v):
    """`v` with each callback tag's nonce (a capability) replaced, as kassa publishes it."""
    if isinstance(v, dict):
        return {key: redacted(x) for key, x in v.items()}
    if isinstance(v, list):
        return [redacted(x) for x in v]
    if isinstance(v, str):
        return TAG.sub(r"\1redacted", v)
    return v


def check_stream(broker, k, since, duplicates_allowed):
    """The topics hold every event committed after outbox position `since`, as the documented
    envelope, in per-machine order; returns the raw messages and how many were duplicates."""
    expected = outbox_after(k, since)
    assert expected, "no events were committed"
    names = topics(broker.bootstrap)
    msgs = read_python(broker.bootstrap, names)
    assert read_kcat(broker.bootstrap, names) == msgs  # two clients, one stream
    first = {}       # (ns, id, eventID) -> the envelope first seen
    order = {}       # (ns, id) -> eventIDs in the order first seen
    dups = 0
    for topic, _, _, key, value in msgs:
        env = json.loads(value)
        assert sorted(env) == ["data", "eventID", "id", "ns", "occurredAt", "type"], env
        assert topic == "kassa." + env["ns"] and key == env["id"]
        ident = (env["ns"], env["id"], env["eventID"])
        if ident in first:
            assert first[ident] == env  # a redelivery is the same message
            dups += 1
            continue
        first[ident] = env
        order.setdefault(ident[:2], []).append(env["eventID"])
    for e in expected:
        ident = (e["ns"], e["id"], e["seq"])
        assert ident in first, "event %s missing from Kafka" % (ident,)
        env = first[ident]
        event = dict(e["event"])
        assert env["type"] == event.pop("type") and env["data"] == redacted(event)
        assert env["occurredAt"] == e["at"]
    for machine in {(e["ns"], e["id"]) for e in expected}:
        seqs = order[machine]
        assert seqs == sorted(seqs), "machine %s out of order: %s" % (machine, seqs)
        if not any(e["ns"] == machine[0] and e["id"] == machine[1] and e["seq"] == 1
                   for e in expected):
            continue  # a machine older than this test (a shared store): its tail only
        assert seqs == list(range(1, len(seqs) + 1)), "machine %s has gaps: %s" % (machine, seqs)
    if not duplicates_allowed:
        assert dups == 0, "%d duplicates without a failure" % dups
    return msgs, dups


def assert_no_card_data(values):
    """No card number anywhere in the raw messages, no CVV field and no CVV value in them (an
    error code such as "cvv_invalid" is not card data)."""
    def walk(v):
        if isinstance(v, dict):
            for key, x in v.items():
                assert "cvv" not in key.lower() and key != "cardNumber", "a card field: %s" % key
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert v != CVV, "the CVV in Kafka"
    for v in values:
        assert PAN not in v, "a card number in Kafka: %s" % v[:300]
        walk(json.loads(v))


# --- the tests ---------------------------------------------------------------------------------

def test_every_event_once_in_order_without_card_data_and_the_log_topic(broker, tmp_path):
    k = start(tmp_path / "k", broker, "--kafka-log-topic", "kassa-log")
    try:
        assert rdkafka_threads(k), "no librdkafka thread with --kafka-brokers"
        since = outbox_head(k)
        api = Api(k, issue_token(k.workdir))
        invoices = [pay(api) for _ in range(3)] + [pay(api, CARDS["decline"])]
        settle(api, invoices)
        st = caught_up(k)
        assert st["lag"] == 0 and st["delivered"] > 0
        msgs, _ = check_stream(broker, k, since, duplicates_allowed=False)
        ids = {json.loads(m[4])["id"] for m in msgs}
        assert {inv["id"] for inv in invoices} <= ids
        # This run's invoices (on a shared store the topics hold other tests' machines too).
        mine = [m for m in msgs if m[3] in {inv["id"] for inv in invoices}]
        assert_no_card_data(m[4] for m in mine)
        # Callback tags go out without their nonce; the sessions of these payments made some.
        tags = [t for m in mine for t in re.findall(r'"tag":"([^"]*)"', m[4])]
        assert tags and all(t.endswith("~redacted") for t in tags), tags
        # The log topic: kassa's JSON lines, keyed by the client id, with no card data either.
        log = wait_for(lambda: (lambda ms: ms if any('"http request"' in m[4] for m in ms)
                                else None)(read_python(broker.bootstrap, ["kassa-log"])),
                       "log lines on the log topic")
        assert all(m[3] == "kassa-bb" for m in log)
        assert all("msg" in json.loads(m[4]) and "ts" in json.loads(m[4]) for m in log)
        assert_no_card_data(m[4] for m in log)
    finally:
        stop_checked(k)
    with open(k.stderr_path) as f:  # the server has stopped: its whole log
        closed = [json.loads(line) for line in f if '"kafka log topic closed"' in line]
    assert len(closed) == 1 and closed[0]["topic"] == "kassa-log", closed
    assert closed[0]["produced"] >= len(log) and closed[0]["dropped"] == 0, closed


def test_broker_down_payments_go_on_lag_grows_then_catches_up(broker, tmp_path):
    props = tmp_path / "kafka.properties"
    props.write_text("# reconnect quickly once the broker is back\nreconnect.backoff.max.ms=500\n")
    k = start(tmp_path / "k", broker, "--kafka-delivery-timeout-ms", "1000",
              "--kafka-properties-file", str(props), "--kafka-log-topic", "kassa-log")
    try:
        since = outbox_head(k)
        api = Api(k, issue_token(k.workdir))
        settle(api, [pay(api)])
        caught_up(k)
        broker.down()
        t0 = time.monotonic()
        down = [pay(api) for _ in range(3)]
        settle(api, down)  # payments do not wait for Kafka, nor does the log topic's sink
        assert time.monotonic() - t0 < 30
        st = wait_for(lambda: (lambda s: s if s["failing"] >= 1 and s["lag"] > 0 else None)
                      (relay(k)), "failing Kafka relay")
        assert st["lastError"] and "Kafka" in st["lastError"], st
        cursor = st["cursor"]
        for inv in down:
            assert api.wait_invoice(inv["id"], {"paid"})["status"] == "paid"
        assert relay(k)["cursor"] == cursor  # nothing confirmed while the broker is away
        broker.up()
        st = caught_up(k)
        assert st["lag"] == 0 and st["failures"] >= 1
        msgs, _ = check_stream(broker, k, since, duplicates_allowed=True)
        assert {inv["id"] for inv in down} <= {json.loads(m[4])["id"] for m in msgs}
        # The lines logged while the broker was away reach the log topic once it is back.
        logged = {line["trace"] for line in k.log_lines()
                  if line["msg"] == "http request" and "trace" in line}
        wait_for(lambda: logged <= {json.loads(m[4]).get("trace") for m in
                                   read_python(broker.bootstrap, ["kassa-log"])},
                 "the lines logged while the broker was down, on the log topic")
    finally:
        stop_checked(k)


def test_sigkill_redelivers_at_most_duplicates_and_loses_nothing(broker, tmp_path):
    workdir = tmp_path / "k"
    lease = ["--task-lease-ms", "3000"]  # the dead node's tasks are taken over sooner
    k = start(workdir, broker, *lease)
    since = outbox_head(k)
    api = Api(k, issue_token(k.workdir))
    settle(api, [pay(api)])
    invoices = [pay(api) for _ in range(4)]  # killed while these are processed and published
    k.proc.send_signal(signal.SIGKILL)
    k.proc.wait(10)
    k.out.close()
    k.err.close()
    # The same store and keys: the relay resumes from its cursor once the dead node's lease
    # runs out, and the payments in flight finish.
    k = start(workdir, broker, *lease)
    try:
        api = Api(k, api.token)
        settle(api, invoices)
        st = caught_up(k)
        assert st["lag"] == 0
        msgs, dups = check_stream(broker, k, since, duplicates_allowed=True)
        assert {inv["id"] for inv in invoices} <= {json.loads(m[4])["id"] for m in msgs}
    finally:
        stop_checked(k)


def test_without_brokers_no_kafka_code_runs(start_kassa):
    k = start_kassa()
    r = requests.get(k.admin + "/admin/v1/relays", headers=k.auth(), timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    assert "kafka" not in {x["name"] for x in r.json()["relays"]}
    assert not any(line["msg"].startswith("kafka") for line in k.log_lines())
    assert rdkafka_threads(k) == []  # no producer was created


def rdkafka_threads(k):
    """The names of the server's librdkafka threads (librdkafka names them "rdk:...")."""
    names = []
    for tid in os.listdir("/proc/%d/task" % k.proc.pid):
        try:
            with open("/proc/%d/task/%s/comm" % (k.proc.pid, tid)) as f:
                names.append(f.read().strip())
        except OSError:
            pass  # the thread ended meanwhile
    return [n for n in names if n.startswith("rdk:")]


def test_bad_kafka_flags_stop_the_start(tmp_path):
    props = tmp_path / "p"
    props.write_text("enable.idempotence=false\n")
    for args, words in ((["--kafka-topic-prefix", "bad/prefix"], "--kafka-topic-prefix"),
                        (["--kafka-properties-file", str(props)], "enable.idempotence"),
                        (["--kafka-delivery-timeout-ms", "60000"], "kafka-delivery-timeout-ms")):
        run = subprocess.run([kassa_bin(), "serve", "--store", "sqlite:" + str(tmp_path / "db"),
                              "--listen", "127.0.0.1:0", "--admin-listen", "",
                              "--kafka-brokers", "127.0.0.1:1"] + args,
                             capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
        assert run.returncode != 0, run.stderr
        assert words in run.stderr, run.stderr
