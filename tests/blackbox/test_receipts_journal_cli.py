"""Black-box tests of `kassa receipts journal verify | export` (docs/receipts-journal.md).

The journal is written here by a second, independent implementation of the documented format:
the group's key sealed as the vault seals a module's secret (docs/vault.md), each entry's hash
and MAC computed from the documented encoding, the rows put straight into the SQLite store. So
these tests check the command line and, at the same time, that the documentation describes what
the C code computes."""

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import struct
import subprocess

import pytest

from conftest import kassa_bin

RUN_TIMEOUT_S = 60
GROUP = "atol-offline"
ENTRIES_N = 5


def run(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")
           or k == "KASSA_BIN"}
    return subprocess.run([kassa_bin()] + list(args), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=env)


def journal(tmp_path, *args):
    return run("receipts", "journal", *args, "--store", "sqlite:" + str(tmp_path / "k.db"),
               "--vault-master-key-file", str(tmp_path / "m.key"),
               "--log-file", str(tmp_path / "log.json"))


def field(b):
    return struct.pack(">I", len(b)) + b


def u64(v):
    return struct.pack(">Q", v & 0xFFFFFFFFFFFFFFFF)


def canonical(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(group, seq, receipt_id, appended_at, entry_json, prev):
    return hashlib.sha256(field(b"kassa.receipt-journal.entry.v1") + field(group.encode())
                          + u64(seq) + field(receipt_id.encode()) + u64(appended_at)
                          + field(entry_json.encode()) + prev).digest()


def seal(master_hex, purpose, name, plain):
    """What ks_vault_secret_seal makes: base64(nonce | AES-256-GCM ciphertext | tag)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    key = hmac.new(bytes.fromhex(master_hex), b"kassa-vault-secret-key", hashlib.sha256).digest()
    aad = b"kassa-vault-secret\0" + purpose.encode() + b"\0" + name.encode()
    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plain, aad)).decode()


@pytest.fixture
def prepared(tmp_path):
    """A store with GROUP's journal of ENTRIES_N entries, the first one synced; the raw key."""
    r = journal(tmp_path, "verify", "--group", GROUP)  # creates the vault's key and the tables
    assert r.returncode == 1 and "no journal" in r.stderr, r.stderr
    pytest.importorskip("cryptography")
    master = (tmp_path / "m.key").read_text().strip()
    key = os.urandom(32)
    db = sqlite3.connect(tmp_path / "k.db")
    db.execute("INSERT INTO receipt_journal_keys (group_id, key_sealed, created_at)"
               " VALUES (?, ?, ?)", (GROUP, seal(master, "receipt-journal", GROUP, key), 1))
    prev = bytes(32)
    for seq in range(1, ENTRIES_N + 1):
        entry = canonical({"operation": "sell", "receipt": {"total": 150 * seq,
                                                            "note": "receipt number"}})
        rid, at = "r%d" % seq, 1773576000000 + seq
        h = entry_hash(GROUP, seq, rid, at, entry, prev)
        mac = hmac.new(key, h, hashlib.sha256).hexdigest()
        db.execute("INSERT INTO receipt_journal (seq, group_id, receipt_id, appended_at, entry,"
                   " prev_hash, hash, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (seq, GROUP, rid, at, entry, prev.hex(), h.hex(), mac))
        prev = h
    db.execute("INSERT INTO receipt_journal_sync (group_id, seq, outcome, synced_at)"
               " VALUES (?, 1, 'done', 2)", (GROUP,))
    db.commit()
    db.close()
    return tmp_path, key


def test_a_journal_verifies_and_exports(prepared):
    tmp_path, key = prepared
    r = journal(tmp_path, "verify", "--group", GROUP)
    assert r.returncode == 0, r.stderr
    assert "group %s: %d entries verified" % (GROUP, ENTRIES_N) in r.stdout
    out = tmp_path / "j.jsonl"
    r = journal(tmp_path, "export", "--group", GROUP, "--out", str(out))
    assert r.returncode == 0, r.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == ENTRIES_N + 1
    header = json.loads(lines[0])
    assert header["format"] == "kassa.receipt-journal" and header["group"] == GROUP
    assert header["lastSeq"] == ENTRIES_N
    assert [json.loads(l)["seq"] for l in lines[1:]] == list(range(1, ENTRIES_N + 1))
    r = journal(tmp_path, "verify", "--file", str(out))
    assert r.returncode == 0, r.stderr
    # the key is nowhere: not in the file, the output or the log
    everything = out.read_text() + r.stdout + r.stderr + (tmp_path / "log.json").read_text()
    assert key.hex() not in everything
    # standard output is the default
    r = journal(tmp_path, "export", "--group", GROUP)
    assert r.returncode == 0 and r.stdout.splitlines()[1:] == lines[1:]


def tampered(tmp_path, edit):
    out = tmp_path / "j.jsonl"
    assert journal(tmp_path, "export", "--group", GROUP, "--out", str(out)).returncode == 0
    lines = out.read_text().splitlines()
    edit(lines)
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    return journal(tmp_path, "verify", "--file", str(bad))


def set_member(lines, i, key, value):
    line = json.loads(lines[i])
    line[key] = value
    lines[i] = canonical(line)


def swap(lines, i, k):
    lines[i], lines[k] = lines[k], lines[i]


@pytest.mark.parametrize("edit,first_bad", [
    (lambda l: l.__setitem__(3, l[3].replace("receipt number", "receipt numbeR")),
     "entry 3: hash mismatch"),
    (lambda l: l.pop(2), "entry 2: missing"),
    (lambda l: l.insert(4, l[1]), "entry 4: an entry numbered 1 was inserted"),
    (lambda l: swap(l, 3, 4), "entry 3: out of order"),
    (lambda l: set_member(l, 4, "prevHash", "1" * 64), "entry 4: broken chain"),
    (lambda l: l.pop(), "entry 5: missing: the file ends"),
])
def test_a_tampered_file_names_its_first_bad_entry(prepared, edit, first_bad):
    tmp_path, _ = prepared
    r = tampered(tmp_path, edit)
    assert r.returncode == 1, r.stdout + r.stderr
    assert first_bad in r.stderr, r.stderr


def test_a_tampered_store_names_its_first_bad_entry(prepared):
    tmp_path, _ = prepared
    db = sqlite3.connect(tmp_path / "k.db")
    db.execute("UPDATE receipt_journal SET entry = replace(entry, 'sell', 'buy') WHERE seq = 4")
    db.commit()
    db.close()
    r = journal(tmp_path, "verify", "--group", GROUP)
    assert r.returncode == 1
    assert "entry 4: hash mismatch" in r.stderr, r.stderr


def test_bad_usage_exits_2(tmp_path):
    for args in (["verify"], ["verify", "--group", "g", "--file", "f"], ["rotate"],
                 ["export", "--file", "f"], ["verify", "--group", "not a group"]):
        r = journal(tmp_path, *args)
        assert r.returncode == 2, (args, r.stderr)
