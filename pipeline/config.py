"""Configuration: the packaged ``configs/default.yaml`` merged with user files and overrides.

The default file is the schema: a user key that the default does not have is an error, and a value
must have the default's type (ints are accepted where floats are expected). The resolved config is
a plain nested dict; its sha256 (of canonical JSON) goes into ``run.json`` and into every scan's
fingerprint.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.errors import ConfigError
from segmentation.factory import SEGMENTERS, unknown_method_message, uses_gpu

log = logging.getLogger(__name__)


class NumberLoader(yaml.SafeLoader):
    """SafeLoader that reads ``1e3`` or ``5E-2`` (exponent, no decimal point) as numbers, as YAML 1.2 does; PyYAML
    follows YAML 1.1 and leaves them as text, so ``lr: 1e-4`` was refused as "not a number"."""


NumberLoader.add_implicit_resolver(  # 1e3, 5E-2, 2.5e8 (YAML 1.1 wants a decimal point and a signed exponent)
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with exponent numbers read as numbers (:class:`NumberLoader`)."""
    return yaml.load(text, Loader=NumberLoader)


class _UniqueKeyLoader(NumberLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last one silently, so a
    second ``scoring:`` section would drop every setting of the first)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key '{key}' is given twice (line {key_node.start_mark.line + 1}); "
                                  "merge the two into one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


#: ctscore's own default configuration, found beside this package (not by importing ``configs``: a folder named
#: ``configs`` with an ``__init__.py`` in the working directory of a notebook, a common project layout, was imported
#: in its place and its default.yaml scored the cohort without a word; a packaging audit, 2026-12-06).
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def default_config() -> dict[str, Any]:
    """The packaged default configuration (:data:`DEFAULT_CONFIG`)."""
    if DEFAULT_CONFIG.is_file():
        text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    else:  # an install that keeps its packages elsewhere (a zip): the importable package's
        text = resources.files("configs").joinpath("default.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _plain(value: Any) -> Any:
    """A value from a notebook as YAML would have given it: a path (``pathlib.Path``, any ``os.PathLike``) as its
    text, a numpy scalar (``np.int64(20)``, ``np.bool_``, ``np.float32``) or 0-d array as the Python number or bool
    (the resolved config is written to run.json and hashed as JSON)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        return value.decode(errors="surrogateescape") if isinstance(value, bytes) else value
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return value.item()
    return value


def _at(cfg: Any, key: str | None) -> Any:
    """The value at a dotted ``key`` of ``cfg`` (None when it is not there)."""
    for part in (key or "").split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg


def _check_type(key: str, default: Any, value: Any) -> Any:
    value = _plain(value)
    if default is None:  # a key with no default value (scoring.lobar.lobes_dir): a path, as text, or none
        if value is None or isinstance(value, str):
            return None if value is None else str(value)
        if isinstance(value, int) and not isinstance(value, bool):  # a folder named 2020 (YAML reads a number)
            return str(value)
        raise ConfigError(f"{key} must be text (a path) or null, got {type(value).__name__} {shown(value)}")
    if value is None:  # an empty value in YAML (``key:``): the code needs one
        raise ConfigError(f"{key} has no value (empty or null); give one, or leave the key out for the default "
                          f"{default!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {shown(value)}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {shown(value)}")
        if isinstance(value, float) and math.isnan(value):  # NaN compares false: every threshold would be off
            raise ConfigError(f"{key} must be a number, got NaN")
        if isinstance(value, float) and math.isinf(value):  # run.json would record it as null, not as used
            raise ConfigError(f"{key} must be a finite number, got {value}")
        if isinstance(default, float):
            return float(value)
        # -320.0 for an integer default is -320: the same setting, the same hashes (else a resume scores again)
        return int(value) if isinstance(value, float) and value.is_integer() else value
    if isinstance(default, list):
        if isinstance(value, (tuple, np.ndarray)):  # a tuple or a numpy array from a notebook: a list
            value = list(value)
        if not isinstance(value, list) or len(value) != len(default):
            raise ConfigError(f"{key} must be a list of {len(default)} values, got {shown(value)}")
        return [_check_type(f"{key}[{i}]", d, v) for i, (d, v) in enumerate(zip(default, value))]
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be text, got {shown(value)}")
        return str(value)
    return value


def merge(base: dict[str, Any], override: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``, refusing unknown keys and wrong types."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            elsewhere = _where_else(default_config(), key)
            hint = f"; did you mean {' or '.join(elsewhere)}?" if elsewhere else ""
            raise ConfigError(f"unknown key '{dotted}' (known here: {known}){hint}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} must be a mapping, got {shown(value)}")
            out[key] = merge(base[key], value, prefix=f"{dotted}.")
        else:
            out[key] = _check_type(dotted, base[key], value)
    return out


def _where_else(tree: Mapping[str, Any], key: Any, prefix: str = "") -> list[str]:
    """The dotted names of ``key`` anywhere in ``tree`` (a key put at the wrong level: ``scoring.density_rule``
    is ``scoring.zhang900.density_rule``)."""
    found = []
    for k, v in tree.items():
        if k == key:
            found.append(f"{prefix}{k}")
        if isinstance(v, Mapping):
            found += _where_else(v, key, f"{prefix}{k}.")
    return found


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, cut short (reprlib, which never builds the whole of it: a
    YAML alias bomb's value printed in full was 254 MB of stderr)."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = 120
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 12
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= 300 else text[:297] + "..."


def parse_override(item: str) -> dict[str, Any]:
    """Turn ``a.b.c=value`` (value parsed as YAML) into a nested dict."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    dotted, raw = item.split("=", 1)
    try:
        value = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': the value is not valid YAML (quote text that holds special "
                          f"characters): {exc}") from None
    node: dict[str, Any] = {}
    cur = node
    parts = dotted.strip().split(".")
    for p in parts[:-1]:
        cur[p] = {}
        cur = cur[p]
    cur[parts[-1]] = value
    return node


