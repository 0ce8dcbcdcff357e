"""Labs / tabular encoder: an MLP over values and their missing-value indicators (Symile style).

Symile's MIMIC experiment (Saporta et al., 2024) encodes each laboratory test as its
standardised value plus a binary "missing" indicator, the value imputed where it is missing,
so that the model can use the pattern of which tests were ordered. :class:`LabsMLP` does the
same inside the encoder; its input is any of

* ``[B, F]`` values with NaN where missing (indicators are derived from the NaNs);
* ``[B, 2F]`` values followed by indicators (1: missing), what a labs preprocessor writes;
* a dict ``{"values": [B, F], "missing": [B, F]}`` (or ``"observed"``, 1: present).

Missing values are replaced by ``fill`` (0: the training mean after standardisation) before
the first layer, so the output never depends on what a missing cell held.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from biomodal.errors import ConfigError, DataError
from biomodal.nn.expression import MLPEncoder
from biomodal.nn.registry import register_encoder
from biomodal.nn.timm_encoders import load_checked, load_state_dict_file

__all__ = ["LabsMLP", "split_missing"]


def split_missing(x: Any, n_features: int, where: str = "labs_mlp") -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(values with missing cells zeroed, float missing indicators)``, both ``[B, F]``.

    See the module docstring for the accepted inputs; NaN values always count as missing.
    """
    if isinstance(x, Mapping):
        if "values" not in x:
            raise DataError(
                f"{where}: a dict input needs 'values' and 'missing' (or 'observed'); got {sorted(x)}"
            )
        values = x["values"]
        if "missing" in x:
            missing = x["missing"].bool()
        elif "observed" in x:
            missing = ~x["observed"].bool()
        else:
            missing = torch.isnan(values)
    else:
        if not isinstance(x, torch.Tensor) or x.ndim != 2:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise DataError(f"{where}: expected [B, {n_features}] or [B, {2 * n_features}], got {shape}")
        if x.shape[1] == 2 * n_features:
            values, missing = x[:, :n_features], x[:, n_features:] > 0.5
        else:
            values, missing = x, torch.isnan(x)
    if values.ndim != 2 or values.shape[1] != n_features or missing.shape != values.shape:
        raise DataError(
            f"{where}: expected values [B, {n_features}] (and indicators of the same shape), got "
            f"{tuple(values.shape)} / {tuple(missing.shape)}"
        )
    missing = missing.to(values.device) | torch.isnan(values)
    values = torch.where(missing, torch.zeros_like(values), values)
    return values, missing.to(values.dtype)


class LabsMLP(nn.Module):
    """MLP over ``[values, missing indicators]`` of ``in_features`` lab tests / covariates.

    Parameters
    ----------
    in_features
        Number of features ``F`` (the MLP sees ``2F`` inputs; without indicators ``F``).
    hidden, out_dim, dropout, norm, activation
        As :class:`biomodal.nn.expression.MLPEncoder`.
    indicators
        Feed the missing indicators to the MLP (False: mean imputation only).
    fill
        Value given to missing cells (0: the training mean of standardised features).
    """

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...] = (64,),
        out_dim: int | None = None,
        dropout: float = 0.1,
        norm: str | None = "layer",
        activation: str = "gelu",
        indicators: bool = True,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        if in_features < 1:
            raise ConfigError(f"labs_mlp: in_features={in_features} must be >= 1")
        self.in_features = int(in_features)
        self.indicators = bool(indicators)
        self.fill = float(fill)
        width = 2 * self.in_features if self.indicators else self.in_features
        self.mlp = MLPEncoder(width, hidden, out_dim, dropout, 0.0, norm, activation)
        self.out_dim = self.mlp.out_dim

    def forward(self, x: Any) -> torch.Tensor:
        """Features ``[B, out_dim]`` (see the module docstring for the accepted inputs)."""
        values, missing = split_missing(x, self.in_features)
        if self.fill:
            values = values + self.fill * missing
        h = torch.cat([values, missing], dim=1) if self.indicators else values
        return self.mlp(h)


@register_encoder(
    "labs_mlp",
    modality="labs",
    input_kind="vector",
    input_shape={"in_features": None},
    description="MLP over lab values + missing-value indicators (NaN, [values, indicators] or a dict)",
)
def _build_labs_mlp(
    *,
    in_features: int | None = None,
    hidden: tuple[int, ...] | list[int] = (64,),
    out_dim: int | None = None,
    dropout: float = 0.1,
    norm: str | None = "layer",
    activation: str = "gelu",
    indicators: bool = True,
    fill: float = 0.0,
    pretrained_path: str | os.PathLike | None = None,
) -> LabsMLP:
    if in_features is None or int(in_features) < 1:
        raise ConfigError(f"labs_mlp: in_features (number of lab features) is required, got {in_features!r}")
    model = LabsMLP(
        int(in_features), tuple(int(h) for h in hidden), out_dim, dropout, norm, activation, indicators, fill
    )
    weights = None
    if pretrained_path is not None:
        load_checked(model, load_state_dict_file(pretrained_path), source=str(pretrained_path))
        weights = str(pretrained_path)
    model.spec_updates = {"input_shape": {"in_features": int(in_features)}, "weights": weights}
    return model
