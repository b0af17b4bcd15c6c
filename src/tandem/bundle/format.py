"""Write, read and verify bundles: a directory of files plus a manifest with their sha256.

A bundle is written once, atomically, and never modified. Loading verifies every hash and
refuses a mismatch. Nothing in a bundle is ever unpickled: it is data, not code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from tandem.errors import BundleError
from tandem.fsutil import atomic_dir

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHECKSUM = "manifest_sha256"


def _manifest_checksum(body: dict) -> str:
    """sha256 of the manifest's canonical JSON without this field: an edited manifest is refused too."""
    canonical = json.dumps({k: v for k, v in body.items() if k != CHECKSUM}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(target: Path, write_files: Callable[[Path], None], manifest: dict) -> Path:
    """Create bundle ``target``: ``write_files(tmp)`` writes the files, then the manifest lists their hashes.

    The directory appears at ``target`` only when complete (temp dir, then rename).
    """
    target = Path(target)
    if target.exists():
        raise BundleError(f"bundle '{target}' already exists: bundles are never overwritten")
    with atomic_dir(target) as tmp:
        write_files(tmp)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            if rel == MANIFEST:
                raise BundleError("write_files must not write manifest.json itself")
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        body = json.loads(json.dumps(dict(manifest, format_version=FORMAT_VERSION, files=files),
                                     default=_json_default))
        body[CHECKSUM] = _manifest_checksum(body)
        (tmp / MANIFEST).write_text(json.dumps(body, indent=2), encoding="utf-8")
    return target


def _json_default(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_manifest(bundle: Path | str, *, verify: bool = True) -> dict:
    """Read a bundle's manifest; with ``verify``, check every listed file's sha256 first."""
    folder = Path(bundle)
    if not folder.is_dir():
        raise BundleError(f"bundle '{folder}' not found: expected a directory with {MANIFEST}")
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"'{folder}' is not a bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"bundle '{folder}': {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or "files" not in manifest:
        raise BundleError(f"bundle '{folder}': {MANIFEST} has no file list")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle '{folder}' has format version {version!r}; this tandem reads version "
                          f"{FORMAT_VERSION}")
    if verify:
        if manifest.get(CHECKSUM) != _manifest_checksum(manifest):
            raise BundleError(f"bundle '{folder}' failed verification: {MANIFEST} does not match its "
                              f"{CHECKSUM} (the manifest changed after the bundle was written)")
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Raise BundleError unless every file listed in the manifest exists with its recorded sha256."""
    for rel, meta in manifest["files"].items():
        path = folder / rel
        if ".." in Path(rel).parts or not path.resolve().is_relative_to(folder.resolve()):
            raise BundleError(f"bundle '{folder}': file entry '{rel}' points outside the bundle")
        if not path.is_file():
            raise BundleError(f"bundle '{folder}' is incomplete: '{rel}' is missing")
        if sha256_file(path) != meta["sha256"]:
            raise BundleError(f"bundle '{folder}' failed verification: '{rel}' does not match its sha256 "
                              "(the file changed after the bundle was written)")
