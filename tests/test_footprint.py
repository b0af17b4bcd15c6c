"""The footprint meter, the training ledger, the life report, energy budgets and the server's windows.

Forced powers and intensity make the arithmetic checkable: CPU energy is the forced power of a
busy thread times this process's CPU time, RAM energy the forced power times wall time, CO2 the
energy times PUE times intensity. One study runs on the real tracker: this machine has no RAPL,
so its figures must be labelled estimated.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import tandem
from helpers import free_port, mixed_frame, post, records, start_server
from tandem.errors import ConfigError, DataError
from tandem.footprint import Meter, MeterSettings, best_start, check_country, read_hourly_intensity, resolve_grid
from tandem.footprint.life import life_report
from tandem.footprint.meter import warm_up

CPU_W, RAM_W, PUE, INTENSITY = 200.0, 10.0, 1.5, 400.0
FORCED = MeterSettings(cpu_power_w=CPU_W, ram_power_w=RAM_W, pue=PUE, intensity_g_per_kwh=INTENSITY)
THREADS = os.cpu_count() or 1
J = 3.6e6  # joules a kWh


def _busy(seconds: float) -> None:
    a = np.random.default_rng(0).random((300, 300))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        a @ a


def _has_rapl() -> bool:
    return any(Path("/sys/class/powercap").glob("intel-rapl*/energy_uj"))


# -- the meter ----------------------------------------------------------------------------------------------
def test_forced_power_and_intensity_give_exact_arithmetic():
    warm_up(FORCED)
    with Meter(FORCED) as meter:
        _busy(0.4)
        half = meter.mark()
        _busy(0.4)
    fp = meter.result
    cpu, ram = fp.components["cpu"], fp.components["ram"]
    # tandem's figures against CodeCarbon's own integral of the forced powers over its window (which
    # began milliseconds after the block: warm_up made its start quick)
    window = fp.library_window
    assert window["seconds"] == pytest.approx(fp.seconds, abs=0.05)
    assert cpu.kwh == pytest.approx(window["cpu_kwh"], rel=0.05)
    assert ram.kwh == pytest.approx(window["ram_kwh"], rel=0.05)
    assert ram.kwh == pytest.approx(RAM_W * fp.seconds / J, rel=0.01)  # and the gap filled at the same power
    # tandem's own arithmetic: exact
    assert fp.it_kwh == cpu.kwh + ram.kwh
    assert fp.energy_kwh == pytest.approx((cpu.kwh + ram.kwh) * PUE, rel=1e-12)
    assert fp.co2_kg == pytest.approx(fp.energy_kwh * INTENSITY / 1000, rel=1e-12)
    assert (cpu.method, ram.method) == ("given", "given") and cpu.low_kwh == cpu.kwh == cpu.high_kwh
    assert fp.grid.source == "given by the user" and fp.grid.g_per_kwh == INTENSITY
    assert fp.library.startswith("codecarbon 3.") and fp.to_dict()["pue"] == PUE
    # parts cut by marks add up to the whole
    first, second = fp.between(fp.start, half), fp.between(half, fp.end)
    assert first.energy_kwh + second.energy_kwh == pytest.approx(fp.energy_kwh, rel=1e-12)
    assert first.components["cpu"].kwh == pytest.approx(cpu.kwh * first.cpu_seconds / fp.cpu_seconds, rel=1e-12)
    assert first.seconds == pytest.approx(0.4, abs=0.1)


def test_the_real_tracker_labels_its_estimates():
    with Meter(MeterSettings(country="FRA")) as meter:
        _busy(0.3)
    fp = meter.result
    assert fp.energy_kwh > 0 and fp.co2_kg > 0 and fp.cpu_seconds > 0.2
    assert fp.components["cpu"].method == ("measured" if _has_rapl() else "estimated")
    if not _has_rapl():
        assert fp.method == "estimated"
        low, high = fp.energy_range_kwh
        assert low < fp.energy_kwh < high
        assert "TDP" in fp.components["cpu"].how and "RAM model" in fp.components["ram"].how
    assert fp.grid.country == "FRA" and fp.grid.g_per_kwh == pytest.approx(56.039)
    assert "Our World in Data" in fp.grid.source


def test_codecarbon_stops_sampling_every_second_and_its_own_figure_still_agrees():
    # the 1 s load sampling scans all of /proc each time (most of the meter's cost); without a GPU it is
    # stopped, and CodeCarbon's own CPU figure, from its readings alone, still matches tandem's
    settings = MeterSettings(country="FRA")
    warm_up(settings)
    with Meter(settings) as meter:
        meter.wait_ready()
        monitor = meter._tracker._scheduler_monitor_power
        _busy(1.5)
        gpus = [h for h in meter._tracker._hardware if type(h).__name__ == "GPU"]
        assert monitor._stopped is not bool(gpus)
    fp = meter.result
    window = fp.library_window
    assert window["seconds"] > 1.4
    assert window["cpu_kwh"] == pytest.approx(fp.components["cpu"].kwh * window["seconds"] / fp.seconds, rel=0.1)


@pytest.mark.parametrize("code, hint", [("FR", "did you mean FRA (France)"), ("ZZZ", "known codes include"),
                                        ("France", "known codes include")])
def test_an_invalid_country_is_an_error_never_the_world_average(code, hint):
    with pytest.raises(ConfigError, match=re.escape(hint)):
        check_country(code)
    with pytest.raises(ConfigError, match=f"country '{code}'"):
        Meter(MeterSettings(country=code))
    assert check_country("deu") == "DEU"
    world = resolve_grid()
    assert world.country == "WORLD" and "no --country" in world.source


def test_the_country_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("TANDEM_COUNTRY", "SWE")
    assert MeterSettings.from_env().grid().country == "SWE"
    monkeypatch.setenv("TANDEM_COUNTRY", "SE")
    with pytest.raises(ConfigError, match="did you mean SWE"):
        MeterSettings.from_env()
    monkeypatch.setenv("TANDEM_COUNTRY", "SWE")
    monkeypatch.setenv("TANDEM_PUE", "0.5")
    with pytest.raises(ConfigError, match="PUE must be a number >= 1.0"):
        MeterSettings.from_env()


# -- the training ledger ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def forced_model(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    frame = mixed_frame(400, seed=1)
    configs = [{"name": "linear", "family": "linear", "params": {"C": 1.0}},
               {"name": "gbm", "family": "lightgbm", "params": {"num_leaves": 8, "n_estimators": 60}},
               {"name": "linear_reg", "family": "linear", "params": {"C": 0.05, "alpha": 20.0}}]
    return tandem.train(frame, "churn", time_limit=20, name="churn", home=home, configs=configs,
                        footprint=FORCED), home


def test_the_ledger_adds_up_exactly(forced_model):
    model, _ = forced_model
    train = model.manifest["footprint"]["train"]
    total = train["energy_kwh"]
    assert train["method"] == "given" and train["pue"] == PUE  # every power forced
    assert train["grid"]["intensity_g_per_kwh"] == INTENSITY
    assert train["co2_kg"] == pytest.approx(total * INTENSITY / 1000, rel=1e-12)
    assert train["it_energy_kwh"] * PUE == pytest.approx(total, rel=1e-12)
    comps = train["components"]
    assert set(comps) == {"cpu", "ram"} and {c["method"] for c in comps.values()} == {"given"}
    assert comps["cpu"]["energy_kwh"] == pytest.approx(CPU_W / THREADS * train["cpu_seconds"] / J, rel=0.03)
    assert comps["ram"]["energy_kwh"] == pytest.approx(RAM_W * train["seconds"] / J, rel=0.03)
    assert set(train["phases"]) == {"prepare", "search", "ensemble and refit", "export"}
    assert sum(p["energy_kwh"] for p in train["phases"].values()) == pytest.approx(total, rel=1e-9)
    trials = train["trials"]
    assert {t["model"] for t in trials} == {"linear", "gbm", "linear_reg"}  # (linear twice when it bags)
    for t in trials:  # each trial: the forced powers over its own CPU and wall time, times PUE
        expected = (CPU_W / THREADS * t["cpu_seconds"] + RAM_W * t["seconds"]) / J * PUE
        assert t["energy_kwh"] == pytest.approx(expected, rel=0.05, abs=1e-9)
        assert t["co2_kg"] == pytest.approx(t["energy_kwh"] * INTENSITY / 1000, rel=1e-12)
    for row in train["per_learner"]:
        own = [t["energy_kwh"] for t in trials if t["family"] == row["learner"]]
        assert row["trials"] == len(own) and row["energy_kwh"] >= sum(own) - 1e-15  # plus refits and curves
    assert sum(r["energy_kwh"] for r in train["per_learner"]) <= train["phases"]["search"]["energy_kwh"] + \
        train["phases"]["ensemble and refit"]["energy_kwh"] + 1e-12
    inference = model.manifest["footprint"]["inference"]
    assert inference["predictions"] == 1000 and inference["energy_kwh_per_1000"] > 0
    assert inference["co2_kg_per_1000"] == pytest.approx(inference["energy_kwh_per_1000"] * INTENSITY / 1000)


def test_footprint_json_gives_the_life_with_its_break_even(forced_model, run_cli, tmp_path):
    model, home = forced_model
    r = run_cli(["footprint", "churn", "--predictions-per-day", "50000", "--grid-intensity", "100", "--json"],
                home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    life = json.loads(r.stdout)
    fp = model.manifest["footprint"]
    train_kg = fp["train"]["energy_kwh"] * INTENSITY / 1000
    per_1000_kg = fp["inference"]["energy_kwh_per_1000"] * 100 / 1000  # served where the grid is 100 g/kWh
    assert life["model"] == "churn:1"
    assert life["training"]["co2_kg"] == pytest.approx(train_kg, rel=1e-12)
    assert life["per_1000_predictions"]["co2_kg"] == pytest.approx(per_1000_kg, rel=1e-12)
    assert life["per_1000_predictions"]["grid"]["source"] == "given by the user"
    assert life["break_even"]["predictions"] == pytest.approx(train_kg / per_1000_kg * 1000, rel=1e-12)
    assert life["break_even"]["days"] == pytest.approx(life["break_even"]["predictions"] / 50000, rel=1e-12)
    low, high = life["break_even"]["predictions_low"], life["break_even"]["predictions_high"]
    assert low == high == pytest.approx(life["break_even"]["predictions"])  # forced powers: no range
    year = life["year"]
    assert year["co2_kg"] == pytest.approx(50000 * 365 / 1000 * per_1000_kg, rel=1e-12)
    assert year["inference_over_training"] == pytest.approx(year["co2_kg"] / train_kg, rel=1e-12)

    text = run_cli(["footprint", "churn", "--predictions-per-day", "50000"], home=home, cwd=tmp_path)
    assert text.returncode == 0 and "break-even: after" in text.stdout and "a year at 50,000" in text.stdout


def test_carbon_aware_start_from_an_hourly_csv(forced_model, run_cli, tmp_path):
    _, home = forced_model
    csv = tmp_path / "hours.csv"
    values = [300, 250, 90, 80, 200, 400]
    csv.write_text("timestamp,carbon_intensity\n" +
                   "".join(f"2026-06-01T{h:02d}:00,{v}\n" for h, v in enumerate(values)), encoding="utf-8")
    r = run_cli(["footprint", "churn", "--hourly-intensity", str(csv), "--json"], home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    aware = json.loads(r.stdout)["carbon_aware"]
    assert aware["best"]["start"] == "2026-06-01T03:00:00" and aware["worst"]["start"] == "2026-06-01T05:00:00"
    assert aware["best"]["intensity_g_per_kwh"] == 80 and aware["starts_tried"] == 6

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,carbon_intensity\n2026-06-01T00:00,300\n2026-06-01T01:00,lots\n", encoding="utf-8")
    r = run_cli(["footprint", "churn", "--hourly-intensity", str(bad)], home=home, cwd=tmp_path)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "row 3, column 'carbon_intensity'" in r.stderr and "Traceback" not in r.stderr


def test_best_start_weighs_the_hours_a_run_spans():
    from datetime import datetime, timedelta

    t0 = datetime(2026, 1, 1)
    hours = [(t0 + timedelta(hours=i), v) for i, v in enumerate([100.0, 500.0, 100.0, 100.0, 300.0])]
    out = best_start(hours, seconds=2.5 * 3600, energy_kwh=2.0)
    # starting at hour 2: 1 h at 100, 1 h at 100, half an hour at 300, over 2.5 h
    assert out["best"]["start"] == (t0 + timedelta(hours=2)).isoformat()
    assert out["best"]["intensity_g_per_kwh"] == pytest.approx((100 + 100 + 0.5 * 300) / 2.5)
    assert out["best"]["co2_kg"] == pytest.approx(2.0 * (100 + 100 + 0.5 * 300) / 2.5 / 1000)
    with pytest.raises(DataError, match="covers 5 hours"):
        best_start(hours, seconds=6 * 3600, energy_kwh=1.0)
    with pytest.raises(DataError, match="no 'carbon_intensity' column"):
        p = Path(os.environ.get("TMPDIR", "/tmp")) / f"tandem-hours-{os.getpid()}.csv"
        p.write_text("timestamp,g\n2026-01-01T00:00,1\n", encoding="utf-8")
        try:
            read_hourly_intensity(p)
        finally:
            p.unlink()


def _ledger(train_kwh, train_range, per_1000_kwh, per_1000_range, g=100.0):
    grid = {"country": "XYZ", "intensity_g_per_kwh": g, "source": "test"}
    return {"train": {"energy_kwh": train_kwh, "energy_kwh_low": train_range[0], "energy_kwh_high": train_range[1],
                      "seconds": 10.0, "method": "estimated", "grid": grid},
            "inference": {"energy_kwh_per_1000": per_1000_kwh, "energy_kwh_low_per_1000": per_1000_range[0],
                          "energy_kwh_high_per_1000": per_1000_range[1], "method": "estimated", "mode": "test"}}


def test_the_break_even_range_pairs_low_training_with_high_inference():
    life = life_report(_ledger(2.0, (1.0, 4.0), 0.001, (0.0005, 0.002)), predictions_per_day=1000)
    even = life["break_even"]
    assert even["predictions"] == pytest.approx(2.0 / 0.001 * 1000)
    assert even["predictions_low"] == pytest.approx(1.0 / 0.002 * 1000)  # earliest: cheap training, dear inference
    assert even["predictions_high"] == pytest.approx(4.0 / 0.0005 * 1000)
    assert even["days"] == pytest.approx(2000.0)
    assert life["year"]["co2_kg"] == pytest.approx(365 * 0.001 * 100 / 1000)
    assert life_report(_ledger(2.0, (1.0, 4.0), 0.0, (0.0, 0.0)))["break_even"]["predictions"] is None


def test_hourly_csv_rows_must_be_an_hour_apart_in_one_time_zone(tmp_path):
    bad = {"gap.csv": ("2026-01-01T00:00,1\n2026-01-01T02:00,1\n", "row 3, column 'timestamp'.*one hour after"),
           "tz.csv": ("2026-01-01T00:00,1\n2026-01-01T01:00+00:00,1\n", "row 3.*mixes times with and without"),
           "empty.csv": ("", "no rows of carbon intensity")}
    for name, (rows, message) in bad.items():
        path = tmp_path / name
        path.write_text("timestamp,carbon_intensity\n" + rows, encoding="utf-8")
        with pytest.raises(DataError, match=message):
            read_hourly_intensity(path)
    bom = tmp_path / "bom.csv"
    bom.write_text("\ufefftimestamp,carbon_intensity\n2026-01-01T00:00,5\n", encoding="utf-8")
    assert read_hourly_intensity(bom)[0][1] == 5.0


def test_a_meter_must_be_started_once(monkeypatch):
    from tandem.errors import FootprintError

    meter = Meter(MeterSettings())
    with pytest.raises(FootprintError, match="never started"):
        meter.stop()
    meter.start()
    with pytest.raises(FootprintError, match="already started"):
        meter.start()
    meter.cancel()
    with pytest.raises(ValueError, match="the block's own"):
        with Meter(MeterSettings()):
            raise ValueError("the block's own error")


def test_life_report_needs_a_ledger():
    from tandem.errors import BundleError

    with pytest.raises(BundleError, match="no footprint ledger"):
        life_report({"train": {"wall_seconds": 3.0}})


# -- budgets and the front doors ----------------------------------------------------------------------------
def test_an_energy_budget_stops_the_study_like_a_time_limit(tmp_path):
    settings = MeterSettings(cpu_power_w=3600.0 * THREADS, ram_power_w=1.0, intensity_g_per_kwh=100.0)
    warm_up(settings)
    budget = 0.02  # kWh: 20 s of one busy thread at 3,600 W
    started = time.monotonic()
    model = tandem.train(mixed_frame(3000, seed=2), "churn", time_limit=120, home=tmp_path, families=["lightgbm"],
                         footprint=settings, max_energy_kwh=budget, bagging="yes")
    wall = time.monotonic() - started
    train = model.manifest["footprint"]["train"]
    assert wall < 45, wall
    assert any("energy budget of 0.02 kWh brought the deadline forward" in n for n in model.manifest["notes"])
    assert 0.5 * budget <= train["energy_kwh"] <= 1.5 * budget  # the export's energy comes on top
    with pytest.raises(ConfigError, match="energy budget must be a positive"):
        tandem.train(mixed_frame(100), "churn", time_limit=5, home=tmp_path, max_energy_kwh=-1)
    with pytest.raises(ConfigError, match="needs the footprint meter"):
        tandem.train(mixed_frame(100), "churn", time_limit=5, home=tmp_path, max_energy_kwh=1, footprint=False)


def test_cli_country_errors_are_one_line(run_cli, tmp_path):
    data = tmp_path / "d.csv"
    mixed_frame(50).to_csv(data, index=False)
    for args in (["train", str(data), "-t", "churn", "--country", "FR"],
                 ["train", str(data), "-t", "churn", "--pue", "0.9"]):
        r = run_cli(args, home=tmp_path / "home", cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stderr.startswith("tandem: error:") and "Traceback" not in r.stderr
    assert "did you mean FRA" in run_cli(["train", str(data), "-t", "churn", "--country", "FR"],
                                         home=tmp_path / "home", cwd=tmp_path).stderr
    checked = run_cli(["check", str(data), "-t", "churn", "--json", "--country", "NOR"], home=tmp_path / "home",
                      cwd=tmp_path)
    assert checked.returncode == 0 and json.loads(checked.stdout)["counts"] is not None
    assert "footprint:" in checked.stderr and "grid NOR" in checked.stderr


def test_predict_with_a_country_reports_its_footprint(forced_model, run_cli, tmp_path):
    _, home = forced_model
    data = tmp_path / "rows.csv"
    mixed_frame(200, seed=3).drop(columns=["churn"]).to_csv(data, index=False)
    r = run_cli(["predict", "churn", str(data), "-o", str(tmp_path / "out.csv"), "--country", "NOR"],
                home=home, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "footprint:" in r.stderr and "grid NOR" in r.stderr and "per 1,000 predictions" in r.stderr


# -- serving ------------------------------------------------------------------------------------------------
def test_the_server_meters_windows_of_1000_predictions(forced_model):
    model, home = forced_model
    port = free_port()
    proc = start_server(home, port, "--country", "FRA", env={"TANDEM_SERVE_FOOTPRINT_WINDOW_S": "1"})
    try:
        rows = records(mixed_frame(100, seed=4).drop(columns=["churn"]))
        for _ in range(11):
            status, _ = post(port, "/v1/models/churn/predict", {"instances": rows})
            assert status == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models/churn/footprint", timeout=5) as resp:
                body = json.loads(resp.read())
            if body["serving"]["windows"]:
                break
            time.sleep(0.3)
        serving = body["serving"]
        # a window closes at >= 1,000 predictions: after the 10th request or the 11th, as the check falls
        assert serving["windows"] == 1 and serving["predictions"] in (1000, 1100)
        assert serving["predictions"] + serving["open_window_predictions"] == 1100
        assert serving["energy_kwh"] > 0 and serving["method"] == ("measured" if _has_rapl() else "estimated")
        assert serving["latest_window"]["predictions"] == serving["predictions"]
        assert serving["latest_window"]["energy_kwh"] == pytest.approx(serving["energy_kwh"], rel=1e-12)
        assert serving["grid"]["country"] == "FRA"
        assert body["training"]["energy_kwh"] == model.manifest["footprint"]["train"]["energy_kwh"]
        assert body["inference_at_export"]["predictions"] == 1000
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        assert f"tandem_metered_predictions_total {serving['predictions']}" in text
        per_1000 = float(re.search(r"^tandem_energy_kwh_per_1000_predictions (\S+)$", text, re.M).group(1))
        assert per_1000 == pytest.approx(serving["energy_kwh_per_1000"], rel=1e-9)
        code, err = post(port, "/v1/models/churn/footprint", {})
        assert code == 405 or code == 400, err
    finally:
        proc.terminate()
        proc.wait(10)
