"""Registry hygiene (issue 15): what a killed writer leaves is swept, never what a live one uses; outputs and
bundles get the umask's permissions; a bare name is a registry reference, never a folder that shadows it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tandem.errors import RegistryError
from tandem.fsutil import atomic_dir
from tandem.registry import Registry

# a writer that reserves a version, writes half a bundle into its temp folder, says so, then waits to be killed
WRITER = textwrap.dedent("""
    import sys, time
    from tandem.fsutil import atomic_dir
    from tandem.registry import Registry

    def write(final_dir, version):
        with atomic_dir(final_dir) as tmp:
            (tmp / "model.onnx").write_bytes(b"half")
            print(tmp, flush=True)
            time.sleep(120)

    Registry(sys.argv[1]).add(sys.argv[2], write)
""")


def write_tiny_bundle(final_dir: Path, version: int) -> None:
    with atomic_dir(final_dir) as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"format": 1, "version": version}), encoding="utf-8")


def _start_writer(home: Path, name: str) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(home), name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line, proc.stderr.read()
    return proc, Path(line)


def _pending(home: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(home / "registry.sqlite3") as conn:
        return conn.execute("SELECT name, version FROM versions WHERE state = 'pending' ORDER BY name").fetchall()


def test_a_killed_writers_leftovers_are_swept_and_a_live_writers_are_not(tmp_path) -> None:
    home = tmp_path / "home"
    killed, killed_tmp = _start_writer(home, "churn")
    live, live_tmp = _start_writer(home, "churn")
    try:
        assert killed_tmp.is_dir() and live_tmp.is_dir()
        assert _pending(home) == [("churn", 1), ("churn", 2)]
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)

        record = Registry(home).add("churn", write_tiny_bundle)

        assert record.version == 3
        assert not killed_tmp.exists()
        assert live_tmp.is_dir() and (live_tmp / "model.onnx").read_bytes() == b"half"
        assert _pending(home) == [("churn", 2)]
        assert [r.ref for r in Registry(home).list()] == ["churn:3"]
    finally:
        live.kill()
        live.wait(timeout=10)
    Registry(home).add("other", write_tiny_bundle)
    assert not live_tmp.exists() and _pending(home) == []


def test_leftovers_of_older_tandems_and_deletions_are_swept(tmp_path) -> None:
    home = tmp_path / "home"
    registry = Registry(home)
    registry.add("churn", write_tiny_bundle)
    old = (datetime.now(timezone.utc) - timedelta(days=2)).isoformat(timespec="milliseconds")
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    with sqlite3.connect(home / "registry.sqlite3") as conn:  # rows as an older tandem wrote them: no writer
        conn.execute("INSERT INTO versions VALUES ('churn', 7, 'pending', ?, '{}')", (old,))
        conn.execute("INSERT INTO versions VALUES ('churn', 8, 'pending', ?, '{}')", (now,))
    models = home / "models" / "churn"
    legacy = models / ".9.ab12cd_e.tmp"  # tempfile.mkdtemp's name before writers were recorded
    legacy.mkdir()
    os.utime(legacy, (0, 0))
    recent = models / ".10.zz12cd_e.tmp"
    recent.mkdir()
    trash = models / ".4.deleting-0123456789ab"
    (trash / "native").mkdir(parents=True)

    registry.add("churn", write_tiny_bundle)

    assert _pending(home) == [("churn", 8)]
    assert not legacy.exists() and not trash.exists() and recent.is_dir()


UMASK_SCRIPT = textwrap.dedent("""
    import json, os, stat, sys
    from pathlib import Path
    os.umask(int(sys.argv[2], 8))
    from tandem.fsutil import atomic_file, write_text_atomic
    from tandem.registry import Registry
    from tandem.bundle.format import write_bundle

    root = Path(sys.argv[1])
    write_text_atomic(root / "report.html", "<html></html>")
    with atomic_file(root / "out.csv") as tmp:
        tmp.write_text("a\\n1\\n")
    def files(tmp):
        (tmp / "model.onnx").write_bytes(b"x")
    record = Registry(root / "home").add("m", lambda d, v: write_bundle(d, files, {"name": "m"}))
    mode = lambda p: oct(stat.S_IMODE(p.stat().st_mode))
    print(json.dumps({"report": mode(root / "report.html"), "out": mode(root / "out.csv"),
                      "bundle": mode(record.path), "manifest": mode(record.path / "manifest.json"),
                      "model": mode(record.path / "model.onnx")}))
""")


@pytest.mark.parametrize("umask, file_mode, dir_mode", [("022", "0o644", "0o755"), ("077", "0o600", "0o700"),
                                                        ("027", "0o640", "0o750")])
def test_outputs_and_bundles_follow_the_umask(tmp_path, umask, file_mode, dir_mode) -> None:
    proc = subprocess.run([sys.executable, "-c", UMASK_SCRIPT, str(tmp_path), umask], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    modes = json.loads(proc.stdout)
    assert modes == {"report": file_mode, "out": file_mode, "bundle": dir_mode, "manifest": file_mode,
                     "model": file_mode}


def test_a_bare_name_is_a_registry_reference_never_a_folder(tmp_path, monkeypatch) -> None:
    registry = Registry(tmp_path / "home")
    record = registry.add("churn", write_tiny_bundle)
    monkeypatch.chdir(tmp_path)
    for name in ("churn", "loose"):
        write_tiny_bundle(tmp_path / name, 0)

    # the folder named like the model does not shadow the registry: the name means the same in any directory
    assert registry.resolve("churn") == record.path
    assert registry.resolve("./churn") == tmp_path / "churn"
    assert registry.resolve(Path("churn")) == tmp_path / "churn"  # a Path is a path
    assert registry.resolve(str(tmp_path / "churn")) == tmp_path / "churn"
    with pytest.raises(RegistryError) as info:
        registry.resolve("loose")
    assert str(info.value) == ("no model named 'loose' in the registry: known names include 'churn'; a bundle folder "
                               "'loose' exists here: write ./loose to load the folder (a bare name is a registry "
                               "reference)")
    assert registry.resolve("./loose") == tmp_path / "loose"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert registry.resolve("~/loose") == tmp_path / "loose"


def test_cli_says_how_to_load_a_folder(tmp_path, run_cli) -> None:
    import tandem
    from helpers import mixed_frame

    frame = mixed_frame(200, task="binary")
    tandem.train(frame, "churn", time_limit=2, path=tmp_path / "mymodel", families=["linear"], footprint=False)
    frame.drop(columns=["churn"]).to_csv(tmp_path / "rows.csv", index=False)
    proc = run_cli(["predict", "mymodel", "rows.csv", "-o", "out.csv"], home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "write ./mymodel to load the folder" in proc.stderr
    proc = run_cli(["predict", "./mymodel", "rows.csv", "-o", "out.csv"], home=tmp_path / "home", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.csv").is_file()


def test_sweeping_costs_one_listing_when_nothing_is_left(tmp_path) -> None:
    registry = Registry(tmp_path / "home")
    registry.add("a", write_tiny_bundle)
    assert registry.sweep() == []
    assert stat.S_ISDIR((tmp_path / "home" / "models" / "a" / "1").stat().st_mode)
