"""The image evaluator's ``evaluation:`` settings in a workflow: its YAML schema, checked.

::

    evaluation?:
      target_classes?: {7: 0.6, 9: 0.4}   # class -> weight: class_mixture_tv, coverage
      reference_classes?: [7, 9]          # real test images for feature_frechet (default: target's, else all)
      classifier?: <folder>               # default the shipped models/images/classifier
      judge?: <folder> | false            # the second judge (default the shipped models/images/judge_mlp)
      memorisation?: true | false         # nearest-training-image ratios and near copies (default true)
      heldout?: {n: 64, seed: 0, classes?: [...] | weights?: {...}}   # real test images (default:
                                          # target_classes) for the two model metrics below
      bits_per_dim?: {steps: 20, rho: 7.0, t_start: 1.0e-5}   # per method with a score model
      dsm_loss?: {n_t: 8, t_min: 1.0e-3}                      # (single, barycenter, ensemble)

Only the keys given are kept, so a workflow without them resolves to the same config.
"""

from __future__ import annotations

from typing import Any, Mapping

from ...base.checks import as_float, as_int, fail, fields

__all__ = ["parse_evaluation", "EVALUATION", "HELDOUT", "BPD", "DSM"]

EVALUATION = {"target_classes": None, "reference_classes": None, "classifier": None, "judge": None,
              "memorisation": None, "heldout": None, "bits_per_dim": None, "dsm_loss": None}
HELDOUT = {"n": 64, "seed": 0, "classes": None, "weights": None}
BPD = {"steps": 20, "rho": 7.0, "t_start": 1.0e-5}
DSM = {"n_t": 8, "t_min": 1.0e-3}


def parse_evaluation(d: Any, path: str = "evaluation") -> dict:
    """The checked settings (WorkflowError naming the field), only the keys given."""
    if d is None or d == {}:
        return {}
    f = fields(d, path, EVALUATION)
    out: dict[str, Any] = {}
    if f["target_classes"] is not None:
        tc = f["target_classes"]
        if not isinstance(tc, Mapping) or not tc:
            fail(f"{path}.target_classes", f"expected a mapping class -> weight, e.g. {{7: 0.6, 9: 0.4}}; got {tc!r}")
        out["target_classes"] = {_class(k, f"{path}.target_classes.{k}"):
                                 as_float(v, f"{path}.target_classes.{k}", 0.0) for k, v in tc.items()}
        if sum(out["target_classes"].values()) <= 0:
            fail(f"{path}.target_classes", "weights must have a positive sum")
    if f["reference_classes"] is not None:
        rc = f["reference_classes"]
        if not isinstance(rc, list) or not rc:
            fail(f"{path}.reference_classes", f"expected a non-empty list of classes; got {rc!r}")
        out["reference_classes"] = [_class(c, f"{path}.reference_classes[{i}]") for i, c in enumerate(rc)]
        if len(set(out["reference_classes"])) < len(rc):
            fail(f"{path}.reference_classes", f"classes are listed twice: {rc}")
    if f["classifier"] is not None:
        if not isinstance(f["classifier"], str):
            fail(f"{path}.classifier", f"expected a path to a classifier folder; got {f['classifier']!r}")
        out["classifier"] = f["classifier"]
    if f["judge"] is not None:
        if f["judge"] is not False and not isinstance(f["judge"], str):
            fail(f"{path}.judge", f"expected a path to a classifier folder or false; got {f['judge']!r}")
        out["judge"] = f["judge"]
    if f["memorisation"] is not None:
        if not isinstance(f["memorisation"], bool):
            fail(f"{path}.memorisation", f"expected true or false; got {f['memorisation']!r}")
        out["memorisation"] = f["memorisation"]
    if f["heldout"] is not None or f["bits_per_dim"] is not None or f["dsm_loss"] is not None:
        out["heldout"] = _parse_heldout(f["heldout"] or {}, out, f"{path}.heldout")
    if f["bits_per_dim"] is not None:
        b = fields({} if f["bits_per_dim"] is True else f["bits_per_dim"], f"{path}.bits_per_dim", BPD)
        out["bits_per_dim"] = {"steps": as_int(b["steps"], f"{path}.bits_per_dim.steps", 1),
                               "rho": as_float(b["rho"], f"{path}.bits_per_dim.rho", 1.0),
                               "t_start": as_float(b["t_start"], f"{path}.bits_per_dim.t_start", 0.0, 0.1,
                                                   open_lo=True)}
    if f["dsm_loss"] is not None:
        b = fields({} if f["dsm_loss"] is True else f["dsm_loss"], f"{path}.dsm_loss", DSM)
        out["dsm_loss"] = {"n_t": as_int(b["n_t"], f"{path}.dsm_loss.n_t", 1),
                           "t_min": as_float(b["t_min"], f"{path}.dsm_loss.t_min", 0.0, 0.5, open_lo=True)}
    return out


def _parse_heldout(d: Any, ev: dict, path: str) -> dict:
    """Held-out real images for bits/dim and DSM loss: ``n`` test images of a class population
    (``classes`` or ``weights``; default the target classes, else all), drawn with ``seed``."""
    f = fields(d, path, HELDOUT)
    out = {"n": as_int(f["n"], f"{path}.n", 1), "seed": as_int(f["seed"], f"{path}.seed", 0)}
    if f["classes"] is not None and f["weights"] is not None:
        fail(path, "give classes or weights, not both")
    if f["weights"] is not None:
        if not isinstance(f["weights"], Mapping) or not f["weights"]:
            fail(f"{path}.weights", f"expected a mapping class -> weight; got {f['weights']!r}")
        out["weights"] = {_class(k, f"{path}.weights.{k}"): as_float(v, f"{path}.weights.{k}", 0.0)
                          for k, v in f["weights"].items()}
    elif f["classes"] is not None:
        if not isinstance(f["classes"], list) or not f["classes"]:
            fail(f"{path}.classes", f"expected a non-empty list of classes; got {f['classes']!r}")
        out["weights"] = {_class(c, f"{path}.classes[{i}]"): 1.0 for i, c in enumerate(f["classes"])}
    else:
        out["weights"] = dict(ev.get("target_classes") or {c: 1.0 for c in range(10)})
    return out


def _class(v: Any, path: str) -> int:
    """A class label: a non-negative integer (YAML may give ``"7"``)."""
    if isinstance(v, str) and v.strip().isdigit():
        v = int(v)
    return as_int(v, path, 0)
