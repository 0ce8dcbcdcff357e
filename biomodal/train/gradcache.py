"""Gradient accumulation that keeps the contrastive batch whole (GradCache, Gao et al. 2021).

With ``k`` micro-batches, a plain loop would compute ``k`` small contrastive losses, each seeing
only ``B / k`` negatives. Instead (as open_clip's ``--accum-freq``):

1. run every micro-batch **without grad** and keep the embeddings (memory: embeddings only);
2. concatenate them, turn them into leaf tensors that require grad and compute the loss of the
   **whole** batch; ``backward`` yields ``dL/dz`` (and the gradients of the loss's own
   parameters and of the adversary);
3. re-run each micro-batch **with grad** and back-propagate the surrogate ``sum(z_i * dL/dz_i)``,
   whose parameter gradient is exactly the micro-batch's share of ``dL/dθ``.

The RNG state (CPU and the current CUDA device) is saved before each micro-batch's first pass and
restored before its second, so dropout masks match, and BatchNorm running statistics are restored
after the no-grad pass so that they are updated once per sample. Note that BatchNorm *batch
statistics* are per micro-batch, so models with BatchNorm are not exactly equivalent to
``accum_steps=1`` (LayerNorm/GroupNorm models are).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import Tensor, nn

from biomodal.data.rows import batch_size_of, select_rows
from biomodal.modalities import MASK_SUFFIX
from biomodal.train.distill import TEACHER_PREFIX

__all__ = ["accumulated_backward", "split_batch"]


def split_batch(batch: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """Cut a batch dict into ``n`` near-equal micro-batches along the first dimension.

    Every per-sample leaf is split, recursively (see :func:`biomodal.data.rows.select_rows`):
    tensors whose first dimension is the batch size, lists/tuples with one item per sample, and
    dicts of them such as a tokenizer's ``{"input_ids": (B, L), "attention_mask": (B, L)}``.
    Other values are copied. The batch size is the first dimension of the first tensor found
    (top-level values first). Empty micro-batches (when the batch is smaller than ``n``) are
    dropped.
    """
    size = next((s for v in batch.values() if isinstance(v, Tensor) and (s := batch_size_of(v))), None)
    if size is None:
        size = next((s for v in batch.values() if isinstance(v, Mapping) and (s := batch_size_of(v))), None)
    if size is None:
        raise ValueError(f"cannot split a batch without tensors; keys: {sorted(batch)}")
    bounds = [(size * i) // n for i in range(n + 1)]
    out = []
    for i in range(n):
        lo, hi = bounds[i], bounds[i + 1]
        if hi > lo:
            out.append({k: select_rows(v, slice(lo, hi), size) for k, v in batch.items()})
    return out


def _get_rng(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _bn_buffers(model: nn.Module) -> list[Tensor]:
    bufs: list[Tensor] = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training:
            bufs.extend(b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None)
    return bufs


def accumulated_backward(
    model: nn.Module,
    batch: Mapping[str, Any],
    accum_steps: int,
    *,
    autocast: Callable[[], AbstractContextManager],
    backward: Callable[[Tensor], None],
    device: torch.device,
) -> Any:
    """GradCache forward/backward of one contrastive batch; gradients end up in ``.grad``.

    Parameters
    ----------
    model
        A :class:`~biomodal.train.ContrastiveModel` (not DDP-wrapped; reduce gradients after).
        Its ``prepare_batch`` (input mixing) runs once on the whole batch, its ``loss_inputs``
        embeds each micro-batch (views and momentum-teacher embeddings included; the teacher
        only in the first, no-grad pass) and the loss sees the whole batch.
    batch
        The whole (per-process) contrastive batch, already on ``device``.
    accum_steps
        Number of micro-batches.
    autocast
        Factory of the autocast context used for the encoders.
    backward
        Called on the full-batch loss (e.g. ``lambda l: scaler.scale(l).backward()``); the
        scaled embedding gradients then flow into the micro-batch surrogates unchanged.
    device
        Device whose RNG state is saved and restored.

    Returns
    -------
    LossOutput
        The full-batch loss output (computed once, on the cached embeddings).
    """
    if hasattr(model, "prepare_batch"):  # input mixing (bimixco) on the whole batch, once
        batch = model.prepare_batch(batch)
    embed = getattr(model, "loss_inputs", None) or model
    micro = split_batch(batch, accum_steps)
    states = []
    bn = _bn_buffers(model)
    saved_bn = [b.clone() for b in bn]
    chunks: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for mb in micro:
            states.append(_get_rng(device))
            with autocast():
                chunks.append(embed(mb))
    after = _get_rng(device)
    for b, s in zip(bn, saved_bn):
        b.copy_(s)

    # embeddings that carry gradient (not masks, not the momentum teacher's)
    keys = [k for k in chunks[0] if not k.endswith(MASK_SUFFIX) and not k.startswith(TEACHER_PREFIX)]
    full: dict[str, Tensor] = {}
    for k in chunks[0]:
        cat = torch.cat([c[k] for c in chunks])
        if k in keys:
            cat = cat.detach().float() if cat.dtype in (torch.float16, torch.bfloat16) else cat.detach()
            cat.requires_grad_(True)
        full[k] = cat
    out = model.loss_from_embeddings(full, batch)
    backward(out.loss)

    sizes = [next(iter(c.values())).shape[0] for c in chunks]
    grads = {k: full[k].grad.split(sizes) for k in keys if full[k].grad is not None}
    for i, mb in enumerate(micro):
        _set_rng(states[i], device)
        with autocast():
            emb = embed(mb, teacher=False) if embed is not model else model(mb)
        terms = [
            (emb[k].to(g[i].dtype) * g[i]).sum()
            for k, g in grads.items()
            if k in emb and emb[k].requires_grad
        ]
        if terms:
            torch.stack(terms).sum().backward()
    _set_rng(after, device)
    return out
