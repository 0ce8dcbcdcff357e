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

from biomodal.modalities import MASK_SUFFIX

__all__ = ["accumulated_backward", "split_batch"]


def split_batch(batch: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    """Cut a batch dict into ``n`` near-equal micro-batches along the first dimension.

    Tensors and lists whose length equals the batch size are split; other values are copied.
    Empty micro-batches (when the batch is smaller than ``n``) are dropped.
    """
    size = None
    for v in batch.values():
        if isinstance(v, Tensor) and v.ndim > 0:
            size = v.shape[0]
            break
    if size is None:
        raise ValueError("cannot split a batch without tensors")
    bounds = [(size * i) // n for i in range(n + 1)]
    out = []
    for i in range(n):
        lo, hi = bounds[i], bounds[i + 1]
        if hi <= lo:
            continue
        mb: dict[str, Any] = {}
        for k, v in batch.items():
            if (isinstance(v, Tensor) and v.ndim > 0 and v.shape[0] == size) or (
                isinstance(v, (list, tuple)) and len(v) == size
            ):
                mb[k] = v[lo:hi]
            else:
                mb[k] = v
        out.append(mb)
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
    micro = split_batch(batch, accum_steps)
    states = []
    bn = _bn_buffers(model)
    saved_bn = [b.clone() for b in bn]
    chunks: list[dict[str, Tensor]] = []
    with torch.no_grad():
        for mb in micro:
            states.append(_get_rng(device))
            with autocast():
                chunks.append(model(mb))
    after = _get_rng(device)
    for b, s in zip(bn, saved_bn):
        b.copy_(s)

    keys = [k for k in chunks[0] if not k.endswith(MASK_SUFFIX)]
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
            emb = model(mb)
        terms = [(emb[k].to(g[i].dtype) * g[i]).sum() for k, g in grads.items() if emb[k].requires_grad]
        if terms:
            torch.stack(terms).sum().backward()
    _set_rng(after, device)
    return out
