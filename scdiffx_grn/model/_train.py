"""Training loop: autoencoders, latent normalisation, denoiser (EMA, AdamW, clipping, bf16, DDP, resume).

The loop lives here; what each minibatch teaches (inputs, task masking, dropouts, timesteps, loss,
EMA) is the :class:`~scdiffx_grn.model._trainingplan.TrainingPlan`.

Multi-GPU / multi-node: launch the same script with ``torchrun --nproc_per_node=N``; the trainer
sees ``WORLD_SIZE`` and wraps the trained networks in DistributedDataParallel (NCCL on CUDA, gloo
on CPU). Every rank draws the same global batch indices from the seeded generator and takes its
own slice, so the result does not depend on how the batch is split. Only rank 0 writes checkpoints.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._errors import CheckpointError, InputDataError, OptionError
from .._io import atomic_path
from .._registry import labels as registry_labels
from .._settings import logger, progress
from ._access import row_source
from ._modules import autoencoder_loss
from ._trainingplan import TrainingPlan

CKPT_NAME = "last.ckpt"


class _AELoss(nn.Module):
    """The autoencoders' loss as an ``nn.Module`` (so that DDP can wrap it): ``(loss, nll_rna, nll_atac)``."""

    def __init__(self, module):
        super().__init__()
        self.rna_ae, self.atac_ae, self.cfg = module.rna_ae, module.atac_ae, module.cfg

    def forward(self, counts, x_log, lib, x_bin):
        out = autoencoder_loss(self.rna_ae, self.atac_ae, self.cfg, counts, x_log, lib, x_bin)
        return out.loss, out.components["rna"], out.components["atac"]


def _estimate(phase: str, seconds: float, done: int, total: int, unit: str) -> None:
    """Say how long a training phase will take, from its first ``done`` units (log, and the console
    when progress bars are on)."""
    from .._settings import settings

    eta = seconds / max(done, 1) * total
    msg = (f"{phase}: {done / max(seconds, 1e-9):.2f} {unit}/s, about {eta / 60:.1f} min for {total} {unit} "
           f"on {'this device' if torch.cuda.is_available() else f'{torch.get_num_threads()} CPU thread(s)'}")
    logger.info(msg)
    if settings.progress:
        from tqdm.auto import tqdm

        tqdm.write(msg)


#: ``precision`` values of :meth:`ScDiffusionX.train`
PRECISIONS = ("auto", "fp32", "bf16")


def autocast_dtype(precision: str, device: torch.device):
    """The autocast dtype of a training run: bf16 for ``"bf16"`` (any device) and for ``"auto"`` on
    CUDA; ``None`` (float32 throughout) for ``"fp32"`` and for ``"auto"`` elsewhere."""
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16" or (precision == "auto" and torch.device(device).type == "cuda"):
        return torch.bfloat16
    return None


def _dist():
    """(rank, world_size), initialising torch.distributed from torchrun's environment if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()



def check_train_options(*, ae_epochs, diffusion_steps, batch_size, checkpoint_every, log_every, ae_lr, lr,
                        weight_decay, grad_clip, ema_decay) -> None:
    """Range checks of ``ScDiffusionX.train``'s options (one-line ``OptionError`` naming the option)."""
    from .._validate import check_count, check_positive, check_range

    check_count("ae_epochs", ae_epochs)
    check_count("diffusion_steps", diffusion_steps)
    check_count("batch_size", batch_size, 1)
    check_count("checkpoint_every", checkpoint_every, 1)
    check_count("log_every", log_every, 1)
    check_positive("ae_lr", ae_lr)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if grad_clip != float("inf"):  # inf: no clipping
        check_positive("grad_clip", grad_clip)
    check_range("ema_decay", ema_decay, 0.0, 1.0, high_open=True)


