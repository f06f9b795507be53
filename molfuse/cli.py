"""The ``molfuse`` command: parse arguments, call the library, print where results went.

    molfuse run WORKFLOW.yaml [--out DIR] [--name NAME] [--device cpu|cuda|auto] [--seed N]
    molfuse demo [--out DIR] [--name NAME]
    molfuse train WORKFLOW.yaml [--out DIR] [--device cpu|cuda|auto]   (a `sweep:` trains each run)
    molfuse doctor
"""

from __future__ import annotations

import importlib
import math
import platform
import time
from pathlib import Path

import click

import molfuse

__all__ = ["main", "demo_path"]

EXTRAS = (("rdkit", "rdkit"), ("biotite", "biotite"), ("e3nn", "e3nn"), ("lightning", "lightning"))


def demo_path() -> Path:
    """``workflows/demo.yaml`` next to the package (a source checkout or editable install)."""
    return Path(molfuse.__file__).resolve().parents[1] / "workflows" / "demo.yaml"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(molfuse.__version__, prog_name="molfuse")
def main() -> None:
    """molfuse: fuse pre-trained diffusion (score) models and evaluate the result.

    Every run writes one results folder: config.yaml, provenance.json, samples/,
    per_sample.csv, metrics.csv, plots and summary.md. Rerunning the same folder resumes it.
    """


def _run(path: Path, out: str | None, name: str | None, device: str | None, seed: int | None = None):
    from .campaign import run_workflow
    from .errors import WorkflowError
    from .evaluation.vectors import markdown_table

    try:
        result = run_workflow(path, out=out, name=name, device=device, seed=seed)
    except WorkflowError as e:
        raise click.ClickException(str(e)) from None
    m = result.metrics
    image = ("class_mixture_tv", "coverage", "off_target_fraction", "feature_frechet", "test_bpd", "test_bpd_se",
             "test_dsm_loss", "mean_min_target_prob")
    cols = ["method", *(c for c in m if c == "mean_log_q_nats_target" or c.startswith("share_")),
            *(c for c in image if c in m and m[c].notna().any()),
            *(c for c in m if c.startswith("weight_") and m[c].notna().any()),
            *(c for c in ("mean_abs_log_q_gap_nats", "wall_time_s") if c in m)]
    click.echo(markdown_table(result.metrics[cols]))
    for section in result.sections:  # the workflow's reports (by_n, class_share)
        click.echo(section)
    click.echo(f"results: {result.folder}  (summary.md, metrics.csv, per_sample.csv)")
    return result


