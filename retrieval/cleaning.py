"""Clean a shop's text at ingest: HTML entities, mojibake, control characters and runs of whitespace.

Real exports carry `Bath &amp; Shower`, `CafÃ© Table` (UTF-8 read as Windows-1252) and stray tabs or NULs; shown
as they are, the model repeats them. Cleaning happens once, when a row becomes a product; the product keeps the
original text of every field that changed in `Product.raw`, so nothing the shop sent is lost.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Any

# Text fields a row may carry; attributes are cleaned value by value.
TEXT_FIELDS = ("name", "category", "description")

_WHITESPACE = re.compile(r"\s+")
# Sequences that UTF-8 text shows once it has been decoded as Windows-1252 or Latin-1: 'Ã©', 'â€™', 'Â '.
_MOJIBAKE = re.compile(
    r"[ÃÂâ][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]"
)


def _unmojibake(text: str) -> str:
    """Undo one round of UTF-8 read as Windows-1252 (or Latin-1), only where that yields valid UTF-8."""
    if not _MOJIBAKE.search(text):
        return text
    for codec in ("cp1252", "latin-1"):
        try:
            return text.encode(codec).decode("utf-8")
        except UnicodeError:
            continue
    return text


def clean_text(text: str) -> str:
    """`text` with HTML entities decoded (twice-escaped ones too), mojibake repaired, control characters dropped
    and whitespace collapsed."""
    for _ in range(2):  # '&amp;amp;' is common in exports that escaped already-escaped text
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _unmojibake(text)
    # Control and format characters (Cc, Cf: NUL, zero-width spaces, BOMs) become spaces, then whitespace runs one.
    text = "".join(" " if unicodedata.category(c) in {"Cc", "Cf"} else c for c in text)
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def clean_row(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a row with its text fields and attribute values cleaned; changed originals under 'raw'."""
    out = dict(data)
    raw: dict[str, str] = dict(out.get("raw") or {})
    for field in TEXT_FIELDS:
        value = out.get(field)
        if isinstance(value, str) and (cleaned := clean_text(value)) != value:
            out[field] = cleaned
            raw.setdefault(field, value)
    attributes = out.get("attributes")
    if isinstance(attributes, dict):
        cleaned_attrs: dict[Any, Any] = {}
        for key, value in attributes.items():
            if isinstance(value, str) and (cleaned := clean_text(value)) != value:
                raw.setdefault(f"attributes.{key}", value)
                value = cleaned
            cleaned_attrs[key] = value
        out["attributes"] = cleaned_attrs
    if raw:
        out["raw"] = raw
    return out
