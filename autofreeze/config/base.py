"""What every table of a study config shares: unknown keys are errors, assignments validated,
and one line per validation error naming the file and the key."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """A config table: an unknown key is an error (a typo must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def format_validation_error(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "union["))]
    # pydantic repeats the field for union members (e.g. 'list[...]'); keep the user's keys
    loc = [p for p in loc if "[" not in p and not p.startswith("literal")]
    key = ".".join(loc) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check the spelling; see docs/config.md)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {key}: {msg}{more}"
