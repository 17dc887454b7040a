"""Text from outside (a record, the database, an error message) made safe to show on a terminal or in a log.

A terminal acts on what it is sent: ESC and CSI (0x9b) sequences move the cursor, clear the screen, set
the window title, and OSC (0x9d) starts a hyperlink; a carriage return or backspace rewrites what is
already shown, and a Unicode line separator breaks a line where a table or a log line does not expect it.
So every place that prints such text writes those characters as their escapes: it reads as it is.
"""

from __future__ import annotations

# C0 and C1 controls, DEL, and U+2028/U+2029. Tab and newline stay: they are text.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}
_CONTROL |= {0x2028: "\\u2028", 0x2029: "\\u2029"}
_AND_LINES = {**_CONTROL, 0x09: "\\t", 0x0A: "\\n"}


def escape_control(value: str, newlines: bool = True) -> str:
    """``value`` with every control character written as its escape (``\\x1b``), so it prints as it reads.

    ``newlines=False`` escapes newlines and tabs as well (a table cell, a one-line message)."""
    return value.translate(_CONTROL if newlines else _AND_LINES)
