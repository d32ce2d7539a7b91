"""Configuration: defaults load, unknown keys and bad values are refused with clear messages."""

import pytest

from pipeline.config import config_hash, load_config
from pipeline.errors import ConfigError


def test_defaults_load_and_hash_is_stable():
    a, b = load_config(), load_config()
    assert a == b and config_hash(a) == config_hash(b)
    assert a["scoring"]["zhang900"]["mode"] == "slab"


def test_unknown_key_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("scoring:\n  min_involvment_ml: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'scoring.min_involvment_ml'") as exc:
        load_config([p])
    assert str(p) in str(exc.value)


def test_bad_value_type_is_refused():
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(overrides=["scoring.min_involvement_ml=lots"])


def test_overlapping_bands_are_refused():
    with pytest.raises(ConfigError, match="overlaps"):
        load_config(overrides=["hu_classes.ggo=[-560, -300]"])


def test_bad_choice_is_refused():
    with pytest.raises(ConfigError, match="slab"):
        load_config(overrides=["scoring.zhang900.mode=volume"])


def test_override_changes_value_and_hash():
    base = load_config()
    cfg = load_config(overrides=["resample.spacing_mm=[2, 2, 2]"])
    assert cfg["resample"]["spacing_mm"] == [2.0, 2.0, 2.0]
    assert config_hash(cfg) != config_hash(base)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config([tmp_path / "nope.yaml"])


@pytest.mark.parametrize("override, message", [
    ("scoring.min_involvement_pct=-1", "min_involvement_pct must be in \\[0, 100\\]"),
    ("scoring.min_involvement_pct=150", "min_involvement_pct must be in \\[0, 100\\]"),  # every unit scored 0
    ("scoring.min_involvement_ml=-0.5", "min_involvement_ml must be >= 0"),
    ("scoring.zhang900.slab_half_thickness_mm=0", "slab_half_thickness_mm must be > 0"),
    ("scoring.zhang900.slab_half_thickness_mm=-2", "slab_half_thickness_mm must be > 0"),
    ("hu_classes.ggo=[-800,-700]", "faint_ggo must lie below hu_classes.ggo"),  # was called an overlap
])
def test_scoring_limits_that_make_no_sense_are_refused(override, message):
    """A negative involvement minimum counted every unit as involved, a percentage above 100 none, a slab of no
    thickness scored an empty slab 0; bands in the wrong order were reported as overlapping."""
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_set_with_empty_text_says_to_quote_it_as_the_docs_write_it():
    """`--set selection.exclude_body_parts=""` typed in a shell reaches ctscore as `key=` (the shell takes the quotes):
    the documented way to let a head series through failed with a bare 'has no value' (an audit, 2026-12-08)."""
    import shlex
    from pathlib import Path

    with pytest.raises(ConfigError) as e:
        load_config([], overrides=shlex.split('selection.exclude_body_parts=""'))
    assert "--set 'selection.exclude_body_parts=\"\"'" in e.value.message
    documented = shlex.split("--set 'selection.exclude_body_parts=\"\"'")[1]  # as README writes it
    assert load_config([], overrides=[documented])["selection"]["exclude_body_parts"] == ""
    with pytest.raises(ConfigError) as e:  # a number: no word of quotes
        load_config([], overrides=["selection.min_slices="])
    assert "quote" not in e.value.message
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`--set 'selection.exclude_body_parts=\"\"'`" in readme and "`--set selection.exclude_body_parts=\"\"`" not in readme
