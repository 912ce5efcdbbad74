"""How numbers read, in every table, story, line and report: one place, so that a value
looks the same in the terminal, the dashboard's notes and the report."""

from __future__ import annotations

from typing import Any


def number(value: Any, digits: int = 3, missing: str = "-") -> str:
    """A float to ``digits`` significant digits (``0.0074``, ``3e-05``), None as ``missing``,
    anything else as ``str`` (an int, a name)."""
    if value is None:
        return missing
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def duration(seconds: float | None) -> str:
    """``0.4s``, ``12.3s``, ``4m05s``, ``1h02m``; empty for None."""
    if seconds is None:
        return ""
    s = max(0.0, float(seconds))
    if s < 59.95:
        return f"{s:.1f}s"
    whole = round(s)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
