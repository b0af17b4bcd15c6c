"""Registry of model bundles: real SQLite, real directories, real processes."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tandem.errors import RegistryError, TandemError
from tandem.fsutil import atomic_dir
from tandem.registry import ModelRecord, Registry, parse_ref, tandem_home


def write_tiny_bundle(final_dir: Path, version: int) -> None:
    """The smallest bundle the registry accepts: a directory with manifest.json, written atomically."""
    with atomic_dir(final_dir) as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"format": 1, "version": version}), encoding="utf-8")
        (tmp / "model.onnx").write_bytes(b"\x00" * 8)


def add_versions(home: str, name: str, count: int, start: multiprocessing.synchronize.Event) -> None:
    """Run in a spawned process: wait for the start signal, then add ``count`` versions of ``name``."""
    start.wait(30)
    registry = Registry(home)
    for _ in range(count):
        registry.add(name, write_tiny_bundle, {"pid": multiprocessing.current_process().pid})


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "home")


def test_add_list_get_latest(reg: Registry) -> None:
    rec = reg.add("churn", write_tiny_bundle, {"task": "binary", "metric": "roc_auc", "score": 0.91})
    assert isinstance(rec, ModelRecord)
    assert (rec.name, rec.version, rec.aliases) == ("churn", 1, ())
    assert rec.path == reg.home / "models" / "churn" / "1"
    assert rec.path.is_absolute() and (rec.path / "manifest.json").is_file()
    assert rec.summary == {"task": "binary", "metric": "roc_auc", "score": 0.91}
    assert rec.created_at.endswith("+00:00") and "T" in rec.created_at
    assert rec.ref == "churn:1"
    assert json.loads(json.dumps(rec.to_dict()))["path"] == str(rec.path)

    reg.add("churn", write_tiny_bundle)
    reg.add("alpha", write_tiny_bundle)
    assert [(r.name, r.version) for r in reg.list()] == [("alpha", 1), ("churn", 1), ("churn", 2)]
    assert [r.version for r in reg.list("churn")] == [1, 2]
    assert reg.list("nobody") == []
    assert reg.get("churn").version == 2
    assert reg.get("churn:1") == rec
    assert reg.get("churn:2").summary == {}

    # A second Registry on the same home sees the same state; the schema version is recorded.
    again = Registry(reg.home)
    assert [r.ref for r in again.list()] == ["alpha:1", "churn:1", "churn:2"]
    with sqlite3.connect(reg.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_version_numbering_is_per_name_and_never_reused(reg: Registry) -> None:
    versions = [reg.add("a", write_tiny_bundle).version for _ in range(3)]
    assert versions == [1, 2, 3]
    assert reg.add("b", write_tiny_bundle).version == 1
    reg.delete("a:3")
    assert reg.add("a", write_tiny_bundle).version == 4  # a:3 always meant the deleted bundle
    reg.delete("a")
    assert reg.add("a", write_tiny_bundle).version == 5


def test_write_bundle_gets_final_dir_and_version(reg: Registry) -> None:
    seen: list[tuple[Path, int, bool]] = []

    def write(final_dir: Path, version: int) -> None:
        seen.append((final_dir, version, final_dir.exists()))
        write_tiny_bundle(final_dir, version)

    rec = reg.add("m", write)
    assert seen == [(rec.path, 1, False)]
    assert json.loads((rec.path / "manifest.json").read_text())["version"] == 1


def test_pending_versions_are_invisible(reg: Registry) -> None:
    reg.add("m", write_tiny_bundle)
    observed: dict[str, object] = {}

    def write(final_dir: Path, version: int) -> None:
        observed["list"] = [r.ref for r in reg.list()]
        observed["latest"] = reg.get("m").version
        with pytest.raises(RegistryError, match="has no version 2"):
            reg.get("m:2")
        write_tiny_bundle(final_dir, version)

    reg.add("m", write)
    assert observed == {"list": ["m:1"], "latest": 1}
    assert reg.get("m").version == 2


def test_aliases_set_move_remove(reg: Registry) -> None:
    for _ in range(3):
        reg.add("churn", write_tiny_bundle)
    rec = reg.set_alias("churn", 2, "production")
    assert (rec.version, rec.aliases) == (2, ("production",))
    reg.set_alias("churn", 2, "champion")
    assert reg.get("churn@production").version == 2
    assert reg.get("churn:2").aliases == ("champion", "production")

    moved = reg.set_alias("churn", 3, "production")
    assert (moved.version, moved.aliases) == (3, ("production",))
    assert reg.get("churn@production").version == 3
    assert reg.get("churn:2").aliases == ("champion",)
    assert [r.aliases for r in reg.list("churn")] == [(), ("champion",), ("production",)]

    reg.remove_alias("churn", "production")
    with pytest.raises(RegistryError) as err:
        reg.get("churn@production")
    assert str(err.value) == "model 'churn' has no alias 'production': expected one of champion -> 2"
    with pytest.raises(RegistryError, match="model 'churn' has no alias 'production'"):
        reg.remove_alias("churn", "production")
    reg.remove_alias("churn", "champion")
    with pytest.raises(RegistryError, match="'churn' has no aliases yet"):
        reg.get("churn@champion")


def test_set_alias_rejects_bad_values(reg: Registry) -> None:
    reg.add("churn", write_tiny_bundle)
    with pytest.raises(RegistryError, match=r"model 'churn' has no version 7: expected one of 1$"):
        reg.set_alias("churn", 7, "production")
    with pytest.raises(RegistryError, match="alias '42' is not valid: an alias may not be all digits"):
        reg.set_alias("churn", 1, "42")
    with pytest.raises(RegistryError, match=r"alias 'bad alias' is not valid: expected 1-64 characters"):
        reg.set_alias("churn", 1, "bad alias")
    with pytest.raises(RegistryError, match="version 0 is not valid: expected a positive integer"):
        reg.set_alias("churn", 0, "production")
    with pytest.raises(RegistryError, match="version True is not valid"):
        reg.set_alias("churn", True, "production")  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="no model named 'chrun' in the registry: did you mean 'churn'"):
        reg.set_alias("chrun", 1, "production")


def test_delete_version_and_whole_name(reg: Registry) -> None:
    recs = [reg.add("churn", write_tiny_bundle) for _ in range(3)]
    keep = reg.add("other", write_tiny_bundle)
    reg.set_alias("churn", 2, "production")

    deleted = reg.delete("churn:2")
    assert [(r.ref, r.aliases) for r in deleted] == [("churn:2", ("production",))]
    assert not recs[1].path.exists()
    assert [r.version for r in reg.list("churn")] == [1, 3]
    with pytest.raises(RegistryError, match="has no alias 'production'"):
        reg.get("churn@production")
    with pytest.raises(RegistryError, match=r"model 'churn' has no version 2: expected one of 1, 3$"):
        reg.get("churn:2")
    with sqlite3.connect(reg.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM aliases").fetchone()[0] == 0

    deleted = reg.delete("churn")
    assert [r.ref for r in deleted] == ["churn:1", "churn:3"]
    assert not any(r.path.exists() for r in recs)
    assert not (reg.models_dir / "churn").exists()
    assert [r.ref for r in reg.list()] == ["other:1"]
    assert keep.path.is_dir()
    # Nothing is left behind beside the real paths either (no temp or trash directories).
    assert sorted(p.name for p in reg.models_dir.iterdir()) == ["other"]
    with pytest.raises(RegistryError, match="no model named 'churn'"):
        reg.delete("churn")
    with pytest.raises(RegistryError, match="cannot delete 'other@x': expected NAME or NAME:VERSION"):
        reg.delete("other@x")


def test_delete_tolerates_a_missing_directory(reg: Registry) -> None:
    rec = reg.add("m", write_tiny_bundle)
    (rec.path / "manifest.json").unlink()
    (rec.path / "model.onnx").unlink()
    rec.path.rmdir()
    assert [r.ref for r in reg.delete("m:1")] == ["m:1"]
    assert reg.list() == []


def test_resolve_path_or_name(reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rec = reg.add("churn", write_tiny_bundle)
    reg.add("churn", write_tiny_bundle)
    reg.set_alias("churn", 1, "production")

    loose = tmp_path / "loose_bundle"
    write_tiny_bundle(loose, 0)
    assert reg.resolve(loose) == loose
    assert reg.resolve(str(loose)) == loose
    assert reg.resolve(rec.path) == rec.path
    assert reg.resolve("churn") == reg.home / "models" / "churn" / "2"
    assert reg.resolve("churn:1") == rec.path
    assert reg.resolve("churn@production") == rec.path

    # A bare name is a registry reference even when a bundle folder of that name is here (./churn loads it).
    monkeypatch.chdir(tmp_path)
    write_tiny_bundle(tmp_path / "churn", 0)
    assert reg.resolve("churn") == reg.home / "models" / "churn" / "2"
    assert reg.resolve("./churn") == tmp_path / "churn"
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match=r"directory empty is not a bundle \(no manifest.json\) and no model"):
        reg.resolve("empty")

    with pytest.raises(RegistryError, match="directory .*loose_bundle/sub is not a bundle: expected a manifest"):
        (loose / "sub").mkdir()
        reg.resolve(loose / "sub")
    with pytest.raises(RegistryError, match="no bundle directory at '.*/nowhere': expected an existing directory"):
        reg.resolve(tmp_path / "nowhere")
    with pytest.raises(RegistryError, match="no model named 'nothing'"):
        reg.resolve("nothing")


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("churn", ("churn", None, None)),
        ("churn:3", ("churn", 3, None)),
        ("churn@production", ("churn", None, "production")),
        ("a.b_c-D9:12", ("a.b_c-D9", 12, None)),
        ("x" * 64, ("x" * 64, None, None)),
        ("m@v2", ("m", None, "v2")),
    ],
)
def test_parse_ref_good(ref: str, expected: tuple[str, int | None, str | None]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("", "model reference '' is not valid: expected NAME, NAME:VERSION or NAME@ALIAS, with NAME 1-64"),
        ("-churn", "model reference '-churn' is not valid: expected NAME, NAME:VERSION or NAME@ALIAS, with NAME"),
        ("x" * 65, "is not valid: expected NAME, NAME:VERSION or NAME@ALIAS, with NAME 1-64 characters"),
        ("churn:", "model reference 'churn:' is not valid: expected NAME, NAME:VERSION or NAME@ALIAS, with VERSION"),
        ("churn:0", "with VERSION a positive integer"),
        ("churn:-1", "with VERSION a positive integer"),
        ("churn:v3", "with VERSION a positive integer"),
        ("churn:3:4", "with VERSION a positive integer"),
        ("churn@", "with ALIAS 1-64 characters"),
        ("churn@123", "with ALIAS 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit, not all"),
        ("churn@prod@x", "with ALIAS"),
        ("churn:3@prod", "not both a version and an alias"),
        ("my model", "with NAME"),
        ("a/b", "with NAME"),
        (":3", "with NAME"),
    ],
)
def test_parse_ref_bad(ref: str, message: str) -> None:
    with pytest.raises(RegistryError) as err:
        parse_ref(ref)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, TandemError)


def test_unknown_names_versions_aliases(reg: Registry) -> None:
    with pytest.raises(RegistryError) as err:
        reg.get("churn")
    assert str(err.value) == f"no model named 'churn' in the registry: the registry at {reg.home} is empty"

    for name in ["churn", "churn2", "chum", "charm", "church", "churns", "zebra"]:
        reg.add(name, write_tiny_bundle)
    with pytest.raises(RegistryError) as err:
        reg.get("chrun")
    message = str(err.value)
    assert message.startswith("no model named 'chrun' in the registry: did you mean ")
    suggested = message.split("did you mean ")[1].rstrip("?").split(", ")
    assert len(suggested) == 5 and "'churn'" in suggested and "'zebra'" not in suggested

    with pytest.raises(RegistryError) as err:
        reg.get("qqqq")
    assert str(err.value).startswith("no model named 'qqqq' in the registry: known names include ")

    reg.add("zebra", write_tiny_bundle)
    reg.add("zebra", write_tiny_bundle)
    reg.add("zebra", write_tiny_bundle)
    reg.delete("zebra:3")
    with pytest.raises(RegistryError) as err:
        reg.get("zebra:9")
    assert str(err.value) == "model 'zebra' has no version 9: expected one of 1-2, 4"
    with pytest.raises(RegistryError) as err:
        reg.get("zebra@production")
    assert str(err.value) == (
        "model 'zebra' has no alias 'production': 'zebra' has no aliases yet (set one with set_alias)"
    )


def test_bad_names_and_summaries_on_add(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="model name 'no/slash' is not valid: expected 1-64 characters"):
        reg.add("no/slash", write_tiny_bundle)
    with pytest.raises(RegistryError, match="model name '.hidden' is not valid"):
        reg.add(".hidden", write_tiny_bundle)
    with pytest.raises(RegistryError, match="summary for model 'm' is a list: expected a dict"):
        reg.add("m", write_tiny_bundle, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(RegistryError, match="summary for model 'm' is not valid JSON"):
        reg.add("m", write_tiny_bundle, {"when": object()})
    assert reg.list() == []
    assert not reg.models_dir.exists()


def test_failing_write_bundle_leaves_no_row_and_no_dir(reg: Registry) -> None:
    reg.add("m", write_tiny_bundle)

    def half_then_fail(final_dir: Path, version: int) -> None:
        final_dir.mkdir()  # not atomic on purpose: a partial directory at the real path
        (final_dir / "weights.bin").write_bytes(b"partial")
        raise ValueError("disk full")

    with pytest.raises(ValueError, match="disk full"):
        reg.add("m", half_then_fail)
    assert not (reg.models_dir / "m" / "2").exists()
    assert [r.ref for r in reg.list()] == ["m:1"]
    with sqlite3.connect(reg.db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM versions").fetchone()[0] == 1

    def atomic_then_fail(final_dir: Path, version: int) -> None:
        with atomic_dir(final_dir) as tmp:
            (tmp / "manifest.json").write_text("{}")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        reg.add("m", atomic_then_fail)
    assert sorted(p.name for p in (reg.models_dir / "m").iterdir()) == ["1"]  # no temp dirs either

    with pytest.raises(RegistryError, match=r"bundle for fresh:1 at .* has no manifest.json: expected write_bundle"):
        reg.add("fresh", lambda final_dir, version: final_dir.mkdir())
    assert not (reg.models_dir / "fresh").exists()

    # The failed attempts gave their numbers back.
    assert reg.add("m", write_tiny_bundle).version == 2
    assert reg.add("fresh", write_tiny_bundle).version == 1


def test_add_skips_an_orphan_directory(reg: Registry) -> None:
    # A bundle left at a real path by a crash (no row) is never overwritten.
    write_tiny_bundle(reg.models_dir / "m" / "1", 1)
    rec = reg.add("m", write_tiny_bundle)
    assert rec.version == 2


def test_tandem_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "custom" / "home"))
    home = tandem_home()
    assert home == tmp_path / "custom" / "home" and home.is_dir()
    assert Registry().home == home
    monkeypatch.delenv("TANDEM_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert tandem_home() == tmp_path / "user" / ".tandem"
    assert (tmp_path / "user" / ".tandem").is_dir()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Registry(tmp_path).list()
    with sqlite3.connect(tmp_path / "registry.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(RegistryError, match="has schema version 2: expected 1 or older"):
        Registry(tmp_path).list()


def test_not_a_database_is_a_registry_error(tmp_path: Path) -> None:
    (tmp_path / "registry.sqlite3").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RegistryError, match="registry database .* cannot be used"):
        Registry(tmp_path).list()


def _add_from_threads(reg: Registry, threads: int, adds: int) -> list[BaseException]:
    """``threads`` threads, started together, each adding ``adds`` versions of 'shared'; the errors they met."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def worker() -> None:
        try:
            barrier.wait()
            for _ in range(adds):
                reg.add("shared", write_tiny_bundle)
        except BaseException as exc:  # pragma: no cover - reported by the caller
            errors.append(exc)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    return errors


