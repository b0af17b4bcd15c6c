"""Swapping a served model for a new version: ``POST /admin/models/{name}/reload``, and following a moved
alias (the registry watch). Both load the new version beside the old one, off the event loop, and swap in one
step only when it loads and runs; the old version keeps serving otherwise."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tandem.errors import TandemError
from tandem.serve.models import ServedModel, load_model, warm_one
from tandem.serve.protocol import Answer, Later, Request, one_line

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp


class LoadFailed(Exception):
    """A new version of a served model that could not be loaded or warmed up; the message says why."""


def reload(app: ServeApp, request: Request, model: ServedModel) -> Later:
    """The route's handler: the reload runs as a task and answers when done."""
    return Later(app, None, None).after(reload_model(app, model))


async def reload_model(app: ServeApp, current: ServedModel) -> Answer:
    """Load the model's reference again beside the old one (off the event loop); swap only if the
    new one loads and runs: any failure answers 409 and the old one keeps serving."""
    try:
        fresh = await load_again(app, current)
    except LoadFailed as exc:
        return 409, {"error": f"reload of '{current.name}' failed, still serving version {current.version}: "
                              f"{exc}"}, ()
    fresh = swap(app, current, fresh)
    return 200, {"name": fresh.name, "previous_version": current.version, "version": fresh.version}, ()


async def follow(app: ServeApp, model: ServedModel) -> None:
    """Reload ``model`` when its reference (an alias, or a bare name: the latest version) resolves anew."""
    if Path(model.ref).exists() or ":" in model.ref:
        return  # a path or a pinned version never moves
    loop = asyncio.get_running_loop()
    try:
        path = str(await loop.run_in_executor(None, app.registry.resolve, model.ref))
    except TandemError:
        return  # the alias was removed: keep serving what we have
    if path == str(model.predictor.path) or app.failed_loads.get(model.name) == path:
        return
    try:
        fresh = await load_again(app, model, path)
    except LoadFailed as exc:
        app.failed_loads[model.name] = path  # said once: tried again only when the reference moves
        print(f"tandem serve: '{model.ref}' moved to {path}, which failed to load: {exc}; still serving version "
              f"{model.version}, and not trying it again until '{model.ref}' moves", file=sys.stderr)
        return
    swap(app, model, fresh)


async def load_again(app: ServeApp, current: ServedModel, path: str | None = None) -> ServedModel:
    """The model's reference (or ``path``, what it resolved to) loaded and warmed up off the event loop;
    LoadFailed says why it could not be, whatever failed (ONNX Runtime raises its own classes)."""
    def load() -> ServedModel:
        fresh = load_model(path or current.ref, app.registry, require_signed=app.require_signed)
        if fresh.name != current.name:
            raise TandemError(f"reference '{current.ref}' now names model '{fresh.name}', not '{current.name}'")
        fresh.ref = current.ref
        try:
            warm_one(fresh)
        except Exception as exc:
            raise LoadFailed(f"version {fresh.version} ({fresh.predictor.path}) loads, but its warm-up run "
                             f"failed: {one_line(exc)}") from None
        return fresh

    try:
        return await asyncio.get_running_loop().run_in_executor(None, load)
    except LoadFailed:
        raise
    except Exception as exc:
        raise LoadFailed(one_line(exc)) from None


def swap(app: ServeApp, current: ServedModel, fresh: ServedModel) -> ServedModel:
    """Serve ``fresh`` in place of ``current``; the one served afterwards."""
    if app.models.get(current.name) is not current:
        return app.models[current.name]  # another reload won the race: keep its result
    app.models[current.name] = fresh  # one assignment: requests in flight keep the old predictor
    app.failed_loads.pop(current.name, None)
    return fresh
