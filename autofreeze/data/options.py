"""Dataset options: the types that carry their constraints, and the check of a factory's
options against its signature and type hints (pydantic), one :class:`ConfigError` line per bad
option. The registry applies :func:`validate_options` to every dataset factory, so a plugin's
dataset gets such errors from its type hints alone."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any

from pydantic import ConfigDict, Field, Strict, TypeAdapter, ValidationError, validate_call

from autofreeze.errors import ConfigError

# option types for dataset factories: their constraints live in the type hints
ValFraction = Annotated[float, Field(gt=0, lt=1)]  # share of each class held out for validation
Seed = Annotated[int, Strict(), Field(ge=0)]
Count = Annotated[int, Strict(), Field(ge=1)]

_MESSAGES = {
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "path_type": "must be a file system path",
    "too_short": "must hold at least {min_length} items",
    "string_too_short": "must not be empty",
}


def _option_error(
    what: str, exc: ValidationError, allowed: Sequence[str], name: str = "?"
) -> ConfigError:
    """One line naming the option at fault, from pydantic's first error."""
    err = exc.errors()[0]
    key = next((str(p) for p in err["loc"] if isinstance(p, str)), name)
    kind = err["type"]
    if kind == "unexpected_keyword_argument":
        return ConfigError(f"{what} has no option {key!r} (allowed: {', '.join(allowed)})")
    if kind in ("missing_argument", "missing_keyword_only_argument"):
        return ConfigError(f"{what} needs option {key!r}")
    if kind == "value_error":  # a validator's own words, which name the value
        return ConfigError(f"{what}: option {key!r} {err['ctx']['error']}")
    msg = _MESSAGES.get(kind, "").format(**err.get("ctx", {})) or err["msg"]
    return ConfigError(f"{what}: option {key!r} {msg}, not {err['input']!r}")


def check_option(name: str, kind: Any, value: Any, what: str = "dataset") -> Any:
    """Validate one value against an option type (e.g. :data:`ValFraction`)."""
    try:
        return TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise _option_error(what, exc, [name], name) from None


def validate_options(factory: Callable[..., Any], what: str | None = None) -> Callable[..., Any]:
    """Wrap a dataset factory so its options are checked against its signature and type hints
    (pydantic); a bad option is one :class:`ConfigError` line naming it.

    Used as a decorator by the built-ins and applied by the registry to every plugin's factory,
    so a third-party dataset gets such errors from its type hints alone.
    """
    if getattr(factory, "validates_options", False):
        return factory
    what = what or f"dataset {getattr(factory, '__name__', 'factory')!r}"
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: the call decides
        return factory
    allowed = [n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    try:
        checked = validate_call(config=ConfigDict(arbitrary_types_allowed=True))(factory)
    except Exception:  # hints pydantic cannot resolve (a module it cannot import): names only
        checked = functools.partial(_check_names, what, factory, params)

    @functools.wraps(factory)
    def call(*args: Any, **options: Any) -> Any:
        try:
            return checked(*args, **options)
        except ValidationError as exc:
            raise _option_error(what, exc, allowed) from None

    call.validates_options = True  # type: ignore[attr-defined]
    return call


def _check_names(
    what: str, factory: Callable[..., Any], params: Any, *args: Any, **options: Any
) -> Any:
    """The options' names against the signature, for factories whose hints cannot be read."""
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [
            n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        for key in options:
            if key not in accepted:
                allowed = ", ".join(accepted) or "none"
                raise ConfigError(f"{what} has no option {key!r} (allowed: {allowed})")
    for i, (n, p) in enumerate(params.items()):
        required = p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        if required and n not in options and i >= len(args):
            raise ConfigError(f"{what} needs option {n!r}")
    return factory(*args, **options)
