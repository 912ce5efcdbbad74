"""Commands on a trained model: evaluate it, predict with it."""

from __future__ import annotations

import click

from autofreeze.cli._group import cli, echo_json, format_table


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option(
    "--split",
    type=click.Choice(["test", "val", "train"]),
    default="test",
    show_default=True,
    help="split of the dataset the model was trained on",
)
@click.option("--data", type=click.Path(file_okay=False), help="a folder of class sub-folders")
@click.option("--json", "as_json", is_flag=True)
def evaluate(checkpoint: str, split: str, data: str | None, as_json: bool) -> None:
    """Accuracy, per-class accuracy and confusion matrix of a trained CHECKPOINT (a split the
    model trained on is said to be one)."""
    from autofreeze.runs.model import evaluation_images, load, seen_in_training

    model = load(checkpoint)
    report = model.evaluate(evaluation_images(model, split, data))
    report["data"] = data or split
    seen = data is None and seen_in_training(model, split)
    report["seen_in_training"] = seen
    if seen:
        click.echo(
            f"note: {checkpoint} was trained on {model.info.get('trained_on', 'train')}: its "
            f"{split} images were seen in training, so this accuracy overstates what it does on "
            "new images; --split test or --data PATH measures that",
            err=True,
        )
    if as_json:
        echo_json(report)
        return
    click.echo(
        f"{checkpoint} on {data or split}: accuracy {report['accuracy']:.4f} "
        f"({report['images']} images{', seen in training' if seen else ''})"
    )
    rows = [
        {"class": c, "images": r["images"], "accuracy": r["accuracy"]}
        for c, r in report["per_class"].items()
    ]
    click.echo(format_table(rows, ["class", "images", "accuracy"]))
    click.echo("confusion (rows: true class, columns: predicted)")
    header = ["true \\ predicted", *model.classes]
    matrix = [
        {"true \\ predicted": c, **dict(zip(model.classes, row, strict=True))}
        for c, row in zip(model.classes, report["confusion"], strict=True)
    ]
    click.echo(format_table(matrix, header))


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def predict(checkpoint: str, images: tuple[str, ...], as_json: bool) -> None:
    """The class of each of IMAGES according to a trained CHECKPOINT."""
    from autofreeze.runs.model import load

    rows = [
        {"image": image, "class": label, "probability": round(prob, 4)}
        for image, (label, prob) in zip(images, load(checkpoint).predict(images), strict=True)
    ]
    if as_json:
        echo_json(rows)
    else:
        click.echo(format_table(rows, ["image", "class", "probability"]))
