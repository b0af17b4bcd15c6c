"""Free text and images as a bundle's graph reads them: normalised words and characters, decoded pixels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tandem.errors import SchemaError

_NOT_WORD = r"[^\p{L}\p{N}]+"  # RE2: anything but Unicode letters and digits


def as_text(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        col = pc.cast(col, pa.large_string())
    return pc.utf8_lower(col)


def normalize_text(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Free text's words as the graph reads them: lower case, runs of anything but letters and digits turned
    into one space, trimmed; missing values ''. One Arrow implementation serves training, batches and rows."""
    words = pc.utf8_trim_whitespace(pc.replace_substring_regex(as_text(col), _NOT_WORD, " "))
    return np.asarray(pc.fill_null(words, "").to_numpy(zero_copy_only=False), dtype=object)


def char_tokens(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Free text's characters as the graph reads them: lower case, each run of white space one '_', a space
    between characters (so the graph's StringSplit yields characters); missing values ''."""
    joined = pc.replace_substring_regex(pc.utf8_trim_whitespace(as_text(col)), r"\s+", "_")
    spaced = pc.utf8_rtrim(pc.replace_substring_regex(joined, "(.)", "\\1 "), characters=" ")
    return np.asarray(pc.fill_null(spaced, "").to_numpy(zero_copy_only=False), dtype=object)


MAX_IMAGE_BYTES = 16 * 1024 * 1024  # one encoded image
MAX_IMAGE_PIXELS = 40_000_000  # width x height, checked from the header before any decoding


def decode_images(col: pa.ChunkedArray | pa.Array, size: int, name: str, what: str = "input",
                  row_offset: int = 0) -> np.ndarray:
    """Encoded images (bytes, or base64 text as JSON carries them) as float32 N x 3 x size x size RGB in [0, 1]."""
    import base64
    import binascii
    import io

    from PIL import Image, UnidentifiedImageError

    text = pa.types.is_string(col.type) or pa.types.is_large_string(col.type)
    if not (text or pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type) or pa.types.is_null(col.type)):
        raise SchemaError(f"{what} column '{name}': expected images (bytes, or base64 text), got {col.type} values")
    values = col.to_pylist()
    out = np.empty((len(values), 3, size, size), dtype=np.float32)
    for i, v in enumerate(values):
        where = f"{what} column '{name}' row {i + 1 + row_offset}"
        if v is None:
            raise SchemaError(f"{where}: the image is missing")
        if text:
            payload = v.split(",", 1)[1] if v.startswith("data:") and "," in v else v
            try:
                v = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise SchemaError(f"{where}: expected base64-encoded image bytes, got text that is not "
                                  "base64") from None
        if len(v) > MAX_IMAGE_BYTES:
            raise SchemaError(f"{where}: an image of {len(v)} bytes is over the limit of {MAX_IMAGE_BYTES} bytes")
        try:
            with Image.open(io.BytesIO(v)) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise SchemaError(f"{where}: an image of {width} x {height} pixels is over the limit of "
                                      f"{MAX_IMAGE_PIXELS} pixels")
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise SchemaError(f"{where}: not a readable image (expected PNG, JPEG, PPM, BMP, GIF, WebP or "
                              "TIFF bytes)") from None
        out[i] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return out
