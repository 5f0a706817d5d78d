"""Text from inputs, made safe for a terminal and for each output format, as libsmartcols does it.

Names, descriptions, paths, reasons and hazards come from profiles and trees that anyone may
have written: an ESC or a newline printed raw would move the cursor, recolour the terminal or
forge a row. Every table escapes its cells the way util-linux's libsmartcols does for lsmem:

* :func:`safe` -- the aligned table (``mbs_safe_encode_to_buffer()``, lib/mbsalign.c):
  control characters and characters that are not printable become ``\\xNN`` per byte, and a
  literal ``\\x`` has its backslash escaped so an escape cannot be forged; everything printable
  (spaces and multibyte characters included) is kept.
* :func:`nonblank` -- ``--raw`` (``fputs_nonblank()``, include/carefulputc.h): blanks, the
  backslash and every byte that is not printable ASCII become ``\\xNN`` (in a UTF-8 locale
  ``isprint()`` is false for every byte of a multibyte character).
* :func:`quoted` -- ``--pairs`` values (``fputs_quoted()``): ``"``, ``\\``, `````, ``$`` and
  every byte that is not printable ASCII become ``\\xNN``, inside double quotes.
* :func:`json_string` -- ``--json`` strings (``fputs_quoted_case_json()``, lib/jsonwrt.c).
"""

from __future__ import annotations

import unicodedata
from typing import List

#: Unicode categories glibc's ``iswprint()`` rejects, or that reorder or break a terminal line:
#: controls, format characters (bidi overrides), surrogates, unassigned, line/paragraph separators.
_NOT_PRINTABLE = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})


def _utf8(ch: str) -> bytes:
    """The bytes a character stands for (a ``surrogateescape``d byte is that byte)."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:
        return bytes([code - 0xDC00])
    return ch.encode("utf-8", "surrogatepass")


def _hex(ch: str) -> str:
    return "".join(f"\\x{b:02x}" for b in _utf8(ch))


def safe(text: str) -> str:
    """A cell of an aligned table: control and non-printable characters as ``\\xNN``.

    >>> safe("vm\\x1b[31m\\nfoo"), safe("a\\\\xb"), safe("naïve 世界")
    ('vm\\\\x1b[31m\\\\x0afoo', 'a\\\\x5cxb', 'naïve 世界')
    """
    if text.isascii() and text.isprintable() and "\\x" not in text:
        return text
    out: List[str] = []
    for i, ch in enumerate(text):
        if ch == "\\" and text[i + 1:i + 2] == "x":
            out.append("\\x5c")
        elif unicodedata.category(ch) in _NOT_PRINTABLE:
            out.append(_hex(ch))
        else:
            out.append(ch)
    return "".join(out)


def nonblank(text: str) -> str:
    """A cell of ``--raw`` output: blanks, ``\\`` and non-printable bytes as ``\\xNN``.

    >>> nonblank('signal backoff\\t"x"\\\\'), nonblank("\\u2192")
    ('signal\\\\x20backoff\\\\x09"x"\\\\x5c', '\\\\xe2\\\\x86\\\\x92')
    """
    if text.isascii() and text.isprintable() and " " not in text and "\\" not in text:
        return text
    out: List[str] = []
    for ch in text:
        for byte in _utf8(ch):
            out.append(chr(byte) if 0x21 <= byte <= 0x7E and byte != 0x5C else f"\\x{byte:02x}")
    return "".join(out)


def quoted(text: str) -> str:
    """A ``--pairs`` value with its quotes: ``"``, ``\\``, `````, ``$`` and non-printable bytes as ``\\xNN``.

    >>> quoted('a "b" $x')
    '"a \\\\x22b\\\\x22 \\\\x24x"'
    """
    out: List[str] = ['"']
    for ch in text:
        for byte in _utf8(ch):
            printable = 0x20 <= byte <= 0x7E and byte not in (0x22, 0x5C, 0x60, 0x24)
            out.append(chr(byte) if printable else f"\\x{byte:02x}")
    out.append('"')
    return "".join(out)


_JSON_SHORT = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def json_string(text: str) -> str:
    """A JSON string as libsmartcols writes it: ``"`` and ``\\`` escaped, control characters as
    ``\\n``-style or ``\\u00NN`` escapes, everything else as it is (lone surrogates as ``\\uNNNN``,
    so the output stays valid UTF-8).

    >>> json_string('a"b\\x1b')
    '"a\\\\"b\\\\u001b"'
    """
    out: List[str] = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20:
            out.append(_JSON_SHORT.get(ch, f"\\u{code:04x}"))
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
