"""What an optimisation tried: one variant of a parent bundle, measured and judged."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tandem.bundle.inputs import EncodedInputs


@dataclass
class Parent:
    """The bundle being optimised, as every method sees it.

    ``rows`` are the labelled rows every variant is scored on: a method may calibrate on them (int8's
    activation ranges) but never train on them. ``teach`` (with ``teach_y``) are the rows a method
    that learns (a fine-tune, a student) trains on, when the caller gave some (``--train-data``).
    """

    folder: Path
    manifest: dict
    graph: bytes
    rows: EncodedInputs
    teach: EncodedInputs | None = None
    teach_y: np.ndarray | None = None
    # the teaching rows' raw text columns, by name (what a sentence encoder's int8 scales are calibrated on)
    teach_texts: dict[str, list] | None = None


@dataclass
class Variant:
    """One method's candidate: its graph, how it scored against the parent on labelled rows, what it costs,
    and whether it was kept (registered) and why."""

    method: str
    settings: dict = field(default_factory=dict)
    graph: bytes | None = field(default=None, repr=False)
    skipped: str | None = None  # why the method does not apply to this model (then nothing else is set)
    metric_value: float | None = None
    loss: float | None = None  # how much worse than the parent on the model's metric (<= 0: no worse)
    parity: float | None = None  # max abs difference of its outputs from the parent's, on the labelled rows
    one_row_us: float | None = None  # one-row predict p50 on one thread
    rows_per_s: float | None = None  # batch throughput on one thread
    bytes: int | None = None  # the graph's size
    energy_j_per_1000: float | None = None  # 1,000 one-row predictions, metered (None without the meter)
    kept: bool = False
    why: str = ""
    version: int | None = None  # the registry version it was written as, when kept
    native_parity: float | None = None  # its graph's gap from its own native files, where the method rewrote them
    label: str = ""  # how tables and the report name it: the method, and which cut ("trees 1/4")
    # what its bundle changes besides the graph: files (bundle-relative path -> bytes) written over the
    # parent's, the parent's folders left out, and top-level manifest entries replaced ("ensemble", ...)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    drop: list[str] = field(default_factory=list)
    replaces: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.label = self.label or self.method

    def to_dict(self) -> dict:
        """The figures as JSON (without the graph)."""
        out = asdict(self)
        for internal in ("graph", "files", "drop", "replaces"):
            out.pop(internal)
        return out


@dataclass
class OptimizeResult:
    """The parent, every variant tried (kept or not), and the one the goal picked."""

    parent: str
    metric: str
    parent_value: float
    parent_figures: dict
    goal: str
    max_loss: float
    variants: list[Variant]
    best: Variant | None = None

    def to_dict(self) -> dict:
        """The whole result as JSON."""
        return {"parent": self.parent, "metric": self.metric, "parent_value": self.parent_value,
                "parent_figures": self.parent_figures, "goal": self.goal, "max_loss": self.max_loss,
                "variants": [v.to_dict() for v in self.variants],
                "best": None if self.best is None else self.best.label}
