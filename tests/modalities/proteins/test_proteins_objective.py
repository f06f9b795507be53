"""The ``backbone_geometry`` training objective: denoising plus losses on the decoded clean estimate."""

import json

import pandas as pd
import pytest
import torch

import molfuse as mf
from molfuse import plugins
from molfuse.errors import WorkflowError
from molfuse.modalities.proteins.angle_data import angle_data
from molfuse.modalities.proteins.angle_net import AngleTransformer
from molfuse.modalities.proteins.angles import CHANNEL_MEAN, CHANNEL_STD, angle_space, angles_to_state, state_to_angles
from molfuse.modalities.proteins.objective import BackboneGeometry, build_backbone_geometry

pytest.importorskip("biotite")


@pytest.fixture(scope="module")
def data():
    return angle_data({"length": [64, 128], "stride": 32, "n": 12, "seed": 0})


def _net(seed=0):
    torch.manual_seed(seed)
    net = AngleTransformer(width=16, layers=1, heads=2, kernel=3, max_separation=4, time_dim=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def _objective(**kw):
    return BackboneGeometry(mf.VPSchedule(), angle_space(), CHANNEL_MEAN, CHANNEL_STD, **kw)


def test_its_loss_is_the_denoising_loss_and_the_extras_come_on_top(data):
    net, obj = _net(), _objective(t_max=0.5)
    batch = {"x": data.x, "mask": data.mask}
    loss, extras = obj(net, batch, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)  # the same draws, in the same order
    ref = mf.losses.denoising_loss(net, data.x, mf.VPSchedule(), generator=g, mask=data.mask)
    assert torch.allclose(loss, ref, atol=1e-6)
    assert set(extras) == {"distance", "clash"} and float(extras["distance"].detach()) > 0
    off = _objective(t_max=0.5, distance_weight=0.0, clash_weight=0.0)
    _, none = off(net, batch, torch.Generator().manual_seed(3))
    assert all(float(v.detach()) == 0.0 for v in none.values())
    (loss.mean() + sum(extras.values())).backward()  # the extra terms reach the network
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)


def test_the_terms_vanish_on_the_data_and_see_a_fold_brought_into_itself(data):
    obj = _objective()
    x, mask = data.x[:4].double(), data.mask[:4]
    same = obj.trace_terms(x, x, mask)
    assert float(same["distance"].abs().max()) < 1e-10 and float(same["clash"].abs().max()) == 0.0
    theta, tau = state_to_angles(x, mask, CHANNEL_MEAN, CHANNEL_STD)
    folded = tau.clone()
    folded[:, 20:24] = tau[:, 20:24] + 2.5  # a kink in four dihedrals swings the rest of the chain
    bent = angles_to_state(theta, folded, mask, CHANNEL_MEAN, CHANNEL_STD)
    terms = obj.trace_terms(bent, x, mask)
    assert (terms["distance"] > 1e-3).all()


def test_the_objective_is_refused_where_it_does_not_apply(data):
    spec = {k: v for k, v in plugins.objective("backbone_geometry").fields.items()}
    with pytest.raises(WorkflowError, match="angle-state protein data"):
        build_backbone_geometry(spec, None, mf.VPSchedule(), data, "molecules", 0)
    with pytest.raises(WorkflowError, match="t_max"):
        build_backbone_geometry({**spec, "t_max": 0.0}, None, mf.VPSchedule(), data, "proteins", 0)
    with pytest.raises(WorkflowError, match="min_separation"):
        build_backbone_geometry({**spec, "min_separation": 0}, None, mf.VPSchedule(), data, "proteins", 0)
    obj, _, _ = build_backbone_geometry(spec, None, mf.VPSchedule(), data, "proteins", 0)
    with pytest.raises(WorkflowError, match="conditions"):
        obj(_net(), {"x": data.x, "mask": data.mask, "cond": torch.zeros(len(data.x), 1)}, None)


def test_a_tiny_member_trains_with_it_through_molfuse_train(tmp_path):
    from molfuse.training import train_from_workflow

    wf = {"name": "tiny_geom", "seed": 0, "output": str(tmp_path / "train"),
          "architecture": {"name": "protein_angles",
                           "config": {"width": 16, "layers": 1, "heads": 2, "kernel": 3, "max_separation": 4,
                                      "time_dim": 8}},
          "data": {"kind": "protein_angles", "length": 64, "stride": 32, "n": 16},
          "objective": {"kind": "backbone_geometry", "t_max": 1.0},
          "train": {"steps": 3, "batch_size": 8, "log_every": 1, "checkpoint_every": 3, "threads": 1}}
    res = train_from_workflow(wf, progress=False, verbose=False)
    card = json.loads((res.checkpoint / "card.json").read_text())
    assert card["objective"]["kind"] == "backbone_geometry" and card["objective"]["t_max"] == 1.0
    log = pd.read_csv(res.folder / "training_log.csv")  # the extra terms are logged beside the loss
    assert {"train_loss", "train_distance", "train_clash"} <= set(log.columns) and (log["train_distance"] > 0).all()
