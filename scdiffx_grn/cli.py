"""``scdiffx-grn``: the command line, a thin layer over the Python API.

Commands: ``train``, ``generate``, ``translate``, ``grn``, ``screen``, ``biomarkers``, ``evaluate``,
``demo``. Every command takes ``--config FILE`` (YAML or JSON mapping option names to values; the
command line wins over the file), ``--seed``, ``--device`` where a model runs, ``--no-progress``
and ``--debug``.

Paired input is either one ``--data FILE.h5mu`` (or a built-in data set name: ``mouse_mop``,
``bmmc``) or ``--rna X.h5ad --atac Y.h5ad``. Outputs are written atomically (a crash never
leaves a half-written file or folder).

Errors in the input (:class:`scdiffx_grn.ScdxError`, missing files) print one line
``error: <message>`` on stderr and exit with code 2; ``--debug`` shows the traceback instead.
``demo`` exits with code 1 when one of its report sections failed (the report shows which).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from ._errors import OptionError, ScdxError
from ._samplers import SAMPLER_KINDS, sampler_names
from ._vocab import DIRECTIONS, READOUTS, check_option, split_direction

__all__ = ["app", "main"]

EXIT_INPUT_ERROR = 2
EXIT_SECTION_FAILED = 1
BUILTIN_DATA = ("mouse_mop", "bmmc")

app = typer.Typer(
    name="scdiffx-grn",
    help="Generation, translation, gene-regulatory networks, in-silico perturbation and biomarkers "
         "for paired single-cell RNA + ATAC with a scDiffusion-X model. Start with `scdiffx-grn demo`.",
    add_completion=False,
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


# ----------------------------------------------------------------------------- shared plumbing
def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


def _info(msg: str) -> None:
    typer.echo(msg, err=True)


# hints of the Python API that have another form on the command line
_CLI_HINTS = (
    ("or load with require_counts=False.", "(the command line needs raw counts: store them in layers['counts'] or "
     "X of the input file; in Python, datasets.read_multiome(..., require_counts=False) loads other values)."),
    ("Pass join='inner' to keep the shared cells, or fix the barcodes.",
     "Fix the barcodes, or keep only the shared cells (in Python: datasets.read_multiome(..., join='inner')) "
     "and write them to one .h5mu for --data."),
    ("pass overwrite=True to replace it", "pass --overwrite to replace it"),
    ("pass on_unknown='report' to skip them (they are listed in the report)",
     "pass --on-unknown report to skip them (they are listed in report.parquet)"),
    ("Lower tmin, or use a network with more of the data's genes.",
     "Use a --reference network with more of the data's genes (in Python, tl.regulator_activity(..., tmin=...) "
     "lowers the minimum regulon size)."),
)


def _one_line(exc: BaseException) -> str:
    msg = str(exc) if str(exc) else type(exc).__name__
    if isinstance(exc, FileNotFoundError) and not isinstance(exc, ScdxError) and exc.filename:
        msg = f"file not found: {exc.filename}"
    elif isinstance(exc, OSError) and not isinstance(exc, ScdxError):
        why = exc.strerror or msg
        msg = f"{why}: {exc.filename}" if exc.filename else why
    for py, cli in _CLI_HINTS:
        msg = msg.replace(py, cli)
    return " ".join(msg.split())


def _config_callback(ctx: typer.Context, param: typer.CallbackParam, value: str | None):
    """Eager ``--config`` handler: the file's values become the defaults of the command's options."""
    if not value:
        return value
    path = Path(value)
    if not path.is_file():
        raise typer.BadParameter(f"config file {value!r} does not exist", ctx=ctx, param=param)
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            conf = json.loads(text)
        else:
            import yaml

            conf = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is a bad parameter
        raise typer.BadParameter(f"cannot parse {value!r}: {' '.join(str(e).split())}", ctx=ctx, param=param)
    if conf is None:
        conf = {}
    if not isinstance(conf, dict):
        raise typer.BadParameter(f"{value!r} must hold a mapping of option names to values", ctx=ctx, param=param)
    known = {p.name for p in ctx.command.params if p.name not in ("config", "help")}
    conf = {str(k).replace("-", "_").lstrip("_"): v for k, v in conf.items()}
    unknown = sorted(set(conf) - known)
    if unknown:
        raise typer.BadParameter(f"{value!r} has unknown option(s) {unknown}; known: {sorted(known)}",
                                 ctx=ctx, param=param)
    ctx.default_map = {**(ctx.default_map or {}), **conf}
    return value


ConfigOpt = typer.Option(None, "--config", help="YAML or JSON file of option values (keys = option names, "
                         "e.g. n_steps: 20); options given on the command line override it.",
                         callback=_config_callback, is_eager=True, show_default=False)
SeedOpt = typer.Option(0, "--seed", help="Seed of every random choice (subsampling, noise, training).")
DeviceOpt = typer.Option("auto", "--device", help="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")
NoProgressOpt = typer.Option(False, "--no-progress", help="Hide progress bars (also: SCDX_PROGRESS=0).")
DebugOpt = typer.Option(False, "--debug", help="Show the full traceback on errors.")
DataOpt = typer.Option(None, "--data", "-d", help="Paired input: an .h5mu file, a 10x .h5 / matrix folder, or a "
                       f"built-in data set ({', '.join(BUILTIN_DATA)}). Alternatively give --rna and --atac.")
RnaOpt = typer.Option(None, "--rna", help="RNA .h5ad (cells x genes, raw counts in layers['counts'] or X); "
                      "use together with --atac.")
AtacOpt = typer.Option(None, "--atac", help="ATAC .h5ad (cells x peaks, counts or binary); use together with --rna.")
NCellsOpt = typer.Option(None, "--n-cells", help="Subsample this many cells (stratified by --groupby when "
                         "present; default: all).")
ModelOpt = typer.Option(..., "--model", "-m", help="Model folder saved by `scdiffx-grn train` / ScDiffusionX.save, "
                        "or the name of a checkpoint shipped with the package (mouse_mop_demo).")


def _command(fn: Callable) -> Callable:
    """Apply common settings and turn input errors into one line on stderr + exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = bool(kwargs.get("debug", False)) or os.environ.get("SCDX_DEBUG") == "1"
        from ._settings import settings

        if kwargs.get("no_progress") or os.environ.get("SCDX_PROGRESS") == "0":
            settings.progress = False
        if "seed" in kwargs and kwargs["seed"] is not None:
            settings.seed = int(kwargs["seed"])
        if kwargs.get("device"):
            settings.device = str(kwargs["device"])
        if not debug:  # library deprecation chatter is not for command-line users
            import warnings

            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            _check_outputs_are_not_inputs(kwargs)
            return fn(*args, **kwargs)
        except (ScdxError, OSError) as e:  # OSError: unreadable input, disk full, ...
            if debug:
                raise
            _err(_one_line(e))
            raise typer.Exit(EXIT_INPUT_ERROR) from None
        except RuntimeError as e:  # torch reports a failed write (disk full) as RuntimeError
            from ._io import _output_error

            err = _output_error(e, Path(str(kwargs.get("out") or "output")))
            if err is None or debug:
                raise
            _err(_one_line(err))
            raise typer.Exit(EXIT_INPUT_ERROR) from None

    return wrapper


