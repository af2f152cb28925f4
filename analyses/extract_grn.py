"""Batch GRN extraction: peak -> gene (and TF -> gene) networks for many checkpoints / methods.

Usage::

    python analyses/extract_grn.py --checkpoint models/mop_seed0 --checkpoint models/mop_seed1 \
        --method attention --method knockout --out results/grn

For each checkpoint and method, writes ``<out>/<checkpoint name>/<method>.parquet`` (peak -> gene
per cell type) and, with ``--tf-prior``, ``<method>_tf.parquet`` (TF -> gene).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def main(checkpoints: list[str], *, methods: tuple[str, ...] = ("attention",), out: str = "results/grn",
         data: str = "mouse_mop", n_cells: int | None = None, genome: str = "mm10", window: int = 150_000,
         groupby: str = "cell_type", max_cells: int = 500, batch_size: int = 64, tf_prior: str | None = None,
         translate_steps: int = 10, ig_steps: int = 16, timesteps: tuple[int, ...] = (100, 300, 500),
         seed: int = 0) -> list[Path]:
    """Extract GRNs for every checkpoint x method; returns the files written.

    Parameters
    ----------
    checkpoints
        Model directories saved by ``ScDiffusionX.save``.
    methods
        ``attention``, ``integrated_gradients``, ``knockout``.
    data
        Name of a ``scdiffx_grn.datasets`` loader (``mouse_mop``) or a path to an ``.h5mu``.
    genome
        TSS annotation (``datasets.tss_annotation(genome)``).
    tf_prior
        Path to a TF -> peak table (csv/parquet ``tf, peak`` or a CellOracle base GRN parquet),
        or ``"coaccessibility"``.
    translate_steps, ig_steps, timesteps
        Sampler steps of the translation (knockout, integrated gradients), integration steps of
        integrated gradients, denoiser timesteps of the attention maps.
    """
    from scdiffx_grn import ScDiffusionX, datasets, grn

    if Path(data).exists():
        mdata = datasets.read_multiome(data)
    else:
        mdata = getattr(datasets, data)(n_cells=n_cells, seed=seed)
    tss = grn.read_tss(datasets.tss_annotation(genome))
    prior = None
    if tf_prior == "coaccessibility":
        prior = "coaccessibility"
    elif tf_prior is not None:
        prior = pd.read_parquet(tf_prior) if tf_prior.endswith(".parquet") else pd.read_csv(tf_prior)
    written = []
    full = mdata
    for ck in checkpoints:
        model = ScDiffusionX.load(ck)
        mdata = model.subset_to_model(full)  # the model's genes and peaks, in its order
        cand = grn.peak_gene_candidates(mdata, tss_table=tss, window=window)
        outdir = Path(out) / Path(ck).name
        for method in methods:
            # each method takes only its own options (extract_grn refuses another method's keywords)
            opts = {k: v for k, v in {"translate_steps": translate_steps, "ig_steps": ig_steps,
                                      "timesteps": tuple(timesteps)}.items() if k in grn.METHODS[method].defaults}
            grn.extract_grn(model, mdata, method=method, candidates=cand, groupby=groupby, max_cells=max_cells,
                            batch_size=batch_size, seed=seed, key_added=f"grn_{method}", **opts)
            written += grn.write_grn(mdata, outdir / f"{method}.parquet", key=f"grn_{method}")
            if prior is not None:
                tfs = list(mdata.mod["rna"].var_names) if isinstance(prior, str) else None
                grn.tf_gene_network(mdata, prior, peak_gene_key=f"grn_{method}", key_added=f"grn_tf_{method}",
                                    groupby=groupby, tfs=tfs, seed=seed)
                written += grn.write_grn(mdata, outdir / f"{method}_tf.parquet", key=f"grn_tf_{method}")
    return written


def _cli() -> None:
    import typer

    app = typer.Typer(add_completion=False)

    @app.command()
    def run(checkpoint: list[str] = typer.Option(..., help="model directory (repeatable)"),
            method: list[str] = typer.Option(["attention"], help="extraction method (repeatable)"),
            out: str = "results/grn", data: str = "mouse_mop", n_cells: int | None = None,
            genome: str = "mm10", window: int = 150_000, groupby: str = "cell_type", max_cells: int = 500,
            batch_size: int = 64, tf_prior: str | None = None, translate_steps: int = 10, ig_steps: int = 16,
            timestep: list[int] = typer.Option([100, 300, 500], help="attention timestep (repeatable)"),
            seed: int = 0) -> None:
        files = main(checkpoint, methods=tuple(method), out=out, data=data, n_cells=n_cells, genome=genome,
                     window=window, groupby=groupby, max_cells=max_cells, batch_size=batch_size,
                     tf_prior=tf_prior, translate_steps=translate_steps, ig_steps=ig_steps,
                     timesteps=tuple(timestep), seed=seed)
        for f in files:
            typer.echo(str(f))

    app()


if __name__ == "__main__":
    _cli()
