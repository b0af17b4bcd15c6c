"""What a recommendation bundle's graph takes and gives, shared by the study that writes it and the Predictor
and server that run it.

The graph's inputs: ``user`` (string [N]: each id as :func:`canonical_id` writes it), ``k`` (int64 [1]) and
``exclude_seen`` (bool [1]). Its outputs: ``items`` [N, k] (the item ids, int64 or string), ``scores``
[N, k] (float; -inf marks a slot with nothing left to recommend), ``known`` [N] (false: a user without
interactions) and ``from_features`` [N] (true: a user of the users table without interactions, answered by the
two towers from their features; an unknown user otherwise gets the most popular items).
"""

from __future__ import annotations

import numpy as np

from tandem.errors import DataError

USER_INPUT, K_INPUT, EXCLUDE_INPUT = "user", "k", "exclude_seen"
ITEMS_OUTPUT, SCORES_OUTPUT, KNOWN_OUTPUT, FROM_FEATURES_OUTPUT = "items", "scores", "known", "from_features"
IDS_FILE = "native/ids.json"  # the known users and items, for drift checks
UNKNOWN_USER_NOTE = "unknown user: the most popular items"
FROM_FEATURES_NOTE = "new user: recommended from the users table's features"


def canonical_id(value: object, id_type: str, where: str) -> str:
    """A user id as the graph keys it, or a DataError saying ``where`` it was (``field 'user'``, a file's column
    and row) and what was expected: integer ids take integers (or whole floats, as a CSV may hold them), text
    ids take strings."""
    if id_type == "int":
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return str(int(value))
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            return str(int(value))
        raise DataError(f"{where} is {_show(value)}: expected an integer user id")
    if isinstance(value, str):
        return value
    raise DataError(f"{where} is {_show(value)}: expected a text user id")


def check_k(k: object, max_k: int, field_name: str = "k") -> int:
    """``k`` as an int from 1 to ``max_k`` (the catalogue's size), or a DataError naming the field."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= int(k) <= max_k:
        raise DataError(f"field '{field_name}' is {_show(k)}: expected an integer from 1 to {max_k} "
                        "(the number of items the model knows)")
    return int(k)


def _show(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"
