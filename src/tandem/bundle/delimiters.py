"""The delimiter of CSV text, sniffed from its start: shared by the training readers (tandem.data.readers,
pyarrow) and the inference install's CSV path (tandem.batch, Python's csv module), so both read a file alike."""

from __future__ import annotations

import csv

CANDIDATE_DELIMITERS = ",;\t|"


def sniff_delimiter(sample: str, default: str = ",") -> str:
    """The delimiter of CSV text ``sample``: one of ``,`` ``;`` TAB ``|``.

    Uses :class:`csv.Sniffer` restricted to those delimiters on the complete lines of the sample; the
    answer must occur in the first (header) line, otherwise the candidate most frequent in the header line
    wins; with no candidate at all (a single column) ``default`` is returned (pass ``"\\t"`` for ``.tsv``).
    """
    text = sample.lstrip("\ufeff")
    cut = max(text.rfind("\n"), text.rfind("\r"))
    if cut > 0:
        text = text[: cut + 1]
    header = _first_record_text(text)
    guess: str | None
    try:
        guess = csv.Sniffer().sniff(text, delimiters=CANDIDATE_DELIMITERS).delimiter
    except csv.Error:
        guess = None
    if guess is not None and guess in header:
        return guess
    counts = {d: header.count(d) for d in CANDIDATE_DELIMITERS}
    if default in counts and counts[default] > 0 and counts[default] == max(counts.values()):
        return default
    best = max(CANDIDATE_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] > 0 else default


def _first_record_text(text: str) -> str:
    """The first record of CSV text (quoted newlines kept inside it)."""
    in_quotes = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quotes = not in_quotes
        elif ch in "\r\n" and not in_quotes:
            return text[:i]
    return text
