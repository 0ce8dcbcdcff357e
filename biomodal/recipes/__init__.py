"""Recipe schema, build() and run(): the only layer that knows all the others."""

from biomodal._exports import lazy_exports

_MAP = {
    "Recipe": "schema",
    "load_recipe": "schema",
    "run": "runner",
    "load": "checkpoint",
}
__all__ = sorted(_MAP)
__getattr__, __dir__ = lazy_exports(__name__, _MAP)
