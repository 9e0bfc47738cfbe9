"""Fixtures for black-box tests: the real `kassa serve` binary on free ports and a temp store.

KASSA_BIN names the binary (default build/san/kassa, built with the probe processor);
KASSA_TEST_STORE_URL, if set, is the store to use (e.g. a PostgreSQL URL shared by every test,
so tests use fresh random machine ids); otherwise each server gets its own SQLite file.

The server listens on port 0 and the fixture reads the real URLs from its banner, so parallel
runs never race for a port. At teardown the server gets SIGTERM; the test fails if it exits
non-zero, does not stop, or its stderr holds a sanitizer report.
"""

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import time

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60
HTTP_TIMEOUT_S = 30

# A small body limit keeps the oversize tests fast; the flag itself is what is under test.
BODY_MAX_BYTES = 65536


def kassa_bin():
    path = os.environ.get("KASSA_BIN", "build/san/kassa")
    return path if os.path.isabs(path) else os.path.join(ROOT, path)


def new_id(prefix="m"):
    """A machine id no other test (or earlier run on a shared store) uses."""
    return "%s-%s" % (prefix, secrets.token_hex(6))


class Kassa:
    """One `kassa serve` process."""

    def __init__(self, workdir, extra_args=(), env=None):
        self.workdir = str(workdir)
        self.store_url = os.environ.get("KASSA_TEST_STORE_URL") or \
            "sqlite:" + os.path.join(self.workdir, "kassa.db")
        self.token_file = os.path.join(self.workdir, "var", "admin.token")
        extra_args = list(extra_args)
        if "--admin-token-file" in extra_args:  # the last one given wins, as in kassa
            self.token_file = extra_args[extra_args.index("--admin-token-file") + 1]
        self.stdout_path = os.path.join(self.workdir, "stdout.txt")
        self.stderr_path = os.path.join(self.workdir, "stderr.txt")
        args = [kassa_bin(), "serve", "--store", self.store_url,
                "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--admin-token-file", self.token_file,
                "--http-body-max-bytes", str(BODY_MAX_BYTES)] + list(extra_args)
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.out = open(self.stdout_path, "wb")
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.err, cwd=self.workdir, env=full_env)
        try:
            self.base, self.admin = self._wait_banner()
            self.token = open(self.token_file).read().strip()
            self._wait_ready()
        except BaseException:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
            self.out.close()
            self.err.close()
            raise

    def _wait_banner(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = open(self.stdout_path, errors="replace").read()
            pub = re.search(r"public API\s+(http://\S+)", text)
            adm = re.search(r"admin API\s+(http://\S+)", text)
            if pub and adm:
                return pub.group(1), adm.group(1)
            if self.proc.poll() is not None:
                raise RuntimeError("kassa exited with %s while starting:\n%s"
                                   % (self.proc.returncode, self.stderr_text()[-4000:]))
            time.sleep(0.05)
        raise RuntimeError("kassa printed no banner in %ss" % START_TIMEOUT_S)

    def _wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if requests.get(self.base + "/health/ready", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError("kassa not ready in %ss" % START_TIMEOUT_S)

    def auth(self, token=None):
        return {"Authorization": "Bearer " + (self.token if token is None else token)}

    def stderr_text(self):
        self.err.flush()
        return open(self.stderr_path, errors="replace").read()

    def log_lines(self):
        """The JSON log lines written so far (non-JSON lines are skipped)."""
        lines = []
        for line in self.stderr_text().splitlines():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pass
        return lines

    def healthy(self):
        r = requests.get(self.base + "/health/live", timeout=HTTP_TIMEOUT_S)
        return r.status_code == 200 and self.proc.poll() is None

    def stop(self):
        """SIGTERM, then the checks. Returns a list of problems (empty when all is well)."""
        problems = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                problems.append("did not stop within %ss of SIGTERM" % STOP_TIMEOUT_S)
        if self.proc.returncode != 0:
            problems.append("exited with %s" % self.proc.returncode)
        self.out.close()
        self.err.close()
        text = open(self.stderr_path, errors="replace").read()
        for marker in SANITIZER_MARKERS:
            at = text.find(marker)
            if at >= 0:
                problems.append("sanitizer report:\n" + text[max(0, at - 200):at + 4000])
                break
        if problems and not any(p.startswith("sanitizer") for p in problems):
            problems.append("stderr tail:\n" + text[-3000:])
        return problems


@pytest.fixture(scope="session", autouse=True)
def vault_master_key(tmp_path_factory):
    """One card-vault master key file for every server of the session (unless the environment
    names one): servers sharing a store (KASSA_TEST_STORE_URL) must share its master key, or the
    vault refuses to open (docs/vault.md)."""
    if not os.environ.get("KASSA_VAULT_MASTER_KEY_FILE"):
        path = tmp_path_factory.mktemp("vault") / "master.key"
        os.environ["KASSA_VAULT_MASTER_KEY_FILE"] = str(path)
    return os.environ["KASSA_VAULT_MASTER_KEY_FILE"]


@pytest.fixture(scope="module")
def kassa(tmp_path_factory):
    """A server shared by the tests of one module."""
    k = Kassa(tmp_path_factory.mktemp("kassa"))
    yield k
    problems = k.stop()
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


@pytest.fixture
def start_kassa(tmp_path):
    """Starts a server with extra flags for one test; stopped and checked at teardown."""
    started = []

    def start(*extra_args, env=None):
        workdir = tmp_path / ("k%d" % len(started))
        workdir.mkdir()
        k = Kassa(workdir, extra_args, env)
        started.append(k)
        return k

    yield start
    problems = []
    for k in started:
        problems.extend(k.stop())
    if problems:
        pytest.fail("kassa serve: " + "\n".join(problems), pytrace=False)


# --- acquirers: the in-process sandbox, or the same behaviour as a remote adapter ---------------

ACQUIRERS = ("sandbox", "remote")
REMOTE_SANDBOX = os.path.join(ROOT, "tests", "adapters", "remote_sandbox.py")
PYTHON = "/usr/bin/python3"


class RemoteSandbox:
    """tests/adapters/remote_sandbox.py: a sandbox acquirer in its own process, reached over the
    remote adapter protocol (docs/adapter-protocol.md). `url` is its step endpoint."""

    def __init__(self, workdir, broken=False):
        self.err_path = os.path.join(str(workdir), "remote-sandbox.stderr")
        self.err = open(self.err_path, "wb")
        args = [PYTHON, REMOTE_SANDBOX, "--port", "0"] + (["--broken"] if broken else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.err)
        line = self._banner()
        self.base = line.split()[-1]
        self.url = self.base + "/session"

    def _banner(self):
        import select
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode()
                if line.startswith("remote sandbox listening on http://127.0.0.1:"):
                    return line.strip()
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("the remote sandbox did not start: " +
                           open(self.err_path, errors="replace").read()[-2000:])

    def operations(self, invoice=None, payment=None):
        params = {k: v for k, v in (("invoice", invoice), ("payment", payment)) if v}
        r = requests.get(self.base + "/operations", params=params, timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        return r.json()["operations"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc.stdout.close()
        self.err.close()


def remote_provider(doc, url, send_card=True):
    """`doc` with the sandbox provider routed to a remote adapter at `url`."""
    prov = doc["providers"]["sandbox"]
    prov["adapter"] = "http"
    prov["options"] = dict(prov.get("options") or {}, url=url, sendCard=send_card)
    return doc


def in_process_provider(doc):
    """`doc` with the sandbox provider back on the in-process sandbox."""
    prov = doc["providers"]["sandbox"]
    prov["adapter"] = "sandbox"
    for key in ("url", "sendCard", "timeoutMs"):
        (prov.get("options") or {}).pop(key, None)
    return doc


def edit_config(k, change, reason):
    """Applies `change(document)` to server `k`'s configuration as a new revision (retried when
    another writer got there first); nothing when it changes nothing."""
    for _ in range(20):
        cur = requests.get(k.admin + "/admin/v1/config", headers=k.auth(),
                           timeout=HTTP_TIMEOUT_S).json()
        doc = change(json.loads(json.dumps(cur["document"])))
        if doc == cur["document"]:
            return
        r = requests.put(k.admin + "/admin/v1/config", headers=k.auth(), timeout=HTTP_TIMEOUT_S,
                         json={"baseRevision": cur["revision"], "document": doc,
                               "reason": reason})
        if r.status_code == 200:
            return
        assert r.status_code == 409, r.text
    raise AssertionError("could not change the configuration")


@contextlib.contextmanager
def routed_to(k, url, send_card=True):
    """Server `k`'s sandbox provider goes to the remote adapter at `url` inside the block, and
    back to the in-process sandbox after it (the store may be shared with later modules)."""
    edit_config(k, lambda d: remote_provider(d, url, send_card), "black-box tests: a remote adapter")
    try:
        yield k
    finally:
        edit_config(k, in_process_provider, "black-box tests: back to the in-process sandbox")


class Acquirer:
    """Where a test module's payments go: "sandbox" (kassa's in-process sandbox acquirer) or
    "remote" (tests/adapters/remote_sandbox.py, through "adapter": "http"). Both behave alike for
    the test cards of docs/sandbox.md; `operations` reads either one's record."""

    def __init__(self, kind, workdir):
        assert kind in ACQUIRERS
        self.kind = kind
        self.remote = RemoteSandbox(workdir) if kind == "remote" else None

    def wire(self, k):
        """Routes server `k`'s sandbox provider to this acquirer (idempotent)."""
        if self.remote:
            edit_config(k, lambda d: remote_provider(d, self.remote.url),
                        "black-box tests: the sandbox provider through the remote adapter")
        return k

    def operations(self, k, invoice=None, payment=None):
        if self.remote:
            return self.remote.operations(invoice, payment)
        params = {key: v for key, v in (("invoice", invoice), ("payment", payment)) if v}
        r = requests.get(k.admin + "/admin/v1/sandbox/operations", params=params,
                         headers=k.auth(), timeout=HTTP_TIMEOUT_S)
        assert r.status_code == 200, r.text
        return r.json()["operations"]

    def stop(self):
        if not self.remote:
            return
        store = os.environ.get("KASSA_TEST_STORE_URL")
        if store:  # a store shared with later modules: put the in-process sandbox back
            out = subprocess.run([kassa_bin(), "config", "get", "--store", store],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            cur = json.loads(out.stdout)
            doc = in_process_provider(json.loads(json.dumps(cur["document"])))
            if doc != cur["document"]:
                import tempfile
                with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                    json.dump(doc, f)
                put = subprocess.run([kassa_bin(), "config", "put", f.name, "--store", store,
                                      "--base", str(cur["revision"]), "--reason",
                                      "black-box tests: back to the in-process sandbox"],
                                     capture_output=True, text=True, timeout=60)
                os.unlink(f.name)
                assert put.returncode == 0, put.stderr
        self.remote.stop()


@pytest.fixture(scope="module")
def acquirer():
    """The in-process sandbox acquirer. test_payments.py overrides this fixture to run its module
    once per acquirer (ACQUIRERS); modules that borrow its `api` fixture get this one."""
    a = Acquirer("sandbox", None)
    yield a
    a.stop()