_INF = math.inf
#: (key, low, high, (low included, high included)): sizes, radii and counts that make no sense out of range (a
#: negative radius was taken as none, a sigma below 0 as no smoothing, a share above 1 as 1).
_RANGES: tuple[tuple[str, float, float, tuple[bool, bool]], ...] = (
    *((f"segmentation.{k}", 0, _INF, (True, False)) for k in (
        "min_lung_volume_ml", "lung_grow_mm", "pleural_closing_radius_mm", "small_vessel_radius_mm",
        "vessel_max_radius_mm", "lesion_min_component_ml", "consolidation_min_ml", "consolidation_min_radius_mm",
        "vessel_halo_mm", "hilum_margin_mm", "monai.body_margin_mm")),
    ("segmentation.texture_sigma_mm", 0, _INF, (True, False)),  # 0: no smoothing
    ("segmentation.addback_max_air_fraction", 0, 1, (True, True)),
    ("segmentation.texture_fraction", 0, 1, (True, True)),
    ("selection.max_axial_angle_deg", 0, 90, (True, True)),
    ("selection.min_slices", 1, _INF, (True, False)),
    ("selection.max_slice_thickness_mm", 0, _INF, (False, False)),
    ("selection.full_coverage_mm", 0, _INF, (True, False)),
    ("loading.max_gap_ratio", 1, _INF, (False, False)),
    ("loading.spacing_tolerance", 0, _INF, (True, False)),
    ("loading.max_voxels", 0, _INF, (False, False)),
    ("loading.max_memory_mb", 0, _INF, (False, False)),
)

