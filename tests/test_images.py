"""Images: folders and arrays in, a CNN trained and exported, pixels served over REST and v2 with clear errors."""

from __future__ import annotations

import base64
import io

import numpy as np
import onnx
import pytest
from PIL import Image
from tests.helpers import free_port, post, start_server

import tandem
from tandem.data.images import read_image_arrays
from tandem.errors import DataError

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 70, 220)}


def picture(kind: str, rng: np.random.Generator, side: int = 24) -> Image.Image:
    """A noisy background with a shape: squares are red, discs green, bars blue (colour and shape both tell)."""
    pixels = rng.integers(90, 160, (side, side, 3)).astype(np.uint8)
    img = Image.fromarray(pixels)
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    x, y = rng.integers(2, side // 3, 2)
    size = int(rng.integers(side // 2, side - 4))
    box = (int(x), int(y), min(int(x) + size, side - 1), min(int(y) + size, side - 1))
    if kind == "red":
        draw.rectangle(box, fill=COLORS[kind])
    elif kind == "green":
        draw.ellipse(box, fill=COLORS[kind])
    else:
        draw.rectangle((box[0], box[1], box[2], box[1] + max(3, size // 4)), fill=COLORS[kind])
    return img


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs") / "shapes"
    rng = np.random.default_rng(0)
    for kind in COLORS:
        (root / kind).mkdir(parents=True)
        for i in range(60):
            picture(kind, rng).save(root / kind / f"{i:02d}.png")
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("imghome")


@pytest.fixture(scope="module")
def model(folder, home):
    return tandem.train(str(folder), "label", time_limit=25, home=home, name="shapes", bagging="no", families=["cnn"])


def test_an_image_folder_trains_a_cnn_that_the_graph_reproduces(model):
    m = model.manifest
    image = [c for c in m["schema"]["columns"] if c["name"] == "image"][0]
    assert image["kind"] == "image" and image["size"] == 24
    assert m["source"] == "images"
    assert any("shapes/red/broken.png: not a readable image" in w for w in m["warnings"])
    assert {e["family"] for e in m["ensemble"]} == {"cnn"}
    assert m["parity"]["max_abs_diff"] <= 1e-5
    graph = onnx.load(str(model.path / "model.onnx")).graph
    assert [d.dim_value or d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["N", 3, 24, 24]
    assert "Conv" in {n.op_type for n in graph.node}
    rng = np.random.default_rng(42)
    kinds = list(COLORS) * 10
    pred = model.predict({"image": [png(picture(k, rng)) for k in kinds]})
    assert np.mean(pred == np.array(kinds)) >= 0.9


def test_arrays_read_as_images_with_clear_errors(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "grey.npz", images=rng.integers(0, 256, (5, 8, 8), dtype=np.uint8), labels=np.arange(5))
    table = read_image_arrays(tmp_path / "grey.npz")
    assert table.column_names == ["image", "label"] and table.num_rows == 5
    assert Image.open(io.BytesIO(table.column("image")[0].as_py())).size == (8, 8)
    np.savez(tmp_path / "odd.npz", images=np.zeros((3, 4, 4, 2)), labels=np.arange(3))
    with pytest.raises(DataError, match="images must be N x H x W .* got shape \\(3, 4, 4, 2\\)"):
        read_image_arrays(tmp_path / "odd.npz")
    np.savez(tmp_path / "nolabels.npz", pictures=np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match="has no images array: expected one named images, image, x, X; it holds "
                                        "pictures"):
        read_image_arrays(tmp_path / "nolabels.npz")
    with pytest.raises(DataError, match="not found"):
        tandem.train(str(tmp_path / "missing.npz"), "label", time_limit=2, home=tmp_path)


def test_images_over_rest_and_v2_and_the_errors_of_bad_images(model, home):
    rng = np.random.default_rng(7)
    port = free_port()
    proc = start_server(home, port, ref="shapes")
    try:
        images = {k: base64.b64encode(png(picture(k, rng))).decode() for k in COLORS}
        status, answer = post(port, "/v1/models/shapes/predict",
                              {"instances": [{"image": images["green"]}, {"image": "data:image/png;base64,"
                                                                                    + images["blue"]}]})
        assert status == 200, answer
        assert answer["predictions"] == ["green", "blue"]
        v2 = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [images["red"]]}]}
        status, answer = post(port, "/v2/models/shapes/infer", v2)
        assert status == 200, answer
        assert [o for o in answer["outputs"] if o["name"] == "label"][0]["data"] == ["red"]
        bad = {
            "not base64!": "expected base64-encoded image bytes, got text that is not base64",
            base64.b64encode(b"plain text, no image").decode(): "not a readable image (expected PNG, JPEG, PPM, BMP, "
                                                                 "GIF, WebP or TIFF bytes)",
            base64.b64encode(png(Image.new("L", (8000, 8000)))).decode(): "an image of 8000 x 8000 pixels is "
                                                                           "over the limit of 40000000 pixels",
            None: "the image is missing",
        }
        for value, message in bad.items():
            status, err = post(port, "/v1/models/shapes/predict", {"instances": [{"image": value}]})
            assert status == 422, err
            assert err["error"] == f"field 'instances' column 'image' row 1: {message}", err
        # raw bytes: an image/png body on the REST route, and a binary BYTES tensor through a real v2 client
        raw = png(picture("green", rng))
        status, answer = post(port, "/v1/models/shapes/predict", raw, "image/png")
        assert status == 200 and answer["predictions"] == ["green"], answer
        status, err = post(port, "/v1/models/shapes/predict", b"GIF89a broken", "image/gif")
        assert status == 422 and "not a readable image" in err["error"]
        import tritonclient.http as triton

        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = triton.InferInput("image", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([png(picture("red", rng)), png(picture("blue", rng))], dtype=np.object_),
                                   binary_data=True)
        result = client.infer("shapes", [tensor], outputs=[triton.InferRequestedOutput("label", binary_data=False)])
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()] == ["red", "blue"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_tandem_predict_scores_an_image_array_file(model, home, tmp_path, run_cli):
    rng = np.random.default_rng(3)
    kinds = list(COLORS) * 4
    pixels = np.stack([np.asarray(picture(k, rng)) for k in kinds])
    np.savez(tmp_path / "new.npz", images=pixels)
    out = tmp_path / "scored.csv"
    proc = run_cli(["predict", "shapes", tmp_path / "new.npz", "-o", out], home=home, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    import pandas as pd

    scored = pd.read_csv(out)
    assert len(scored) == 12 and {"label", "proba_red", "proba_green", "proba_blue"} <= set(scored.columns)
    assert np.mean(scored["label"].to_numpy() == np.array(kinds)) >= 0.9
