"""The serving image and the Kubernetes/KServe manifests: what this machine can check without a cluster or a
Docker daemon. The manifests parse, their probes and ports name real routes and options, and the command the
KServe runtime runs (a bundle folder, as KServe mounts one) serves v2 inference."""

from __future__ import annotations

import json
import re
import shutil
import urllib.request
from pathlib import Path

import tomllib
import typer
import yaml
from tests.helpers import free_port, linear_churn, records, start_server, stop_server

from tandem.cli import app as cli_app
from tandem.serve.routes import ROUTES

ROOT = Path(__file__).resolve().parents[1]
ROUTE_PATHS = {t for r in ROUTES for t in r.templates()}


def _serve_options() -> set[str]:
    serve = typer.main.get_command(cli_app).commands["serve"]
    return {opt for p in serve.params for opt in p.opts if opt.startswith("--")}


def _check_serve_args(args: list[str]) -> None:
    options = _serve_options()
    for a in args:
        if a.startswith("--"):
            assert a in options, f"'{a}' is not an option of tandem serve"


def test_the_kubernetes_manifest_probes_real_routes_with_real_options():
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/tandem-serve.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next(d for d in docs if d["kind"] == "Service")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready" in ROUTE_PATHS
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live" in ROUTE_PATHS
    _check_serve_args(container["args"])
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_kserve_runtime_speaks_v2_from_the_mounted_bundle():
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/kserve.yaml").read_text()))
    runtime = next(d for d in docs if d["kind"] == "ServingRuntime")
    service = next(d for d in docs if d["kind"] == "InferenceService")
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    container = runtime["spec"]["containers"][0]
    assert container["name"] == "kserve-container" and container["args"][0] == "/mnt/models"
    _check_serve_args(container["args"])
    assert container["readinessProbe"]["httpGet"]["path"] in ROUTE_PATHS
    assert service["spec"]["predictor"]["model"]["runtime"] == runtime["metadata"]["name"]


def test_the_dockerfile_installs_the_serving_extras_and_runs_tandem_serve():
    text = (ROOT / "Dockerfile").read_text()
    extras = re.search(r'pip install "\.\[([a-z,-]+)\]"', text).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(declared) and "train" not in extras  # the serving image has no training stack
    assert {"serve", "files", "text-models", "image-models"} <= set(extras)  # it serves any model
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
    assert entrypoint[:2] == ["tandem", "serve"]
    _check_serve_args(entrypoint[2:])
    assert re.search(r"^USER 10001$", text, re.M)  # not root
    assert "/v2/health/live" in text


def test_the_runtime_command_serves_a_bundle_folder_as_kserve_mounts_it(tmp_path):
    home = tmp_path / "home"
    frame, train = linear_churn(home)
    model = train()
    mounted = tmp_path / "mnt" / "models"
    shutil.copytree(model.path, mounted)  # what KServe's storage initializer leaves: the bundle folder
    port = free_port()
    proc = start_server(tmp_path / "empty-home", port, "--watch-interval", "0", ref=str(mounted))
    try:
        row = records(frame.drop(columns=["churn"]).iloc[:1])[0]
        inputs = [{"name": k, "shape": [1], "datatype": "BOOL" if isinstance(v, bool) else
                   "FP64" if isinstance(v, float) else "BYTES", "data": [v]}
                  for k, v in row.items() if k != "customer_id"]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/churn/infer",
                                     data=json.dumps({"inputs": inputs}).encode(),
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["model_name"] == "churn"
        label = next(o for o in body["outputs"] if o["name"] == "label")["data"][0]
        assert label == str(model.predict(frame.drop(columns=["churn"]).iloc[:1])[0])
    finally:
        stop_server(proc)
