"""Raw e-mail (RFC 822 / MIME) as table rows: what a spam or phishing filter learns from.

A mail folder has one sub-folder per label, each holding message files (``.eml`` or any plain
message) and/or mbox files. Every message becomes one row: ``subject`` and ``body`` (text parts
decoded from their transfer encoding and charset; HTML parts reduced to their visible text),
``from_domain``, ``reply_to_mismatch`` (a Reply-To domain that differs from From's),
``n_links`` and ``n_link_domains`` (URLs in the text and in HTML links), ``link_mismatch`` (an HTML
link whose visible text names another domain than its target), ``n_attachments`` and
``attachment_types`` (file extensions; attachments are listed, never opened or run),
``has_html``, ``n_recipients``, and ``file`` (where it came from). A file that is not a message
gets an error naming it; the other files still load.
"""

from __future__ import annotations

import mailbox
import os
from email.message import EmailMessage
from pathlib import Path

import pyarrow as pa

from tandem.bundle.mail import message_fields, parse_message
from tandem.errors import DataError


def is_mail_folder(path: Path) -> bool:
    """A directory whose sub-folders hold files (one sub-folder per label)."""
    return path.is_dir() and any(p.is_dir() and any(f.is_file() for f in p.iterdir()) for p in path.iterdir())


def read_mail_folder(path: str | os.PathLike, *, target: str = "label") -> tuple[pa.Table, list[str]]:
    """Every message under ``path`` as a row (label: its sub-folder), and one error line per file that failed."""
    root = Path(path)
    rows: list[dict] = []
    errors: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            shown = f"{root.name}/{f.relative_to(root).as_posix()}"
            try:
                for i, message in enumerate(_messages(f)):
                    rows.append({**message_fields(message), target: folder.name,
                                 "file": shown if i == 0 else f"{shown}#{i + 1}"})
            except DataError as exc:
                errors.append(f"{shown}: {exc}")
    if not rows:
        detail = f" ({errors[0]})" if errors else ""
        raise DataError(f"mail folder '{root}' holds no readable message: expected one sub-folder per label with "
                        f".eml or mbox files{detail}")
    return pa.Table.from_pylist(rows), errors


def _messages(f: Path) -> list[EmailMessage]:
    try:
        raw = f.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})") from None
    if raw.startswith(b"From "):  # an mbox: many messages, each after a "From " line
        box = mailbox.mbox(str(f), factory=None, create=False)
        try:
            return [parse_message(m.as_bytes()) for m in box]
        finally:
            box.close()
    return [parse_message(raw)]
