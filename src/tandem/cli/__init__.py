"""The ``tandem`` command line: train, predict, evaluate, models, quickstart.

A user's mistake prints one line on stderr and exits non-zero; a traceback means a bug.

The commands live by group (``train``: train, report, drift, check, quickstart; ``predict``: predict, evaluate;
``models``: the registry and signing keys; ``serve``; ``optimize``; ``import``; ``footprint``) and are registered
below, in the order ``tandem --help`` lists them.
"""

from __future__ import annotations

import sys

import typer

from tandem.cli import footprint, imports, models, optimize, predict, serve, train
from tandem.cli.common import app, err, keys_app, models_app, os_error_line
from tandem.errors import TandemError

__all__ = ["app", "main"]

for _command in (train.train, train.report, train.drift, train.check, predict.predict, predict.evaluate,
                 serve.serve, optimize.optimize, train.quickstart, footprint.footprint):
    app.command()(_command)
app.command("import")(imports.import_)
for _name, _command in (("list", models.models_list), ("show", models.models_show), ("alias", models.models_alias),
                        ("delete", models.models_delete)):
    models_app.command(_name)(_command)
keys_app.command("generate")(models.keys_generate)


def main() -> None:
    """Entry point: one line on stderr and a non-zero exit for a user's mistake."""
    try:
        status = app(standalone_mode=False)  # click hands back the status of a typer.Exit here
        if isinstance(status, int) and status:
            sys.exit(status)
    except TandemError as exc:
        err.print(f"tandem: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("tandem: aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:
        err.print(f"tandem: error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("tandem: interrupted")
        sys.exit(130)
    except OSError as exc:  # the disk or the system said no (full, read-only, ...): what, where, no traceback
        err.print(f"tandem: error: {os_error_line(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
