"""Signed bundles: an Ed25519 signature over the manifest, and the keys a host trusts.

Hashes only show that a bundle is as its manifest says; whoever can write the registry can recompute
them. A signature can only be made with the private key, so a host that requires signatures (and
trusts only some public keys) runs only bundles a key holder produced.

The manifest's ``signature`` field is ``{"algorithm": "ed25519", "key_id", "public_key", "value"}``:
``key_id`` is the first 16 hex digits of the sha256 of the raw 32-byte public key, ``public_key`` and
``value`` are base64. The signed message is :data:`DOMAIN` followed by the canonical JSON (sorted keys,
no spaces) of every manifest field except ``signature`` and ``manifest_sha256`` (itself a hash of the
same fields). Since the manifest lists every file's sha256, the signature covers the whole bundle.

Configuration (environment):

- ``TANDEM_SIGNING_KEY``: a PKCS8 PEM Ed25519 private key; training signs what it writes.
- ``TANDEM_TRUSTED_KEYS``: paths joined by ``:``, each a PEM public key file or a folder of ``*.pem``.
- ``TANDEM_REQUIRE_SIGNED=1``: refuse unsigned bundles and signatures by keys not trusted.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tandem.errors import BundleError, ConfigError

ALGORITHM = "ed25519"
SIGNATURE = "signature"
CHECKSUM = "manifest_sha256"
DOMAIN = b"tandem bundle manifest signature v1\n"
PRIVATE_KEY_FILE = "tandem-signing.pem"
PUBLIC_KEY_FILE = "tandem-signing.pub.pem"
ENV_SIGNING_KEY = "TANDEM_SIGNING_KEY"
ENV_TRUSTED_KEYS = "TANDEM_TRUSTED_KEYS"
ENV_REQUIRE_SIGNED = "TANDEM_REQUIRE_SIGNED"

# the key training signs with, when a caller (tandem.train's signing_key=) chose one for this context
_signing_key: contextvars.ContextVar[SigningKey | None] = contextvars.ContextVar("tandem_signing_key", default=None)


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and where it came from (for messages)."""

    private: object  # cryptography's Ed25519PrivateKey
    source: str

    @property
    def public_raw(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def key_id(self) -> str:
        return key_id(self.public_raw)


def key_id(public_raw: bytes) -> str:
    """The short name of a public key: the first 16 hex digits of the sha256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def signed_bytes(manifest: dict) -> bytes:
    """What the signature signs: :data:`DOMAIN` + canonical JSON of every field but the signature and checksum."""
    body = {k: v for k, v in manifest.items() if k not in (SIGNATURE, CHECKSUM)}
    return DOMAIN + json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Read a PKCS8 PEM Ed25519 private key (unencrypted); ConfigError in one line if it is not one."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"signing key {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"signing key {path} is encrypted: expected an unencrypted PKCS8 PEM Ed25519 key "
                          "(protect it with file permissions)") from None
    except Exception:  # ValueError, or cryptography's UnsupportedAlgorithm
        raise ConfigError(f"signing key {path} is not a PEM private key: expected a PKCS8 PEM Ed25519 key "
                          "(make one with `tandem keys generate DIR`)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is a {type(key).__name__.lstrip('_')}: expected an Ed25519 key")
    return SigningKey(key, str(path))


def generate_keys(folder: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """Write a new key pair into ``folder``: ``tandem-signing.pem`` (private, mode 0600) and
    ``tandem-signing.pub.pem`` (public). Refuses to overwrite either. Returns both paths and the key id."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder = Path(folder).expanduser()
    private_path, public_path = folder / PRIVATE_KEY_FILE, folder / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists: keys are never overwritten (choose another folder)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot create the folder ({exc.strerror or exc})") from None
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    for path, data, mode in ((private_path, private_pem, 0o600), (public_path, public_pem, 0o666)):
        try:
            # created with its final mode (O_EXCL: never through a file or link planted there)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot create the key file ({exc.strerror or exc})") from None
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return private_path, public_path, SigningKey(key, str(private_path)).key_id


def signing_key_from_env() -> SigningKey | None:
    """The key of :func:`use_signing_key` in effect, else ``$TANDEM_SIGNING_KEY``'s, else None."""
    chosen = _signing_key.get()
    if chosen is not None:
        return chosen
    path = os.environ.get(ENV_SIGNING_KEY)
    return load_signing_key(path) if path else None


@contextlib.contextmanager
def use_signing_key(key: SigningKey | None) -> Iterator[None]:
    """Bundles written in this block (this thread or task) are signed with ``key`` (None: the default)."""
    token = _signing_key.set(key)
    try:
        yield
    finally:
        _signing_key.reset(token)


def sign_manifest(manifest: dict, key: SigningKey) -> dict:
    """Return ``manifest`` with a ``signature`` field by ``key`` (any previous signature replaced).

    The manifest must already list its files' sha256 (see :func:`tandem.bundle.format.write_bundle`,
    which calls this); its ``manifest_sha256`` is computed after, without the signature.
    """
    body = {k: v for k, v in manifest.items() if k not in (SIGNATURE, CHECKSUM)}
    value = key.private.sign(signed_bytes(body))
    return {**body, SIGNATURE: {"algorithm": ALGORITHM, "key_id": key.key_id,
                                "public_key": base64.b64encode(key.public_raw).decode("ascii"),
                                "value": base64.b64encode(value).decode("ascii")}}


# -- verification -------------------------------------------------------------------------------------

_trust_cache: dict[str, tuple[tuple, dict[str, bytes]]] = {}


def trusted_keys(spec: str | None = None) -> dict[str, bytes]:
    """Public keys a host trusts, key id -> raw bytes, from ``spec`` (default ``$TANDEM_TRUSTED_KEYS``):
    paths joined by ``:``, each a PEM public key file or a folder of ``*.pem`` files. Empty when unset."""
    spec = os.environ.get(ENV_TRUSTED_KEYS, "") if spec is None else spec
    files: list[Path] = []
    for part in (p for p in spec.split(os.pathsep) if p.strip()):
        path = Path(part).expanduser()
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.name.endswith(".pem") and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{ENV_TRUSTED_KEYS}: {path} does not exist: expected a PEM public key file or a "
                              "folder of them")
    stamp = tuple((str(p), *_stat(p)) for p in files)
    cached = _trust_cache.get(spec)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    keys = {}
    for path in files:
        raw = _read_public_key(path)
        keys[key_id(raw)] = raw
    _trust_cache[spec] = (stamp, keys)
    return keys


