"""MkDocs hook: generate the API reference, one page per biomodal subpackage.

Each page ``api/<subpackage>.md`` is written in memory at build time (nothing is
committed, so a new module or export appears without editing the docs). A page holds
the subpackage docstring, a table of what ``from biomodal.<subpackage> import name``
offers (the lazy-export map ``_MAP`` or ``__all__`` of its ``__init__``), and one
mkdocstrings block per module that defines those names or is public (no leading
underscore) and declares ``__all__``; a module block shows exactly its ``__all__``.
The source is read with :mod:`ast` only: building the docs imports neither biomodal
nor torch.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "biomodal"
SUBPACKAGES = ("io", "pp", "data", "nn", "losses", "train", "eval", "pl", "recipes", "datasets")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _literal(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def _is_public(module: str) -> bool:
    return not any(part.startswith("_") for part in module.split("."))


def _imported(tree: ast.Module, module: str, is_pkg: bool) -> dict[str, str]:
    """Name -> module it is imported from, for the top-level ``from ... import`` of a module."""
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.update({a.asname or a.name: base for a in node.names})
    return out


def _exports(init: Path, package: str) -> dict[str, str]:
    """Public name -> defining module, from ``_MAP`` (lazy exports) or ``__all__`` + imports."""
    tree = ast.parse(init.read_text())
    mapping = _literal(tree, "_MAP")
    if isinstance(mapping, dict):
        return {k: f"{package}.{v}" for k, v in mapping.items()}
    names = _literal(tree, "__all__") or []
    imported = _imported(tree, package, True)
    return {n: imported.get(n, package) for n in names}


def page(sub: str) -> str:
    """Markdown of the API page of ``biomodal.<sub>``."""
    package = f"biomodal.{sub}"
    folder = PACKAGE / sub
    exports = _exports(folder / "__init__.py", package)
    modules: dict[str, list[str]] = {}
    origin: dict[str, dict[str, str]] = {}
    for path in sorted(folder.rglob("*.py")):
        mod = _module_name(path)
        if mod == package:
            continue
        tree = ast.parse(path.read_text())
        origin[mod] = _imported(tree, mod, path.name == "__init__.py")
        names = _literal(tree, "__all__")
        if _is_public(mod) and isinstance(names, list) and names:
            modules[mod] = list(names)
    for name, mod in exports.items():
        if mod != package:
            modules.setdefault(mod, [])
            if name not in modules[mod]:
                modules[mod].append(name)
    # A re-export is documented where it is defined when that module has its own block.
    for mod, names in modules.items():
        modules[mod] = [n for n in names if origin.get(mod, {}).get(n) not in modules]
    lines = [
        f"# `{package}`",
        "",
        f"::: {package}",
        "    options:",
        "      members: false",
        "      show_root_heading: false",
        "      show_root_toc_entry: false",
        "",
    ]
    if exports:
        lines += [f"`from {package} import ...`", "", "| name | defined in |", "|---|---|"]
        lines += [f"| [`{n}`][{m}.{n}] | `{m}` |" for n, m in sorted(exports.items())]
        lines.append("")
    for mod, names in sorted(modules.items()):
        members = repr(sorted(set(names))) if names else "false"
        lines += [f"::: {mod}", "    options:", f"      members: {members}", ""]
    return "\n".join(lines)


_ROLE = re.compile(r":(class|func|meth|mod|attr|data|exc|obj|math):<code>(~?)\.?([^<]+)</code>")


def _role(m: re.Match[str]) -> str:
    kind, short, target = m.group(1), m.group(2), m.group(3)
    if kind == "math":
        return f"<code>{target}</code>"
    title = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{target}" optional><code>{title}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    """Turn the Sphinx roles of numpy docstrings (``:class:`~a.B```) into autorefs links.

    A target that is not documented on the site stays plain code (``optional``).
    """
    return _ROLE.sub(_role, html)


def on_files(files: Files, config: Any) -> Files:
    """Add the generated ``api/<subpackage>.md`` pages to the build."""
    for sub in SUBPACKAGES:
        files.append(File.generated(config, f"api/{sub}.md", content=page(sub)))
    return files
