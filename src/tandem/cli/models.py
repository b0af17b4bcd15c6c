"""``tandem models list|show|alias|delete`` and ``tandem keys generate``: the registry and signing keys."""

from __future__ import annotations

from pathlib import Path

import typer

from tandem.cli.common import REQUIRE_SIGNED, out, set_require_signed
from tandem.console import print_model, rows_table
from tandem.errors import ConfigError


def models_list(name: str | None = typer.Argument(None, help="Only this model name.")) -> None:
    """Every version in the registry."""
    from tandem.registry import Registry

    records = Registry().list(name)
    rows = [{"model": r.name, "version": r.version, "aliases": ",".join(r.aliases), "created": r.created_at,
             "task": r.summary.get("task"), "metric": r.summary.get("metric"), "score": r.summary.get("score")}
            for r in records]
    if not rows:
        out.print("no models yet: train one with `tandem train DATA --target COLUMN`")
        return
    out.print(rows_table(rows, "Models"))


def models_show(ref: str = typer.Argument(..., help="name, name:VERSION or name@ALIAS."),
                require_signed: bool = REQUIRE_SIGNED) -> None:
    """A model's summary and leaderboard (the bundle is verified)."""
    from tandem.api import load

    set_require_signed(require_signed)
    print_model(load(ref))


def models_alias(ref: str = typer.Argument(..., help="NAME:VERSION"), alias: str = typer.Argument(...)) -> None:
    """Point ALIAS (production, staging, ...) at NAME:VERSION."""
    from tandem.registry import Registry, parse_ref

    name, version, _ = parse_ref(ref)
    if version is None:
        raise ConfigError(f"'{ref}': expected NAME:VERSION, e.g. {name}:1")
    record = Registry().set_alias(name, version, alias)
    out.print(f"{record.name}@{alias} -> version {record.version}")


def models_delete(ref: str = typer.Argument(..., help="name:VERSION, or name for every version.")) -> None:
    """Delete a version (or every version of a name) and its bundle."""
    from tandem.registry import Registry

    for r in Registry().delete(ref):
        out.print(f"deleted {r.name}:{r.version}")


def keys_generate(folder: Path = typer.Argument(..., help="Where to write the key pair (created if missing).")) -> None:
    """Make an Ed25519 key pair for signed bundles: tandem-signing.pem (private, mode 0600: keep it where you train)
    and tandem-signing.pub.pem (public: list it in $TANDEM_TRUSTED_KEYS where you serve)."""
    from tandem.bundle.signing import generate_keys

    private, public, key_id = generate_keys(folder)
    out.print(f"key {key_id}: private key {private} (train with --signing-key {private} or "
              f"TANDEM_SIGNING_KEY), public key {public} (serve with TANDEM_TRUSTED_KEYS={public})",
              markup=False, highlight=False, soft_wrap=True)
