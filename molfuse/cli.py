"""The ``molfuse`` command: parse arguments, call the library, print where results went.

    molfuse run WORKFLOW.yaml [--out DIR] [--name NAME] [--device cpu|cuda|auto] [--seed N] [--allow-invalid]
    molfuse demo [--out DIR] [--name NAME]
    molfuse train WORKFLOW.yaml [--out DIR] [--device cpu|cuda|auto]   (a `sweep:` trains each run)
    molfuse replicates RUN RUN ... [--metrics a,b] [--out F.csv] [--by-n]
    molfuse report RUN RUN ... --metrics a,b [--methods m,n] [--digits 3]
    molfuse evaluate [LABEL=]PATH ... [--modality M] [--evaluation E.yaml] [--out DIR] [--name NAME] [--overwrite]
    molfuse doctor     (versions, every extra, and which shipped workflows this install can run)

``python -m molfuse`` is the same command.

Exit status: 0 done; 1 refused (the message names the field or file); 2 the run finished but
the sampler failed on some samples (NaN / inf; ``per_sample.csv`` says why; ``--allow-invalid``
makes that 0); 130 interrupted (Ctrl-C). A modality's own verdict (an invalid molecule) is a
metric, not a failure.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
import platform
import re
import time
from pathlib import Path

import click

import molfuse

__all__ = ["main", "demo_path"]

def demo_path() -> Path:
    """``workflows/demo.yaml`` next to the package (a source checkout or editable install)."""
    return Path(molfuse.__file__).resolve().parents[1] / "workflows" / "demo.yaml"


class _Interrupted(click.ClickException):
    exit_code = 130  # the shell's code for Ctrl-C


class _Group(click.Group):
    """The command group, with a message instead of click's bare ``Aborted!`` (which it prints for
    an ``EOFError`` or ``KeyboardInterrupt`` escaping a command) and instead of a traceback for
    a file-system error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EOFError as e:
            raise click.ClickException(f"a file ended before its content did (EOFError: {e or 'no data'}): an empty "
                                       "or truncated input file; check the files the workflow names (data.source, "
                                       "checkpoints) or rerun to redraw a damaged result") from None
        except KeyboardInterrupt:
            raise _Interrupted("interrupted (Ctrl-C); what was finished is kept: rerun the same command to resume "
                               "(molfuse run: with the same --name)") from None
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{where}{e.strerror or e} ({type(e).__name__})") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(molfuse.__version__, prog_name="molfuse")
def main() -> None:
    """molfuse: fuse pre-trained diffusion (score) models and evaluate the result.

    Every run writes one results folder: config.yaml, provenance.json, samples/,
    per_sample.csv, metrics.csv, plots and summary.md. Rerunning the same folder resumes it.
    """