@main.command()
@click.argument("workflow", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", help="Base output folder (overrides the workflow's `output`).")
@click.option("--name", help="Run name (folder under <out>/<workflow name>/); reuse it to resume.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Overrides sampler.device.")
@click.option("--seed", type=click.IntRange(min=0), help="Overrides the workflow's seed (a replicate run).")
def run(workflow: Path, out: str | None, name: str | None, device: str | None, seed: int | None) -> None:
    """Run a workflow YAML file and write its results folder."""
    _run(workflow, out, name, device, seed)


@main.command("train")
@click.argument("workflow", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", help="Base output folder (overrides the workflow's `output`).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Overrides train.device.")
def train_command(workflow: Path, out: str | None, device: str | None) -> None:
    """Train a network from a training workflow YAML; rerun to resume (see molfuse.train_workflow)."""
    try:
        from .checkpoints import CheckpointError
        from .errors import WorkflowError
        from .train_workflow import train_sweep
    except ImportError as e:  # lightning / safetensors missing
        raise click.ClickException(str(e)) from None
    try:
        results = train_sweep(workflow, output=out, device=device)
    except (WorkflowError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    for result in results:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.card.get("final_losses", {}).items())
        click.echo(f"{result.card.get('name')}: trained {result.card['steps']} steps; {losses}")
        click.echo(f"checkpoint: {result.checkpoint}  results: {result.folder}")


@main.command()
@click.option("--out", help="Base output folder (default: results).")
@click.option("--name", help="Run name (default: a timestamp).")
def demo(out: str | None, name: str | None) -> None:
    """Run the 2-D demo (workflows/demo.yaml): OR / AND / barycenter / ensemble / baselines."""
    path = demo_path()
    if not path.is_file():
        raise click.ClickException(f"demo workflow not found at {path}; it ships with a source checkout of molfuse "
                                   "(pip install -e . from the repository), or run `molfuse run <file>`")
    result = _run(path, out, name, None)
    _exactness_checks(result.folder)


_HEADLINE = {("ito_single_model", "mae_nats"), ("log_likelihood_exact", "max_abs_err_nats"),
             ("or_mixture_share", "measured"), ("or_temperature", "mean_max_kappa"),
             ("and_equal_density", "mean_abs_gap_exact_nats"), ("and_equal_density", "ito_bias_corrected_nats"),
             ("barycenter_fit_full", "max_abs_weight_err"), ("pathwise_barycenter", "max_abs_score_diff")}


def _exactness_checks(folder: Path) -> None:
    """The closed-form checks of the fusion core (Gaussian mixtures), written to checks.csv."""
    from .campaign.files import _atomic
    from .evaluation import exactness

    import torch

    click.echo("molfuse: closed-form checks of the fusion core (quick settings, 1 thread) ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny 2-D / 16-D tensors: one thread is fastest and steadiest
    try:
        table = exactness.run_all(quick=True)
    finally:
        torch.set_num_threads(threads)
    _atomic(folder / "checks.csv", lambda fh: table.to_csv(fh, index=False), text=True)
    for row in table.itertuples():
        if (row.check, row.metric) in _HEADLINE:
            click.echo(f"  {row.check:<22} {row.settings:<34} {row.metric:<26} {row.value:.4g}")
    click.echo(f"checks: {folder / 'checks.csv'}")


@main.command()
def doctor() -> None:
    """Versions, devices, optional extras, and a 2-second self-check of the sampler."""
    import numpy as np
    import torch

    click.echo(f"molfuse {molfuse.__version__}  ({Path(molfuse.__file__).resolve().parent})")
    click.echo(f"python  {platform.python_version()}  ({platform.platform()})")
    click.echo(f"torch   {torch.__version__}   numpy {np.__version__}")
    cuda = torch.cuda.is_available()
    click.echo(f"device  cpu ok ({torch.get_num_threads()} threads); cuda "
               + (f"ok ({torch.cuda.get_device_name(0)})" if cuda else "not available"))
    for module, package in EXTRAS:
        click.echo(f"extra   {module:<10} {_extra_status(module, package)}")
    abs_err, bias, secs = _self_check()
    ok = abs_err < 1.5 and abs(bias) < 0.5  # a healthy Euler-Maruyama run at 200 steps: about 0.7 / 0.2
    click.echo(f"check   Itô log-density, 2-D Gaussian mixture, 200 steps: mean |estimate - exact| = {abs_err:.3f} "
               f"nats, mean bias {bias:+.3f} nats ({secs:.1f} s) {'ok' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(1)


def _extra_status(module: str, package: str) -> str:
    try:
        mod = importlib.import_module(module)
    except Exception:  # noqa: BLE001 - any import failure means the extra is unusable
        return f"missing (pip install {package})"
    return f"ok ({getattr(mod, '__version__', 'version unknown')})"


def _self_check(n: int = 512, steps: int = 200) -> tuple[float, float, float]:
    """Sample a 2-D mixture with Itô tracking (MATH §3) against its exact log q_{t_end}.

    Returns mean |error|, mean error (nats; both shrink like 1/sqrt(steps)) and seconds.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and immune to a busy machine
    t0 = time.perf_counter()
    gm = molfuse.GaussianMixture([[-2.0, 0.0], [2.0, 1.0]], [0.5, 1.0], [0.4, 0.6], name="doctor")
    res = molfuse.sample(gm, gm.schedule, (n, 2), steps=steps, generator=torch.Generator().manual_seed(0),
                         track_log_density=True)
    err = res.log_density - gm.log_prob(res.x, res.t_end)
    torch.set_num_threads(threads)
    abs_err, bias = err.abs().mean().item(), err.mean().item()
    if not (math.isfinite(abs_err) and math.isfinite(bias)):
        abs_err = bias = math.inf
    return abs_err, bias, time.perf_counter() - t0


if __name__ == "__main__":  # pragma: no cover
    main()
