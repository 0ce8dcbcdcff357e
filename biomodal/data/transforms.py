"""Composable, seedable augmentations for histology tiles.

Every transform accepts either

- a numpy array ``(H, W, 3)``, ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``
  (the dtype is kept: ``uint8`` in, ``uint8`` out), or
- a torch tensor ``(3, H, W)``, floating in ``[0, 1]`` (kept on its device for flips and
  rotations; colour transforms run on the CPU and return a tensor of the input's dtype
  and device).

Randomness comes from a :class:`numpy.random.Generator`: each transform owns one
(``seed=``), and ``t(img, rng=...)`` overrides it for one call (datasets pass a
generator derived from ``(seed, epoch, index)`` so augmentation does not depend on
the DataLoader worker).  :class:`ToTensor` turns the result into a ``(3, H, W)``
``float32`` tensor in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ColorJitter",
    "Compose",
    "HEDJitter",
    "Normalize",
    "RandomFlip",
    "RandomRot90",
    "ToTensor",
    "Transform",
    "default_histology_transforms",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Ruifrok & Johnston haematoxylin / eosin / DAB optical-density vectors (rows), as in skimage.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)
_OD_EPS = 1e-6


class Transform:
    """Base class: ``t(img, rng=None)`` applies :meth:`apply` with ``rng`` or the own generator.

    Parameters
    ----------
    seed
        Seed of the transform's own generator (``None``: fresh entropy).

    Attributes
    ----------
    random
        Whether the output depends on the generator (``False`` for conversions such as
        :class:`ToTensor`): a frozen encoder's features of a non-random input can be cached.
    """

    random: bool = True

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, img: Any, rng: np.random.Generator | None = None) -> Any:
        """Apply the transform, with ``rng`` if given, else the own generator."""
        return self.apply(img, rng if rng is not None else self.rng)

    def apply(self, img: Any, rng: np.random.Generator) -> Any:  # pragma: no cover - abstract
        """Transform ``img`` with randomness from ``rng``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "rng")
        return f"{type(self).__name__}({args})"


class Compose(Transform):
    """Apply transforms in order, sharing one generator (plain callables get the image only)."""

    def __init__(self, transforms: Sequence[Callable[..., Any]], seed: int | None = None) -> None:
        super().__init__(seed)
        self.transforms = list(transforms)

    @property
    def random(self) -> bool:  # type: ignore[override]
        """True when any step is random (a plain callable counts as random: it is not known)."""
        return any(getattr(t, "random", True) for t in self.transforms)

    def apply(self, img: Any, rng: np.random.Generator) -> Any:
        """Apply every transform in order."""
        for t in self.transforms:
            img = t(img, rng=rng) if isinstance(t, Transform) else t(img)
        return img

    def __repr__(self) -> str:
        inner = ",\n".join(f"    {t!r}" for t in self.transforms)
        return f"Compose([\n{inner}\n])"


def _spatial_axes(img: Any) -> tuple[int, int]:
    return (-2, -1) if isinstance(img, torch.Tensor) else (0, 1)


class RandomFlip(Transform):
    """Flip left-right with probability ``horizontal`` and up-down with probability ``vertical``."""

    def __init__(self, horizontal: float = 0.5, vertical: float = 0.5, seed: int | None = None) -> None:
        super().__init__(seed)
        self.horizontal, self.vertical = float(horizontal), float(vertical)

    def apply(self, img: Any, rng: np.random.Generator) -> Any:
        """Flip ``img``."""
        flip_h, flip_v = rng.random() < self.horizontal, rng.random() < self.vertical
        rows, cols = _spatial_axes(img)
        dims = [d for d, on in ((cols, flip_h), (rows, flip_v)) if on]
        if not dims:
            return img
        if isinstance(img, torch.Tensor):
            return torch.flip(img, dims)
        return np.ascontiguousarray(np.flip(img, tuple(dims)))


class RandomRot90(Transform):
    """Rotate by a uniformly drawn multiple of 90 degrees (``np.rot90`` direction)."""

    def apply(self, img: Any, rng: np.random.Generator) -> Any:
        """Rotate ``img``."""
        k = int(rng.integers(0, 4))
        if k == 0:
            return img
        if isinstance(img, torch.Tensor):
            return torch.rot90(img, k, dims=_spatial_axes(img))
        return np.ascontiguousarray(np.rot90(img, k, axes=(0, 1)))


def _to_float_hwc(img: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Float HWC view in [0, 1] and a function restoring the input's type."""
    if isinstance(img, torch.Tensor):
        if img.ndim != 3 or img.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(img.shape)}")
        dtype, device = img.dtype, img.device
        arr = img.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
        return arr, lambda out: torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1))).to(
            device, dtype
        )
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) array, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, lambda out: np.clip(np.rint(out * 255.0), 0, 255).astype(
            np.uint8
        )
    dtype = arr.dtype
    return arr.astype(np.float32), lambda out: out.astype(dtype)


