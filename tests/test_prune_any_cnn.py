"""Structured pruning and derived students on an ordinary face-detector-like CNN: PReLU, depthwise and
grouped convolutions, a permute before the dense layers, two output heads. Layers that cannot lose
channels are kept whole and named; the step never fails with a library's IndexError."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.engine import run_recipe
from workers.compression import StepFailedError, load_model
from workers.compression.pruning.structured import output_shapes

from .conftest import export_pt2
from .digits import train


class FaceLikeNet(nn.Module):
    """The shapes of a small face detector (PReLU everywhere, depthwise + grouped convs, NHWC flatten
    before the dense layer), with a class head and a box head."""

    def __init__(self):
        super().__init__()
        self.conv1, self.act1 = nn.Conv2d(1, 16, 3, padding=1), nn.PReLU(16)
        self.dw, self.act2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.PReLU(16)
        self.grouped, self.act3 = nn.Conv2d(16, 32, 3, padding=1, groups=4), nn.PReLU(32)
        self.conv2, self.act4 = nn.Conv2d(32, 32, 1), nn.PReLU(32)
        self.dense, self.act5 = nn.Linear(32 * 8 * 8, 64), nn.PReLU(64)
        self.classes, self.boxes = nn.Linear(64, 10), nn.Linear(64, 4)

    def forward(self, x):
        x = self.act2(self.dw(self.act1(self.conv1(x))))
        x = self.act4(self.conv2(self.act3(self.grouped(x))))
        h = self.act5(self.dense(x.permute(0, 2, 3, 1).flatten(1)))
        return self.classes(h), self.boxes(h)


class Classes(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)[0]


@pytest.fixture(scope="module")
def face_pt2(digits, tmp_path_factory):
    x, y, _, _ = digits
    net = FaceLikeNet()
    train(Classes(net), x, y, epochs=5)
    return export_pt2(net.eval(), tmp_path_factory.mktemp("face") / "face.pt2", torch.zeros(2, 1, 8, 8))


def test_structured_pruning_keeps_what_it_cannot_prune_and_names_it(
    face_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.3, "finetune_epochs": 1}]}
    report = run_recipe(
        face_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    step = report["steps"][0]
    details = step["details"]
    assert details["params_after"] < details["params_before"]  # channels really went
    # conv2's channels are permuted (NHWC) and flattened into `dense`: kept whole, and said why
    assert "permuted" in details["unprunable"]["conv2"], details
    assert set(details["unprunable"]) <= set(details["kept_whole"])
    # the class head is an output too (the box head runs last): found by trial, since its shape would change
    assert "outputs would change shape" in details["unprunable"]["classes"], details
    assert any(
        "kept whole because removing their channels breaks the model" in n and "conv2" in n for n in step["notes"]
    )
    for name, why in details.get("unprunable", {}).items():
        assert why and "IndexError" not in step["verdict_reason"], (name, why)
    pruned = load_model(tmp_path / step["artifact_id"])
    with torch.no_grad():
        assert output_shapes(pruned.module(torch.zeros(3, 1, 8, 8))) == [(10,), (4,)]  # both heads intact
    assert step["measurement"]["accuracy"] is not None


def test_a_derived_student_of_a_prelu_cnn_trains(face_pt2, digits_train_npz, digits_npz, tmp_path, quick):
    recipe = {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 1}]}
    report = run_recipe(
        face_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path, settings=quick
    )
    step = report["steps"][0]
    assert step["size_ratio"] > 1.2
    assert any("student: the teacher with 50% of its channels" in n for n in step["notes"])
    assert any("kept at the teacher's width" in n and "conv2" in n for n in step["notes"]), step["notes"]
    student = load_model(tmp_path / step["artifact_id"])
    with torch.no_grad():
        assert output_shapes(student.module(torch.zeros(2, 1, 8, 8))) == [(10,), (4,)]


class OnlyPermuted(nn.Module):
    """One conv whose every channel feeds a permute-flatten-dense: nothing but the dense layer could shrink,
    and that is the output layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.out = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.out(self.conv(x).permute(0, 2, 3, 1).reshape(x.shape[0], 8 * 8 * 8))


def test_when_nothing_can_be_pruned_the_step_names_the_layer_and_why(tmp_path, digits_npz, quick):
    path = export_pt2(OnlyPermuted().eval(), tmp_path / "permuted.pt2", torch.zeros(2, 1, 8, 8))
    recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.5}]}
    with pytest.raises(StepFailedError) as failed:
        run_recipe(path, recipe, data_path=digits_npz, out_dir=tmp_path / "out", settings=quick)
    message = failed.value.message
    # the layer is named with the reason, in the step's own words, not only the library's exception
    assert "conv:" in message and message.startswith("step 1 (prune) failed: "), message
    assert "no layer of this model can lose channels" in message or "cannot be applied" in message, message