# the options of the commands that name what they read and what they write: no command writes onto one of
# its own inputs (checked for every command before it starts, with or without --overwrite)
_INPUT_OPTIONS = {"data": "--data", "rna": "--rna", "atac": "--atac", "model": "--model", "config": "--config",
                  "tss": "--tss", "fasta": "--fasta", "motifs": "--motifs", "tf_prior": "--tf-prior",
                  "grn_file": "--grn", "gene_sets": "--gene-sets", "targets": "--target"}
_OUTPUT_OPTIONS = {"out": "--out", "metrics": "--metrics", "checkpoint_dir": "--checkpoint-dir"}


def _check_outputs_are_not_inputs(kwargs: dict[str, Any]) -> None:
    """Refuse an --out (--metrics, --checkpoint-dir) that is, or holds, one of the command's inputs
    (:func:`scdiffx_grn._io.check_not_input`)."""
    from ._io import check_not_input

    inputs: dict[str, Any] = {}
    for name, opt in _INPUT_OPTIONS.items():
        v = kwargs.get(name)
        if name == "targets":  # --target @FILE reads FILE
            v = [str(t)[1:] for t in (v or []) if str(t).startswith("@")]
        elif name == "model" and v and not Path(v).exists():  # a shipped checkpoint by name
            from .model._checkpoint import PRETRAINED, pretrained_path

            v = pretrained_path(v) if v in PRETRAINED else None
        inputs[opt] = v
    check_not_input({opt: kwargs.get(name) for name, opt in _OUTPUT_OPTIONS.items()}, inputs)


def _load_mdata(data: str | None, rna: Path | None, atac: Path | None, *, n_cells: int | None = None,
                seed: int = 0, groupby: str | None = "cell_type", required: bool = True):
    """Read the paired input given by --data or --rna/--atac (``n_cells``: a subsample; more cells than
    the data holds is capped, with a warning naming the cap)."""
    from . import datasets
    from ._validate import check_count

    if n_cells is not None:
        n_cells = check_count("--n-cells", n_cells, 1)

    if data is not None and (rna is not None or atac is not None):
        raise OptionError("give either --data or --rna/--atac, not both")
    if data is None and (rna is None) != (atac is None):
        raise OptionError("--rna and --atac must be given together")
    if data is None and rna is None:
        if not required:
            return None
        raise OptionError("no input data: give --data FILE.h5mu (or a built-in name: "
                          f"{', '.join(BUILTIN_DATA)}) or --rna X.h5ad --atac Y.h5ad")
    if data is not None and data in BUILTIN_DATA and not Path(data).exists():
        mdata = getattr(datasets, data)(n_cells=n_cells, seed=seed)
        _warn_n_cells_cap(n_cells, mdata.n_obs, data)
        return mdata
    if data is not None:
        if not Path(data).exists():
            import difflib

            from ._errors import DataFileMissingError

            near = difflib.get_close_matches(data, BUILTIN_DATA, n=1, cutoff=0.6)
            raise DataFileMissingError(
                f"--data {data!r}: no such file, and not a built-in data set name (built-in: "
                f"{', '.join(BUILTIN_DATA)})" + (f"; did you mean {near[0]!r}?" if near else ""))
        mdata = datasets.read_multiome(data)
    else:
        for p in (rna, atac):
            if not Path(p).exists():
                from ._errors import DataFileMissingError

                raise DataFileMissingError(f"file {str(p)!r} does not exist")
        mdata = datasets.read_multiome(rna=str(rna), atac=str(atac))
    _warn_n_cells_cap(n_cells, mdata.n_obs, data or f"{rna} / {atac}")
    if n_cells is not None and n_cells < mdata.n_obs:
        import numpy as np

        from ._registry import labels
        from .pp import stratified_subsample

        if _has_label(mdata, groupby):  # stratified by the labels (the registry's lookup), else at random
            idx = np.sort(stratified_subsample(labels(mdata, groupby).to_numpy(), n_cells, seed=seed))
        else:
            idx = np.sort(np.random.default_rng(seed).choice(mdata.n_obs, n_cells, replace=False))
        mdata = mdata[idx].copy()
    return mdata


def _warn_n_cells_cap(n_cells: int | None, n_obs: int, what) -> None:
    if n_cells is not None and n_cells > n_obs:
        _info(f"warning: --n-cells {n_cells:,} is more than the {n_obs:,} cells of {what}: using all {n_obs:,}")


def _has_label(mdata, key: str | None) -> bool:
    """Whether label column ``key`` is where :func:`scdiffx_grn._registry.labels` looks for it (the
    MuData's obs, then its modalities' obs); the labels themselves are read with that function."""
    if not key:
        return False
    return key in mdata.obs.columns or any(key in a.obs.columns for a in getattr(mdata, "mod", {}).values())


def _load_model(path: str, device: str):
    from . import ScDiffusionX

    return ScDiffusionX.load(path, device=None if device == "auto" else device)


def _prepare_for_model(model, mdata):
    """Restrict data to the model's features and register it with the model's labels."""
    from . import ScDiffusionX

    mdata = model.subset_to_model(mdata)
    keys = [k for k in model.config.label_keys if _has_label(mdata, k)]
    ScDiffusionX.setup_mudata(mdata, labels=keys)
    return mdata


def _read_table(path: Path, what: str):
    """A csv / tsv / txt (separator detected) or parquet table; errors name the file."""
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else None
        return pd.read_csv(path, sep=sep, engine="python" if sep is None else "c")
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, ImportError) as e:
        why = " ".join(str(e).split())[:200]
        raise ScdxError(f"{what} {str(path)!r} could not be read as a table: {why}") from None


def _check_groups(mdata, groupby: str, groups: list[str] | None) -> None:
    """Before the work: the --groupby column exists and the --cell-type values are among its values."""
    from ._errors import MissingLabelError, _fmt_items
    from ._registry import labels

    if not _has_label(mdata, groupby):
        raise MissingLabelError(f"--groupby column {groupby!r} not found in the data (obs columns: "
                                f"{_fmt_items(mdata.obs.columns, 15) or 'none'})")
    have = sorted(set(labels(mdata, groupby)))  # unlabelled cells raise, naming them
    if groups:
        bad = [g for g in groups if g not in have]
        if bad:
            raise MissingLabelError(f"--cell-type {_fmt_items(bad)} not among the values of {groupby!r}: "
                                    f"{_fmt_items(have, 20)}")


