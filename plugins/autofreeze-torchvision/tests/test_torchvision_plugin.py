"""The autofreeze-torchvision plugin, loaded from its entry point, on real torchvision models.

Every registered name is built (weights ``none``) at both granularities and checked against the
backbone contract: blocks partition the parameters with the head apart, stages are runs of
blocks, freezing ``k`` blocks freezes exactly theirs, and a forward pass gives logits with the
blocks first run in input order. Weights: a local round trip, the torch hub cache, and a fast,
one-line failure when the DEFAULT weights are neither cached nor downloadable.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from autofreeze_torchvision import weights as tv_weights
from autofreeze_torchvision.plugin import MODELS
from click.testing import CliRunner
from safetensors.torch import save_file

from autofreeze.cli import cli
from autofreeze.core.backbones import Backbone
from autofreeze.errors import WeightsError
from autofreeze.plugins.registry import Registry
from autofreeze.testing import check_backbone

NUM_CLASSES = 7  # no stem or stage width equals it, so a shape check finds only the head
NAMES = [f"tv_{arch}" for arch in MODELS]
REQUIRED = [
    "resnet18",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
    "regnet_y_400mf",
    "vit_b_16",
    "swin_t",
    "densenet121",
]
# (blocks, stages) of each cut: the stem is block 0 in both
EXPECTED_BLOCKS = {
    "tv_resnet18": (9, 5),
    "tv_resnet34": (17, 5),
    "tv_resnet50": (17, 5),
    "tv_resnet101": (34, 5),
    "tv_resnet152": (51, 5),
    "tv_resnext50_32x4d": (17, 5),
    "tv_mobilenet_v2": (19, 6),
    "tv_mobilenet_v3_small": (13, 5),
    "tv_mobilenet_v3_large": (17, 6),
    "tv_efficientnet_b0": (18, 8),
    "tv_efficientnet_b1": (25, 8),
    "tv_efficientnet_b2": (25, 8),
    "tv_efficientnet_v2_s": (42, 7),
    "tv_convnext_tiny": (19, 5),
    "tv_regnet_x_400mf": (23, 5),
    "tv_regnet_y_400mf": (17, 5),
    "tv_regnet_y_800mf": (15, 5),
    "tv_vit_b_16": (13, 5),
    "tv_vit_b_32": (13, 5),
    "tv_swin_t": (13, 5),
    "tv_swin_v2_t": (13, 5),
    "tv_densenet121": (59, 5),
    "tv_maxvit_t": (12, 5),
    "tv_shufflenet_v2_x1_0": (18, 4),
}
# position embeddings or attention windows fix these at 224 px; the others run at 64 px
FIXED_INPUT_SIZE = {"tv_vit_b_16", "tv_vit_b_32", "tv_maxvit_t"}
SMALL_INPUT = 64
# a forward pass of ViT-B/16 at 224 px costs seconds; tv_vit_b_32 runs the same code
STRUCTURE_ONLY = {"tv_vit_b_16"}

REGISTRY = Registry()  # the default plugin manager: built-ins plus installed entry points


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="module", params=NAMES, ids=NAMES)
def pair(request) -> tuple[Backbone, Backbone]:
    """The backbone at block and at stage granularity; module scope builds each name once."""
    torch.manual_seed(0)
    blocks = REGISTRY.create_backbone(request.param, num_classes=NUM_CLASSES)
    stages = REGISTRY.create_backbone(request.param, num_classes=NUM_CLASSES, granularity="stage")
    return blocks, stages


def test_every_name_comes_from_the_entry_point():
    assert sorted(n for n in REGISTRY.backbone_entries() if n.startswith("tv_")) == sorted(NAMES)
    assert {REGISTRY.backbone_plugin(name) for name in NAMES} == {"torchvision"}
    assert set(EXPECTED_BLOCKS) == set(NAMES)


def test_the_models_exist_in_torchvision():
    import torchvision.models

    known = set(torchvision.models.list_models(module=torchvision.models))
    assert set(REQUIRED) <= set(MODELS) <= known


def test_descriptions_match_the_default_weights():
    import re

    import torchvision.models

    for arch, (_, description) in MODELS.items():
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        params = float(re.search(r"([\d.]+)M params", description)[1])
        top1 = float(re.search(r"top-1 ([\d.]+)%", description)[1])
        size = re.search(r"(\d+) px", description)
        assert params == round(weights.meta["num_params"] / 1e6, 1), arch
        assert top1 == round(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"], 1), arch
        assert int(size[1] if size else 224) == weights.transforms().crop_size[0], arch


def test_registering_imports_neither_torch_nor_torchvision():
    code = (
        "import sys; from autofreeze.plugins.registry import Registry; "
        "assert 'tv_resnet50' in Registry().backbone_entries(); "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_the_backbone_contract(pair):
    """autofreeze.testing.check_backbone: partition, unique names, stem in block 0, freezing at
    0, 1, the middle, n-1 and n, forward order and head-only logits (structure only for
    STRUCTURE_ONLY), and the stage cut a run of consecutive blocks."""
    blocks, stages = pair
    forward = blocks.name not in STRUCTURE_ONLY
    size = blocks.data_config["input_size"][-1] if blocks.name in FIXED_INPUT_SIZE else SMALL_INPUT
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    check_backbone(blocks, x, stages=stages, forward=forward)
    check_backbone(stages, x, forward=forward)
    assert stages.blocks[0].param_names == blocks.blocks[0].param_names  # the stem alone


def test_the_head_and_preprocessing(pair):
    params = dict(pair[0].model.named_parameters())
    for bb in pair:
        assert bb.weights == "none" and bb.num_classes == NUM_CLASSES
        # the head is the fresh classifier: exactly the parameters sized by num_classes
        outputs = {n for n, p in params.items() if p.ndim and p.shape[0] == NUM_CLASSES}
        assert set(bb.head_param_names) == outputs
        c, h, w = bb.data_config["input_size"]
        assert c == 3 and h == w >= 224
        assert bb.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))
        assert bb.data_config["std"] == pytest.approx((0.229, 0.224, 0.225))


def test_block_and_stage_counts(pair):
    blocks, stages = pair
    assert (blocks.n_blocks, stages.n_blocks) == EXPECTED_BLOCKS[blocks.name]
    assert blocks.meta["granularity"] == "block" and stages.meta["granularity"] == "stage"


# -- the command line ---------------------------------------------------------------------------
def test_cli_inspect_shows_the_blocks():
    result = CliRunner().invoke(cli, ["inspect", "tv_resnet18", "--num-classes", "3"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("tv_resnet18: 9 blocks, ")
    assert "input (3, 224, 224), weights none" in lines[0]
    rows = [line.split()[:2] for line in lines[3:]]
    assert rows == [["0", "conv1+bn1"]] + [
        [str(1 + 2 * (i - 1) + j), f"layer{i}.{j}"] for i in range(1, 5) for j in range(2)
    ] + [["head", "fc"]]
    stages = CliRunner().invoke(cli, ["inspect", "tv_resnet18", "--granularity", "stage"])
    assert "tv_resnet18: 5 blocks" in stages.stdout
    assert [line.split()[1] for line in stages.stdout.splitlines()[3:]] == [
        "conv1+bn1",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "fc",
    ]


def test_cli_plugins_lists_the_entry_point():
    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    row = rows["torchvision"]
    assert row["package"] == "autofreeze-torchvision 0.1.0"
    assert row["hooks"] == ["register_backbones"]
    assert row["backbones"] == sorted(NAMES)


# -- weights ------------------------------------------------------------------------------------
def saved_state(bb: Backbone) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in bb.model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_round_trip(tmp_path, suffix):
    torch.manual_seed(1)
    source = REGISTRY.create_backbone("tv_resnet18", num_classes=5)
    state = saved_state(source)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)

    torch.manual_seed(2)
    bb = REGISTRY.create_backbone("tv_resnet18", num_classes=3, weights=str(path))
    assert bb.weights == str(path)
    loaded = bb.model.state_dict()
    head = {"fc.weight", "fc.bias"}
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k not in head)
    assert loaded["fc.weight"].shape == (3, 512)  # another task's head: the fresh one is kept

    same = REGISTRY.create_backbone("tv_resnet18", num_classes=5, weights=str(path))
    kept = same.model.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in state.items())  # a checkpoint: head too


def test_legacy_densenet_keys_load(tmp_path):
    """torchvision's own DenseNet files name 'norm.1' what the model calls 'norm1'."""
    torch.manual_seed(1)
    state = saved_state(REGISTRY.create_backbone("tv_densenet121", num_classes=3))
    legacy = {
        k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v for k, v in state.items()
    }
    assert legacy.keys() != state.keys()
    path = tmp_path / "densenet121.pth"
    torch.save(legacy, path)
    bb = REGISTRY.create_backbone("tv_densenet121", num_classes=3, weights=str(path))
    loaded = bb.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_weights_of_another_model_do_not_match(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(saved_state(REGISTRY.create_backbone("tv_resnet18", num_classes=3)), path)
    with pytest.raises(WeightsError) as info:
        REGISTRY.create_backbone("tv_resnet50", num_classes=3, weights=str(path))
    message = str(info.value)
    assert message.startswith(f"weights file {str(path)!r} does not match backbone 'tv_resnet50'")
    assert "missing keys (e.g. 'layer1.0.conv3.weight')" in message
    assert "shape mismatches" in message and "\n" not in message


def test_a_missing_weights_file(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(WeightsError, match="does not exist") as info:
        REGISTRY.create_backbone("tv_resnet18", num_classes=3, weights=str(path))
    assert str(path) in str(info.value)


def test_default_weights_are_read_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(tv_weights, "reachable", lambda *_: pytest.fail("no probe needed"))
    torch.manual_seed(1)
    imagenet = REGISTRY.create_backbone("tv_mobilenet_v3_small", num_classes=1000)
    url = tv_weights.default_weights("mobilenet_v3_small").url
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    state = saved_state(imagenet)
    torch.save(state, cached)

    bb = REGISTRY.create_backbone("tv_mobilenet_v3_small", num_classes=3, weights="default")
    assert bb.weights == "default"
    loaded = bb.model.state_dict()
    head = set(bb.head_param_names)
    assert head == {"classifier.3.weight", "classifier.3.bias"}
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k not in head)
    assert loaded["classifier.3.weight"].shape[0] == 3


@pytest.fixture
def file_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "served"``; yields (folder, base URL)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=folder))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_default_weights_are_downloaded_into_the_hub_cache(tmp_path, monkeypatch, file_server):
    import hashlib

    folder, base = file_server
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(1)
    state = saved_state(REGISTRY.create_backbone("tv_mobilenet_v3_small", num_classes=1000))
    torch.save(state, folder / "upload.pth")
    digest = hashlib.sha256((folder / "upload.pth").read_bytes()).hexdigest()[:8]
    (folder / "upload.pth").rename(folder / f"mobilenet_v3_small-{digest}.pth")
    real = tv_weights.default_weights("mobilenet_v3_small")

    class Served:  # torchvision's DEFAULT weights, served from the local server
        url = f"{base}/mobilenet_v3_small-{digest}.pth"

        def transforms(self):
            return real.transforms()

    monkeypatch.setattr(tv_weights, "default_weights", lambda arch: Served())
    bb = REGISTRY.create_backbone("tv_mobilenet_v3_small", num_classes=3, weights="default")
    cached = tmp_path / "torch" / "hub" / "checkpoints" / f"mobilenet_v3_small-{digest}.pth"
    assert cached.is_file()
    loaded = bb.model.state_dict()
    head = set(bb.head_param_names)
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k not in head)

    bad = "mobilenet_v3_small-00000000.pth"  # a hash prefix the file does not have
    (folder / f"mobilenet_v3_small-{digest}.pth").rename(folder / bad)
    Served.url = f"{base}/{bad}"
    with pytest.raises(WeightsError) as info:
        REGISTRY.create_backbone("tv_mobilenet_v3_small", num_classes=3, weights="default")
    assert str(info.value).startswith("cannot get the default weights of 'tv_mobilenet_v3_small'")
    assert "\n" not in str(info.value) and not (cached.parent / bad).exists()


def test_default_weights_offline_fail_fast_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached
    monkeypatch.setattr(tv_weights, "reachable", lambda *_: False)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        REGISTRY.create_backbone("tv_resnet18", num_classes=3, weights="default")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("cannot get the default weights of 'tv_resnet18'")
    assert "pass a local file instead" in message and "resnet18-f37072fd.pth" in message


def test_the_reachability_probe_gives_up_quickly():
    start = time.perf_counter()
    assert tv_weights.reachable("autofreeze-test.invalid", timeout=1.0) is False
    assert time.perf_counter() - start < 2
