"""The HTML report: every section, self-contained, rendered in headless Chromium without console errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from tests.test_quality import clean

import tandem
from tandem.learners import load_portfolio
from tandem.report.html import SECTIONS, render_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium (.ci/run): there the browser test must run, never skip
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    frame = clean(1500, seed=3)
    frame["group"] = np.where(np.random.default_rng(0).random(len(frame)) < 0.4, "a", "b")
    frame.loc[:5, "x2"] = np.nan
    # two configurations: the portfolio is done long before the budget, so the learning curve always has time
    configs = [c for c in load_portfolio() if c["name"] in ("lgbm_cat", "linear")]
    return tandem.train(frame, "y", time_limit=20, home=tmp_path_factory.mktemp("report"), name="rep",
                        configs=configs, bagging="no", sensitive="group")


def chromium(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is required here (CI installs it)"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *args], capture_output=True, text=True, timeout=timeout)


def console_messages(stderr: str) -> list[str]:
    return re.findall(r"CONSOLE[^\]]*\] (.*)", stderr)


def test_the_report_has_every_section_with_its_pictures(model):
    page = render_report(model.manifest)
    for key in SECTIONS:
        assert f'<section id="{key}">' in page, key
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, re.S))
    for key in ("leaderboard", "curves", "confusion", "calibration", "learning", "importance", "fairness",
                "footprint"):
        assert "<svg" in sections[key], key
    footprint = sections["footprint"]
    assert "life of the model" in footprint and "energy per learner" in footprint and "break-even: after" in footprint
    assert "estimated" in footprint or "measured" in footprint
    assert "AUC 0." in sections["curves"] and "AP 0." in sections["curves"]
    assert "learning curve" in sections["learning"] and "training curve" in sections["learning"]
    assert "demographic_parity_ratio" in sections["fairness"]
    assert "missing_values" in sections["quality"]  # the gate found the planted missing values of x2
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', page)  # nothing loaded from a network


@needs_chromium
def test_the_report_renders_in_headless_chromium_without_console_errors(model, tmp_path, run_cli):
    home = model.path.parents[2]
    out = tmp_path / "report.html"
    proc = run_cli(["report", "rep", "-o", out], home=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wrote the report of rep:1" in proc.stderr
    shot = tmp_path / "report.png"
    rendered = chromium("--window-size=1200,5000", f"--screenshot={shot}", out.as_uri())
    assert shot.stat().st_size > 20_000, rendered.stderr[-2000:]
    dom = chromium("--dump-dom", out.as_uri())
    assert dom.returncode == 0
    for key in SECTIONS:
        assert f'<section id="{key}">' in dom.stdout, key
    assert dom.stdout.count("<svg") >= 8
    assert console_messages(dom.stderr + rendered.stderr) == []


@needs_chromium
def test_the_console_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>notDefined()</script></body></html>")
    messages = console_messages(chromium("--dump-dom", page.as_uri()).stderr)
    assert any("notDefined is not defined" in m for m in messages)


def test_report_cli_errors_are_one_line(tmp_path, run_cli, model):
    home = model.path.parents[2]
    proc = run_cli(["report", "nope"], home=home, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "nope" in proc.stderr
    (tmp_path / "a_file").write_text("x")
    proc = run_cli(["report", "rep", "-o", tmp_path / "a_file" / "r.html"], home=home, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("tandem: error:")
    assert "cannot write the report" in proc.stderr


def test_a_regression_report_draws_predictions_and_skips_the_classifier_sections(tmp_path):
    from tests.helpers import mixed_frame

    model = tandem.train(mixed_frame(500, task="regression"), "churn", time_limit=4, home=tmp_path,
                         families=["linear"])
    page = render_report(model.manifest)
    sections = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, re.S))
    assert set(sections) == set(SECTIONS)
    assert "predicted against actual" in sections["curves"] and "Residual" in sections["curves"]
    assert "Not applicable to regression" in sections["confusion"]
    assert "Not applicable to regression" in sections["calibration"]
    assert "<svg" in sections["importance"]


def test_a_variant_bundle_shows_what_optimize_tried(model):
    assert '<section id="optimization">' not in render_report(model.manifest)  # only variants have one
    manifest = dict(model.manifest, lineage={**model.manifest["lineage"], "parent": "rep:1"})
    manifest["optimization"] = {
        "method": "int8", "metric": "roc_auc", "rows": 600,
        "candidates": [
            {"variant": "parent", "value": 0.91, "one_row_us": 32.6, "bytes": 878419, "kept": True},
            {"variant": "int8", "value": 0.9099, "one_row_us": 65.3, "bytes": 241570, "kept": True},
            {"variant": "trees 1/4", "value": 0.85, "one_row_us": 12.0, "bytes": 100000, "kept": False}]}
    page = render_report(manifest)
    section = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, re.S))["optimization"]
    assert section.count("<svg") == 2 and "against one-row latency" in section and "against size" in section
    assert "variant of <code>rep:1</code>" in section and "600 labelled rows" in section
    # three points a chart: the kept ones filled, the refused one a ring
    latency_chart = section.split("<svg")[1]
    assert latency_chart.count("<circle") == 3 and latency_chart.count('fill="white"') == 1
    assert "trees 1/4" in section and "0.9099" in section
    # with energy figures (the meter was on), a third chart: accuracy against joules per 1,000 predictions
    for row, joules in zip(manifest["optimization"]["candidates"], (0.9, 1.4, 0.3), strict=True):
        row["energy_j_per_1000"] = joules
    section = dict(re.findall(r'<section id="(\w+)">(.*?)</section>', render_report(manifest), re.S))["optimization"]
    assert section.count("<svg") == 3 and "against energy" in section and "J per 1,000 one-row predictions" in section