class ColorJitter(Transform):
    """Random brightness, contrast, saturation and hue changes.

    Parameters
    ----------
    brightness, contrast, saturation
        Factors are drawn from ``U(1 - x, 1 + x)`` (brightness multiplies, contrast and
        saturation blend with the mean grey level / the grey image).
    hue
        Hue rotation drawn from ``U(-hue, hue)`` in turns (``0.5`` = 180 degrees), applied
        as a rotation of the chroma plane in YIQ space.
    """

    def __init__(
        self,
        brightness: float = 0.0,
        contrast: float = 0.0,
        saturation: float = 0.0,
        hue: float = 0.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue={hue} must lie in [0, 0.5]")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def apply(self, img: Any, rng: np.random.Generator) -> Any:
        """Jitter the colours of ``img``."""
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        h = rng.uniform(-self.hue, self.hue)
        x, restore = _to_float_hwc(img)
        x = x * b
        grey = x @ _RGB_TO_YIQ[0].astype(np.float32)
        x = (x - grey.mean()) * c + grey.mean()
        grey = x @ _RGB_TO_YIQ[0].astype(np.float32)
        x = grey[..., None] + (x - grey[..., None]) * s
        if h != 0.0:
            a = 2 * np.pi * h
            rot = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
            x = x @ (_YIQ_TO_RGB @ rot @ _RGB_TO_YIQ).T.astype(np.float32)
        return restore(np.clip(x, 0.0, 1.0))


def rgb_to_hed(x: np.ndarray) -> np.ndarray:
    """Stain concentrations ``-log(rgb) @ inv(M)`` of a float RGB image in ``[0, 1]`` (no clipping)."""
    return -np.log(np.maximum(x, _OD_EPS)) @ _HED_FROM_RGB.astype(np.float32)


def hed_to_rgb(c: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_hed` (clipped to ``[0, 1]``)."""
    return np.clip(np.exp(-(c @ _RGB_FROM_HED.astype(np.float32))), 0.0, 1.0)


class HEDJitter(Transform):
    """Stain augmentation by colour deconvolution (Tellez et al., 2018).

    The image is split into haematoxylin, eosin and DAB concentrations with the
    Ruifrok-Johnston matrix; each channel ``c`` becomes ``c * alpha + beta`` with
    ``alpha ~ U(1 - sigma, 1 + sigma)`` and ``beta ~ U(-bias, bias)``, then recomposed.
    With ``sigma = bias = 0`` it is the identity (up to uint8 rounding).
    """

    def __init__(self, sigma: float = 0.05, bias: float = 0.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.sigma, self.bias = float(sigma), float(bias)

    def apply(self, img: Any, rng: np.random.Generator) -> Any:
        """Jitter the stains of ``img``."""
        alpha = rng.uniform(1 - self.sigma, 1 + self.sigma, 3).astype(np.float32)
        beta = rng.uniform(-self.bias, self.bias, 3).astype(np.float32)
        x, restore = _to_float_hwc(img)
        return restore(hed_to_rgb(rgb_to_hed(x) * alpha + beta))


class ToTensor(Transform):
    """``(H, W, 3)`` array (uint8 or float in [0, 1]) or tensor -> ``(3, H, W)`` float32 tensor in [0, 1]."""

    random = False

    def apply(self, img: Any, rng: np.random.Generator) -> torch.Tensor:
        """Convert ``img``."""
        if isinstance(img, torch.Tensor):
            return img.float() / 255.0 if img.dtype == torch.uint8 else img.float()
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) array, got shape {arr.shape}")
        # Convert with numpy: tiny torch ops pay thread-pool overhead in DataLoader workers.
        chw = arr.transpose(2, 0, 1).astype(np.float32)
        if arr.dtype == np.uint8:
            chw *= np.float32(1.0 / 255.0)
        return torch.from_numpy(np.ascontiguousarray(chw))


class Normalize(Transform):
    """``(x - mean) / std`` per channel of a ``(3, H, W)`` tensor (or CHW float array)."""

    random = False

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int | None = None,
    ) -> None:
        super().__init__(seed)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def apply(self, img: Any, rng: np.random.Generator) -> Any:
        """Normalise ``img``."""
        if isinstance(img, torch.Tensor):
            mean = torch.tensor(self.mean, dtype=img.dtype, device=img.device)[:, None, None]
            std = torch.tensor(self.std, dtype=img.dtype, device=img.device)[:, None, None]
            return (img - mean) / std
        arr = np.asarray(img, dtype=np.float32)
        return (arr - np.array(self.mean, np.float32)[:, None, None]) / np.array(self.std, np.float32)[
            :, None, None
        ]


def default_histology_transforms(
    train: bool,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int | None = None,
) -> Compose:
    """Build the standard tile pipeline: dihedral flips/rotations and mild stain/colour jitter when training.

    Parameters
    ----------
    train
        Add the random augmentations (evaluation only converts to a tensor).
    mean, std
        Add :class:`Normalize` with these statistics (leave ``None`` when the encoder
        normalises its input itself, e.g. from its registry entry).
    seed
        Seed of the composed generator.

    Returns
    -------
    Compose
        Maps an ``(H, W, 3)`` uint8 tile to a ``(3, H, W)`` float32 tensor.
    """
    steps: list[Transform] = []
    if train:
        steps += [
            RandomFlip(),
            RandomRot90(),
            HEDJitter(sigma=0.05, bias=0.01),
            ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02),
        ]
    steps.append(ToTensor())
    if mean is not None or std is not None:
        steps.append(Normalize(mean or IMAGENET_MEAN, std or IMAGENET_STD))
    return Compose(steps, seed=seed)
