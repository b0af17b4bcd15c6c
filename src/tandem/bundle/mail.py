"""One raw e-mail message (RFC 822 / MIME) as the fields a spam or phishing model reads.

The server parses a posted message with this module, and :mod:`tandem.data.mail` reads mail folders
with it, so a message becomes the same row in both lives: ``subject`` and ``body`` (text parts
decoded from their transfer encoding and charset; HTML parts reduced to their visible text),
``from_domain``, ``reply_to_mismatch`` (a Reply-To domain that differs from From's), ``n_links``
and ``n_link_domains`` (URLs in the text and in HTML links), ``link_mismatch`` (an HTML link whose
visible text names another domain than its target), ``n_attachments`` and ``attachment_types``
(file extensions; attachments are listed, never opened or run), ``has_html`` and
``n_recipients``.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from html.parser import HTMLParser
from pathlib import Path

from tandem.errors import DataError

FIELDS = ("subject", "body", "from_domain", "reply_to_mismatch", "n_links", "n_link_domains", "link_mismatch",
          "n_attachments", "attachment_types", "has_html", "n_recipients")
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_URL = re.compile(r"https?://([A-Za-z0-9.-]+)", re.I)
_DOMAIN = re.compile(r"@([A-Za-z0-9.-]+)")
_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:", re.M)  # a header field name, then a colon


class _VisibleText(HTMLParser):
    """The text a reader sees (no script or style), and every link with its visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[tuple[str, str]] = []  # (href, visible text)
        self._skip = 0
        self._href: str | None = None
        self._anchor: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._anchor = []
        elif tag in ("br", "p", "div", "tr", "li"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._anchor)))
            self._href = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data)
        if self._href is not None:
            self._anchor.append(data)


def parse_message(raw: bytes) -> EmailMessage:
    """One raw message; DataError when it is not one."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise DataError(f"message of {len(raw)} bytes is over the {MAX_MESSAGE_BYTES} byte limit")
    head = raw[:8192].replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    if not raw.strip() or not _HEADER_LINE.match(head) or b"\x00" in head:
        raise DataError("not an e-mail message: it does not start with header lines such as 'From: ...'")
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not any(message.get(h) for h in ("From", "Subject", "To", "Date", "Message-ID")):
        raise DataError("not an e-mail message: no From, To, Subject, Date or Message-ID header")
    return message


def message_fields(message: EmailMessage) -> dict:
    """The row of one message (see the module docstring)."""
    texts, htmls, attachments = [], [], []
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        disposition = part.get_content_disposition()
        if filename or disposition == "attachment":
            attachments.append(Path(filename or "").suffix.lower().lstrip(".") or part.get_content_subtype())
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        try:
            content = part.get_content()
        except (LookupError, UnicodeError, AssertionError):  # an unknown charset or a broken encoding
            payload = part.get_payload(decode=True) or b""
            content = payload.decode("utf-8", errors="replace")
        (htmls if kind == "text/html" else texts).append(str(content))
    visible, links = [], []
    for h in htmls:
        parser = _VisibleText()
        parser.feed(h)
        parser.close()
        visible.append(" ".join("".join(parser.parts).split()))
        links += parser.links
    body = " ".join(" ".join(texts + visible).split()) if texts else " ".join(visible)
    urls = [d.lower() for d in _URL.findall(" ".join(texts))] + [
        d.lower() for href, _ in links for d in _URL.findall(href)]
    shown = [(_first_domain(href), _first_domain(text)) for href, text in links]
    mismatch = any(target and visible and target != visible for target, visible in shown)
    sender = _domain(str(message.get("From", "")))
    reply = _domain(str(message.get("Reply-To", "")))
    recipients = sum(len(str(message.get(h, "")).split(",")) for h in ("To", "Cc") if message.get(h))
    return {
        "subject": " ".join(str(message.get("Subject", "")).split()),
        "body": body,
        "from_domain": sender,
        "reply_to_mismatch": bool(reply) and reply != sender,
        "n_links": len(urls),
        "n_link_domains": len(set(urls)),
        "link_mismatch": mismatch,
        "n_attachments": len(attachments),
        "attachment_types": ",".join(sorted(set(attachments))),
        "has_html": bool(htmls),
        "n_recipients": recipients,
    }


def _first_domain(text: str) -> str | None:
    """The host of the first URL in ``text``, lower case (None without one)."""
    found = _URL.search(text)
    return found.group(1).lower() if found else None


def _domain(address: str) -> str:
    found = _DOMAIN.findall(address)
    return found[-1].lower().rstrip(".>") if found else ""