def _default_tfs(mdata, organism: str) -> list[str]:
    """The default TFs of ``grn`` (``--tf`` not given): DoRothEA (A-C) TFs with a target among the
    genes, most targets first, in the data's spelling (:func:`scdiffx_grn.datasets.tf_list`)."""
    from .datasets import tf_list

    return tf_list(mdata.mod["rna"].var_names, organism=organism, source="dorothea", levels="ABC", min_targets=1)


def _split_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return out


def _write_h5(obj, path: Path) -> None:
    from ._io import atomic_path

    with atomic_path(path, suffix=path.suffix) as tmp:
        obj.write(tmp)


def _write_table(df, path: Path) -> None:
    from ._io import atomic_path

    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False, sep="\t" if path.suffix == ".tsv" else ",")


def _save_fig(fig, path: Path, dpi: int = 120) -> None:
    import matplotlib.pyplot as plt

    from ._io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _use_agg() -> None:
    import matplotlib

    matplotlib.use("Agg")


def _threads(n: int | None = None) -> None:
    """Set torch's intra-op threads: ``n`` when given (> 0), else ``$SCDX_THREADS`` when set.

    Small batches on a shared or busy CPU run far faster single-threaded (several threads
    spin-wait for each other when the cores are taken by other processes).
    """
    from ._settings import _apply_threads, _parse_threads, settings

    if n:
        settings.threads = n
    elif os.environ.get("SCDX_THREADS"):
        settings.threads = _parse_threads(os.environ["SCDX_THREADS"])
    if settings.threads:
        _apply_threads()


# files each folder writer produces (glob patterns; the first is its signature): a folder of an
# older release without a manifest, holding the signature and only these, is recognised as ours
MODEL_FILES = ("model.pt", "config.json", "rna_var_names.txt", "atac_var_names.txt", "training.json")
GRN_FILES = ("peak_gene.csv", "tf_gene.csv", "tf_gene.graphml", "tf_gene.*.graphml", "tf_specificity.png")
BIOMARKER_FILES = ("biomarkers.csv", "regulators.csv", "regulator_dotplot.png", "enrichment.csv")
EVAL_FILES = ("report.md", "table.csv", "summary.csv", "comparison.csv")
OverwriteOpt = typer.Option(False, "--overwrite", help="Write into an existing folder that scdiffx-grn did not "
                            "create (its other files are kept; files of the same name are refused).")


def _check_out_file(path: Path | None, overwrite: bool) -> None:
    from ._io import check_output_file

    if path is not None:
        check_output_file(path, overwrite=overwrite)


# ----------------------------------------------------------------------------- commands
def _choices(name: str, values) -> type[Enum]:
    """The typer choices of an option: a ``str`` Enum generated from the library's accepted values."""
    return Enum(name, {str(v): str(v) for v in values}, type=str)


#: --sampler: every registered sampler (the one registry, scdiffx_grn._samplers), of either kind
Sampler = _choices("Sampler", sampler_names())
#: --direction: the translation directions of the shared vocabulary (scdiffx_grn._vocab)
Direction = _choices("Direction", DIRECTIONS)
_SAMPLERS_BY_KIND = "; ".join(f"{k} models: {', '.join(sampler_names(k))}" for k in SAMPLER_KINDS)


def _sampler(choice, model, default) -> str:
    """The sampler name of ``--sampler`` (``None``: ``default(model.config)``, the default of the model's kind)."""
    return choice.value if choice is not None else default(model.config)


