"""Run a module (``python without_packages.py PACKAGES -m module args...``) or a script (``-c code``) with the
comma-separated top-level ``PACKAGES`` made unimportable, as in an install that lacks them: their import
raises ModuleNotFoundError and tandem's ``installed()`` says no. tandem itself runs unchanged."""

from __future__ import annotations

import importlib.abc
import runpy
import sys


class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, name: str, path: object, target: object = None) -> None:
        if name.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return None


def main() -> None:
    hidden, mode, what, *rest = sys.argv[1:]
    sys.meta_path.insert(0, _Hide(set(hidden.split(","))))
    sys.argv = [what, *rest]
    if mode == "-c":
        exec(compile(what, "<test>", "exec"), {"__name__": "__main__"})
    else:
        runpy.run_module(what, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
