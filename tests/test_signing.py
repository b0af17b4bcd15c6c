"""Signed bundles (issue 15): training signs with a private key, hosts trust public keys, and a bundle edited and
re-hashed by someone without the private key is refused: API, CLI and server, each in one line."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import tandem
from helpers import free_port, mixed_frame, records, start_server
from tandem.errors import BundleError, ConfigError, TandemError
from test_bundle_integrity import rehash

FRAME = mixed_frame(300, task="binary", seed=0)
OTHER = mixed_frame(300, task="binary", seed=1)  # the attacker's graph: same inputs, other weights


def _train(home: Path | None = None, *, path: Path | None = None, key: Path | None = None,
           frame=FRAME) -> tandem.Model:
    return tandem.train(frame, "churn", time_limit=2, name="churn", home=home, path=path, families=["linear"],
                        footprint=False, signing_key=key)


@pytest.fixture(scope="module")
def keys(tmp_path_factory, run_cli) -> dict[str, Path]:
    """Two key pairs made by `tandem keys generate`: 'ours' (trusted) and 'theirs'."""
    root = tmp_path_factory.mktemp("keys")
    out = {}
    for who in ("ours", "theirs"):
        proc = run_cli(["keys", "generate", root / who], home=root / "home", cwd=root)
        assert proc.returncode == 0, proc.stderr
        out[who] = root / who / "tandem-signing.pem"
        out[who + ".pub"] = root / who / "tandem-signing.pub.pem"
        assert "key " in proc.stdout and str(out[who]) in proc.stdout
    return out


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys) -> Path:
    """A bundle signed with our key."""
    return _train(path=tmp_path_factory.mktemp("signed") / "churn", key=keys["ours"]).path


@pytest.fixture()
def trust(monkeypatch, keys):
    monkeypatch.setenv("TANDEM_TRUSTED_KEYS", str(keys["ours.pub"]))
    monkeypatch.delenv("TANDEM_REQUIRE_SIGNED", raising=False)
    monkeypatch.delenv("TANDEM_SIGNING_KEY", raising=False)


def _raw_public(pub_pem: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(pub_pem.read_bytes())
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_keys_generate_writes_a_private_key_only_its_owner_reads(keys, tmp_path, run_cli) -> None:
    assert stat.S_IMODE(keys["ours"].stat().st_mode) == 0o600
    assert keys["ours.pub"].read_text().startswith("-----BEGIN PUBLIC KEY-----")
    proc = run_cli(["keys", "generate", keys["ours"].parent], home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "tandem-signing.pem already exists: keys are never overwritten" in proc.stderr


def test_a_signed_bundle_loads_with_the_trusted_key(signed, keys, trust) -> None:
    manifest = json.loads((signed / "manifest.json").read_text())
    sig = manifest["signature"]
    raw = _raw_public(keys["ours.pub"])
    assert sig["algorithm"] == "ed25519" and base64.b64decode(sig["public_key"]) == raw
    assert sig["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    model = tandem.load(signed, require_signed=True)
    assert model.predict(FRAME.drop(columns=["churn"]).iloc[:5]).shape == (5,)


def _attacked(signed: Path, tmp_path: Path, *, keep_signature: bool) -> Path:
    """The attacker swaps model.onnx for another graph, re-hashes every file and the manifest checksum."""
    folder = tmp_path / ("kept" if keep_signature else "removed")
    shutil.copytree(signed, folder)
    other = _train(path=tmp_path / f"other-{folder.name}", frame=OTHER)  # a working graph, unsigned
    shutil.copyfile(other.path / "model.onnx", folder / "model.onnx")
    if not keep_signature:
        manifest = json.loads((folder / "manifest.json").read_text())
        del manifest["signature"]
        (folder / "manifest.json").write_text(json.dumps(manifest))
    rehash(folder)
    return folder


def test_an_edited_and_rehashed_bundle_is_refused(signed, tmp_path, trust, monkeypatch) -> None:
    kept = _attacked(signed, tmp_path, keep_signature=True)
    assert (kept / "model.onnx").read_bytes() != (signed / "model.onnx").read_bytes()
    removed = _attacked(signed, tmp_path, keep_signature=False)
    for require in (True, False, None):  # a bad signature is refused whether or not signatures are required
        with pytest.raises(BundleError) as info:
            tandem.load(kept, require_signed=require)
        assert str(info.value) == (f"bundle '{kept}' failed verification: its signature by key "
                                   f"{json.loads((kept / 'manifest.json').read_text())['signature']['key_id']} "
                                   "does not match the manifest (the bundle changed after it was signed)")
    with pytest.raises(BundleError) as info:
        tandem.load(removed, require_signed=True)
    assert str(info.value).startswith(f"bundle '{removed}' is not signed: expected a signature by a trusted key")
    monkeypatch.setenv("TANDEM_REQUIRE_SIGNED", "1")
    with pytest.raises(BundleError, match="is not signed"):
        tandem.load(removed)
    monkeypatch.delenv("TANDEM_REQUIRE_SIGNED")
    assert tandem.load(removed).task == "binary"  # unsigned bundles load where signatures are not required
    monkeypatch.delenv("TANDEM_TRUSTED_KEYS")
    with pytest.raises(BundleError, match="does not match the manifest"):  # the key it carries catches it too
        tandem.load(kept)


def test_an_untrusted_key_is_refused(tmp_path, keys, monkeypatch) -> None:
    monkeypatch.delenv("TANDEM_TRUSTED_KEYS", raising=False)
    theirs = _train(path=tmp_path / "theirs", key=keys["theirs"]).path  # loads here: its signature is sound
    monkeypatch.setenv("TANDEM_TRUSTED_KEYS", str(keys["ours.pub"]))
    their_id = json.loads((theirs / "manifest.json").read_text())["signature"]["key_id"]
    our_id = hashlib.sha256(_raw_public(keys["ours.pub"])).hexdigest()[:16]
    for require in (True, False):
        with pytest.raises(BundleError) as info:
            tandem.load(theirs, require_signed=require)
        assert str(info.value) == (f"bundle '{theirs}' is signed by key {their_id}, which is not trusted here: "
                                   f"expected one of {our_id} (TANDEM_TRUSTED_KEYS)")
    # a folder of trusted keys; a private key in it is a mistake worth one line
    folder = tmp_path / "trusted"
    folder.mkdir()
    shutil.copy(keys["ours.pub"], folder / "a.pem")
    shutil.copy(keys["theirs.pub"], folder / "b.pem")
    monkeypatch.setenv("TANDEM_TRUSTED_KEYS", f"{tmp_path / 'nothing-here'}:{folder}")
    with pytest.raises(ConfigError, match="nothing-here does not exist: expected a PEM public key file"):
        tandem.load(theirs, require_signed=True)
    monkeypatch.setenv("TANDEM_TRUSTED_KEYS", str(folder))
    assert tandem.load(theirs, require_signed=True).task == "binary"
    shutil.copy(keys["ours"], folder / "c.pem")
    with pytest.raises(ConfigError, match="c.pem is a private key: expected public keys only"):
        tandem.load(theirs, require_signed=True)
    monkeypatch.delenv("TANDEM_TRUSTED_KEYS")
    with pytest.raises(ConfigError, match="no key is trusted: set TANDEM_TRUSTED_KEYS"):
        tandem.load(theirs, require_signed=True)


def test_signing_key_errors_are_one_line_before_training(tmp_path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        _train(path=tmp_path / "never", key=bad)
    assert str(info.value).startswith(f"signing key {bad} is not a PEM private key")
    with pytest.raises(ConfigError, match="cannot be read"):
        _train(path=tmp_path / "never", key=tmp_path / "missing.pem")
    assert time.monotonic() - started < 60 and not (tmp_path / "never").exists()


def test_write_bundle_signs_any_bundle(tmp_path, signed, keys, trust) -> None:
    """The generic path (a foreign model's import would take it): write_bundle(..., signing_key=)."""
    from tandem.bundle.format import read_manifest, write_bundle
    from tandem.bundle.signing import load_signing_key

    manifest = json.loads((signed / "manifest.json").read_text())
    for field in ("files", "format_version", "manifest_sha256", "signature"):
        manifest.pop(field)

    def files(tmp: Path) -> None:
        for rel in json.loads((signed / "manifest.json").read_text())["files"]:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(signed / rel, tmp / rel)

    target = write_bundle(tmp_path / "imported", files, manifest, signing_key=load_signing_key(keys["ours"]))
    assert read_manifest(target, require_signed=True)["signature"]["key_id"] == \
        json.loads((signed / "manifest.json").read_text())["signature"]["key_id"]


# ------------------------------------------------------------------------------------------------- CLI


def _cli(args: list, home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    environ.update(TANDEM_HOME=str(home), COLUMNS="160", NO_COLOR="1", PYTHONWARNINGS="ignore", **env)
    return subprocess.run([sys.executable, "-m", "tandem.cli", *map(str, args)], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=180)


def test_cli_train_signs_and_predict_require_signed_refuses_an_edit(tmp_path, keys) -> None:
    data = tmp_path / "churn.csv"
    FRAME.to_csv(data, index=False)
    rows = tmp_path / "rows.csv"
    FRAME.drop(columns=["churn"]).iloc[:20].to_csv(rows, index=False)
    home = tmp_path / "home"
    proc = _cli(["train", data, "--target", "churn", "--time-limit", "2", "--families", "linear", "--no-footprint",
                 "--signing-key", keys["ours"]], home, tmp_path)
    assert proc.returncode == 0, proc.stderr
    trusted = {"TANDEM_TRUSTED_KEYS": str(keys["ours.pub"])}
    proc = _cli(["predict", "churn", rows, "-o", tmp_path / "ok.csv", "--require-signed"], home, tmp_path, **trusted)
    assert proc.returncode == 0 and (tmp_path / "ok.csv").is_file(), proc.stderr

    bundle = home / "models" / "churn" / "1"
    other = _train(path=tmp_path / "other", frame=OTHER)
    assert (other.path / "model.onnx").read_bytes() != (bundle / "model.onnx").read_bytes()
    shutil.copyfile(other.path / "model.onnx", bundle / "model.onnx")
    rehash(bundle)
    for args, env in ((["--require-signed"], trusted), ([], {**trusted, "TANDEM_REQUIRE_SIGNED": "1"}),
                      ([], trusted)):
        proc = _cli(["predict", "churn", rows, "-o", tmp_path / "out.csv", *args], home, tmp_path, **env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "does not match the manifest" in proc.stderr, proc.stderr
        assert not (tmp_path / "out.csv").exists()
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["signature"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    rehash(bundle)
    for command in (["predict", "churn", rows, "-o", tmp_path / "out.csv"], ["models", "show", "churn"],
                    ["evaluate", "churn", data], ["drift", "churn", rows],
                    ["report", "churn", "-o", tmp_path / "r.html"], ["footprint", "churn"]):
        proc = _cli([*command, "--require-signed"], home, tmp_path, **trusted)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "is not signed: expected a signature by a trusted key" in \
            proc.stderr, (command, proc.stderr)
    assert _cli(["predict", "churn", rows, "-o", tmp_path / "out.csv"], home, tmp_path).returncode == 0


# ---------------------------------------------------------------------------------------------- server


def _reload(port: int, token: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/admin/models/churn/reload", data=b"{}", method="POST",
                                 headers={"content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_serve_require_signed(tmp_path, keys, monkeypatch) -> None:
    for var in ("TANDEM_TRUSTED_KEYS", "TANDEM_REQUIRE_SIGNED", "TANDEM_SIGNING_KEY"):
        monkeypatch.delenv(var, raising=False)
    unsigned_home = tmp_path / "unsigned"
    _train(unsigned_home)
    trusted = {"TANDEM_TRUSTED_KEYS": str(keys["ours.pub"])}
    proc = _cli(["serve", "churn", "--port", str(free_port()), "--require-signed"], unsigned_home, tmp_path, **trusted)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "is not signed: expected a signature by a trusted key" in proc.stderr, \
        proc.stderr

    home = tmp_path / "home"
    _train(home, key=keys["ours"])
    port = free_port()
    server = start_server(home, port, "--require-signed", "--watch-interval", "0",
                          env={**trusted, "TANDEM_ADMIN_TOKEN": "admin-secret"})
    try:
        _train(home)  # version 2, unsigned: the reload refuses it and keeps serving version 1
        status, body = _reload(port, "admin-secret")
        assert status == 409, body
        assert "still serving version 1" in body["error"] and "is not signed" in body["error"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/churn/predict", headers={
            "content-type": "application/json"}, data=json.dumps(
                {"instances": records(FRAME.drop(columns=["churn"]).iloc[:1])}).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert json.loads(resp.read())["version"] == 1
        _train(home, key=keys["ours"])  # version 3, signed: accepted
        assert _reload(port, "admin-secret") == (200, {"name": "churn", "previous_version": 1, "version": 3})
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_a_signature_survives_only_its_own_manifest(signed, tmp_path, trust) -> None:
    """Copying a valid signature onto another manifest does not make it valid (what the signature covers)."""
    other = _train(path=tmp_path / "other", frame=OTHER).path
    sig = json.loads((signed / "manifest.json").read_text())["signature"]
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["signature"] = sig
    (other / "manifest.json").write_text(json.dumps(manifest))
    rehash(other)
    with pytest.raises(TandemError, match="does not match the manifest"):
        tandem.load(other)