@app.command()
@_command
def train(
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (written atomically)."),
    data: str | None = DataOpt, rna: Path | None = RnaOpt, atac: Path | None = AtacOpt,
    n_cells: int | None = NCellsOpt,
    labels: list[str] = typer.Option(["cell_type"], "--label", "-l",
                                     help="obs column(s) to condition on (repeatable or comma-separated); "
                                          "'none' for an unconditional model."),
    rna_layer: str = typer.Option("counts", help="RNA layer with raw counts ('X' to use X)."),
    atac_layer: str = typer.Option("counts", help="ATAC layer with counts or binary values ('X' to use X)."),
    n_peaks: int | None = typer.Option(None, help="Keep only the N most frequently open peaks (default: all)."),
    ae_epochs: int = typer.Option(40, help="Autoencoder training epochs."),
    diffusion_steps: int = typer.Option(20_000, help="Denoiser optimiser steps."),
    batch_size: int = typer.Option(256, help="Cells per training step."),
    lr: float = typer.Option(5e-4, help="Denoiser learning rate (AdamW)."),
    ae_lr: float = typer.Option(1e-3, help="Autoencoder learning rate (AdamW)."),
    preset: str | None = typer.Option(None, "--preset", help="Training recipe: 'auto' (times a few steps, then "
                                      "picks epochs / steps that fit --time-budget; the estimate is printed "
                                      "before training; it also sizes the denoiser for the device and budget "
                                      "unless --model-option sets width / n_layers / n_heads) or a named preset "
                                      "(demo, full, tiny, bmmc...). Replaces --ae-epochs, --diffusion-steps, "
                                      "--batch-size and --lr."),
    time_budget: float | None = typer.Option(None, help="Seconds of training for --preset auto (default: the "
                                             "full recipe on a GPU, 3600 on a CPU)."),
    split_key: str | None = typer.Option(None, help="Train only on cells with obs[split_key] == --train-value."),
    train_value: str = typer.Option("train", help="Value of --split-key marking training cells."),
    model_option: list[str] = typer.Option([], "--model-option", help="Model config override KEY=VALUE "
                                           "(repeatable; e.g. width=64, n_layers=3, latent_dim=32)."),
    checkpoint_dir: Path | None = typer.Option(None, help="Write resumable training checkpoints here."),
    resume: bool = typer.Option(False, help="Resume from --checkpoint-dir."),
    half: bool = typer.Option(False, help="Store weights as float16 (half the size)."),
    precision: str = typer.Option("auto", help="'auto' (bf16 autocast on CUDA, float32 on CPU), 'fp32' or 'bf16' "
                                  "(see docs/training.md)."),
    overwrite: bool = typer.Option(False, help="Replace an existing model folder (or write into a folder that "
                                   "scdiffx-grn did not create; its other files are kept)."),
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Train a scDiffusion-X model on paired RNA + ATAC counts and save it."""
    import numpy as np

    from . import ScDiffusionX
    from .model import ModelConfig

    from ._errors import OutputError
    from ._io import atomic_write_json, check_output_dir, check_writable, output_dir

    _threads()
    from .model._train import autocast_dtype

    autocast_dtype(precision, "cpu")  # a bad --precision fails before any data is read
    from .model._autopreset import check_preset

    check_preset(preset, time_budget)  # before loading data
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out} exists; pass --overwrite to replace the model there (other files in the folder "
                          "are kept), or choose another --out")
    check_output_dir(out, overwrite=overwrite, known=MODEL_FILES, what="model folder")  # before training
    if checkpoint_dir is not None:
        check_writable(checkpoint_dir)
    overrides: dict[str, Any] = {}
    fields = set(ModelConfig().to_dict())
    for kv in model_option:
        if "=" not in kv:
            raise OptionError(f"--model-option needs KEY=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        k = k.strip().replace("-", "_")
        if k not in fields:
            raise OptionError(f"unknown model option {k!r}; known: {sorted(fields)}")
        try:
            import yaml

            overrides[k] = yaml.safe_load(v)
        except Exception:  # noqa: BLE001
            overrides[k] = v
        if isinstance(overrides[k], list):
            overrides[k] = tuple(overrides[k])
    lab = [x for x in _split_list(labels) if x.lower() != "none"]
    mdata = _load_mdata(data, rna, atac, n_cells=n_cells, seed=seed, groupby=lab[0] if lab else None)
    if n_peaks is not None and n_peaks < mdata.mod["atac"].n_vars:
        from ._registry import labels as registry_labels
        from ._registry import layer_matrix

        # the --atac-layer counts (a missing layer raises, naming the layers there)
        A = layer_matrix(mdata.mod["atac"], None if atac_layer == "X" else atac_layer, what="the ATAC data")
        rows = np.ones(mdata.n_obs, bool)
        if split_key:  # peaks are chosen on the training cells; a missing --split-key column raises
            rows = registry_labels(mdata, split_key).to_numpy() == str(train_value)
        freq = np.asarray((A[rows] > 0).mean(0)).ravel()
        keep = np.sort(np.argsort(-freq, kind="stable")[:n_peaks])
        mdata.mod["atac"] = mdata.mod["atac"][:, keep].copy()
        mdata.update()
    ScDiffusionX.setup_mudata(mdata, labels=lab, rna_layer=None if rna_layer == "X" else rna_layer,
                              atac_layer=None if atac_layer == "X" else atac_layer)
    _info(f"training on {mdata.n_obs:,} cells, {mdata.mod['rna'].n_vars:,} genes, {mdata.mod['atac'].n_vars:,} "
          f"peaks; labels {lab or 'none'}")
    if preset == "auto" and not {"width", "n_layers", "n_heads"} & set(overrides):
        from .model._sizing import denoiser_size

        overrides.update(denoiser_size(mdata, time_budget=time_budget, device=None if device == "auto" else device,
                                       batch_size=batch_size, split_key=split_key, train_value=train_value,
                                       **overrides))
    model = ScDiffusionX(mdata, seed=seed, **overrides)
    t0 = time.perf_counter()
    model.train(ae_epochs=ae_epochs, diffusion_steps=diffusion_steps, batch_size=batch_size, lr=lr, ae_lr=ae_lr,
                seed=seed, device=None if device == "auto" else device, split_key=split_key,
                train_value=train_value, checkpoint_dir=checkpoint_dir, resume=resume, precision=precision,
                preset=preset, time_budget=time_budget)
    seconds = time.perf_counter() - t0
    plan = getattr(model, "train_plan", None) if preset is not None else None
    if plan is not None:
        ae_epochs, diffusion_steps, batch_size = plan["ae_epochs"], plan["diffusion_steps"], plan["batch_size"]
    with output_dir(out, overwrite=overwrite, known=MODEL_FILES, what="model folder") as tmp:
        model.save(tmp, overwrite=True, half=half)
        atomic_write_json(tmp / "training.json", {
            "command": "scdiffx-grn train", "data": data if data is not None else {"rna": rna, "atac": atac},
            "n_cells": int(mdata.n_obs), "n_genes": int(mdata.mod["rna"].n_vars),
            "n_peaks": int(mdata.mod["atac"].n_vars), "labels": lab, "seed": seed, "device": device,
            "train": {"ae_epochs": ae_epochs, "diffusion_steps": diffusion_steps, "batch_size": batch_size,
                      "lr": lr, "ae_lr": ae_lr, "split_key": split_key, "train_value": train_value,
                      "rna_layer": rna_layer, "atac_layer": atac_layer, "resume": resume, "half": half,
                      "preset": preset, "time_budget": time_budget, "plan": plan},
            "model_overrides": overrides, "timing": dict(getattr(model, "timing", {}) or {}),
            "seconds": round(seconds, 2), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    _info(f"trained in {seconds:.1f} s")
    typer.echo(str(out))


@app.command()
@_command
def generate(
    model: str = ModelOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Output .h5mu (rna counts + atac binary / probabilities)."),
    n_cells: int = typer.Option(1000, "--n-cells", "-n", help="Cells to generate (with --cell-type: per type)."),
    cell_type: list[str] = typer.Option([], "--cell-type", "-c",
                                        help="Generate cells of this type (repeatable or comma-separated; "
                                             "TYPE=N sets a per-type count). Default: the training composition."),
    label_key: str | None = typer.Option(None, help="Label column --cell-type refers to (default: the "
                                            "model's first label)."),
    sampler: Sampler | None = typer.Option(None, help=f"Sampler ({_SAMPLERS_BY_KIND}; default: dpm++ for "
                                           "diffusion models, euler for flow models)."),
    n_steps: int = typer.Option(20, help="Sampler steps."),
    guidance_scale: float = typer.Option(2.0, help="Classifier-free guidance scale (1 = none)."),
    mean: bool = typer.Option(False, "--mean", help="Write expected values instead of sampled counts."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Generate paired RNA + ATAC cells from a trained model."""
    _threads()
    _check_out_file(out, overwrite)
    m = _load_model(model, device)
    if cell_type:
        key = label_key or (m.config.label_keys[0] if m.config.label_keys else None)
        if key is None:
            raise OptionError("the model is unconditional: --cell-type cannot be used")
        labels: list[str] = []
        for item in _split_list(cell_type):
            name, _, cnt = item.rpartition("=") if "=" in item else (item, "", "")
            try:
                k = int(cnt) if cnt else n_cells
            except ValueError:
                raise OptionError(f"--cell-type {item!r}: the count after '=' must be an integer") from None
            labels += [name] * k
        lab: Any = {key: labels}
    else:
        lab = int(n_cells)
    from .model import default_sampler

    gen = m.generate(lab, sampler=_sampler(sampler, m, default_sampler), n_steps=n_steps, guidance_scale=guidance_scale, seed=seed,
                     sample_counts=not mean)
    _write_h5(gen, out)
    _info(f"generated {gen.n_obs:,} cells")
    typer.echo(str(out))


@app.command()
@_command
def translate(
    model: str = ModelOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Output .h5ad of the predicted modality (X = the "
                             "posterior mean; with --n-samples N, decoded from the samples' latent mean, "
                             "layers['std'] over samples)."),
    data: str | None = DataOpt, rna: Path | None = RnaOpt, atac: Path | None = AtacOpt,
    n_cells: int | None = NCellsOpt,
    direction: Direction = typer.Option(Direction("atac->rna"), help="Translation direction."),
    n_samples: int = typer.Option(0, "--n-samples", help="0 (default): the posterior mean (one "
                                  "denoiser call per noise, the point prediction); N > 0: N posterior samples "
                                  "per cell by --sampler / --n-steps, for uncertainty."),
    n_noise: int = typer.Option(4, help="Noises averaged by the posterior-mean readout."),
    source_guidance: float = typer.Option(1.0, help="Classifier-free guidance over the observed modality "
                                          "(1: none; 2-4 sharpen single samples)."),
    sampler: Sampler | None = typer.Option(None, help=f"Sampler of --n-samples ({_SAMPLERS_BY_KIND}; default: "
                                           "ddim for diffusion models, euler for flow models)."),
    n_steps: int = typer.Option(50, help="Sampler steps (with --n-samples)."),
    use_labels: bool = typer.Option(False, help="Also condition on the model's label columns found in the data."),
    calibrated: bool = typer.Option(False, "--calibrated", help="rna->atac posterior mean: apply the model's "
                                    "fitted calibration or readout head (model.calibrate_translation; the shipped "
                                    "checkpoint has a readout head)."),
    metrics: Path | None = typer.Option(None, help="Also compare with the observed target modality and write "
                                           "the metrics table here (.csv)."),
    groupby: str = typer.Option("cell_type", help="Cell-type column for per-type metrics."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing output / metrics files."),
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Translate ATAC -> RNA or RNA -> ATAC, cell by cell."""
    _threads()
    _check_out_file(out, overwrite)
    _check_out_file(metrics, overwrite)
    if metrics is not None and Path(os.path.abspath(metrics)) == Path(os.path.abspath(out)):
        raise OptionError(f"--metrics and --out are the same file {str(out)!r}")
    m = _load_model(model, device)
    mdata = _load_mdata(data, rna, atac, n_cells=n_cells, seed=seed, groupby=groupby)
    mdata = _prepare_for_model(m, mdata)
    if use_labels:
        from ._errors import MissingLabelError

        keys = list(m.config.label_keys)
        cols = set(mdata.obs.columns) | {c for a in mdata.mod.values() for c in a.obs.columns}
        if not keys:
            raise OptionError("--use-labels: the model is unconditional (trained without labels); drop --use-labels")
        found = [k for k in keys if _has_label(mdata, k)]
        if not found:
            have = ", ".join(sorted(map(str, cols))[:15]) or "none"
            raise MissingLabelError(f"--use-labels: the data has none of the model's label column(s) "
                                    f"{', '.join(map(repr, keys))} (its obs columns: {have}); "
                                    "add the column, or drop --use-labels to translate without labels")
        if len(found) < len(keys):
            _info(f"--use-labels: conditioning on {found}; not in the data: {[k for k in keys if k not in found]}")
    if n_samples < 0:
        raise OptionError(f"--n-samples must be >= 0, got {n_samples}")
    from .model import deterministic_sampler

    readout = dict(readout="samples", n_samples=n_samples) if n_samples else dict(readout="mean", n_noise=n_noise)
    pred = m.translate(mdata, direction=direction.value, sampler=_sampler(sampler, m, deterministic_sampler),
                       n_steps=n_steps, seed=seed, calibrated=calibrated,
                       source_guidance=source_guidance, labels="auto" if use_labels else None, **readout)
    for c in mdata.obs.columns:  # keep the cells' annotations (cell_type, batch, ...) beside the prediction
        if c not in pred.obs and not str(c).startswith(("rna:", "atac:")):
            pred.obs[c] = mdata.obs[c].reindex(pred.obs_names).to_numpy()
    _write_h5(pred, out)
    if metrics is not None:
        from . import eval as ev

        target = split_direction(direction.value)[1]
        tab = ev.evaluate_translation(mdata.mod[target], pred, modality=target,
                                      groupby=groupby if _has_label(mdata, groupby) else None, seed=seed,
                                      distribution=False)
        _write_table(tab, metrics)
        pooled = tab[tab["cell_type"] == "all"]
        for r in pooled.itertuples():
            _info(f"{r.metric}: {r.value:.4f}")
    _info(f"translated {pred.n_obs:,} cells ({direction.value})")
    typer.echo(str(out))


@app.command()
@_command
def grn(
    model: str = ModelOpt,
    out: Path = typer.Option(Path("scdx_grn"), "--out", "-o", help="Output folder: peak_gene.csv, tf_gene.csv, "
                             "tf_gene.graphml (Cytoscape) and per-cell-type GraphML files."),
    data: str | None = DataOpt, rna: Path | None = RnaOpt, atac: Path | None = AtacOpt,
    n_cells: int | None = NCellsOpt,
    method: str = typer.Option("attention", help="Peak -> gene scoring: attention, integrated_gradients, knockout "
                               "or consensus (evidence table, combination chosen by held-out prediction)."),
    groupby: str = typer.Option("cell_type", help="One network per value of this obs column."),
    cell_type: list[str] = typer.Option([], "--cell-type", "-c", help="Restrict to these groups (repeatable)."),
    genome: str = typer.Option("mm10", help="Built-in TSS annotation for candidate peak -> gene pairs."),
    tss: Path | None = typer.Option(None, help="TSS table file instead of --genome (see grn.read_tss)."),
    window: int = typer.Option(150_000, help="Candidate window around each TSS (bp)."),
    max_cells: int = typer.Option(500, help="Cells per group used for scoring."),
    tf_prior: str = typer.Option("coaccessibility", help="TF -> peak links: 'coaccessibility', a csv/parquet "
                                 "file (tf, peak or a CellOracle base GRN) or 'none' (peak -> gene only)."),
    fasta: Path | None = typer.Option(None, help="Genome FASTA: TF -> peak links from scanning the peaks with "
                                         "--motifs (overrides --tf-prior)."),
    motifs: str = typer.Option("jaspar2024", help="Motif file for --fasta (JASPAR / gimmemotifs .pfm / pando "
                               ".json) or 'jaspar2024' (the JASPAR 2024 CORE vertebrates file of the data dir)."),
    motif_pvalue: float = typer.Option(1e-4, help="Motif-match p-value threshold for --fasta."),
    tfs: list[str] = typer.Option([], "--tf", help="TFs to consider (repeatable / comma-separated; default: "
                                  "DoRothEA TFs among the genes)."),
    organism: str = typer.Option("mouse", help="Organism of the default TF list."),
    top_k: int | None = typer.Option(None, help="Keep the top K edges per group in the exported files (ranked by "
                                     "--rank-by)."),
    rank_by: str = typer.Option("specificity", help="Ranking of --top-k: 'specificity' (edges that set the group "
                                "apart; |weight| with one group) or 'weight' (|weight|: a group's strongest links)."),
    overwrite: bool = OverwriteOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Extract cell-type-specific peak -> gene and TF -> gene networks and export them."""

    from . import datasets
    from . import grn as G
    from ._io import check_output_dir, output_dir

    _threads()
    _use_agg()
    if rank_by not in ("specificity", "weight"):
        raise OptionError(f"--rank-by must be 'specificity' or 'weight', got {rank_by!r}")
    check_output_dir(out, overwrite=overwrite, known=GRN_FILES, what="GRN folder")
    for f in (tss, fasta):
        if f is not None and not f.exists():
            raise FileNotFoundError(2, "no such file", str(f))
    prior_table = None
    if fasta is None and tf_prior.lower() not in ("none", "coaccessibility"):
        p = Path(tf_prior)
        if not p.exists():
            raise FileNotFoundError(2, "no such file", str(p))
        prior_table = _read_table(p, "--tf-prior")
    m = _load_model(model, device)
    mdata = _prepare_for_model(m, _load_mdata(data, rna, atac, n_cells=n_cells, seed=seed, groupby=groupby))
    groups = _split_list(cell_type) or None
    _check_groups(mdata, groupby, groups)
    tss_table = G.read_tss(str(tss) if tss is not None else datasets.tss_annotation(genome))
    G.extract_grn(m, mdata, groupby=groupby, method=method, tss=tss_table, window=window,
                  cell_types=groups, max_cells=max_cells, seed=seed, key_added="grn")
    prior: Any = None
    if fasta is not None:
        mfile = datasets.data_path("jaspar2024_core_vertebrates") if motifs == "jaspar2024" else Path(motifs)
        tf_list = _split_list(tfs) or _default_tfs(mdata, organism)
        prior = G.scan_motifs(mdata, str(fasta), str(mfile), pvalue=motif_pvalue, tfs=tf_list)
        G.tf_gene_network(mdata, prior, tfs=tf_list, groupby=groupby, key_added="grn_tf", seed=seed)
    elif tf_prior.lower() != "none":
        prior = "coaccessibility" if prior_table is None else prior_table
        tf_list = _split_list(tfs) or None
        if tf_list is None and isinstance(prior, str):
            tf_list = _default_tfs(mdata, organism)
        G.tf_gene_network(mdata, prior, tfs=tf_list, groupby=groupby, key_added="grn_tf", seed=seed)
    note = ""
    with output_dir(out, overwrite=overwrite, known=GRN_FILES, what="GRN folder") as tmp:
        rank = None if rank_by == "specificity" else rank_by  # None: specificity where the network has it
        pg = G.grn_df(mdata, key="grn", top_k=top_k, rank_by=rank)
        G.write_grn(pg, tmp / "peak_gene.csv")
        msg = f"{len(pg):,} peak -> gene edges"
        if "grn_tf" in mdata.uns:
            tg = G.grn_df(mdata, key="grn_tf", top_k=top_k, rank_by=rank)
            G.write_grn(tg, tmp / "tf_gene.csv")
            G.write_grn(tg, tmp / "tf_gene.graphml")
            G.write_grn(tg, tmp / "tf_gene.graphml", per_cell_type=True)
            msg += f", {len(tg):,} TF -> gene edges"
            gcol = G.group_column(tg)
            if len(tg) and gcol is not None and tg[gcol].nunique() >= 2:
                _save_fig(G.grn_specificity_heatmap(tg, top_k=5), tmp / "tf_specificity.png")
            elif len(tg):
                note = " (tf_specificity.png needs at least two cell types: not drawn)"
    _info(msg + note)
    typer.echo(str(out))


@app.command()
@_command
def screen(
    model: str = ModelOpt,
    targets: list[str] = typer.Option(..., "--target", "-t", help="Genes / peaks / TFs to perturb one at a time "
                                      "(repeatable or comma-separated), 'all_tfs', or @FILE with one per line."),
    out: Path = typer.Option(Path("scdx_screen"), "--out", "-o", help="Screen folder (resumable: finished targets "
                             "are kept); summary.csv and heatmap.png are written there."),
    data: str | None = DataOpt, rna: Path | None = RnaOpt, atac: Path | None = AtacOpt,
    n_cells: int | None = NCellsOpt,
    kind: str = typer.Option("knockout", help="knockout, knockdown, overexpress (RNA) or close / open (ATAC)."),
    modality: str = typer.Option("rna", help="Modality edited: rna, atac or tf (the TF's peaks)."),
    factor: float | None = typer.Option(None, help="Knockdown / overexpression factor."),
    groupby: str = typer.Option("cell_type", help="Effects are summarised per value of this obs column."),
    readout: str = typer.Option("mean", help="mean: the posterior-mean engine (fast; one denoiser call per "
                                "edited cell, unchanged cells skipped, statistics over cells); samples: the "
                                "sampled engine (--n-samples paired samples, DDIM --n-steps)."),
    n_noise: int = typer.Option(1, help="Noises averaged per cell by the mean engine."),
    n_samples: int = typer.Option(3, help="Paired noise samples per cell (--readout samples)."),
    n_steps: int = typer.Option(20, help="DDIM steps of each translation (--readout samples)."),
    batch_targets: int = typer.Option(8, help="Targets stacked per translation call."),
    batch_size: int = typer.Option(256, help="Cells per batch."),
    alpha: float = typer.Option(0.05, help="FDR level (against the controls) for significant features."),
    controls: str = typer.Option("20", help="Control genes (peaks) per cell type that calibrate significance: a "
                                 "number drawn matched on detection and mean expression (non-TFs), a "
                                 "comma-separated list of names, or 0 for none (then nothing is called "
                                 "significant)."),
    min_effect: float = typer.Option(0.1, help="Smallest |log2 fold change| (of expression, or of accessibility "
                                     "odds) a significant feature must have."),
    on_unknown: str = typer.Option("raise", help="Unknown targets: 'raise' (error) or 'report' (skip, listed)."),
    keep_effects: str = typer.Option("auto", help="Per-feature effect rows written: all, significant, none "
                                     "(summaries only) or auto (all up to 5 M rows, none above)."),
    resume: bool = typer.Option(True, help="Skip targets finished in an earlier run of the same screen."),
    overwrite: bool = OverwriteOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Run an in-silico perturbation screen (each target on its own, written per chunk of targets) and summarise
    it per cell type."""
    from . import pl, tl
    from ._errors import UnknownFeatureError, _fmt_items
    from ._io import check_output_dir, check_writable
    from ._settings import settings
    from .perturb._screen import SCREEN_FILES, is_screen_dir

    _threads()
    _use_agg()
    existed = out.exists()
    ours = is_screen_dir(out)  # a screen started here (finished or killed): resumed without --overwrite
    if ours:
        check_writable(out)
    else:
        check_output_dir(out, overwrite=overwrite, known=SCREEN_FILES, what="screen folder")
    if out.is_dir() and not ours and not (out / "done.json").exists():  # --overwrite into a folder not a screen
        clash = [n for n in dict.fromkeys(p.split("/")[0] for p in SCREEN_FILES) if (out / n).exists()]
        if clash:
            from ._errors import OutputError

            raise OutputError(f"{str(out)!r} is not a screen folder but holds {_fmt_items(clash)}, which the "
                              "screen would replace; choose another --out")
    tlist: list[str] = []
    for t in targets:
        if t.startswith("@"):
            p = Path(t[1:])
            if not p.exists():
                raise FileNotFoundError(2, "no such file", str(p))
            tlist += [x.strip() for x in p.read_text().splitlines() if x.strip() and not x.startswith("#")]
        else:
            tlist += _split_list([t])
    if on_unknown not in ("raise", "report"):
        raise OptionError(f"--on-unknown must be 'raise' or 'report', got {on_unknown!r}")
    check_option("--readout", readout, READOUTS)
    from .perturb._options import KEEP_EFFECTS

    check_option("--keep-effects", keep_effects, KEEP_EFFECTS)
    from .perturb._controls import check_controls

    ctrl: Any = int(controls) if controls.strip().lstrip("-").isdigit() else controls
    check_controls(ctrl)  # a bad --controls fails before the model and data are read
    m = _load_model(model, device)
    mdata = _prepare_for_model(m, _load_mdata(data, rna, atac, n_cells=n_cells, seed=seed, groupby=groupby))
    _check_groups(mdata, groupby, None)
    tgt: Any = "all_tfs" if tlist == ["all_tfs"] else tlist
    if not tlist:
        raise OptionError("no targets: give --target GENE (repeatable), 'all_tfs' or @FILE")
    try:  # unknown targets: the library raises before any work (perturb.screen, on_unknown)
        summary = tl.screen(m, mdata, tgt, kind=kind, modality=modality, factor=factor, groupby=groupby,
                            out_dir=out, resume=resume, n_samples=n_samples, batch_targets=batch_targets,
                            batch_size=batch_size, seed=seed, alpha=alpha, on_unknown=on_unknown,
                            readout=readout, n_noise=n_noise, controls=ctrl, min_effect=min_effect,
                            keep_effects=keep_effects,
                            translate_kwargs={"n_steps": n_steps} if readout == "samples" else None,
                            show_progress=settings.progress)
    except UnknownFeatureError as e:  # raised before any target runs
        if not existed:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        if on_unknown == "raise" and "on-unknown" not in str(e) and "on_unknown=" not in str(e):
            raise UnknownFeatureError(f"{e}; fix the targets, or pass --on-unknown report to skip unknown ones "
                                      "(they are listed in report.parquet)") from None
        raise
    _write_table(summary, out / "summary.csv")
    if len(summary):
        _save_fig(pl.screen_heatmap(summary, value="n_sig"), out / "heatmap.png")
    rep = summary.attrs.get("report")
    n_bad = 0
    if rep is not None and len(rep) and "status" in rep:
        bad = rep[rep["status"].astype(str) != "ok"]
        n_bad = len(bad)
        if n_bad:
            _info(f"{n_bad} target(s) skipped (unknown): {', '.join(map(str, bad['target']))}; "
                  f"see {out / 'report.parquet'}")
    if not len(summary) and rep is not None and n_bad and n_bad == len(rep):
        if not existed:  # nothing was screened: leave no half-written folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise UnknownFeatureError(f"none of the {n_bad} target(s) is known to the model "
                                  f"({_fmt_items(rep['target'])}); nothing was screened")
    if len(summary):
        from .perturb._controls import significance_text

        _info(significance_text(summary, alpha=alpha, min_effect=min_effect))
    _info(f"screened {summary['perturbation'].nunique() if len(summary) else 0} target(s); per target x cell "
          f"type results: {out / 'summary.csv'}" + (f", heatmap: {out / 'heatmap.png'}" if len(summary) else ""))
    typer.echo(str(out))


@app.command()
@_command
def biomarkers(
    out: Path = typer.Option(Path("scdx_biomarkers"), "--out", "-o", help="Output folder: biomarkers.csv, "
                             "regulators.csv, regulator_dotplot.png (and enrichment.csv)."),
    data: str | None = DataOpt, rna: Path | None = RnaOpt, atac: Path | None = AtacOpt,
    n_cells: int | None = NCellsOpt,
    groupby: str = typer.Option("cell_type", help="Cell-type column."),
    reference: str = typer.Option("dorothea", help="Reference network for activity and agreement: dorothea, "
                                  "collectri or trrust."),
    organism: str = typer.Option("mouse", help="mouse or human."),
    grn_file: Path | None = typer.Option(None, "--grn", help="A network table (csv/parquet: source, target, "
                                            "weight[, cell_type]), e.g. tf_gene.csv of `scdiffx-grn grn`, used "
                                            "as model importance."),
    n_markers: int = typer.Option(100, help="Marker genes per cell type for the reference agreement."),
    gene_sets: str | None = typer.Option(None, help="Also run preranked GSEA on these gene sets (hallmark, "
                                            "kegg, go_bp or a .gmt file)."),
    permutations: int = typer.Option(200, help="GSEA permutations."),
    overwrite: bool = OverwriteOpt,
    seed: int = SeedOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Rank genes, peaks and TFs per cell type (specificity, GRN importance, reference, activity)."""
    import pandas as pd

    from . import pl, tl
    from ._io import check_output_dir, output_dir
    from .biomarkers._rank import model_network

    _use_agg()
    check_output_dir(out, overwrite=overwrite, known=BIOMARKER_FILES, what="biomarker folder")
    net = None
    if grn_file is not None:  # checked before the (slower) data loading
        if not grn_file.exists():
            raise FileNotFoundError(2, "no such file", str(grn_file))
        net = model_network(_read_table(grn_file, "--grn network file"), f"--grn network file {str(grn_file)!r}")
    mdata = _load_mdata(data, rna, atac, n_cells=n_cells, seed=seed, groupby=groupby)
    _check_groups(mdata, groupby, None)
    tl.regulator_activity(mdata, reference, organism=organism, groupby=groupby, key_added="regulators")
    from .report._demo import _result_table

    ret = tl.rank_biomarkers(mdata, groupby, grn_key=net, reference=reference, organism=organism,
                             n_markers=n_markers, activity_key="regulators", key_added="biomarkers")
    tab = _result_table(ret, mdata, "biomarkers", "biomarkers")  # returned, or read back from uns
    with output_dir(out, overwrite=overwrite, known=BIOMARKER_FILES, what="biomarker folder") as tmp:
        pd.DataFrame(tab).to_csv(tmp / "biomarkers.csv", index=False)
        from .biomarkers import regulator_df

        regulator_df(mdata, key="regulators").to_csv(tmp / "regulators.csv", index=False)
        _save_fig(pl.regulator_dotplot(mdata, key="regulators", top_k=3), tmp / "regulator_dotplot.png")
        if gene_sets:
            enr = tl.enrichment(mdata, gene_sets, organism=organism, groupby=groupby, permutation_num=permutations,
                                seed=seed, data=mdata, key_added="enrichment")
            _result_table(enr, mdata, "enrichment", "enrichment").to_csv(tmp / "enrichment.csv", index=False)
    _info(f"ranked {len(tab):,} features")
    typer.echo(str(out))


@app.command()
@_command
def evaluate(
    model: str = ModelOpt,
    out: Path = typer.Option(Path("scdx_eval"), "--out", "-o", help="Output folder: table.csv, summary.csv, "
                             "comparison.csv, report.md."),
    data: str | None = DataOpt, rna: Path | None = RnaOpt, atac: Path | None = AtacOpt,
    n_cells: int | None = NCellsOpt,
    split_key: str = typer.Option("split", help="obs column of the train / test split (created with seed 0, "
                                  "80/10/10 stratified, when absent), for a model that carries no split."),
    test_value: str = typer.Option("test", help="Value of --split-key marking held-out cells."),
    model_split: bool = typer.Option(True, help="Evaluate on the split the model was trained with when it "
                                     "carries one (its held-out cells that are in the data); "
                                     "--no-model-split uses --split-key, only for data the model never saw."),
    groupby: str = typer.Option("cell_type", help="Cell-type column."),
    task: list[str] = typer.Option(["generation", "translation"], "--task", help="generation and/or translation."),
    n_samples: int = typer.Option(1, help="Translation samples per cell."),
    n_steps: int = typer.Option(20, help="Sampler steps (generation and translation)."),
    baselines: bool = typer.Option(True, help="Also evaluate the baselines (cell-type mean, resampling, kNN, ridge)."),
    overwrite: bool = OverwriteOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Evaluate generation and translation on held-out cells against baselines."""
    from . import eval as ev
    from . import pp
    from ._io import check_output_dir, output_dir

    _threads()
    _use_agg()
    check_output_dir(out, overwrite=overwrite, known=EVAL_FILES, what="evaluation folder")
    m = _load_model(model, device)
    mdata = _load_mdata(data, rna, atac, n_cells=n_cells, seed=seed, groupby=groupby)
    stored = ev.model_split(m, mdata) if model_split else None
    if stored is not None and (stored == "test").any():  # (none: evaluate_model refuses, naming the split)
        _info(f"held-out cells: the {int((stored == 'test').sum()):,} of the model's "
              f"{len(m.setup['split']['test_cells']):,} stored test cells that are in the data")
    elif stored is None and not _has_label(mdata, split_key):
        pp.split_cells(mdata, fractions=(0.8, 0.1, 0.1), seed=0, stratify=groupby if _has_label(mdata, groupby)
                       else None, key_added=split_key)
    mdata = _prepare_for_model(m, mdata)
    tab = ev.evaluate_model(m, mdata, split_key=split_key, test_value=test_value, groupby=groupby, seeds=(seed,),
                            n_samples=n_samples, generate_kwargs={"n_steps": n_steps},
                            translate_kwargs={"n_steps": n_steps}, baselines=baselines,
                            tasks=tuple(_split_list(task)), use_model_split=model_split)
    with output_dir(out, overwrite=overwrite, known=EVAL_FILES, what="evaluation folder") as tmp:
        ev.write_report(tab, tmp, title=f"Evaluation of {model}")
    _info(f"{len(tab):,} metric values")
    typer.echo(str(out))


@app.command()
@_command
def demo(
    out: Path = typer.Option(Path("scdx_demo_report"), "--out", "-o", help="Report folder (report.html, tables/, "
                             "screen/); the files of an earlier report there are replaced, files you added are "
                             "kept."),
    n_cells: int = typer.Option(1500, "--n-cells", "-n", help="Cells subsampled (stratified) from the data."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model folder (default: the checkpoint "
                                        "mouse_mop_demo shipped inside the package)."),
    data: str | None = typer.Option(None, "--data", "-d", help="Paired .h5mu (default: the embedded mouse "
                                       "MOp data). Must hold the model's genes and peaks."),
    n_steps: int = typer.Option(10, help="Sampler steps for generation, translation and the screen."),
    n_generate: int = typer.Option(600, help="Cells generated."),
    n_translate: int = typer.Option(300, help="Held-out cells translated in each direction."),
    n_tfs: int = typer.Option(4, help="TFs knocked out in the screen."),
    n_cell_types: int = typer.Option(3, help="Largest cell types used by the GRN and the screen."),
    basis: str = typer.Option("pca", help="Embedding of the real-vs-generated figure: pca (fast) or umap."),
    genome: str = typer.Option("mm10", help="Built-in TSS annotation of the data (mm10, hg38); an hg genome also "
                               "makes the TF lists and reference networks human."),
    sections: list[str] = typer.Option([], "--section", help="Run only these sections (repeatable): "
                                       "generation, translation, grn, screen, biomarkers."),
    threads: int = typer.Option(1, help="CPU threads for torch (the demo's small batches run fastest "
                                "single-threaded on a busy machine; 0 = torch's default, or $SCDX_THREADS)."),
    overwrite: bool = OverwriteOpt,
    seed: int = SeedOpt, device: str = DeviceOpt, no_progress: bool = NoProgressOpt, debug: bool = DebugOpt,
    config: str | None = ConfigOpt,
):
    """Run every module on the embedded data and write a self-contained HTML report (< 5 min on a laptop)."""
    from ._errors import CheckpointError
    from .report import SECTIONS, default_model_path, run_demo

    mpath = Path(model) if model else default_model_path()  # the package data (any install), or $SCDX_DEMO_MODEL
    if not mpath.is_dir():
        raise CheckpointError(f"no model folder at {mpath}" + ("" if model else
                              " (the demo checkpoint: $SCDX_DEMO_MODEL names a missing folder, or this install "
                              "lacks the package data; reinstall scdiffx_grn or pass --model)"))
    _threads(threads or None)
    _use_agg()
    secs = tuple(["data"] + _split_list(sections)) if sections else SECTIONS
    if basis not in ("pca", "umap"):
        raise OptionError(f"--basis must be 'pca' or 'umap', got {basis!r}")
    _info(f"scdiffx-grn demo: {n_cells} cells, {n_steps} sampler steps -> {out}/report.html")
    res = run_demo(out=str(out), model=str(mpath), data=data, n_cells=n_cells, n_steps=n_steps, n_generate=n_generate,
                   n_translate=n_translate, n_tfs=n_tfs, n_cell_types=n_cell_types, basis=basis, genome=genome,
                   seed=seed,
                   device=None if device == "auto" else device, sections=secs, debug=debug, overwrite=overwrite)
    for k, v in res.section_seconds.items():
        _info(f"  {k:<12s} {v:7.1f} s" + ("  FAILED" if k in res.failed else ""))
    _info(f"done in {res.seconds:.0f} s")
    typer.echo(f"report: {res.report.resolve()}")
    if res.failed:
        _err(f"{len(res.failed)} section(s) failed: {', '.join(res.failed)} (see the report)")
        raise typer.Exit(EXIT_SECTION_FAILED)


def _version_cb(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True,
                                       callback=_version_cb)):
    """scdiffx-grn command line."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``scdiffx-grn``)."""
    try:
        app(args=argv, prog_name="scdiffx-grn", standalone_mode=True)
    except SystemExit as e:  # typer / click exit codes
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
