"""Models with several outputs (a face model's box, landmarks and score): each output is scored against the
baseline's with a metric that fits it, the headline agreement is the worst of them, and recovery training
keeps every output close, not only the first."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tests.engine import run_recipe


class FaceHeads(nn.Module):
    """ONet-shaped: PReLU convolutions, a permute before the dense layer, three heads."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3), nn.PReLU(16), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.PReLU(32), nn.MaxPool2d(2)
        )
        self.dense = nn.Linear(32 * 4 * 4, 64)
        self.act = nn.PReLU(64)
        self.box, self.landmarks, self.score = nn.Linear(64, 4), nn.Linear(64, 10), nn.Linear(64, 2)

    def forward(self, x):
        x = self.features(x).permute(0, 3, 2, 1).contiguous()
        x = self.act(self.dense(x.view(x.shape[0], -1)))
        return self.box(x), self.landmarks(x), torch.softmax(self.score(x), dim=1)


def _upload(tmp_path):
    net = FaceHeads().eval()
    program = torch.export.export(net, (torch.zeros(2, 3, 22, 22),), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    model = tmp_path / "faces.pt2"
    torch.export.save(program, str(model))
    data = tmp_path / "faces.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((96, 3, 22, 22)).astype(np.float32))
    return model, data


def test_every_output_is_scored_with_a_metric_that_fits_it(tmp_path, quick):
    model, data = _upload(tmp_path)
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_dynamic"}]}
    report = run_recipe(model, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    measured = report["steps"][0]["measurement"]
    outputs = measured["outputs"]
    # (the random-weight score head predicts one class nearly always: top-1 is then taken with cosine)
    assert [(o["shape"], o["kind"], o["metric"].split(" ")[0]) for o in outputs] == [
        ([None, 4], "values", "cosine"),
        ([None, 10], "values", "cosine"),
        ([None, 2], "classifier", "top1"),
    ]
    worst = min(outputs, key=lambda o: o["agreement"])
    assert measured["agreement"] == worst["agreement"]
    assert f"output {worst['index']}, worst of 3" in measured["agreement_metric"]
    assert all(0 <= o["relative_error"] < 0.5 for o in outputs)
    assert report["baseline"]["outputs"] is None  # the baseline is the reference


def test_pruning_recovery_keeps_every_output(tmp_path, quick):
    model, data = _upload(tmp_path)
    recipe = {"steps": [{"method": "prune", "kind": "structured", "sparsity": 0.3, "finetune_epochs": 3}]}
    report = run_recipe(model, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    step = report["steps"][0]
    assert step["details"]["params_after"] < step["details"]["params_before"]
    outputs = step["measurement"]["outputs"]
    assert len(outputs) == 3
    # recovery distilled all three heads from the original: none is left at a random direction
    assert min(o["agreement"] for o in outputs) > 0.5, outputs


def test_a_distilled_student_learns_every_head(tmp_path, quick):
    model, data = _upload(tmp_path)
    recipe = {"steps": [{"method": "distill", "student": {"derive": {"width": 0.5}}, "epochs": 8}]}
    report = run_recipe(model, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    outputs = report["steps"][0]["measurement"]["outputs"]
    assert len(outputs) == 3
    # the landmark head was trained too: distilling the first output alone leaves it at cosine 0.81 and a
    # relative error of 0.60 here, distilling every head at 0.93 and 0.38
    assert min(o["agreement"] for o in outputs[:2]) > 0.88 and outputs[1]["relative_error"] < 0.5, outputs
    assert outputs[2]["agreement"] > 0.9, outputs


class QuietSecondHead(nn.Module):
    """Two heads off one trunk; the second reads a hidden layer whose most active unit is scaled up 2000x
    and read back scaled down as much (the fp32 function is unchanged), so per-tensor int8 activations at
    the second head's input spend their range on that unit and the head's output is lost. The first
    output does not change under int8, so a guard that scores only the first output keeps nothing."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Linear(16, 32)
        self.first = nn.Linear(32, 4)
        self.hidden = nn.Linear(32, 32)
        self.second = nn.Linear(32, 8)
        with torch.no_grad():
            h = torch.relu(self.hidden(torch.relu(self.trunk(x))))
            unit = int(h.mean(0).argmax())
            self.hidden.weight[unit] *= 2000
            self.hidden.bias[unit] *= 2000
            self.second.weight[:, unit] /= 2000

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        return self.first(h), self.second(torch.relu(self.hidden(h)))


def test_the_quantization_guard_keeps_layers_for_any_output_not_only_the_first(tmp_path, quick):
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((256, 16)).astype(np.float32))
    net = QuietSecondHead(x).eval()
    program = torch.export.export(net, (x[:2],), dynamic_shapes=({0: torch.export.Dim.AUTO},))
    model = tmp_path / "heads.pt2"
    torch.export.save(program, str(model))
    data = tmp_path / "x.npz"
    np.savez(data, x=x.numpy())
    recipe = {"steps": [{"method": "quantize", "scheme": "int8_static", "runtime": "inductor",
                         "max_accuracy_drop": 0.02}]}
    report = run_recipe(model, recipe, data_path=data, out_dir=tmp_path / "out", settings=quick)
    step = report["steps"][0]
    guard = step["details"]["guard"]
    assert guard["metric"] == "worst of 2 outputs", guard
    assert guard["quantized_all"] < 0.98, "all-int8 was built to lose the second head"
    assert guard["met"] and guard["kept_full_precision"], guard
    outputs = step["measurement"]["outputs"]
    assert min(o["agreement"] for o in outputs) >= 0.98, outputs