def _stat(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (None, None)
    return (st.st_mtime_ns, st.st_size)


def _read_public_key(path: Path) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{ENV_TRUSTED_KEYS}: {path} cannot be read ({exc.strerror or exc})") from None
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{ENV_TRUSTED_KEYS}: {path} is a private key: expected public keys only (keep the "
                          "private key off serving hosts; share tandem-signing.pub.pem)")
    try:
        key = serialization.load_pem_public_key(data)
    except Exception:  # ValueError, UnsupportedAlgorithm
        raise ConfigError(f"{ENV_TRUSTED_KEYS}: {path} is not a PEM public key: expected an Ed25519 public key "
                          "such as tandem-signing.pub.pem") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{ENV_TRUSTED_KEYS}: {path} is not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def require_signed_from_env() -> bool:
    """Whether ``$TANDEM_REQUIRE_SIGNED`` asks for signed bundles (1, true, yes, on)."""
    return os.environ.get(ENV_REQUIRE_SIGNED, "").strip().lower() in ("1", "true", "yes", "on")


def verify_signature(manifest: dict, where: str, *, require_signed: bool | None = None,
                     trusted: dict[str, bytes] | None = None) -> str | None:
    """Check ``manifest``'s signature against the trusted keys; return the signing key id (None if unsigned).

    With ``require_signed`` (default ``$TANDEM_REQUIRE_SIGNED``) an unsigned bundle, or one signed by a key
    not in ``trusted`` (default :func:`trusted_keys`), is refused. Without it, a signed bundle is still
    refused when its signature does not verify: against the trusted key when some are configured (and then
    an unknown key is refused too), else against the public key it carries, which catches edits that did
    not re-sign (though not a re-signing with another key: that needs trusted keys).
    """
    require = require_signed_from_env() if require_signed is None else require_signed
    trusted = trusted_keys() if trusted is None else trusted
    signature = manifest.get(SIGNATURE)
    if signature is None:
        if require:
            raise BundleError(f"{where} is not signed: expected a signature by a trusted key "
                              f"(signed bundles are required here; sign with {ENV_SIGNING_KEY} when training)")
        return None
    if require and not trusted:
        raise ConfigError(f"signed bundles are required but no key is trusted: set {ENV_TRUSTED_KEYS} to the "
                          "signer's public key file (or a folder of them)")
    try:
        carried = base64.b64decode(signature["public_key"], validate=True)
        value = base64.b64decode(signature["value"], validate=True)
    except ValueError:
        raise BundleError(f"{where} field 'signature' holds invalid base64: expected base64 public_key and "
                          "value") from None
    if trusted:
        public_raw = trusted.get(signature["key_id"])
        if public_raw is None or public_raw != carried:
            raise BundleError(f"{where} is signed by key {signature['key_id']}, which is not trusted here: "
                              f"expected one of {', '.join(sorted(trusted))} ({ENV_TRUSTED_KEYS})")
    else:
        if len(carried) != 32 or key_id(carried) != signature["key_id"]:
            raise BundleError(f"{where} field 'signature.key_id' does not match its public_key: expected the "
                              "sha256 of the key")
        public_raw = carried
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_raw).verify(value, signed_bytes(manifest))
    except (InvalidSignature, ValueError):
        raise BundleError(f"{where} failed verification: its signature by key {signature['key_id']} does not "
                          "match the manifest (the bundle changed after it was signed)") from None
    return signature["key_id"]
