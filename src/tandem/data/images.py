"""Images as table rows: a folder with one sub-folder per class, or ``.npz`` / ``.npy`` arrays.

Each image becomes one row: ``image`` (the encoded file's bytes: PNG, JPEG, PPM, BMP, GIF, WebP,
TIFF), the label (the sub-folder's name, or the array's label) and ``file``. A file that is not a
readable image is left out with an error naming it; the rest load. Arrays are stored as PNG so
both kinds of input reach the model the same way.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from tandem.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".pbm", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_IMAGE_KEYS = ("images", "image", "x", "X", "data", "pixels")
_LABEL_KEYS = ("labels", "label", "y", "Y", "target", "targets")


def is_image_folder(path: Path) -> bool:
    """A directory whose sub-folders hold image files (one sub-folder per class)."""
    if not path.is_dir():
        return False
    files = [f for d in path.iterdir() if d.is_dir() for f in d.iterdir() if f.is_file()]
    return bool(files) and sum(f.suffix.lower() in IMAGE_SUFFIXES for f in files) >= 0.5 * len(files)


def read_image_folder(path: str | os.PathLike, *, target: str = "label") -> tuple[pa.Table, list[str]]:
    """Every image under ``path`` as a row (label: its sub-folder), and one error line per file that failed."""
    from PIL import Image, UnidentifiedImageError

    root = Path(path)
    images, labels, files, errors = [], [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            shown = f"{root.name}/{f.relative_to(root).as_posix()}"
            try:
                raw = f.read_bytes()
                with Image.open(io.BytesIO(raw)) as img:
                    img.verify()
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
                errors.append(f"{shown}: not a readable image ({exc})")
                continue
            images.append(raw)
            labels.append(folder.name)
            files.append(shown)
    if not images:
        detail = f" ({errors[0]})" if errors else ""
        raise DataError(f"image folder '{root}' holds no readable image: expected one sub-folder per class with "
                        f"image files{detail}")
    return pa.table({"image": pa.array(images, pa.binary()), target: labels, "file": files}), errors


def read_image_arrays(path: str | os.PathLike, *, target: str = "label") -> pa.Table:
    """``.npz`` (images and labels arrays) or ``.npy`` (images only) as rows of PNG images."""
    from PIL import Image

    name = str(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"'{name}' is not a readable numpy file ({exc})") from None
    if isinstance(data, np.ndarray):
        images, labels = data, None
    else:
        keys = list(data.files)
        image_key = next((k for k in _IMAGE_KEYS if k in keys), None)
        if image_key is None:
            raise DataError(f"'{name}' has no images array: expected one named {', '.join(_IMAGE_KEYS[:4])}; "
                            f"it holds {', '.join(keys)}")
        label_key = next((k for k in _LABEL_KEYS if k in keys), None)
        images, labels = data[image_key], None if label_key is None else data[label_key]
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3, 4)):
        raise DataError(f"'{name}': images must be N x H x W (grey) or N x H x W x C (C = 1, 3 or 4), got shape "
                        f"{images.shape}")
    if images.dtype != np.uint8:
        top = float(images.max()) if images.size else 0.0
        images = np.clip(images * (255.0 if top <= 1.0 else 1.0), 0, 255).round().astype(np.uint8)
    if labels is not None and len(labels) != len(images):
        raise DataError(f"'{name}': {len(images)} images but {len(labels)} labels")
    encoded = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img).save(buf, format="PNG")
        encoded.append(buf.getvalue())
    columns = {"image": pa.array(encoded, pa.binary())}
    if labels is not None:
        columns[target] = [str(v) for v in labels.tolist()]
    return pa.table(columns)


def image_path_columns(table: pa.Table | pa.RecordBatch, folder: Path) -> list[str]:
    """The text columns of image files: the first 100 non-empty values all name an image (by suffix) and some of
    them are files under ``folder``. A column of image names with none of its files there stays text (an id)."""
    names = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            continue
        values = [v.strip() for v in col.slice(0, 1000).to_pylist() if v and v.strip()][:100]
        if (values and all(Path(v).suffix.lower() in IMAGE_SUFFIXES for v in values)
                and any((folder / v).is_file() for v in values)):
            names.append(name)
    return names


def read_image_paths(table: pa.Table | pa.RecordBatch, folder: Path, columns: list[str], *, what: str,
                     row_offset: int = 0) -> pa.Table | pa.RecordBatch:
    """``columns`` of image file names (relative to ``folder``, the table file's, or absolute inside it) replaced
    by the files' bytes. A DataError names the column and row of a file that is missing or outside ``folder``;
    a missing name stays a missing image."""
    from tandem.bundle.media import MAX_IMAGE_BYTES

    root = folder.resolve()
    for name in columns:
        raw = []
        for i, v in enumerate(table.column(name).to_pylist()):
            if v is None or not v.strip():
                raw.append(None)
                continue
            where = f"{what} column '{name}' row {i + 1 + row_offset}"
            path = (root / v.strip()).resolve()
            if not path.is_relative_to(root):
                raise DataError(f"{where}: image file '{v}' is outside the table's folder '{root}' (paths are read "
                                "relative to it, and only inside it)")
            if not path.is_file():
                raise DataError(f"{where}: image file '{v}' not found (paths are read relative to the table's "
                                f"folder '{root}')")
            if path.stat().st_size > MAX_IMAGE_BYTES:
                raise DataError(f"{where}: image file '{v}' is over the limit of {MAX_IMAGE_BYTES} bytes")
            raw.append(path.read_bytes())
        index = table.column_names.index(name)
        column = pa.array(raw, pa.binary())
        table = table.set_column(index, name, column) if isinstance(table, pa.Table) else pa.RecordBatch.from_arrays(
            [column if j == index else c for j, c in enumerate(table.columns)], names=table.column_names)
    return table