#: flat segmentation keys read whatever the segmenter (the pipeline reads min_lung_volume_ml itself); the other flat
#: keys are the classical segmenter's own, and every other segmenter reads its own section (segmentation.monai: the
#: ``options`` of its entry in segmentation.factory.SEGMENTERS)
SHARED_SEGMENTATION_KEYS = ("method", "device", "min_lung_volume_ml", "masks_dir")


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def classical_only_changes(cfg: Mapping[str, Any]) -> list[str]:
    """The ``segmentation`` keys changed from their defaults that only the classical segmenter reads, when another
    segmenter is configured (it ignores them: a minimum lesion size set there changes nothing but the hashes)."""
    seg = cfg["segmentation"]
    spec = SEGMENTERS.get(str(seg["method"]))
    if spec is not None and spec.options is None:  # the configured segmenter reads the flat keys (classical)
        return []
    not_classical = {*SHARED_SEGMENTATION_KEYS, *(s.options for s in SEGMENTERS.values() if s.options)}
    defaults = default_config()["segmentation"]
    return [f"segmentation.{k}" for k, v in seg.items()
            if k not in not_classical and k in defaults and v != defaults[k]]


def warn_unused_settings(cfg: Mapping[str, Any]) -> None:
    """Warn about segmentation settings the configured segmenter does not read (called once per run by
    ``run_pipeline``; ``ctscore scan`` segments nothing): classical-only keys changed for the network, a device
    for the classical segmenter."""
    seg = cfg["segmentation"]
    if not uses_gpu(seg["method"]) and str(seg["device"]) not in ("auto", "cpu"):
        log.warning("segmentation.device %s is not used: the %s segmenter runs on the CPU", seg["device"],
                    seg["method"])
    ignored = classical_only_changes(cfg)
    if ignored:
        log.warning("%s %s read by the classical segmenter only (--segmenter classical); the %s segmenter ignores "
                    "%s", ", ".join(ignored), "is" if len(ignored) == 1 else "are", seg["method"],
                    "it" if len(ignored) == 1 else "them")


