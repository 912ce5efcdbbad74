"""Built-in unfreezing schedules, registered like any plugin's."""

from __future__ import annotations

from typing import Any

from autofreeze.hookspecs import hookimpl


@hookimpl
def register_schedules(register: Any) -> None:
    from autofreeze.schedules import BUILTIN_SCHEDULES

    for schedule in BUILTIN_SCHEDULES:
        register(schedule)
