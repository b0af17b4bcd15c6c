"""Shared state on PostgreSQL: the registry's index and Optuna's study, on a real private server (Debian's
``postgresql``, started by the fixture as the ``postgres`` user in a temp dir; ``.ci/run`` installs it)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from tests.helpers import free_port, mixed_frame

import tandem
from tandem.errors import RegistryError
from tandem.registry import Registry


def _server_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres_url():
    """A private PostgreSQL server on loopback for this module; its URL."""
    bin_dir = _server_binaries()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs Debian's postgresql")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # (not under pytest's temp root, which only its owner may enter)
    root = Path(tempfile.mkdtemp(prefix="tandem-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        shutil.chown(root, "postgres")
        root.chmod(0o700)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()

    def run(*argv: str) -> None:
        proc = subprocess.run([*as_postgres, *argv], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr

    run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
    run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "start", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def database(postgres_url):
    """A fresh database on the server for one test."""
    import psycopg

    name = f"t{time.monotonic_ns()}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_url.rsplit("/", 1)[0] + f"/{name}"


REGISTER = textwrap.dedent('''
    """Register COUNT versions of one model in a PostgreSQL registry; print the versions this process got."""
    import json, sys
    from tandem.fsutil import atomic_dir
    from tandem.registry import Registry

    home, url, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    registry = Registry(home, database=url)

    def write(folder, version):
        with atomic_dir(folder) as tmp:
            (tmp / "manifest.json").write_text(json.dumps({"version": version}))

    got = [registry.add("shared", write, summary={"by": sys.argv[4]}).version for _ in range(count)]
    print(json.dumps(got))
''')


def test_two_processes_register_versions_of_one_model_with_none_lost_or_doubled(database, tmp_path):
    script = tmp_path / "register.py"
    script.write_text(REGISTER)
    home = tmp_path / "home"
    procs = [subprocess.Popen([sys.executable, str(script), str(home), database, "15", name],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    got = [json.loads(out) for out, _ in outs]
    assert len(got[0]) == len(got[1]) == 15
    assert not set(got[0]) & set(got[1])  # no version handed to both
    assert sorted(got[0] + got[1]) == list(range(1, 31))  # none lost
    records = Registry(home, database=database).list("shared")
    assert [r.version for r in records] == list(range(1, 31))
    assert {r.summary["by"] for r in records} == {"a", "b"}
    for r in records:  # every version's bundle is where the index says
        assert json.loads((r.path / "manifest.json").read_text())["version"] == r.version


def test_a_postgres_registry_stores_what_train_registers_and_serves_aliases(database, tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_REGISTRY", database)
    home = tmp_path / "home"
    frame = mixed_frame(300, seed=0)
    model = tandem.train(frame, "churn", time_limit=3, name="churn", home=home, families=["linear"])
    assert model.version == 1
    registry = Registry(home)
    assert str(registry.db_path).startswith("postgresql://postgres@127.0.0.1") and not (home / "registry.sqlite3"
                                                                                     ).exists()
    registry.set_alias("churn", 1, "production")
    assert tandem.load("churn@production", home=home).version == 1
    proc = subprocess.run([sys.executable, "-m", "tandem.cli", "models", "list"], capture_output=True, text=True,
                          env=dict(os.environ, TANDEM_HOME=str(home), TANDEM_REGISTRY=database), timeout=120)
    assert proc.returncode == 0 and "churn" in proc.stdout and "production" in proc.stdout, proc.stderr


def test_a_registry_database_that_cannot_be_used_is_a_one_line_error(postgres_url, tmp_path):
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    closed = postgres_url.replace(f":{port}/", f":{free_port()}/")
    with pytest.raises(RegistryError, match="cannot be reached"):
        Registry(tmp_path, database=closed).list()
    with pytest.raises(RegistryError, match="expected a postgresql:// URL"):
        Registry(tmp_path, database="mysql://x")
    secret = closed.replace("postgres@", "postgres:hunter2@")
    with pytest.raises(RegistryError) as err:
        Registry(tmp_path, database=secret).list()
    assert "hunter2" not in str(err.value) and ":***@" in str(err.value)


OPTUNA = textwrap.dedent('''
    """A study with Optuna search whose trials go to a shared storage; print how many this process ran."""
    import json, sys
    import tandem
    from tests.helpers import mixed_frame

    url, home = sys.argv[1], sys.argv[2]
    model = tandem.train(mixed_frame(400, seed=int(sys.argv[3])), "churn", time_limit=12, home=home,
                         name="churn", families=["linear"], search="optuna", optuna_storage=url,
                         optuna_study="churn-shared", bagging="no", footprint=False)
    print(json.dumps(sum("optuna" in r["model"] for r in model.leaderboard())))
''')


def test_two_processes_share_one_optuna_study(database, tmp_path):
    import optuna

    script = tmp_path / "optuna_worker.py"
    script.write_text(OPTUNA)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    procs = [subprocess.Popen([sys.executable, str(script), database, str(tmp_path / f"home{i}"), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    ran = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(n >= 1 for n in ran), ran
    storage = database.replace("postgresql://", "postgresql+psycopg://", 1)
    study = optuna.load_study(study_name="churn-shared", storage=storage)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    workers = {t.user_attrs.get("worker") for t in finished}
    assert len(finished) == sum(ran) and len(workers) == 2  # one study, both processes' trials in it


def test_an_optuna_storage_needs_the_optuna_search(tmp_path):
    from tandem.errors import ConfigError

    with pytest.raises(ConfigError, match="needs search='optuna'"):
        tandem.train(mixed_frame(100, seed=0), "churn", time_limit=2, home=tmp_path,
                     optuna_storage="postgresql://nobody@127.0.0.1:1/x")
