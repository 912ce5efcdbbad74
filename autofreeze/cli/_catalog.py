"""Commands that show what the loaded plugins register: backbones, datasets, plugins."""

from __future__ import annotations

import click

from autofreeze.cli._group import cli, echo_json, format_table, parse_assignments


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
    from autofreeze.plugins.registry import get_registry

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
        + (f", cut by {info['cut']}" if info.get("cut") else "")
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
    from autofreeze.plugins.registry import get_registry

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
    from autofreeze.plugins.registry import get_registry

    names = get_registry().list_backbones(pattern)
    if as_json:
        echo_json(names)
    else:
        click.echo("\n".join(names))


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
    from autofreeze.plugins.registry import get_registry

    data = get_registry().create_dataset(name, **parse_assignments(options, "--option"))
    info = {"dataset": name, **data.summary()}
    counts = info["per_class"]
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
    from autofreeze.plugins.registry import get_registry

    rows = [
        {"name": e.name, "plugin": e.plugin, "description": e.description}
        for e in get_registry().dataset_entries().values()
    ]
    if as_json:
        echo_json(rows)
    else:
        click.echo(format_table(rows, ["name", "plugin", "description"]))
