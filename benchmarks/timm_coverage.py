"""How many timm models autofreeze cuts into freeze blocks: by group_matcher() alone, and with
the fallbacks (the feature_info stages, then the top-level modules).

Run: .venv/bin/python benchmarks/timm_coverage.py (``--pattern GLOB``: a look, nothing written)
Every name of ``timm.list_models()`` is built on the meta device (no memory, no weight init: the
cut reads only parameter names), with 10 classes, and cut at both granularities exactly as
``autofreeze inspect`` would (``Backbone.check`` included). Writes one row per model to
benchmarks/results/timm_coverage.json and, for the full list, the section "timm coverage" of
docs/benchmarks.md; the summary goes to stdout, the progress to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._report import write_section  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "timm_coverage.json"
GRANULARITIES = ("block", "stage")
COMMAND = ".venv/bin/python benchmarks/timm_coverage.py"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def cut(model: torch.nn.Module, name: str, head: list[str], granularity: str, fallback: bool):
    """``{"ok", "cut", "n_blocks", "reason"}`` of one cut, checked like a built backbone."""
    from autofreeze.core.backbones import Backbone
    from autofreeze.errors import BackboneError
    from autofreeze.plugins.builtin._timm_cut import cut_model

    try:
        groups, source = cut_model(
            model, head, name=name, granularity=granularity, fallback=fallback
        )
        bb = Backbone.from_groups(name, model, groups, head, data_config={}, num_classes=10)
    except Exception as exc:  # a BackboneError is the user's one line; anything else, a bug
        why = str(exc).splitlines()[0] if isinstance(exc, BackboneError) else first_line(exc)
        return {"ok": False, "cut": None, "n_blocks": None, "reason": why}
    return {"ok": True, "cut": source, "n_blocks": bb.n_blocks, "reason": None}


def survey(name: str) -> dict[str, Any]:
    import timm

    from autofreeze.errors import BackboneError
    from autofreeze.plugins.builtin.timm_backbones import classifier_param_names

    row: dict[str, Any] = {"name": name, "family": None, "build": None}
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")
            model = timm.create_model(name, pretrained=False, num_classes=10)
    except Exception as exc:  # timm itself cannot build it: counted apart
        row["build"] = first_line(exc)
        return row
    row["family"] = type(model).__name__
    try:
        head = classifier_param_names(model)
    except BackboneError as exc:
        failed = {"ok": False, "cut": None, "n_blocks": None, "reason": str(exc)}
        for g in GRANULARITIES:
            row[g] = {"group_matcher": failed, "fallback": failed}
        return row
    for g in GRANULARITIES:
        row[g] = {
            "group_matcher": cut(model, name, head, g, fallback=False),
            "fallback": cut(model, name, head, g, fallback=True),
        }
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    built = [r for r in rows if r["build"] is None]
    out: dict[str, Any] = {"models": len(rows), "cannot_build": len(rows) - len(built)}
    for g in GRANULARITIES:
        out[g] = {
            "group_matcher_only": sum(r[g]["group_matcher"]["ok"] for r in built),
            "with_fallback": sum(r[g]["fallback"]["ok"] for r in built),
            "by_cut": dict(
                Counter(r[g]["fallback"]["cut"] for r in built if r[g]["fallback"]["ok"])
            ),
            "one_block": sorted(r["name"] for r in built if r[g]["fallback"]["n_blocks"] == 1),
            "cannot": {
                r["name"]: r[g]["fallback"]["reason"] for r in built if not r[g]["fallback"]["ok"]
            },
        }
    return out


def report(summary: dict[str, Any], rows: list[dict[str, Any]], seconds: float) -> str:
    n, unbuilt = summary["models"], summary["cannot_build"]
    family = {r["name"]: r["family"] for r in rows}
    lines = [
        f"`{COMMAND}` on {platform.machine()}, {os.cpu_count()} cores, timm "
        f"{__import__('timm').__version__}, torch {torch.__version__}, Python "
        f"{platform.python_version()}; {seconds:.0f} s. Every name of `timm.list_models()` is "
        "built on the meta device with 10 classes and cut as `autofreeze inspect` cuts it "
        "(`Backbone.check` included: every parameter in exactly one block or the head). "
        f"{n} models, {unbuilt} of which timm itself cannot build; the counts are of the "
        f"{n - unbuilt} it builds. The fallback is used only where `group_matcher()` is missing.",
        "",
        "| granularity | group_matcher only | with the fallback | by feature_info | "
        "by top-level modules | still not cut |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for g in GRANULARITIES:
        s = summary[g]
        lines.append(
            f"| {g} | {s['group_matcher_only']} | {s['with_fallback']} | "
            f"{s['by_cut'].get('feature_info', 0)} | {s['by_cut'].get('children', 0)} | "
            f"{len(s['cannot'])} |"
        )
    lines += ["", "Still not cut (the reason's first line):", ""]
    cannot = {name: [] for g in GRANULARITIES for name in summary[g]["cannot"]}
    for g in GRANULARITIES:
        for name, why in summary[g]["cannot"].items():
            cannot[name].append((g, why))
    for name, whys in cannot.items():
        grans = "/".join(g for g, _ in whys)
        lines.append(f"- `{name}` ({family[name]}, {grans}): {whys[0][1]}")
    if not cannot:
        lines.append("- none")
    return "\n".join(lines)


COLUMNS = [
    "name",
    "family",
    "block: group_matcher only",
    "block: cut",
    "block: n_blocks",
    "stage: group_matcher only",
    "stage: cut",
    "stage: n_blocks",
    "why not (first line)",
]


def results_json(summary: dict[str, Any], rows: list[dict[str, Any]], seconds: float) -> str:
    """The summary, then one line per model in the columns of ``COLUMNS`` (``cut`` None: not
    cut; the reason is the block one, else the stage one, else why timm cannot build it)."""
    table = []
    for r in rows:
        line: list[Any] = [r["name"], r["family"]]
        reasons = [r["build"]] if r["build"] else []
        for g in GRANULARITIES:
            gm, fb = (r.get(g) or {}).get("group_matcher"), (r.get(g) or {}).get("fallback")
            line += [bool(gm and gm["ok"]), fb and fb["cut"], fb and fb["n_blocks"]]
            reasons += [fb["reason"]] if fb and fb["reason"] else []
        table.append(line + [reasons[0] if reasons else None])
    head = {"command": COMMAND, "seconds": round(seconds, 1), "summary": summary}
    lines = [json.dumps(row) for row in table]
    return (
        json.dumps(head, indent=1)[:-2]
        + f',\n "columns": {json.dumps(COLUMNS)},\n "models": [\n  '
        + ",\n  ".join(lines)
        + "\n ]\n}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pattern", default="", help="only the names matching this glob")
    args = parser.parse_args()
    import timm

    names = timm.list_models(args.pattern) if args.pattern else timm.list_models()
    rows = []
    start = time.perf_counter()
    for i, name in enumerate(names, 1):
        rows.append(survey(name))
        if i % 50 == 0 or i == len(names):
            elapsed = time.perf_counter() - start
            print(f"{i}/{len(names)} models, {elapsed:.0f} s", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - start
    summary = summarize(rows)
    text = report(summary, rows, seconds)
    if not args.pattern:  # only the full list is a result
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(results_json(summary, rows, seconds))
        write_section("timm coverage", text)
    print(text)


if __name__ == "__main__":
    main()
