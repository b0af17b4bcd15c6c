"""Write, read and verify bundles: a directory of files plus a manifest with their sha256.

A bundle is written once, atomically, and never modified. Loading verifies every hash and
refuses a mismatch, checks the manifest's fields (:mod:`tandem.bundle.manifest`) and, when the
bundle is signed or signatures are required, its signature (:mod:`tandem.bundle.signing`).
Nothing in a bundle is ever unpickled: it is data, not code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from tandem.bundle.files import MANIFEST_FILE
from tandem.bundle.manifest import check_manifest
from tandem.bundle.signing import SIGNATURE, SigningKey, sign_manifest, signing_key_from_env, verify_signature
from tandem.errors import BundleError
from tandem.fsutil import atomic_dir

FORMAT_VERSION = 1
CHECKSUM = "manifest_sha256"
#: A larger manifest.json is refused unread (tandem's are well under a megabyte).
MAX_MANIFEST_BYTES = 64 << 20


def _manifest_checksum(body: dict) -> str:
    """sha256 of the manifest's canonical JSON without this field and the signature: an edited manifest is
    refused too. (The signature is left out so that signing does not change the checksum's meaning.)"""
    canonical = json.dumps({k: v for k, v in body.items() if k not in (CHECKSUM, SIGNATURE)}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_bundle(target: Path, write_files: Callable[[Path], None], manifest: dict, *,
                 signing_key: SigningKey | None = None) -> Path:
    """Create bundle ``target``: ``write_files(tmp)`` writes the files, then the manifest lists their hashes.

    The directory appears at ``target`` only when complete (temp dir, then rename). The manifest is signed
    with ``signing_key``, else with the key in effect (:func:`tandem.bundle.signing.use_signing_key`, then
    ``$TANDEM_SIGNING_KEY``); unsigned when there is none. The key is read before any file is written.
    """
    target = Path(target)
    if target.exists():
        raise BundleError(f"bundle '{target}' already exists: bundles are never overwritten")
    key = signing_key if signing_key is not None else signing_key_from_env()
    with atomic_dir(target) as tmp:
        write_files(tmp)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            if rel == MANIFEST_FILE:
                raise BundleError("write_files must not write manifest.json itself")
            files[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        body = json.loads(json.dumps(dict(manifest, format_version=FORMAT_VERSION, files=files),
                                     default=_json_default))
        body.pop(SIGNATURE, None)
        body.pop(CHECKSUM, None)
        if key is not None:
            body = sign_manifest(body, key)
        body[CHECKSUM] = _manifest_checksum(body)
        (tmp / MANIFEST_FILE).write_text(json.dumps(body, indent=2), encoding="utf-8")
    return target


def _json_default(obj: object) -> object:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_manifest(bundle: Path | str, *, verify: bool = True, require_signed: bool | None = None,
                  hashed_by_caller: frozenset[str] = frozenset()) -> dict:
    """Read a bundle's manifest and check its fields; with ``verify``, check its checksum, its signature and
    every file's sha256 first (and that the bundle holds no file the manifest does not list).

    ``require_signed`` (default ``$TANDEM_REQUIRE_SIGNED``) refuses an unsigned bundle or one signed by a key
    not in ``$TANDEM_TRUSTED_KEYS``; a signed bundle whose signature does not verify is refused either way.
    Every problem is a one-line :class:`BundleError` naming the bundle, file or field. Files named in
    ``hashed_by_caller`` are checked for presence only: the caller hashes the very bytes it goes on to use
    (:func:`check_sha256`), so a large graph is read and hashed once.
    """
    folder = Path(bundle)
    if not folder.is_dir():
        raise BundleError(f"bundle '{folder}' not found: expected a directory with {MANIFEST_FILE}")
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"'{folder}' is not a bundle: {MANIFEST_FILE} is missing")
    where = f"bundle '{folder}': {MANIFEST_FILE}"
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{where} cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where} is over {MAX_MANIFEST_BYTES >> 20} MiB: expected a bundle manifest")
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{where} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(f"{where} nests too deeply to read: expected a bundle manifest") from None
    if not isinstance(manifest, dict) or "files" not in manifest:
        raise BundleError(f"bundle '{folder}': {MANIFEST_FILE} has no file list")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle '{folder}' has format version {version!r}; this tandem reads version "
                          f"{FORMAT_VERSION}")
    check_manifest(manifest, where)
    if verify:
        if manifest.get(CHECKSUM) != _manifest_checksum(manifest):
            raise BundleError(f"bundle '{folder}' failed verification: {MANIFEST_FILE} does not match its "
                              f"{CHECKSUM} (the manifest changed after the bundle was written)")
        verify_signature(manifest, f"bundle '{folder}'", require_signed=require_signed)
        verify_files(folder, manifest, hashed_by_caller)
    return manifest


def check_sha256(folder: Path, manifest: dict, rel: str, data: bytes) -> None:
    """Raise BundleError unless ``data``, the bundle's file ``rel`` as read, has its recorded sha256."""
    if hashlib.sha256(data).hexdigest() != manifest["files"][rel]["sha256"]:
        raise _changed(folder, rel)


def _changed(folder: Path, rel: str) -> BundleError:
    return BundleError(f"bundle '{folder}' failed verification: '{rel}' does not match its sha256 "
                       "(the file changed after the bundle was written)")


def verify_files(folder: Path, manifest: dict, hashed_by_caller: frozenset[str] = frozenset()) -> None:
    """Raise BundleError unless every file listed in the manifest exists with its recorded sha256 (those in
    ``hashed_by_caller`` only exist), and the bundle holds no other file (an unlisted file would be read
    unverified)."""
    root = folder.resolve()
    for rel, meta in manifest["files"].items():
        path = folder / rel
        if ".." in Path(rel).parts or not path.resolve().is_relative_to(root):
            raise BundleError(f"bundle '{folder}': file entry '{rel}' points outside the bundle")
        if not path.is_file():
            raise BundleError(f"bundle '{folder}' is incomplete: '{rel}' is missing")
        if rel not in hashed_by_caller and sha256_file(path) != meta["sha256"]:
            raise _changed(folder, rel)
    listed = set(manifest["files"]) | {MANIFEST_FILE}
    for dirpath, dirnames, filenames in os.walk(folder):
        # a link to a folder is listed among dirnames but not walked: it counts as an entry to list
        entries = filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in entries:
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if rel not in listed:
                raise BundleError(f"bundle '{folder}' failed verification: '{rel}' is not listed in {MANIFEST_FILE} "
                                  "(expected only the files written with the bundle)")
