"""Swapping a served model for a new version: ``POST /admin/models/{name}/reload``, and following a moved
alias (the registry watch). Both load the new version beside the old one, off the event loop, and swap in one
step only when it loads and runs; the old version keeps serving otherwise.

With several workers (``--workers N``) a reload reaches all of them: the worker that answers the request
loads the new version, then publishes it in the server's shared folder (``reloads/<model>.json``: a
generation number and the bundle's path); every other worker sees it within a second (its housekeeping
tick), loads that same bundle and acknowledges (``acks/<model>.<pid>.json``). The answer waits for the
acknowledgements (at most :data:`BROADCAST_WAIT_S`) and says which workers serve the new version."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tandem.errors import TandemError
from tandem.fsutil import atomic_file
from tandem.serve.models import ServedModel, load_model, warm_one
from tandem.serve.protocol import Answer, Later, Request, one_line

if TYPE_CHECKING:
    from tandem.serve.app import ServeApp


BROADCAST_WAIT_S = 20.0  # how long a reload's answer waits for the other workers to follow


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
    answer = {"name": fresh.name, "previous_version": current.version, "version": fresh.version}
    folder = app.metrics.directory
    if folder is not None:  # several workers: tell the others, and say who followed
        answer["workers"] = await broadcast(app, folder, fresh)
    return 200, answer, ()


async def broadcast(app: ServeApp, folder: Path, fresh: ServedModel) -> dict:
    """Publish ``fresh`` for the other workers and wait for them to load it; who did, who could not."""
    generation = (_published(folder, fresh.name) or {"generation": 0})["generation"] + 1
    path = folder / "reloads" / f"{fresh.name}.json"
    path.parent.mkdir(exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps({"generation": generation, "path": str(fresh.predictor.path), "by": os.getpid()}))
    app.reload_generations[fresh.name] = generation
    _ack(folder, fresh.name, generation, fresh.version, None)
    deadline = time.monotonic() + BROADCAST_WAIT_S
    while True:
        acks = _acks(folder, fresh.name, generation)
        waiting = app.metrics.live_workers() - set(acks)
        if not waiting or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
    return {"total": len(acks) + len(waiting), "reloaded": sorted(pid for pid, a in acks.items() if a["error"] is None),
            "failed": {str(pid): a["error"] for pid, a in acks.items() if a["error"] is not None},
            "no_answer": sorted(waiting)}


async def follow_broadcasts(app: ServeApp, folder: Path) -> None:
    """Load what another worker's reload published (housekeeping, each tick)."""
    for name, model in list(app.models.items()):
        published = _published(folder, name)
        if published is None:
            continue
        generation = published["generation"]
        if generation <= app.reload_generations.get(name, 0):
            continue
        app.reload_generations[name] = generation
        if published["path"] == str(model.predictor.path):
            _ack(folder, name, generation, model.version, None)
            continue
        try:
            fresh = await load_again(app, model, published["path"])
        except LoadFailed as exc:
            _ack(folder, name, generation, model.version, str(exc))
            continue
        _ack(folder, name, generation, swap(app, model, fresh).version, None)


def _published(folder: Path, name: str) -> dict | None:
    """The last reload published for ``name`` (its generation and bundle path), or None: none yet, or a file
    being replaced right now (the next tick reads it)."""
    try:
        published = json.loads((folder / "reloads" / f"{name}.json").read_text(encoding="utf-8"))
        return {**published, "generation": int(published["generation"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _ack(folder: Path, name: str, generation: int, version: int | None, error: str | None) -> None:
    (folder / "acks").mkdir(exist_ok=True)
    with atomic_file(folder / "acks" / f"{name}.{os.getpid()}.json") as tmp:
        tmp.write_text(json.dumps({"generation": generation, "version": version, "error": error}))


def _acks(folder: Path, name: str, generation: int) -> dict[int, dict]:
    """The workers' acknowledgements of ``generation`` of ``name``'s reload, by pid."""
    out = {}
    for path in (folder / "acks").glob(f"{name}.*.json"):
        pid = path.name[len(name) + 1: -len(".json")]
        try:
            ack = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if pid.isdigit() and ack.get("generation") == generation:
            out[int(pid)] = ack
    return out


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
