"""Built-in unfreezing schedules, registered like any plugin's."""

from __future__ import annotations

from autofreeze.hookspecs import ScheduleRegister, hookimpl


@hookimpl
def register_schedules(register: ScheduleRegister) -> None:
    from autofreeze.schedules import BUILTIN_SCHEDULES

    for schedule in BUILTIN_SCHEDULES:
        register(schedule)