def validate(cfg: dict[str, Any]) -> None:
    """Checks that need more than types."""
    bands = cfg["hu_classes"]
    order = ["faint_ggo", "ggo", "consolidation"]
    for name in order:
        lo, hi = bands[name]
        if not lo < hi:
            raise ConfigError(f"hu_classes.{name} must be [low, high) with low < high, got {bands[name]}")
    for a, b in zip(order, order[1:]):
        if bands[a][0] > bands[b][0]:  # was reported as an overlap
            raise ConfigError(f"hu_classes.{a} must lie below hu_classes.{b} (denser classes have higher HU), got "
                              f"{bands[a]} and {bands[b]}")
        if bands[a][1] > bands[b][0]:
            raise ConfigError(f"hu_classes.{a} {bands[a]} overlaps hu_classes.{b} {bands[b]}")
        if bands[a][1] < bands[b][0]:  # the classes are split at ggo's and consolidation's lower bounds only
            raise ConfigError(f"hu_classes.{a} {bands[a]} must end where hu_classes.{b} {bands[b]} begins: the "
                              f"classes are split at the lower bounds of ggo and consolidation, so a lesion voxel "
                              f"between {bands[a][1]:g} and {bands[b][0]:g} HU would be counted as {a} (set "
                              f"{a}'s upper bound to {bands[b][0]:g})")
    wal = bands.get("well_aerated")
    if wal is not None and not -1024 <= wal[0] < wal[1] <= 3071:  # CT numbers run -1024..3071 (12-bit)
        raise ConfigError(f"hu_classes.well_aerated must be [low, high) with -1024 <= low < high <= 3071 HU, got "
                          f"{wal}")
    edges = bands.get("aeration_edges")
    if edges is not None and not (len(edges) == 4 and -1024 <= edges[0] and edges[-1] <= 3071
                                  and all(a < b for a, b in zip(edges, edges[1:]))):
        raise ConfigError("hu_classes.aeration_edges must be four HU edges in rising order within -1024..3071 (the "
                          "ends of hyperinflated, normally, poorly and non-aerated lung; default [-900, -500, -100, "
                          f"100]), got {edges}")
    top = bands.get("lesion_max_hu")
    if top is not None and top <= bands["consolidation"][0]:
        raise ConfigError(f"hu_classes.lesion_max_hu ({top:g}) must lie above the lower bound of "
                          f"hu_classes.consolidation ({bands['consolidation'][0]:g}): every consolidation voxel would be "
                          "left out of the lesions")
    for dotted, lo, hi, closed in _RANGES:
        value = _get(cfg, dotted)
        for v in value if isinstance(value, list) else [value]:
            if not ((lo <= v if closed[0] else lo < v) and (v <= hi if closed[1] else v < hi)):
                raise ConfigError(f"{dotted} must be in {'[' if closed[0] else '('}{lo:g}, {hi:g}"
                                  f"{']' if closed[1] else ')'}, got {shown(value)}")
    if not float(cfg["selection"]["min_slices"]).is_integer():
        raise ConfigError(f"selection.min_slices must be a whole number, got {cfg['selection']['min_slices']}")
    air = cfg["loading"]["air_hu_range"]
    if not air[0] < air[1]:
        raise ConfigError(f"loading.air_hu_range must be [low, high] with low < high, got {air}")
    sc = cfg["scoring"]
    # a negative limit counts every unit as involved; a percentage above 100 none (every unit scored 0)
    if not 0 <= sc["min_involvement_pct"] <= 100:
        raise ConfigError(f"scoring.min_involvement_pct must be in [0, 100], got {sc['min_involvement_pct']}")
    if not 0 <= sc["min_involvement_ml"] < math.inf:
        raise ConfigError(f"scoring.min_involvement_ml must be >= 0 mL, got {sc['min_involvement_ml']}")
    if not 0 < sc["zhang900"]["slab_half_thickness_mm"] < math.inf:  # 0 or less: an empty slab scored 0
        raise ConfigError(f"scoring.zhang900.slab_half_thickness_mm must be > 0 mm, got "
                          f"{sc['zhang900']['slab_half_thickness_mm']}")
    seg = cfg["segmentation"]
    method = str(seg["method"])
    if method not in SEGMENTERS and not Path(method).is_dir():
        raise ConfigError(unknown_method_message(method))
    device = str(seg.get("device") or "auto").strip().lower()
    if not re.fullmatch(r"auto|cpu|(cuda|gpu)(:\d+)?", device):
        raise ConfigError(f"segmentation.device must be cpu, cuda, cuda:N or auto, got {seg.get('device')!r}")
    zoom = cfg["segmentation"]["monai"]["scale_tta"]
    if not 0 <= zoom < 0.5:
        raise ConfigError(f"segmentation.monai.scale_tta must be in [0, 0.5), got {zoom}")
    if not all(0 < s < math.inf for s in cfg["resample"]["spacing_mm"]):
        raise ConfigError(f"resample.spacing_mm must be positive and finite, got {cfg['resample']['spacing_mm']}")
    z = cfg["scoring"]["zhang900"]
    if z["mode"] not in ("slab", "zone"):
        raise ConfigError(f"scoring.zhang900.mode must be 'slab' or 'zone', got {z['mode']!r}")
    if z["density_rule"] not in ("predominant", "densest"):
        raise ConfigError(
            f"scoring.zhang900.density_rule must be 'predominant' or 'densest', got {z['density_rule']!r}"
        )
    if not 0 < z["density_share"] <= 1:
        raise ConfigError("scoring.zhang900.density_share must be in (0, 1]")
    lob = cfg["scoring"]["lobar"]
    if lob["lobe_labels"] not in ("totalsegmentator", "ctscore", "lungmask"):
        raise ConfigError("scoring.lobar.lobe_labels must be 'totalsegmentator', 'ctscore' or 'lungmask', got "
                          f"{lob['lobe_labels']!r}")
    if lob["lobes_dir"] is not None and not Path(str(lob["lobes_dir"])).is_dir():
        raise ConfigError(f"scoring.lobar.lobes_dir: no such folder: {lob['lobes_dir']}", lob["lobes_dir"])
    masks = cfg["segmentation"].get("masks_dir")
    if masks is not None and str(masks).strip() and not Path(str(masks)).is_dir():
        raise ConfigError(f"segmentation.masks_dir: no such folder: {masks}", masks)
    levels = cfg["landmarks"].get("reader_levels")
    if levels is not None and str(levels).strip() and not Path(str(levels)).is_file():
        raise ConfigError(f"landmarks.reader_levels: no such file: {levels}", levels)


