"""Black-box tests of the `kassa` command line: commands, flags, environment, exit codes."""

import os
import re
import socket
import stat
import subprocess

import pytest
import requests

from conftest import HTTP_TIMEOUT_S, kassa_bin

RUN_TIMEOUT_S = 60


def run(*args, env=None, cwd=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")
                or k in ("KASSA_BIN", "KASSA_TEST_STORE_URL", "KASSA_VAULT_MASTER_KEY_FILE")}
    full_env.update(env or {})
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=full_env, cwd=cwd)


def store_url(tmp_path):
    return os.environ.get("KASSA_TEST_STORE_URL") or "sqlite:" + str(tmp_path / "cli.db")


def test_version():
    r = run("version")
    assert r.returncode == 0
    assert re.match(r"^kassa \d+\.\d+\.\d+", r.stdout)


def test_help_lists_flags_env_and_exit_codes():
    r = run("help")
    assert r.returncode == 0
    for word in ("serve", "migrate", "--store", "KASSA_STORE", "--listen", "KASSA_LISTEN",
                 "--admin-listen", "--admin-token-file", "--http-threads",
                 "--http-body-max-bytes", "--http-connections-max", "--commit-batch-max",
                 "--log-file", "--log-level", "--sqlite-synchronous", "exit codes"):
        assert word in r.stdout, word


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["serve", "--no-such-flag"],
    ["serve", "--http-threads"],
    ["serve", "--http-threads", "0"],
    ["serve", "--http-threads", "abc"],
    ["serve", "--http-threads", "12x"],
    ["serve", "--http-threads", "99999999999999999999"],
    ["serve", "--http-body-max-bytes", "-1"],
    ["serve", "--http-connections-max", "0"],
    ["serve", "--commit-batch-max", "0"],
    ["serve", "--log-level", "loud"],
    ["serve", "--sqlite-synchronous", "off"],
    ["serve", "--listen", "nocolon"],
    ["serve", "--listen", "127.0.0.1:70000"],
    ["serve", "--listen", "127.0.0.1:"],
    ["serve", "--admin-listen", "::1:80"],
    ["serve", "--store", ""],
    ["serve", "extra-positional"],
    ["migrate", "--http-threads", "-3"],
])
def test_bad_usage_exits_2(args):
    r = run(*args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert "usage: kassa" in r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("var,value", [
    ("KASSA_HTTP_THREADS", "none"),
    ("KASSA_LOG_LEVEL", "chatty"),
    ("KASSA_SQLITE_SYNCHRONOUS", "sometimes"),
    ("KASSA_LISTEN", "localhost"),
])
def test_bad_environment_exits_2(var, value):
    r = run("serve", env={var: value})
    assert r.returncode == 2, r.stderr
    assert var in r.stderr


def test_flag_beats_environment(tmp_path):
    # The environment's bad value is never looked at when the flag is given.
    r = run("migrate", "--store", store_url(tmp_path), "--log-level", "warn",
            env={"KASSA_LOG_LEVEL": "chatty"})
    assert r.returncode == 0, r.stderr


def test_migrate_prints_schema_version(tmp_path):
    r = run("migrate", "--store", store_url(tmp_path))
    assert r.returncode == 0, r.stderr
    assert re.search(r"schema version \d+", r.stdout)
    r2 = run("migrate", env={"KASSA_STORE": store_url(tmp_path)})
    assert r2.returncode == 0 and r2.stdout == r.stdout


def test_migrate_on_a_bad_store_exits_1(tmp_path):
    r = run("migrate", "--store", "mysql://nope")
    assert r.returncode == 1
    blocked = tmp_path / "file"
    blocked.write_text("x")
    r = run("migrate", "--store", "sqlite:%s/sub/kassa.db" % blocked)
    assert r.returncode == 1


def test_log_file_flag(start_kassa, tmp_path):
    log = tmp_path / "kassa.log"
    k = start_kassa("--log-file", str(log), "--log-level", "debug")
    requests.get(k.base + "/health/live", timeout=HTTP_TIMEOUT_S)
    k.stop()
    lines = log.read_text().splitlines()
    assert any('"msg":"http request"' in line for line in lines)
    assert k.token not in log.read_text()


def test_existing_token_file_is_used(start_kassa, tmp_path):
    token_file = tmp_path / "prepared.token"
    token_file.write_text("  operator-chosen-token-0123456789abcdef\n")
    os.chmod(token_file, 0o600)
    k = start_kassa("--admin-token-file", str(token_file))
    assert k.token == "operator-chosen-token-0123456789abcdef"
    h = {"Authorization": "Bearer operator-chosen-token-0123456789abcdef"}
    assert requests.get(k.admin + "/admin/v1/stats", headers=h,
                        timeout=HTTP_TIMEOUT_S).status_code == 200


def test_created_token_file_is_0600(start_kassa):
    k = start_kassa()
    assert stat.S_IMODE(os.stat(k.token_file).st_mode) == 0o600
    assert re.match(r"^[0-9A-Za-z]{32}$", k.token)


def test_empty_token_file_is_refused(tmp_path):
    tf = tmp_path / "empty.token"
    tf.write_text("\n")
    r = run("serve", "--store", store_url(tmp_path), "--listen", "127.0.0.1:0",
            "--admin-listen", "127.0.0.1:0", "--admin-token-file", str(tf))
    assert r.returncode == 1, r.stderr


def test_admin_listener_can_be_disabled(tmp_path):
    proc = subprocess.Popen([kassa_bin(), "serve", "--store", store_url(tmp_path),
                             "--listen", "127.0.0.1:0", "--admin-listen", "",
                             "--admin-token-file", str(tmp_path / "never.token")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = ""
        while "stop with" not in banner:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            banner += line
        assert "admin API   disabled" in banner
        base = re.search(r"public API\s+(http://\S+)", banner).group(1)
        assert requests.get(base + "/health/ready", timeout=HTTP_TIMEOUT_S).status_code == 200
        assert not (tmp_path / "never.token").exists()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, err
    assert "ERROR: AddressSanitizer" not in err and "runtime error:" not in err


def test_port_in_use_exits_1(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = run("serve", "--store", store_url(tmp_path), "--listen", "127.0.0.1:%d" % port,
                "--admin-listen", "127.0.0.1:0",
                "--admin-token-file", str(tmp_path / "t.token"))
    assert r.returncode == 1, r.stderr
    assert "public listener" in r.stderr


def test_env_configures_serve(start_kassa):
    k = start_kassa(env={"KASSA_HTTP_THREADS": "2", "KASSA_LOG_LEVEL": "warn"})
    assert requests.get(k.base + "/health/ready", timeout=HTTP_TIMEOUT_S).status_code == 200
    requests.get(k.base + "/health/live", timeout=HTTP_TIMEOUT_S)
    assert not any(rec.get("msg") == "http request" for rec in k.log_lines())


def test_sigint_stops_cleanly(start_kassa):
    import signal
    k = start_kassa()
    k.proc.send_signal(signal.SIGINT)
    assert k.proc.wait(RUN_TIMEOUT_S) == 0


def test_connection_limit_and_idle_timeout(start_kassa):
    # More threads than connections; idle connections fill the limit; the server drops them
    # after the idle timeout, serves again, and still stops promptly on SIGTERM.
    k = start_kassa("--http-connections-max", "4", "--http-threads", "8", "--http-timeout-s", "1")
    import time
    import urllib.parse
    u = urllib.parse.urlparse(k.base)
    idle = [socket.create_connection((u.hostname, u.port), timeout=10) for _ in range(6)]
    try:
        t0 = time.monotonic()
        closed = 0
        for s in idle[:4]:
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (ConnectionResetError, socket.timeout):
                closed += 1
        assert closed == 4
        assert time.monotonic() - t0 < 10
    finally:
        for s in idle:
            s.close()
    r = requests.get(k.base + "/health/live", timeout=HTTP_TIMEOUT_S)
    assert r.status_code == 200
    with requests.Session() as session:
        for _ in range(20):
            assert session.get(k.base + "/health/ready", timeout=HTTP_TIMEOUT_S).status_code == 200
    t0 = time.monotonic()
    assert k.stop() == []
    assert time.monotonic() - t0 < 10
