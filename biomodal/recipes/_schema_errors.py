"""Messages of recipe validation errors: every problem on one line, naming its key.

:func:`format_validation_error` turns a pydantic ``ValidationError`` of a recipe into the
text of the :class:`~biomodal.errors.ConfigError` raised by
:func:`biomodal.recipes.load_recipe`: an unknown key gets the keys allowed where it stands
(with a did-you-mean hint), any other problem its dotted key, the reason and the value given.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from biomodal._suggest import closest
from biomodal.errors import ConfigError
from biomodal.recipes.families import DEFAULT_FAMILY, FamilyConfig, get_family

__all__ = ["format_validation_error"]


def _model_for_path(loc: tuple[Any, ...], raw: Any) -> type[BaseModel] | None:
    """Walk the schema (and the raw input beside it) to find the model owning the last key.

    ``data`` resolves to the family's config class and ``eval.protocols[i]`` to the protocol's
    config class, read from the raw recipe, so unknown keys there get their own allowed list.
    """
    from biomodal.eval.protocols import get_protocol
    from biomodal.recipes.schema import ProtocolSpec, Recipe

    model: Any = Recipe
    node: Any = raw
    for part in loc[:-1]:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        if isinstance(part, int):
            continue
        if model is None or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        if model is ProtocolSpec and part == "params":
            return None
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        args = [x for a in getattr(ann, "__args__", ()) for x in (a, *getattr(a, "__args__", ()))]
        sub = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = sub[0] if sub else None
        if model is FamilyConfig:
            fam = node.get("family", DEFAULT_FAMILY) if isinstance(node, dict) else DEFAULT_FAMILY
            try:
                model = get_family(str(fam)).config
            except ConfigError:
                return None
    if model is ProtocolSpec:  # an unknown key of a protocol's params
        name = node.get("name") if isinstance(node, dict) else None
        try:
            return get_protocol(str(name)).config
        except ConfigError:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


def format_validation_error(exc: ValidationError, source: str, raw: Any = None) -> str:
    lines = [f"invalid recipe {source}:"]
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        loc = tuple(p for p in loc if p not in ("LossConfig", "list[LossConfig]"))
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            owner = _model_for_path(loc, raw)
            allowed = sorted(owner.model_fields) if owner else []
            close = closest(str(loc[-1]), allowed)
            hint = f" Did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?" if close else ""
            lines.append(f"  - unknown key {key!r}; allowed here: {', '.join(allowed)}.{hint}")
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg}{_got(err.get('input'), msg)}")
    return "\n".join(lines)


def _got(value: Any, msg: str) -> str:
    """`` (got <value>)`` for a scalar the message does not already show; sections are not dumped."""
    if isinstance(value, (dict, list)) and len(repr(value)) > 60:
        return ""
    text = repr(value)
    if text in msg:
        return ""
    return f" (got {text[:57] + '...' if len(text) > 60 else text})"
