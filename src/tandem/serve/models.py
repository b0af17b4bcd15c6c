"""The served models: a loaded bundle and how it is addressed, loading one, and its warm-up run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tandem.inference.predictor import Predictor


@dataclass
class ServedModel:
    """One loaded bundle and how it is addressed."""

    name: str
    version: int | None
    predictor: Predictor
    ref: str = ""  # the reference it was loaded from: a reload resolves it again (an alias may have moved)

    def __post_init__(self) -> None:
        typed = self.predictor.typed_labels
        self.labels = typed.tolist() if typed is not None else None


def load_model(ref: str, registry: object, *, require_signed: bool = False) -> ServedModel:
    """Resolve ``ref`` in the registry (or as a path), verify and load the bundle. ``require_signed`` refuses a
    bundle not signed by a trusted key; without it ``$TANDEM_REQUIRE_SIGNED`` decides, as for every loader."""
    predictor = Predictor(registry.resolve(ref), threads=1, require_signed=True if require_signed else None)
    manifest = predictor.manifest
    return ServedModel(manifest["name"], manifest.get("version"), predictor, ref)


def _blank_png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def warm_one(m: ServedModel) -> None:
    """Run the model once on a made-up row, so its first request pays no lazy initialisation."""
    if m.predictor.recommendations is not None:  # an unknown user of the right type: the popular items
        m.predictor.recommend(0 if m.predictor.recommendations.user_id_type == "int" else "", 1)
        return
    columns = m.predictor.schema.features
    row = {c.name: (0.0 if c.kind in ("numeric", "boolean") else "warm up" if c.kind == "text" else
                    _blank_png() if c.kind == "image" else "") for c in columns}
    for c in columns:
        if c.kind == "datetime":
            row[c.name] = "2000-01-01"
        elif c.kind == "tensor":  # zeros of the column's shape (a free dimension: length 1)
            row[c.name] = np.zeros([max(d, 1) for d in c.shape], dtype=c.dtype)
    m.predictor.run(m.predictor.encode(row))
