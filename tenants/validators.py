"""What a name or a path typed by a person may contain.

Names are shown to other members, in the audit log, in e-mails and in terminals (the
commands print them). A control character or an ANSI escape can rewrite a terminal line;
a bidi override (U+202E) or an invisible format character makes "backup‮gpj.exe" read as
something else. So text people name things with holds no character of the Unicode
categories Cc (controls, ESC among them), Cf (format: bidi embeddings, overrides and
isolates U+202A-U+202E and U+2066-U+2069, zero-width characters), Cs (surrogates),
Zl and Zp (line and paragraph separators). Spaces are fine.

Paths: Linux refuses a path component longer than 255 bytes (ENAMETOOLONG) and a path
longer than 4095; refusing them here gives a form error instead of a failure later.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
MAX_COMPONENT_BYTES = 255
MAX_PATH_BYTES = 4095


def unsafe_character(value: str) -> str | None:
    """The first refused character of `value`, or None."""
    for char in value:
        if unicodedata.category(char) in REFUSED_CATEGORIES:
            return char
    return None


def describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'control character')}"


def validate_plain_text(value: str) -> None:
    """No control, format (bidi, zero-width) or line-separator character."""
    char = unsafe_character(value)
    if char is not None:
        raise ValidationError(
            "Use visible characters only: this contains %(char)s (control characters, escape sequences "
            "and text-direction overrides are not allowed).",
            code="unsafe_character",
            params={"char": describe(char)},
        )


def validate_path(value: str) -> None:
    """Plain text, each /-separated component at most 255 bytes, the whole at most 4095."""
    validate_plain_text(value)
    encoded = value.encode("utf-8", "surrogateescape")
    if len(encoded) > MAX_PATH_BYTES:
        raise ValidationError(
            "A path has at most %(limit)d bytes; this one has %(size)d.",
            code="path_too_long",
            params={"limit": MAX_PATH_BYTES, "size": len(encoded)},
        )
    for part in encoded.split(b"/"):
        if len(part) > MAX_COMPONENT_BYTES:
            raise ValidationError(
                "Each part of a path between slashes has at most %(limit)d bytes; one has %(size)d.",
                code="path_component_too_long",
                params={"limit": MAX_COMPONENT_BYTES, "size": len(part)},
            )
