"""docs/developing.md cannot rot: every file and every ``module.name`` it names exists, every module that lists the
score systems is named in its recipe, every field of a segmenter's registry entry is explained, and the README links
to it."""

from __future__ import annotations

import dataclasses
import importlib
import re

import pytest

from tests.conftest import REPO

GUIDE = REPO / "docs" / "developing.md"
PACKAGES = ("pipeline", "segmentation", "scoring", "tests")
#: a code span naming a file or folder of the repository: `pipeline/config.py`, `README.md`, `segmentation/weights/`
PATH = re.compile(r"^(?:[\w.-]+/)*[\w.-]+\.(?:py|md|yaml|toml)$|^(?:[\w.-]+/)+$")
#: a code span naming a module or something in one (`pipeline.config.validate`, `pipeline.__version__`) or a
#: configuration key (`segmentation.device`, `landmarks.estimate_from_lung_extent`)
DOTTED = re.compile(r"^[a-z_]\w*(?:\.[A-Za-z_]\w*)+$")


def _spans() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # shell blocks: commands, not names
    return [s.removesuffix("()") for s in re.findall(r"`([^`\n]+)`", text)]


def _is_config_key(dotted: str) -> bool:
    from pipeline.config import default_config

    node = default_config()
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _named(span: str) -> bool:
    """Whether a dotted span is a name the test checks: one of our packages' or a configuration section's."""
    from pipeline.config import default_config

    return bool(DOTTED.match(span)) and span.split(".")[0] in (*PACKAGES, *default_config())


def _resolve(dotted: str) -> None:
    """A configuration key; else import the longest module prefix of ``dotted`` and look the rest up in it (a
    dataclass field or an annotated Protocol member counts, though neither is a class attribute)."""
    if _is_config_key(dotted):
        return
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for name in parts[i:]:
            if hasattr(obj, name):
                obj = getattr(obj, name)
            elif name in getattr(obj, "__dataclass_fields__", {}) or name in getattr(obj, "__annotations__", {}):
                obj = None
            else:
                raise AssertionError(f"{dotted}: {'.'.join(parts[:i])} has no {name}")
        return
    raise AssertionError(f"{dotted}: no such module")


def test_the_guide_names_something():
    spans = _spans()
    assert sum(bool(PATH.match(s)) for s in spans) > 40 and sum(_named(s) for s in spans) > 40


@pytest.mark.parametrize("span", sorted({s for s in _spans() if PATH.match(s)}))
def test_every_file_named_exists(span):
    path = REPO / span
    assert path.is_dir() if span.endswith("/") else path.is_file(), f"docs/developing.md names {span}: not there"


@pytest.mark.parametrize("span", sorted({s for s in _spans() if _named(s)}))
def test_every_module_name_named_exists(span):
    _resolve(span)


def test_every_module_listing_the_score_systems_is_in_the_recipe():
    """A module that names zhang900's total holds a per-system list: a new system may have to go there too."""
    text = GUIDE.read_text(encoding="utf-8")
    recipe = text[text.index("## Adding a score system"):text.index("## Adding a segmenter")]
    named = set(re.findall(r"`([\w/]+\.py)`", recipe))
    for dotted in re.findall(r"`([\w.]+)`", recipe):  # module.name and module.Class.member name their module
        named |= {dotted.rsplit(".", n)[0].replace(".", "/") + ".py" for n in (1, 2)}
    listing = sorted(p.relative_to(REPO).as_posix() for package in ("pipeline", "scoring")
                     for p in (REPO / package).rglob("*.py") if "zhang900_total" in p.read_text(encoding="utf-8"))
    assert listing and not [m for m in listing if m not in named], (
        f"modules naming zhang900_total that the score-system recipe of docs/developing.md does not name: "
        f"{[m for m in listing if m not in named]}")


def test_every_registry_field_is_explained():
    from segmentation.factory import SegmenterSpec

    text = GUIDE.read_text(encoding="utf-8")
    recipe = text[text.index("## Adding a segmenter"):text.index("## Adding a configuration option")]
    missing = [f.name for f in dataclasses.fields(SegmenterSpec) if f"`{f.name}`" not in recipe]
    assert not missing, f"SegmenterSpec fields the guide does not explain: {missing}"


def test_readme_development_section_links_the_guide():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    development = readme[readme.index("## Development"):]
    assert "(docs/developing.md)" in development
