"""Top-k answers from a recommendation bundle's graph: ids checked, k bounded, the graph run in chunks, each
user's answer decoded (slots with nothing left to recommend dropped, unknown users noted)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tandem.bundle.recommend import (
    EXCLUDE_INPUT,
    FROM_FEATURES_NOTE,
    FROM_FEATURES_OUTPUT,
    ITEMS_OUTPUT,
    K_INPUT,
    KNOWN_OUTPUT,
    SCORES_OUTPUT,
    UNKNOWN_USER_NOTE,
    USER_INPUT,
    canonical_id,
    check_k,
)
from tandem.errors import DataError

CHUNK_USERS = 1024  # users a graph call scores at once (users x items floats in flight)


class Recommendations:
    """Answers ``recommend`` with a bundle's graph (``run(outputs, feeds, None)``, an ONNX Runtime binding)."""

    def __init__(self, manifest: dict, run: Callable):
        info = manifest["recommend"]
        self.user_id_type: str = info["user_id_type"]
        self.item_id_type: str = info["item_id_type"]
        self.n_items: int = int(info["items"])
        self.default_k: int = int(info["k"])
        self._run = run
        self._outputs = [ITEMS_OUTPUT, SCORES_OUTPUT, KNOWN_OUTPUT, FROM_FEATURES_OUTPUT]
        self._yes, self._no = np.array([True]), np.array([False])

    def answer(self, users: list, k: int | None = None, exclude_seen: bool = True, field_name: str = "user",
               where: Callable[[int], str] | None = None) -> list[dict]:
        """One ``{"user", "items", "scores", "known"}`` (and ``"note"`` for an unknown user) per user; ``k``
        defaults to the k the study optimised. A wrong id is named as ``field_name`` (``field_name[i]`` in a list
        of several), or as ``where(i)`` says (a file's column and row)."""
        k = check_k(self.default_k if k is None else k, self.n_items)
        if not isinstance(exclude_seen, (bool, np.bool_)):
            raise DataError(f"field 'exclude_seen' is {exclude_seen!r}: expected true or false")
        if where is None:
            one = len(users) == 1

            def where(i: int) -> str:
                return f"field '{field_name}'" if one else f"field '{field_name}[{i}]'"

        keys = [canonical_id(u, self.user_id_type, where(i)) for i, u in enumerate(users)]
        flag = self._yes if exclude_seen else self._no
        kk = np.array([k], dtype=np.int64)
        answers = []
        for a in range(0, len(keys), CHUNK_USERS):
            feeds = {USER_INPUT: np.array(keys[a: a + CHUNK_USERS], dtype=object), K_INPUT: kk, EXCLUDE_INPUT: flag}
            items, scores, known, from_features = self._run(self._outputs, feeds, None)
            for j in range(len(items)):
                row_scores = scores[j]
                keep = np.isfinite(row_scores)
                if keep.all():
                    ids, values = items[j].tolist(), row_scores.tolist()
                else:
                    ids, values = items[j][keep].tolist(), row_scores[keep].tolist()
                out = {"user": users[a + j], "items": ids, "scores": values, "known": bool(known[j])}
                if not out["known"]:
                    out["note"] = FROM_FEATURES_NOTE if from_features[j] else UNKNOWN_USER_NOTE
                answers.append(out)
        return answers