def load_config(
    paths: Iterable[str | Path] = (), overrides: Iterable[str] = (), extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Resolve the configuration: defaults, then each YAML file, then ``--set`` overrides, then ``extra`` (a
    mapping of sections, e.g. a configuration edited in a notebook). One path or one override may be given as
    a plain string."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if isinstance(overrides, str):
        overrides = [overrides]
    if extra is not None and not isinstance(extra, Mapping):
        raise ConfigError(f"extra must be a mapping of sections (as a YAML file holds), got {type(extra).__name__}")
    cfg = default_config()
    paths = [Path(p) for p in paths]
    overrides = list(overrides)
    for p in paths:
        try:
            data = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader) or {}
        except FileNotFoundError as exc:
            raise ConfigError("config file not found", p) from exc
        except ConfigError as exc:
            raise ConfigError(exc.message, p) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {str(exc).replace('<unicode string>', p.name)}", p) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"not a text file (UTF-8): {exc.reason} at byte {exc.start}", p) from None
        except OSError as exc:
            raise ConfigError(f"config file cannot be read ({exc.strerror or exc})", p) from None
        if not isinstance(data, Mapping):
            raise ConfigError("config file must hold a mapping of sections", p)
        if not data:
            log.warning("config file %s holds no settings (empty, or comments only): it changes nothing", p)
        try:
            cfg = merge(cfg, data)
        except ConfigError as exc:
            raise ConfigError(exc.message, p) from None
    seen: dict[str, str] = {}
    for item in overrides:
        key = item.split("=", 1)[0].strip() if isinstance(item, str) and "=" in item else None
        if key and key in seen and seen[key].split("=", 1)[1].strip() != item.split("=", 1)[1].strip():
            # argparse keeps both; the later one would win without a word (the same value twice: harmless)
            raise ConfigError(f"--set {key} is given twice ({seen[key]!r} and {item!r}): give each key once")
        if key:
            seen[key] = item
        try:
            cfg = merge(cfg, parse_override(item))
        except ConfigError as exc:
            hint = ""
            if isinstance(item, str) and item.rstrip().endswith("=") and isinstance(_at(cfg, key), str):
                # `--set key=""` typed in a shell reaches ctscore as `key=`: the shell took the quotes
                hint = f"; for empty text quote it so that the shell keeps the quotes: --set '{item.rstrip()}\"\"'"
            raise ConfigError(f"{exc.message} (in --set {item}){hint}") from None
    if extra:
        cfg = merge(cfg, extra)
    try:
        validate(cfg)
    except ConfigError as exc:
        # a rule across keys (bands, method, spacing...) is checked on the merged result: say where it came from
        if exc.path is not None or not (paths or overrides):
            raise
        given = [str(p) for p in paths] + [f"--set {o}" for o in overrides] + (["the Python overrides"] if extra else [])
        where = paths[0] if len(given) == 1 and paths else None
        raise ConfigError(exc.message if where else f"{exc.message} (in the configuration from {', '.join(given)})",
                          where) from None
    seg = cfg["segmentation"]
    seg["device"] = str(seg.get("device") or "auto").strip().lower()  # CPU is cpu: one setting, one hash
    lob = cfg["scoring"]["lobar"]
    if lob["lobes_dir"] is not None and str(lob["lobes_dir"]).strip() == "":
        lob["lobes_dir"] = None  # '' as null (it meant no folder; resolved, it would be the working folder)
    if lob["lobes_dir"] is not None:  # as --lobes does: the same folder is the same setting from CLI and Python
        lob["lobes_dir"] = str(Path(str(lob["lobes_dir"])).resolve())
    if seg.get("masks_dir") is not None:  # as --masks does: '' as null, a folder made absolute
        seg["masks_dir"] = str(Path(str(seg["masks_dir"])).resolve()) if str(seg["masks_dir"]).strip() else None
    lms = cfg["landmarks"]
    if lms.get("reader_levels") is not None and str(lms["reader_levels"]).strip() == "":
        lms["reader_levels"] = None
    if lms.get("reader_levels") is not None:  # as --landmarks does
        lms["reader_levels"] = str(Path(str(lms["reader_levels"])).resolve())
    return cfg


