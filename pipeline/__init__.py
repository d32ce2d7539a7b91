"""ctscore pipeline: discovery, loading, resampling, orchestration, outputs and the CLI."""

__version__ = "0.20.0"  # hidden and trash folders not read, archives named, compressed end slices flagged: scored again on resume


def version_key(version: str) -> tuple:
    """A sort key that orders ctscore versions by their numbers ("0.4.0" before "0.10.0", which a plain string sort
    puts first); a part that is not a number sorts after the numbers, as text."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in str(version).split("."))


def install_problem() -> str:
    """"" when ctscore's ``scoring`` and ``segmentation`` packages are the ones beside this ``pipeline``; else a
    message naming what is imported in their place. Their names are generic: a folder ``scoring/`` in a notebook's
    working directory (or on PYTHONPATH) is imported instead, and ctscore then failed deep inside a run with "No
    module named 'scoring.zones'" (a packaging audit, 2026-12-06)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("scoring", "segmentation"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        places = list(spec.submodule_search_locations or []) if spec is not None else []
        where = Path(places[0]).resolve() if places else (Path(spec.origin).resolve() if spec and spec.origin else None)
        if where != root / name:
            return (f"the module {name!r} is imported from {where or 'nowhere'}, not ctscore's ({root / name}): a "
                    f"folder or file named {name} in the working directory or on PYTHONPATH takes its place; rename "
                    "it or run ctscore from another folder")
    return ""