def _run(path: Path, out: str | None, name: str | None, device: str | None, seed: int | None = None,
         allow_invalid: bool = False, executor: str | None = None):
    from .base.tables import markdown_table
    from .campaign import run_workflow
    from .errors import CheckpointError, WorkflowError

    try:
        result = run_workflow(path, out=out, name=name, device=device, seed=seed, executor=executor)
    except (WorkflowError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    m = result.metrics
    shown = [c for key in result.headline for c in m if c == key or (key.endswith("_") and c.startswith(key))]
    cols = ["method", *(["n", "n_valid", "n_failed"] if result.invalid else []), *(c for c in shown if m[c].notna().any()),
            *(c for c in m if c.startswith("weight_") and m[c].notna().any()), "wall_time_s"]
    click.echo(markdown_table(m[list(dict.fromkeys(cols))]))
    for section in result.sections:  # the workflow's reports (by_n, class_share)
        click.echo(section)
    click.echo(f"results: {result.folder}  (summary.md, metrics.csv, per_sample.csv)")
    if result.invalid:
        bad = m.loc[m["n_failed"] > 0, "method"].tolist()
        click.echo(f"molfuse: {result.invalid} of {int(m['n'].sum())} samples failed (NaN / inf; methods: "
                   f"{', '.join(bad)}); the column reason of per_sample.csv says why", err=True)
        if not allow_invalid:
            raise SystemExit(2)
    return result


@main.command()
@click.argument("workflow", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", help="Base output folder (overrides the workflow's `output`).")
@click.option("--name", help="Run name (folder under <out>/<workflow name>/); reuse it to resume.")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Overrides sampler.device.")
@click.option("--seed", type=click.IntRange(min=0), help="Overrides the workflow's seed (a replicate run).")
@click.option("--allow-invalid", is_flag=True, help="Exit 0 even when some samples are invalid (default: exit 2).")
@click.option("--executor", help="Where chunks are drawn: serial (default), local:N (a local Dask cluster of N "
              "worker processes) or a Dask scheduler address (tcp://host:8786). Results do not depend on it.")
def run(workflow: Path, out: str | None, name: str | None, device: str | None, seed: int | None,
        allow_invalid: bool, executor: str | None) -> None:
    """Run a workflow YAML file and write its results folder."""
    _run(workflow, out, name, device, seed, allow_invalid, executor)


@main.command("report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--metrics", "metric_list", required=True, help="Comma-separated metric columns of metrics.csv.")
@click.option("--methods", "method_list", help="Comma-separated methods, in the order wanted (default: all).")
@click.option("--digits", type=click.IntRange(1, 8), default=3, show_default=True, help="Significant digits.")
@click.option("--reference", is_flag=True, help="Append the rows of each run's reference.csv (real data, random walks).")
def report(runs: tuple[Path, ...], metric_list: str, method_list: str | None, digits: int, reference: bool) -> None:
    """A markdown table of replicate runs for the documentation: cells "seed 0 / seed 1", then the
    command and the run folders it came from (so a table in the docs can be regenerated, not copied)."""
    from .campaign.replicates import seed_table
    from .errors import WorkflowError

    split = lambda v: [x.strip() for x in v.split(",") if x.strip()]  # noqa: E731
    try:
        click.echo(seed_table(runs, split(metric_list), split(method_list) if method_list else None, digits, reference))
    except WorkflowError as e:
        raise click.ClickException(str(e)) from None


@main.command("evaluate")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--modality", help="The modality that judges the inputs (default: the one that reads them all).")
@click.option("--evaluation", "evaluation", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML with the evaluation settings: a workflow's `evaluation:` block, or a workflow holding one.")
@click.option("--out", default="results/evaluate", show_default=True, help="Base output folder.")
@click.option("--name", help="Folder under --out (default: a timestamp).")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder of that name.")
def evaluate_command(inputs: tuple[str, ...], modality: str | None, evaluation: Path | None, out: str,
                     name: str | None, overwrite: bool) -> None:
    """Judge samples molfuse did not draw (an SDF / SMILES file, a folder of PDB / mmCIF files, a PNG
    folder or .npy of images) as a workflow judges its own; several inputs side by side.

    Each input is PATH or LABEL=PATH. Writes per_sample.csv (a reason per bad item), metrics.csv,
    pictures, summary.md and provenance.json (input hashes, reference sets)."""
    from .base.tables import markdown_table
    from .campaign.judge import evaluate_samples
    from .errors import WorkflowError
    from .plugins import MissingModalityError, UnknownNameError

    try:
        result = evaluate_samples(inputs, modality, evaluation, out, name, overwrite, say=click.echo)
    except (WorkflowError, MissingModalityError, UnknownNameError) as e:
        raise click.ClickException(str(e)) from None
    m = result.metrics
    click.echo(markdown_table(m[[c for c in m if c not in ("path",) and m[c].notna().any()]]))
    click.echo(f"results: {result.folder}  (summary.md, metrics.csv, per_sample.csv)")


@main.command("train")
@click.argument("workflow", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", help="Base output folder (overrides the workflow's `output`).")
@click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), help="Overrides train.device.")
@click.option("--devices", type=click.IntRange(min=1), help="Processes per node (Lightning DDP: gloo on CPU, NCCL on "
              "GPUs); overrides train.devices. train.batch_size stays the global batch.")
@click.option("--num-nodes", type=click.IntRange(min=1), help="Machines; overrides train.num_nodes.")
def train_command(workflow: Path, out: str | None, device: str | None, devices: int | None,
                  num_nodes: int | None) -> None:
    """Train a network from a training workflow YAML; rerun to resume (see molfuse.training.workflow)."""
    from .errors import CheckpointError, WorkflowError

    try:
        from .training.run import train_sweep
    except ImportError as e:  # lightning / safetensors missing
        raise click.ClickException(f"molfuse train needs the train extra: pip install 'molfuse[train]' ({e})") from None
    try:
        results = train_sweep(workflow, output=out, device=device, devices=devices, num_nodes=num_nodes)
    except (WorkflowError, CheckpointError) as e:
        raise click.ClickException(str(e)) from None
    for result in results:
        if result is None:  # another process of a multi-process run; rank 0 reports
            continue
        losses = ", ".join(f"{k} {v:.4g}" for k, v in result.card.get("final_losses", {}).items())
        click.echo(f"{result.card.get('name')}: trained {result.card['steps']} steps; {losses}")
        click.echo(f"checkpoint: {result.checkpoint}  results: {result.folder}")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--metrics", "metric_list", help="Comma-separated metrics for the table (default: the first eight "
              "numeric metric columns).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the long table (method, metric, mean, sd, min, max, n_runs) as CSV.")
@click.option("--by-n", "by_n", is_flag=True, help="Pool the methods named <family>_n<N>_seed<S> over their draws "
              "and the runs: one n × family table per metric (with --out: family, n, metric, ..., n_values).")
def replicates(runs: tuple[Path, ...], metric_list: str | None, out: Path | None, by_n: bool) -> None:
    """Combine replicate runs of one workflow (molfuse run ... --seed k): mean ± sd per method."""
    from .base.io import atomic_write
    from .campaign.replicates import by_n_replicate_table, by_n_replicates, combine_replicates, replicate_table
    from .errors import WorkflowError

    try:
        combined = by_n_replicates(runs) if by_n else combine_replicates(runs)
        if metric_list:
            metrics = [m.strip() for m in metric_list.split(",") if m.strip()]
        else:
            present = set(combined["metric"])
            metrics = [m for m in _headline(runs[0]) if m in present]
        click.echo(f"{len(runs)} runs, seeds {combined.attrs['seeds']}; mean ± sample sd over "
                   + ("the draws of each n and the runs" if by_n else "runs"))
        if by_n:
            for m in metrics:
                click.echo(f"\n`{m}`\n\n" + by_n_replicate_table(combined, m))
        else:
            click.echo(replicate_table(combined, metrics))
    except WorkflowError as e:
        raise click.ClickException(str(e)) from None
    if out is not None:
        atomic_write(out, lambda fh: fh.write(combined.to_csv(index=False).encode()))
        click.echo(f"wrote {out}")


def _headline(run: Path) -> list[str]:
    """The first eight numeric metric columns of a run's metrics.csv, bookkeeping left out."""
    import pandas as pd

    m = pd.read_csv(run / "metrics.csv")
    skip = {"n", "n_valid", "n_failed", "wall_time_s", "score_calls_per_step"}
    return [c for c in m.columns if c not in skip and pd.api.types.is_numeric_dtype(m[c])][:8]


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
    import torch

    from .base.io import atomic_write
    from .evaluation import exactness

    click.echo("molfuse: closed-form checks of the fusion core (quick settings, 1 thread) ...")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny 2-D / 16-D tensors: one thread is fastest and steadiest
    try:
        table = exactness.run_all(quick=True)
    finally:
        torch.set_num_threads(threads)
    atomic_write(folder / "checks.csv", lambda fh: table.to_csv(fh, index=False), text=True)
    for row in table.itertuples():
        if (row.check, row.metric) in _HEADLINE:
            click.echo(f"  {row.check:<22} {row.settings:<34} {row.metric:<26} {row.value:.4g}")
    click.echo(f"checks: {folder / 'checks.csv'}")


@main.command()
def doctor() -> None:
    """Versions, devices, every optional extra, which shipped workflows this install can run, and a
    2-second self-check of the sampler."""
    import numpy as np
    import torch

    click.echo(f"molfuse {molfuse.__version__}  ({Path(molfuse.__file__).resolve().parent})")
    click.echo(f"python  {platform.python_version()}  ({platform.platform()})")
    click.echo(f"torch   {torch.__version__}   numpy {np.__version__}")
    cuda = torch.cuda.is_available()
    click.echo(f"device  cpu ok ({torch.get_num_threads()} threads); cuda "
               + (f"ok ({torch.cuda.get_device_name(0)})" if cuda else "not available"))
    extras = {extra: _extra_missing(reqs) for extra, reqs in _extras().items()}
    for extra, (found, missing) in extras.items():
        state = f"MISSING {', '.join(missing)}: pip install 'molfuse[{extra}]'" if missing else "ok"
        click.echo(f"extra   {extra:<13} {state}" + ("" if missing else f" ({', '.join(found)})"))
    from . import plugins

    for m in plugins.modalities():
        missing = m.missing()
        status = "ok" if not missing else f"MISSING {', '.join(missing)}: {m.install_hint()}"
        parts = ", ".join(f"{len(getattr(m, k))} {k.replace('_', ' ')}" for k in ("architectures", "data_kinds",
                                                                               "model_kinds") if getattr(m, k))
        click.echo(f"modality {m.name:<9} {status}" + (f" ({parts})" if parts and not missing else ""))
    for name, why in plugins.unavailable().items():
        click.echo(f"modality {name:<9} UNAVAILABLE: {why}")
    _shipped_workflows(extras.get("train", ((), ()))[1])
    abs_err, bias, secs = _self_check()
    ok = abs_err < 1.5 and abs(bias) < 0.5  # a healthy Euler-Maruyama run at 200 steps: about 0.7 / 0.2
    click.echo(f"check   Itô log-density, 2-D Gaussian mixture, 200 steps: mean |estimate - exact| = {abs_err:.3f} "
               f"nats, mean bias {bias:+.3f} nats ({secs:.1f} s) {'ok' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(1)


_REQ = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")  # name[extras] of a requirement
_FOR_EXTRA = r"""extra\s*==\s*["']({})["']"""  # the marker of a requirement that belongs to an extra


def _extras() -> dict[str, list[str]]:
    """molfuse's optional extras and their requirements (``lightning>=2.4``), as installed (the
    package metadata), else from the pyproject.toml of a source checkout."""
    try:
        meta = importlib.metadata.metadata("molfuse")
    except importlib.metadata.PackageNotFoundError:
        import tomllib

        path = Path(molfuse.__file__).resolve().parents[1] / "pyproject.toml"
        return dict(tomllib.loads(path.read_text())["project"]["optional-dependencies"]) if path.is_file() else {}
    out: dict[str, list[str]] = {e: [] for e in meta.get_all("Provides-Extra") or []}
    for req in meta.get_all("Requires-Dist") or []:
        m = re.search(_FOR_EXTRA.format("[^\"']+"), req)
        if m:
            out.setdefault(m[1], []).append(req.split(";")[0].strip())
    return out


def _distributions(req: str) -> list[str]:
    """The distributions a requirement needs: its own, and those of its extras (``dask[distributed]``)."""
    name, extras = _REQ.match(req).groups()
    try:
        deps = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:
        deps = []
    out = [name]
    for extra in filter(None, (e.strip() for e in (extras or "").split(","))):
        out += [_REQ.match(d)[1] for d in deps if re.search(_FOR_EXTRA.format(re.escape(extra)), d)]
    return list(dict.fromkeys(out))


def _extra_missing(reqs: list[str]) -> tuple[list[str], list[str]]:
    """``(found "name version", missing names)`` of an extra's requirements: a distribution counts
    when it is installed and its top-level modules import."""
    found, missing = [], []
    norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731 - PEP 503 names
    modules: dict[str, list[str]] = {}
    for top, dists in importlib.metadata.packages_distributions().items():
        for d in dists:
            modules.setdefault(norm(d), []).append(top)
    for name in dict.fromkeys(d for req in reqs for d in _distributions(req)):
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        tops = [t for t in modules.get(norm(name), []) if not t.startswith("_")]
        if any(importlib.util.find_spec(t) is None for t in tops):
            missing.append(name)
        else:
            found.append(f"{name} {version}")
    return found, missing


def _shipped_workflows(train_missing: list[str]) -> None:
    """Each workflow under ``workflows/`` read as ``molfuse run`` / ``molfuse train`` would read it
    (nothing is built or run): ok, or why this install cannot run it and what to install."""
    import warnings

    from .base.io import read_yaml
    from .campaign import load_workflow
    from .errors import CheckpointError, WorkflowError
    from .training.workflow import expand_sweep, load_train_workflow

    root = demo_path().parent
    paths = sorted(root.rglob("*.yaml")) if root.is_dir() else []
    if not paths:
        click.echo("workflow (none shipped with this install: a source checkout has workflows/)")
        return
    bad = 0
    for path in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. few steps: a run's concern, not the install's
                if "methods" in (read_yaml(path) or {}):
                    load_workflow(path, run_name="doctor")
                else:
                    if train_missing:
                        raise WorkflowError(f"training needs {', '.join(train_missing)}: pip install 'molfuse[train]'")
                    for one in expand_sweep(path):
                        load_train_workflow(one)
            why = None
        except (WorkflowError, CheckpointError) as e:
            why = str(e)
        bad += why is not None
        state = "ok" if why is None else f"CANNOT RUN HERE: {why}"
        click.echo(f"workflow {str(path.relative_to(root)):<44} {state}")
    click.echo(f"workflow {len(paths) - bad} of {len(paths)} shipped workflows can run here"
               + (f"; {bad} cannot (what to install is above)" if bad else ""))


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