def resolve_config(cfg: Any = None) -> dict[str, Any]:
    """The ``cfg`` argument of a Python twin (``run_pipeline``, ``build_inventory``) resolved as the command line
    resolves its options: None, the defaults; a mapping of sections (only the keys you change, or a whole
    configuration from :func:`load_config`), merged over the defaults (:func:`load_config` ``extra``); a YAML file
    (a ``str`` or ``os.PathLike`` path, as ``--config``). Checked as the CLI checks it (unknown keys, types, the
    rules across keys). Anything else is a :class:`ConfigError` (BAD_CONFIG) saying what is accepted."""
    if cfg is None:
        return load_config()
    if isinstance(cfg, Mapping):
        return load_config(extra=cfg)
    if isinstance(cfg, (str, os.PathLike)):
        if isinstance(cfg, str) and "=" in cfg and not Path(cfg).exists():
            raise ConfigError(f"{cfg!r} looks like a --set override, not a configuration file: pass "
                              f"load_config(overrides=[{cfg!r}]) (or a mapping of sections)")
        return load_config(paths=[cfg])
    hint = ""
    if isinstance(cfg, (list, tuple)) and cfg and all(isinstance(x, str) and "=" in x for x in cfg):
        hint = f"; for --set overrides pass load_config(overrides={list(cfg)!r})"
    raise ConfigError(f"the configuration must be a mapping of sections (e.g. from load_config()), the path of a "
                      f"YAML file (as --config) or None (the defaults), got {type(cfg).__name__} {cfg!r}"[:400]
                      + hint)


#: A model folder's path is not a setting: ``model_id`` (compared and reported beside the hash) names its weights.
MODEL_FOLDER = "<model folder: see model_id>"
#: Limits that only decide whether a series is refused (TOO_LARGE): never how a scored series scores.
REFUSAL_ONLY_KEYS = ("max_voxels", "max_memory_mb")


