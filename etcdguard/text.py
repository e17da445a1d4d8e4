"""Text that came from a store or from etcd, made safe to show on a terminal.

A planted ``[red]`` (Rich markup) or ``\x1b[2J`` (a terminal escape) in a member name, a
manifest field or an error message is shown, not obeyed.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 and C1 controls, DEL, and the Unicode bidi overrides/isolates that reorder what is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(value: object) -> str:
    """``value`` as text with control characters made visible (``\x1b`` -> ``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", str(value))


def clean(value: object) -> str:
    """``value`` safe to embed in Rich markup: control characters made visible, markup escaped."""
    return escape(plain(value))