class Trainer:
    """Runs both training phases for an :class:`~scdiffx_grn.model.ScDiffusionX`."""

    def __init__(self, model, mdata, *, batch_size, ae_lr, lr, weight_decay, ema_decay, grad_clip, seed,
                 split_key, train_value, checkpoint_dir, checkpoint_every, compile, log_every,
                 precision="auto"):
        self.model = model
        self.m = model.module
        self.batch_size = int(batch_size)
        self.ae_lr, self.lr, self.wd = ae_lr, lr, weight_decay
        self.ema_decay, self.grad_clip = ema_decay, grad_clip
        self.seed = int(seed)
        self.ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.ckpt_every = max(1, int(checkpoint_every))
        self.compile = compile
        self.log_every = max(1, int(log_every))
        self.plan = TrainingPlan(model.module, model.config, ema_decay=ema_decay)
        self.rank, self.world = _dist()
        if self.world > 1 and torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            model.to(f"cuda:{local}")
        self.dev = model.device
        self.amp = autocast_dtype(precision, self.dev)
        self._load_data(mdata, split_key, train_value)

    # ------------------------------------------------------------------ data
    def _load_data(self, mdata, split_key, train_value):
        model = self.model
        mods = tuple(model.config.modalities)
        order = model._check_features(mdata, mods)
        mask = np.ones(mdata.n_obs, dtype=bool)
        if split_key is not None:
            split = registry_labels(mdata, split_key, what="data (split column)").to_numpy()
            mask = (split == str(train_value))
        idx = np.flatnonzero(mask)
        if len(idx) < 2:
            raise InputDataError(f"only {len(idx)} training cells (split {split_key!r} == {train_value!r})")
        # row sources serve dense minibatches from in-memory CSR or backed (on-disk) matrices:
        # the full matrix is never densified (see _data.py); one streamed pass validates the
        # values and gives the library sizes
        rows = None if len(idx) == mdata.n_obs else idx
        self.rna = row_source(model, mdata, "rna", order["rna"], rows)
        self.atac = row_source(model, mdata, "atac", order["atac"], rows) if "atac" in mods else None
        lib, _ = self.rna.scan()
        self.lib = lib.astype(np.float32)
        empty = np.flatnonzero(self.lib == 0)
        if len(empty):
            names = mdata.obs_names[idx[empty]]
            raise InputDataError(f"{len(empty)} training cells have no RNA counts in the model's genes, "
                                 f"e.g. {list(names[:5])}; filter them (pp.qc) first")
        n_open = self.atac.scan()[1] if self.atac is not None else np.ones(1)
        if (n_open == 0).all():
            raise InputDataError("no accessible peaks in any training cell")
        keys = model.config.label_keys
        labs = {k: registry_labels(mdata, k).to_numpy()[idx] for k in keys}
        self.cond = model.condition_indices(labs, len(idx)).cpu() if keys else torch.zeros((len(idx), 0), dtype=torch.long)
        self.n = len(idx)
        # label frequencies (for generate(n_cells)) and log-normal library sizes per first label
        if keys:
            df = pd.DataFrame(labs)
            fr = df.value_counts(normalize=True).reset_index()
            fr.columns = [*keys, "p"]
            model.setup["label_freqs"] = {c: fr[c].tolist() for c in fr.columns}
        loglib = np.log(self.lib)
        n_lib = len(self.m.lib_mu) - 1
        mu = np.full(n_lib + 1, loglib.mean())
        sd = np.full(n_lib + 1, max(loglib.std(), 1e-3))
        if keys:
            c0 = self.cond[:, 0].numpy()
            for c in range(n_lib):
                sel = loglib[c0 == c]
                if len(sel) >= 2:
                    mu[c], sd[c] = sel.mean(), max(sel.std(), 1e-3)
                elif len(sel) == 1:
                    mu[c] = sel[0]
        self.m.lib_mu.copy_(torch.as_tensor(mu, dtype=torch.float32))
        self.m.lib_sigma.copy_(torch.as_tensor(sd, dtype=torch.float32))

    def _ae_batch(self, idx):
        atac = self.atac.dense(idx) if self.atac is not None else None  # None: single-modality model
        return self.plan.ae_inputs(self.rna.dense(idx), self.lib[idx], atac, self.dev)

    # ------------------------------------------------------------------ checkpoints
    def _ckpt_path(self):
        return self.ckpt_dir / CKPT_NAME if self.ckpt_dir is not None else None

    def _save(self, state: dict):
        if self.ckpt_dir is None or self.rank != 0:
            return
        with atomic_path(self._ckpt_path()) as tmp:
            torch.save(state, tmp)

    def _load(self):
        p = self._ckpt_path()
        if p is None or not p.exists():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"training checkpoint {p} could not be read (truncated or corrupt?): {e}") from None

    def _rng_state(self, gen):
        st = {"gen": gen.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            st["cuda"] = torch.cuda.get_rng_state(self.dev) if self.dev.type == "cuda" else torch.cuda.get_rng_state()
        return st

    def _set_rng_state(self, gen, st):
        gen.set_state(st["gen"])
        torch.set_rng_state(st["torch"])
        if "cuda" in st and self.dev.type == "cuda":
            torch.cuda.set_rng_state(st["cuda"], self.dev)

    # ------------------------------------------------------------------ phases
    def run(self, *, ae_epochs: int, diffusion_steps: int, resume: bool):
        from .._settings import _apply_threads

        _apply_threads()  # other OpenMP users may have reset torch's thread count
        ck = self._load() if resume else None
        if resume and ck is None:
            logger.info("resume=True but no checkpoint found; starting from scratch")
        torch.manual_seed(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        start_epoch = 0
        if ck is not None:
            self.m.load_state_dict(ck["module"])
            self.model.history = {k: list(map(float, v)) for k, v in ck["history"].items()}
            start_epoch = int(ck["epoch"])
        ae_done = start_epoch >= ae_epochs and ck is not None and ck["phase"] == "diffusion"
        t0 = time.perf_counter()
        if not ae_done:
            self._train_ae(ae_epochs, gen, ck if (ck is not None and ck["phase"] == "ae") else None)
            ck = None
        self._sync()
        t1 = time.perf_counter()
        self._fit_latents()
        self._train_diffusion(diffusion_steps, gen, ck if (ck is not None and ck["phase"] == "diffusion") else None,
                              ae_epochs)
        self._sync()
        t2 = time.perf_counter()
        self.model.timing = {"ae_seconds": t1 - t0, "diffusion_seconds": t2 - t1, "n_train_cells": self.n,
                             "ae_cells_per_s": self.n * ae_epochs / max(t1 - t0, 1e-9) if not ae_done else None,
                             "diffusion_cells_per_s": self.batch_size * diffusion_steps / max(t2 - t1, 1e-9)}
        self.m.fitted.fill_(1)
        self.m.eval()

    def _sync(self):
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)

    def _autocast(self):
        """bf16 autocast when the run's precision asks for it (``autocast_dtype``), else a no-op."""
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=self.amp is not None)

    def _kernels(self) -> dict:
        """AdamW kernels: fused on CUDA, multi-tensor (foreach) elsewhere (one call per step instead
        of one per parameter; on CPU the same arithmetic as the per-parameter loop)."""
        return {"fused": True, "foreach": None} if self.dev.type == "cuda" else {"fused": None, "foreach": True}

    def _optimizer(self, params, lr, weight_decay):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **self._kernels())

    def _load_opt(self, opt, state):
        """Load an optimiser state; the kernels stay this device's (the state may come from another
        device or an older loop)."""
        opt.load_state_dict(state)
        for g in opt.param_groups:
            g.update(self._kernels())

    def _train_ae(self, epochs, gen, ck):
        m = self.m
        ae = _AELoss(m)
        net = ae
        if self.world > 1:
            net = nn.parallel.DistributedDataParallel(ae, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        params = list(m.rna_ae.parameters()) + (list(m.atac_ae.parameters()) if m.atac_ae is not None else [])
        opt = self._optimizer(params, self.ae_lr, self.wd)
        start = 0
        if ck is not None:
            self._load_opt(opt, ck["opt"])
            self._set_rng_state(gen, ck["rng"])
            start = int(ck["epoch"])
        bar = progress(range(start, epochs), desc="autoencoders", total=epochs, initial=start)
        t_run = time.perf_counter()
        m.rna_ae.train()
        if m.atac_ae is not None:
            m.atac_ae.train()
        for ep in bar:
            perm = torch.randperm(self.n, generator=gen).numpy()
            # the epoch's loss is summed on the device (float64: the same sum as in Python floats)
            # and read once per epoch: no host sync per step
            tot, nb = torch.zeros((), dtype=torch.float64, device=self.dev), 0
            for s in range(0, self.n, self.batch_size):
                gidx = perm[s:s + self.batch_size]
                if len(gidx) < 2:
                    continue
                idx = gidx[self.rank::self.world]
                with self._autocast():
                    loss, l_r, l_a = net(*self._ae_batch(idx))  # per-feature scaled NB + Bernoulli
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=True)
                opt.step()
                tot += l_r.detach().double() + l_a.detach().double()
                nb += 1
            mean = float(tot) / max(nb, 1)
            self.model.history["ae_loss"].append(mean)
            if ep == start and epochs - start > 1:
                _estimate("autoencoders", time.perf_counter() - t_run, 1, epochs - start, "epochs")
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(nll=f"{mean:.1f}")
            self._save({"phase": "ae", "epoch": ep + 1, "step": 0, "module": m.state_dict(),
                        "opt": opt.state_dict(), "rng": self._rng_state(gen),
                        "history": self.model.history})
        m.rna_ae.eval()
        if m.atac_ae is not None:
            m.atac_ae.eval()

    @torch.no_grad()
    def _fit_latents(self):
        """Encode all training cells and fit the per-dimension latent normalisation."""
        m = self.m
        m.eval()
        zr, za = [], []
        from ._data import FIT_ROWS  # read at call time (tests shrink it)

        for s in range(0, self.n, FIT_ROWS):  # streamed: one dense block at a time
            idx = np.arange(s, min(self.n, s + FIT_ROWS))
            counts, x_log, lib, x_bin = self._ae_batch(idx)
            zr.append(m.rna_ae.encode(x_log).float())
            # single-modality models: a zero-width ATAC latent flows through unchanged
            za.append(m.atac_ae.encode(x_bin).float() if m.atac_ae is not None else zr[-1].new_zeros(len(idx), 0))
        zr, za = torch.cat(zr), torch.cat(za)
        for name, z in (("rna", zr), ("atac", za)) if m.atac_ae is not None else (("rna", zr),):
            getattr(m, f"{name}_mean").copy_(z.mean(0))
            getattr(m, f"{name}_std").copy_(z.std(0).clamp(min=1e-4))
        self.z_rna = m.normalize("rna", zr)
        self.z_atac = m.normalize("atac", za) if m.atac_ae is not None else za

    def _train_diffusion(self, steps, gen, ck, ae_epochs):
        m, plan = self.m, self.plan
        den = m.denoiser
        ema = copy.deepcopy(den).eval().requires_grad_(False)
        den.train()  # once: nothing below changes the mode (no module walk per step)
        net = torch.compile(den) if self.compile else den
        if self.world > 1:
            net = nn.parallel.DistributedDataParallel(net, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        # flat parameter lists, built once: optimiser, clipping and EMA each touch every tensor in one call
        params, ema_params = list(den.parameters()), list(ema.parameters())
        opt = self._optimizer(params, self.lr, 0.0)
        start = 0
        if ck is not None:
            den.load_state_dict(ck["denoiser_raw"])
            ema.load_state_dict(ck["ema"])
            self._load_opt(opt, ck["opt"])
            self._set_rng_state(gen, ck["rng"])
            start = int(ck["step"])
        cond_all = self.cond.to(self.dev)
        null = den.labels.null(1, self.dev)
        sl = slice(self.rank, None, self.world)  # every rank draws the global batch, keeps its slice
        bar = progress(range(start, steps), desc="denoiser", total=steps, initial=start)
        # running loss summed on the device (float64: the same sum as in Python floats), read every
        # log_every steps: no host sync per step
        run = torch.zeros((), dtype=torch.float64, device=self.dev)
        t_run = time.perf_counter()
        for step in bar:
            draws = plan.draw(gen, self.batch_size, self.n).shard(sl, self.dev)
            b = plan.batch(draws, self.z_rna, self.z_atac, cond_all, null)
            with self._autocast():
                o_r, o_a = net(*b.inputs)
            loss = plan.loss(o_r, o_a, b).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip, foreach=True)
            opt.step()
            plan.ema_update(ema_params, params, step)
            run += loss.detach().double()
            if step + 1 - start == 20 and steps - start > 40:
                self._sync()
                _estimate("denoiser", time.perf_counter() - t_run, 20, steps - start, "steps")
            if (step + 1) % self.log_every == 0 or step + 1 == steps:
                k = (step % self.log_every) + 1
                mean = float(run) / k
                self.model.history["diffusion_loss"].append(mean)
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{mean:.4f}")
                run.zero_()
            if (step + 1) % self.ckpt_every == 0 and step + 1 < steps:
                self._save({"phase": "diffusion", "epoch": ae_epochs, "step": step + 1, "module": m.state_dict(),
                            "denoiser_raw": den.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                            "rng": self._rng_state(gen), "history": self.model.history})
        # sampling uses the EMA weights
        den.load_state_dict(ema.state_dict())
        den.eval()
        if self.ckpt_dir is not None and self.rank == 0:
            m.fitted.fill_(1)
            self._save({"phase": "diffusion", "epoch": ae_epochs, "step": steps, "module": m.state_dict(),
                        "denoiser_raw": ema.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "rng": self._rng_state(gen), "history": self.model.history})