def test_threads_adding_concurrently_get_distinct_versions(reg: Registry) -> None:
    assert _add_from_threads(reg, 4, 5) == []
    records = reg.list("shared")
    assert [r.version for r in records] == list(range(1, 21))
    assert all((r.path / "manifest.json").is_file() for r in records)


def test_first_writers_of_a_new_registry_wait_for_each_other(tmp_path: Path) -> None:
    """Four threads start on a registry whose database does not exist yet: each one's first connection puts it in
    WAL mode, which SQLite refuses at once ('database is locked') while another holds a lock. Thirty new registries:
    before the retry, about one start in seven failed (seen in CI)."""
    for attempt in range(30):
        reg = Registry(tmp_path / f"home{attempt}")
        assert _add_from_threads(reg, 4, 1) == [], attempt
        assert [r.version for r in reg.list("shared")] == [1, 2, 3, 4]


def test_processes_adding_concurrently_get_distinct_versions(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Registry(home).list()  # create the schema up front; workers also cope without it
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=add_versions, args=(str(home), "shared", 5, start)) for _ in range(2)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]

    records = Registry(home).list("shared")
    assert [r.version for r in records] == list(range(1, 11))
    assert all((r.path / "manifest.json").is_file() for r in records)
    assert len({r.summary["pid"] for r in records}) == 2


def test_import_pulls_in_no_training_or_numeric_stack() -> None:
    code = (
        "import sys, tandem.registry\n"
        "heavy = {'numpy', 'torch', 'sklearn', 'lightgbm', 'pandas', 'onnxruntime', 'pyarrow'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
