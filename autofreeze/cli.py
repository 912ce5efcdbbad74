"""The ``autofreeze`` command line: a thin click group; each command calls one library function.

Data go to stdout (``--json`` for machines), progress and chatter to stderr. Errors a user can
cause (:class:`autofreeze.errors.AutofreezeError`) become one line and exit code 1; bad usage
exits 2. Heavy imports (torch, timm, optuna) happen inside the commands so that
``autofreeze --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from autofreeze.errors import AutofreezeError


class AutofreezeGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AutofreezeError as exc:
            raise click.ClickException(str(exc)) from None


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Left-aligned text columns; floats with 4 significant digits."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


@click.group(cls=AutofreezeGroup)
@click.version_option(package_name="autofreeze")
def cli() -> None:
    """Search how to fine-tune a pretrained image backbone: which blocks to freeze, how to
    unfreeze them, and which learning rate each group gets."""


@cli.command()
@click.argument("backbone")
@click.option(
    "--granularity",
    type=click.Choice(["block", "stage"]),
    default="block",
    show_default=True,
    help="timm group_matcher granularity: fine blocks or stages",
)
@click.option(
    "--num-classes",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="size of the (fresh) head",
)
@click.option(
    "--weights",
    default="none",
    show_default=True,
    help="none, default (hub) or a local .safetensors/.pth file",
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output with param names")
def inspect(backbone: str, granularity: str, num_classes: int, weights: str, as_json: bool) -> None:
    """Show how BACKBONE is cut into freeze blocks (index 0 is next to the input)."""
    from autofreeze.registry import get_registry

    bb = get_registry().create_backbone(
        backbone, num_classes=num_classes, weights=weights, granularity=granularity
    )
    info = bb.describe(with_params=as_json)
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"{info['backbone']}: {info['n_blocks']} blocks, {info['total_params']:,} params, "
        f"input {tuple(info['input_size'])}, weights {info['weights']}"
    )
    rows = [dict(r, params=f"{r['params']:,}") for r in info["blocks"]]
    rows.append(
        {"index": "head", "name": info["head"]["name"], "params": f"{info['head']['params']:,}"}
    )
    click.echo(format_table(rows, ["index", "name", "params"]))
    click.echo(f"boundary k freezes blocks 0..k-1; k ranges over 0..{info['n_blocks']}", err=True)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def plugins(as_json: bool) -> None:
    """List loaded plugins and what each registers."""
    from autofreeze.registry import get_registry

    rows = get_registry().plugins()
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        click.echo(f"{row['name']}  ({row['package']})")
        for kind in ("backbones", "datasets", "schedules"):
            if row[kind]:
                click.echo(f"  {kind}: {', '.join(row[kind])}")
        click.echo(f"  hooks: {', '.join(row['hooks'])}")


@cli.command()
@click.argument("pattern", default="*")
@click.option("--json", "as_json", is_flag=True)
def backbones(pattern: str, as_json: bool) -> None:
    """List backbone names matching a glob PATTERN (e.g. 'resnet*')."""
    from autofreeze.registry import get_registry

    names = get_registry().list_backbones(pattern)
    if as_json:
        echo_json(names)
    else:
        click.echo("\n".join(names))


def parse_assignments(pairs: Sequence[str], what: str) -> dict[str, Any]:
    """``key=value`` pairs; values are read as TOML (numbers, lists, quoted strings) or text."""
    import tomllib

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{what} must look like key=value, not {pair!r}")
        try:
            out[key.strip()] = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            out[key.strip()] = raw
    return out


@cli.command()
@click.argument("name")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="a dataset option, e.g. -o path=data/flowers or -o classes=[5,6,7]",
)
@click.option("--json", "as_json", is_flag=True)
def dataset(name: str, options: tuple[str, ...], as_json: bool) -> None:
    """Load dataset NAME and show its classes and split sizes (checks the data is readable)."""
    from autofreeze.registry import get_registry

    data = get_registry().create_dataset(name, **parse_assignments(options, "--option"))
    counts = {split: {c: 0 for c in data.classes} for split in ("train", "val")}
    for split, images in (("train", data.train), ("val", data.val)):
        for label in images.labels:
            counts[split][data.classes[label]] += 1
    info = {
        "dataset": name,
        "classes": data.classes,
        "train": len(data.train),
        "val": len(data.val),
        "per_class": counts,
    }
    if as_json:
        echo_json(info)
        return
    click.echo(
        f"{name}: {len(data.classes)} classes, {len(data.train)} train, {len(data.val)} val images"
    )
    rows = [
        {"class": c, "train": counts["train"][c], "val": counts["val"][c]} for c in data.classes
    ]
    click.echo(format_table(rows, ["class", "train", "val"]))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def datasets(as_json: bool) -> None:
    """List registered datasets."""
    from autofreeze.registry import get_registry

    rows = [
        {"name": e.name, "plugin": e.plugin, "description": e.description}
        for e in get_registry().dataset_entries().values()
    ]
    if as_json:
        echo_json(rows)
    else:
        click.echo(format_table(rows, ["name", "plugin", "description"]))


def _load_plugin_commands() -> None:
    from autofreeze.registry import get_registry

    try:
        get_registry().add_commands(cli)
    except AutofreezeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


def main() -> None:
    _load_plugin_commands()
    cli()