def read_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration as the configured segmenter and the scoring read it: the other segmenters' settings left
    out (the flat ``segmentation.*`` keys are the classical segmenter's, ``segmentation.monai`` the networks'),
    ``segmentation.device`` left out (``auto`` never told CPU from GPU either: result.json and the ``device`` column
    say where a scan ran, and aggregate warns when a cohort mixes devices), and a model folder's path replaced by
    :data:`MODEL_FOLDER`. A configuration audit (2026-12-06): a network
    option changed for a classical run, ``-d cpu`` for the classical segmenter, or one model folder spelled
    ``./m`` and ``/abs/m``, scored a finished folder again and made identical settings "not comparable".
    ``landmarks.reader_levels`` and ``segmentation.masks_dir`` are left out too: a reader's levels and edited masks
    are inputs of their own series (in its input fingerprint), and a series without them scores as without."""
    out = dict(cfg)
    lms = out.get("landmarks")
    if isinstance(lms, Mapping) and "reader_levels" in lms:
        out["landmarks"] = {k: v for k, v in lms.items() if k != "reader_levels"}
    if isinstance(out.get("segmentation"), Mapping) and "masks_dir" in out["segmentation"]:
        # the masks of a series are inputs of that series (its fingerprint), as the reader's levels are
        out["segmentation"] = {k: v for k, v in out["segmentation"].items() if k != "masks_dir"}
    seg = out.get("segmentation")
    if not isinstance(seg, Mapping):
        return out
    method = str(seg.get("method"))
    spec = SEGMENTERS.get(method)
    sections = {s.options for s in SEGMENTERS.values() if s.options}
    if spec is not None and spec.options is None:  # the classical segmenter: the flat keys
        kept = {k: v for k, v in seg.items() if k not in sections}
    else:  # a network: the shared keys and its own section (a model folder reads segmentation.monai)
        own = spec.options if spec is not None else "monai"
        kept = {k: v for k, v in seg.items() if k in SHARED_SEGMENTATION_KEYS or k == own}
        if spec is None:
            kept["method"] = MODEL_FOLDER
    kept.pop("device", None)  # where it ran: the device column and result.json say (resume: README)
    out["segmentation"] = kept
    return out


def config_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON form of a resolved config as the run reads it (:func:`read_settings`), its
    secrets redacted (:func:`redact_secrets`): the hash is published beside the redacted config (run.json,
    result.json), and a hash of the salt would let anyone test guessed salts against it. A new salt changes every
    scan id anyway, so resume still sees it. Resume compares it (with the model id, the version and the input)."""
    return hashlib.sha256(json.dumps(redact_secrets(read_settings(cfg)), sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


#: Configuration sections that do not change the scores of a series: what is written (outputs, the salt) and which
#: series of a study is taken (selection).
NOT_SCORING_SECTIONS = ("outputs", "selection")


def scores_config_hash(cfg: Mapping[str, Any] | None) -> str:
    """sha256 of the configuration as it scores a series ('' for None): :func:`read_settings` without
    :data:`NOT_SCORING_SECTIONS` (a follow-up batch run with --dicom-seg, or without QC pictures, is not another
    setting; ``config_sha256`` differs), without :data:`REFUSAL_ONLY_KEYS` of ``loading``, and without
    the path of ``scoring.lobar.lobes_dir`` (only whether one is given: two sites keep their lobe maps in different
    folders)."""
    if not cfg:
        return ""
    kept = {k: v for k, v in read_settings(cfg).items() if k not in NOT_SCORING_SECTIONS}
    if isinstance(kept.get("loading"), Mapping):
        kept["loading"] = {k: v for k, v in kept["loading"].items() if k not in REFUSAL_ONLY_KEYS}
    lobar = kept.get("scoring", {}).get("lobar") if isinstance(kept.get("scoring"), Mapping) else None
    if isinstance(lobar, Mapping) and lobar.get("lobes_dir"):
        # where the lobe maps lie is no setting (two sites keep theirs in different folders); that there are some is
        kept = {**kept, "scoring": {**kept["scoring"], "lobar": {**lobar, "lobes_dir": "given"}}}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def redact_secrets(cfg: dict[str, Any] | None) -> dict[str, Any] | None:
    """The configuration as written to run.json: a site's own pseudonym salt is a secret (with it and a list of
    PatientIDs anyone could recompute the pseudonyms), so it is replaced by a marker; the built-in one is shown."""
    from pipeline.outputs import DEFAULT_SALT

    if cfg is None:
        return None
    out = copy.deepcopy(dict(cfg))
    outs = out.get("outputs") or {}
    if outs.get("pseudonym_salt") not in (None, DEFAULT_SALT):
        outs["pseudonym_salt"] = "<redacted: a site secret>"
    return out


def model_folder_problem(path: str) -> str:
    """Why ``path`` is not a model folder: a file (the weights alone, given instead of their folder) or nothing."""
    if Path(path).is_file():
        return "a file, not a folder: give the folder that holds the weights (with ctscore_labels.yaml for a bundle)"
    return "no such folder"
