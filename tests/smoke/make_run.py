#!/usr/bin/python3
"""Smoke test of `make run`, as the README tells a newcomer to use it.

    /usr/bin/python3 tests/smoke/make_run.py [--keep]

1. Copies the checkout (the files git tracks, and untracked ones it does not ignore) into a
   throwaway directory, with the release build `make test` has just made (mtimes kept, so make
   finds it up to date: what is proven here is the command, the build is proven by compiling).
2. Runs `make run` there, in its own session, with a clean environment (no KASSA_* variables, no
   parent make's flags) except the listen addresses: port 0, so a developer's own `make run` on
   8080 is never disturbed; the real addresses are read from kassa's banner.
3. Waits for /health/ready, checks that the demo token `make run` printed is var/demo.token.
4. Runs the README's first-payment block (marked <!-- smoke:first-payment -->) with bash, with
   localhost:8080 replaced by the real address, and requires that it ends in "captured".
5. Stops kassa with SIGTERM and requires that `make run` exits 0.

Exits 0 on success; otherwise prints what failed with the tails of make's output and exits 1.
Everything is bounded: START_TIMEOUT_S for the start, BLOCK_TIMEOUT_S for the README block,
STOP_TIMEOUT_S for the stop.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
START_TIMEOUT_S = 30
BLOCK_TIMEOUT_S = 30
STOP_TIMEOUT_S = 20
MARKER = "<!-- smoke:first-payment -->"
RECEIPT_MARKER = "<!-- smoke:first-receipt -->"


class SmokeFailure(Exception):
    pass


def checkout_files():
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and os.path.isfile(os.path.join(ROOT, f))]


def copy_checkout(dest):
    for rel in checkout_files():
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, rel), target)  # keeps mode and mtime
    release = os.path.join(ROOT, "build", "release")
    if not os.path.isfile(os.path.join(release, "kassa")):
        raise SmokeFailure("build/release/kassa is missing: `make test` builds it first")
    shutil.copytree(release, os.path.join(dest, "build", "release"), symlinks=True)


def readme_block(marker=MARKER):
    text = open(os.path.join(ROOT, "README.md")).read()
    at = text.find(marker)
    if at < 0:
        raise SmokeFailure("README.md has no %s block" % marker)
    m = re.compile(r"```sh\n(.*?)```", re.S).search(text, at)
    if not m:
        raise SmokeFailure("no ```sh block after %s in README.md" % marker)
    return m.group(1)


def clean_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KASSA_", "MAKE", "ASAN_", "UBSAN_", "LSAN_")) and k != "MFLAGS"}
    env["KASSA_LISTEN"] = "127.0.0.1:0"
    env["KASSA_ADMIN_LISTEN"] = "127.0.0.1:0"
    return env


def wait_for(pred, timeout_s, what, proc, out_path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc.poll() is not None:
            raise SmokeFailure("`make run` exited with %s while waiting for %s"
                               % (proc.returncode, what))
        time.sleep(0.1)
    raise SmokeFailure("no %s within %ss" % (what, timeout_s))


def ready(base):
    try:
        with urllib.request.urlopen(base + "/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def kassa_pid(workdir):
    """The `kassa serve` process that `make run` started in `workdir`."""
    exe = os.path.join(workdir, "build", "release", "kassa")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/exe" % name) == exe and \
                    os.readlink("/proc/%s/cwd" % name) == workdir:
                return int(name)
        except OSError:
            continue
    return None


def tail(path, n=3000):
    try:
        return open(path, errors="replace").read()[-n:]
    except OSError:
        return ""


def smoke(workdir):
    t0 = time.monotonic()
    copy_checkout(workdir)
    block = readme_block()
    receipt_block = readme_block(RECEIPT_MARKER)  # runs after the payment, with the demo token
    out_path = os.path.join(workdir, "make-run.out")
    err_path = os.path.join(workdir, "make-run.err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(["make", "run"], cwd=workdir, env=clean_env(),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
    try:
        banner = wait_for(lambda: re.search(r"public API\s+(http://\S+)", tail(out_path, 10**6)),
                          START_TIMEOUT_S, "banner", proc, out_path)
        base = banner.group(1)
        wait_for(lambda: ready(base), START_TIMEOUT_S, "/health/ready", proc, out_path)
        t_ready = time.monotonic()

        printed = tail(out_path, 10**6)
        demo = open(os.path.join(workdir, "var", "demo.token")).read().strip()
        if not re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", demo):
            raise SmokeFailure("var/demo.token is not a JWT")
        if demo not in printed.split():
            raise SmokeFailure("the demo token `make run` printed is not var/demo.token")

        host_port = base[len("http://"):]
        script = "set -euo pipefail\n" + block.replace("localhost:8080", host_port)
        walk = subprocess.run(["bash", "-c", script], cwd=workdir, env=clean_env(),
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        print(walk.stdout.rstrip())
        if walk.returncode != 0:
            raise SmokeFailure("the README block failed (exit %d):\n%s"
                               % (walk.returncode, walk.stderr[-3000:]))
        last = walk.stdout.strip().splitlines()[-1] if walk.stdout.strip() else ""
        if not last.endswith(": captured"):
            raise SmokeFailure("the README's payment did not reach captured: %r" % last)
        if "4242424242424242" in walk.stdout:
            raise SmokeFailure("a card number came back in a reply")
        t_paid = time.monotonic()
        script = "set -euo pipefail\nTOKEN=$(cat var/demo.token)\n" + receipt_block.replace(
            "localhost:8080", host_port)
        walk = subprocess.run(["bash", "-c", script], cwd=workdir, env=clean_env(),
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S * 2)
        print(walk.stdout.rstrip().splitlines()[-1] if walk.stdout.strip() else "")
        if walk.returncode != 0:
            raise SmokeFailure("the README's receipt block failed (exit %d):\n%s"
                               % (walk.returncode, walk.stderr[-3000:]))
        last = walk.stdout.strip().splitlines()[-1] if walk.stdout.strip() else ""
        if not re.fullmatch(r"receipt [0-9a-f-]{36}: done", last):
            raise SmokeFailure("the README's receipt did not reach done: %r" % last)

        pid = kassa_pid(workdir)
        if pid is None:
            raise SmokeFailure("cannot find the kassa process `make run` started")
        os.kill(pid, signal.SIGTERM)
        try:
            rc = proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise SmokeFailure("`make run` did not stop within %ss of SIGTERM" % STOP_TIMEOUT_S)
        if rc != 0:
            raise SmokeFailure("`make run` exited %d after SIGTERM" % rc)
        log = tail(err_path, 10**6)
        if "4242424242424242" in log or demo in log:
            raise SmokeFailure("a card number or the demo token is in kassa's log")
        print("make run smoke test: ready in %.1fs, paid in %.1fs, stopped cleanly; %.1fs in all"
              % (t_ready - t0, t_paid - t_ready, time.monotonic() - t0))
    except BaseException:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sys.stderr.write("--- make run stdout (tail)\n%s\n--- make run stderr (tail)\n%s\n"
                         % (tail(out_path), tail(err_path)))
        raise


def main():
    keep = "--keep" in sys.argv[1:]
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="kassa-make-run-"))
    try:
        smoke(workdir)
    except SmokeFailure as e:
        print("make run smoke test FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        if keep:
            print("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