class ResidualStream(nn.Module):
    """A transformer-like residual stream normalised by a functional norm of a fixed width (nanoguard's
    `F.rms_norm(x, (x.size(-1),))` exported as 512): every layer prunes alone, but the stream's channels,
    shared by all its writers, cannot go."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(64, 32)
        self.up1, self.down1 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.up2, self.down2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        h = self.embed(x.flatten(1))
        h = h + self.down1(torch.relu(self.up1(nn.functional.layer_norm(h, (32,)))))
        h = h + self.down2(torch.relu(self.up2(nn.functional.layer_norm(h, (32,)))))
        return self.head(nn.functional.layer_norm(h, (32,)))


def test_layers_that_prune_alone_but_not_together_keep_the_stream_whole(digits, tmp_path, digits_npz, quick):
    x, y, _, _ = digits
    net = train(ResidualStream(), x, y, epochs=3)
    path = export_pt2(net, tmp_path / "stream.pt2", torch.zeros(2, 1, 8, 8))
    recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.5, "finetune_epochs": 0}]}
    report = run_recipe(path, recipe, data_path=digits_npz, out_dir=tmp_path / "out", settings=quick)
    step = report["steps"][0]  # failed before: "the layers prune one at a time but not together"
    unprunable = step["details"]["unprunable"]
    assert any("prunes alone but not with the layers before it" in why for why in unprunable.values()), unprunable
    assert step["measurement"]["params"] < report["baseline"]["params"]  # the hidden layers lost channels


def test_pruned_widths_are_whole_channel_blocks_and_a_narrow_layer_is_never_emptied():
    """CPU kernels block channels by 8 (AVX2) or 16 (AVX-512): each pruned width is rounded to the nearest
    whole block, and a layer narrower than one block keeps its width (Torch-Pruning's own rounding goes
    down to zero there)."""
    from workers.compression.pruning.structured import _block_pruner, channel_block, layer_block, make_pruner

    rounding = _block_pruner()._round_to
    assert rounding(None, 3, 12, 8) == 4  # keeps 8 of 12, the nearest block to 9
    assert rounding(None, 1, 6, 8) == 0  # below one block: kept whole, not emptied
    assert rounding(None, 13, 40, 8) == 16  # keeps 24, the nearest block to 27
    # AVX-512's block of 16 is halved in a layer narrower than two blocks, never below 8
    assert rounding(None, 5, 16, 16) == 8 and rounding(None, 10, 40, 16) == 8 and rounding(None, 1, 12, 16) == 4
    block = channel_block()
    assert block in (8, 16)
    model = nn.Sequential(
        nn.Conv2d(3, 40, 3), nn.ReLU(), nn.Conv2d(40, 56, 3), nn.ReLU(), nn.Conv2d(56, 12, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 10),
    ).eval()
    example = torch.randn(2, 3, 16, 16)
    before = [m.out_channels for m in model if isinstance(m, nn.Conv2d)]
    make_pruner(model, example, ratio=0.3, criterion="magnitude", scope="global", protected=[model[-1]]).step()
    after = [m.out_channels for m in model if isinstance(m, nn.Conv2d)]
    assert after != before and model(example).shape == (2, 10)
    assert all(w % layer_block(b, block) == 0 or w == b for w, b in zip(after, before)), (before, after)


def test_grouped_convolutions_keep_the_widths_the_ranking_gives():
    """Torch-Pruning rounds a grouped layer's per-group count against its whole width, which would empty
    groups: a model with a grouped convolution is pruned without rounding, and every group keeps channels."""
    from workers.compression.pruning.structured import make_pruner

    model = nn.Sequential(
        nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3, groups=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).eval()
    example = torch.randn(2, 3, 16, 16)
    pruner = make_pruner(model, example, ratio=0.4, criterion="magnitude", scope="global", protected=[model[-1]])
    assert pruner.round_to is None
    pruner.step()
    assert model[2].out_channels > 0 and model[2].out_channels % model[2].groups == 0
    assert model(example).shape == (2, 10)


def test_sensitivity_allocation_spends_the_budget_where_the_error_is_least():
    """The greedy allocation meets the target and takes channels from the group whose measured error is
    lowest per channel, up to the highest ratio tried, before touching a sensitive one."""
    from workers.compression.pruning.allocation import GroupCost, allocate, levels

    assert levels(0.3) == [0.15, 0.3, 0.6] and levels(0.6) == [0.3, 0.6, 0.9]
    robust = GroupCost("robust", [0.15, 0.3, 0.6], [0.01, 0.02, 0.05], [8, 16, 32])  # 64 channels, blocks of 8
    sensitive = GroupCost("sensitive", [0.15, 0.3, 0.6], [0.3, 0.6, 0.9], [0, 8, 16])  # 32: 15 % removes none
    assert allocate([robust, sensitive], target=0.3 * 96) == {"robust": 0.6}  # 32 channels at 0.05
    # past what the robust group can give, the sensitive one gives the rest, jumping the ratio that removed none
    assert allocate([robust, sensitive], target=40) == {"robust": 0.6, "sensitive": 0.3}
    # of two moves that meet the target at the same error, the one that removes less
    free = GroupCost("free", [0.2, 0.4, 0.8], [0.0, 0.0, 0.0], [128, 256, 512])
    assert allocate([free], target=10) == {"free": 0.2}
    # a target out of reach: every group at its highest ratio that ran, a failed trial never chosen
    broken = GroupCost("broken", [0.2, 0.4, 0.8], [0.1, float("inf"), float("inf")], [8, 16, 32])
    assert allocate([robust, broken], target=1000) == {"robust": 0.6, "broken": 0.2}
    # a measured error that falls as the ratio grows is noise: the cost never falls
    assert GroupCost("noisy", [0.25, 0.5], [0.4, 0.1], [8, 16]).points() == ([0.0, 0.4, 0.4], [0.0, 8, 16])


def test_structured_pruning_by_sensitivity_keeps_more_quality_than_a_uniform_cut(
    cnn_pt2, digits_train_npz, digits_npz, tmp_path, quick
):
    """`scope: sensitivity` measures every channel group pruned alone and chooses per-group ratios: the
    same share of channels goes with less lost than the same ratio in every layer (no recovery training,
    so the choice alone shows)."""
    runs = {}
    for scope in ("layer", "sensitivity"):
        recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.4, "scope": scope}]}
        runs[scope] = run_recipe(
            cnn_pt2, recipe, data_path=digits_train_npz, eval_data_path=digits_npz, out_dir=tmp_path / scope,
            settings=quick,
        )
    step = runs["sensitivity"]["steps"][0]
    allocation = step["details"]["allocation"]
    groups = {g["layer"]: g for g in allocation["groups"]}
    assert set(groups) == {"features.0", "features.3", "head.1"}, groups
    assert all(len(g["errors"]) == len(allocation["ratios_tried"]) == 3 for g in groups.values())
    assert len({g["ratio"] for g in groups.values()}) > 1, groups  # not one ratio for all
    assert any("measured sensitivity" in n for n in step["notes"])
    uniform = runs["layer"]["steps"][0]
    assert step["measurement"]["params"] < runs["sensitivity"]["baseline"]["params"]
    # the target is met: at least 40 % of the three groups' 16 + 32 + 64 channels are gone
    widths = {"features.0": 16, "features.3": 32, "head.1": 64}
    from workers.compression import load_model

    pruned = load_model(tmp_path / "sensitivity" / step["artifact_id"]).module
    gone = sum(w - pruned.get_submodule(n).weight.shape[0] for n, w in widths.items())
    assert gone >= 0.4 * sum(widths.values()), (gone, groups)
    assert allocation["achieved"].startswith(f"{gone / sum(widths.values()):.1%}"), allocation
    accuracy = {scope: run["steps"][0]["measurement"]["accuracy"] for scope, run in runs.items()}
    assert accuracy["sensitivity"] > accuracy["layer"], (accuracy, groups, uniform["details"]["params_after"])


def test_sensitivity_scope_needs_data_and_structured_pruning():
    from workers.compression import RecipeError
    from workers.compression.contract.recipe import parse_recipe

    with pytest.raises(RecipeError, match="structured pruning only"):
        parse_recipe({"steps": [{"method": "prune", "kind": "unstructured", "scope": "sensitivity"}]})
    step = parse_recipe({"steps": [{"method": "prune", "kind": "structured", "scope": "sensitivity"}]}).steps[0]
    assert "scope 'sensitivity'" in step.needs_data()


def test_a_macs_target_by_sensitivity_is_met_on_the_pruned_model(cnn_pt2, digits_npz, tmp_path, quick):
    """With `target_macs_reduction`, groups are priced per MAC they remove; their savings overlap (one
    layer's outputs are the next one's inputs), so the plan is checked on a pruned copy until it is met."""
    recipe = {
        "steps": [{"method": "prune", "kind": "structured", "target_macs_reduction": 0.4, "scope": "sensitivity"}]
    }
    report = run_recipe(cnn_pt2, recipe, data_path=digits_npz, out_dir=tmp_path, settings=quick)
    details = report["steps"][0]["details"]
    assert details["allocation"]["target"] == "MACs cut by 40%"
    assert details["macs_after"] <= 0.6 * details["macs_before"] * 1.01, details
