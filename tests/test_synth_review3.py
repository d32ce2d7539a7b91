"""Review of the training-data helpers: lesion synthesis (segmentation/synth.py), anatomy mixing
(segmentation/anatomy_mix.py) and weight averaging (segmentation/weight_averaging.py,
scripts/average_weights.py). Each test is a defect that crashed, lost data silently or failed unclearly."""

# ruff: noqa: F811 - the chest fixture imported from tests.test_synth is a test argument

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segmentation.synth import DEFAULTS, synthesize
from tests.test_synth import chest  # noqa: F401 - a fixture

# --- segmentation/synth.py ---------------------------------------------------------------------------------


def test_radius_mm_for_some_sizes_keeps_the_default_ranges_of_the_others(chest):
    """``synth: {radius_mm: {large: [30, 40]}}`` passes check_train_config, but the whole table was replaced,
    so the first small or medium lesion drawn failed with ``KeyError: 'small'`` in a training worker."""
    from segmentation.training import check_train_config

    hu, lungs, sp = chest
    cfg = {"radius_mm": {"large": [30.0, 40.0]}}
    assert check_train_config({"synth": cfg}) == []  # the training accepts it
    radii = []
    for seed in range(6):
        res = synthesize(hu, lungs, sp, seed, {**cfg, "p_empty": 0.0, "kind_probs": {"ggo": 1.0}}, n_lesions=3)
        radii += [s.radius_mm for s in res.specs]
    assert radii and max(radii) <= 40.0  # large ones from the config's range
    assert min(radii) < DEFAULTS["radius_mm"]["small"][1]  # small ones from the default range
    # the full table given (the defaults' values) is what it was: the same case as no table at all
    full = {"radius_mm": {k: list(v) for k, v in DEFAULTS["radius_mm"].items()}}
    a, b = synthesize(hu, lungs, sp, 3, {"p_empty": 0.0}), synthesize(hu, lungs, sp, 3, {"p_empty": 0.0, **full})
    np.testing.assert_array_equal(a.hu, b.hu)
    np.testing.assert_array_equal(a.lesions, b.lesions)


# --- segmentation/anatomy_mix.py -------------------------------------------------------------------------


def _cache(tmp_path: Path, cases: dict[str, dict]) -> list[Path]:
    from tests.test_anatomy_mix import toy_chest

    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    files = []
    for name, kw in cases.items():
        case = toy_chest(**{k: v for k, v in kw.items() if k != "no_lungs"})
        if kw.get("no_lungs"):
            case["lungs"][:] = 0
        np.savez_compressed(cache / f"{name}.npz", **case)
        files.append(cache / f"{name}.npz")
    return files


def test_fewer_than_two_mixable_backgrounds_is_an_error_not_silently_no_mix(tmp_path):
    """Two backgrounds, one with its own lesion mask: the check for two backgrounds passed, the drawn case was
    left out, and ``prepare_mixes`` returned [] (training went on without the anatomy mixing it was asked for)."""
    pytest.importorskip("SimpleITK")
    from segmentation.anatomy_mix import prepare_mixes

    a, drawn = _cache(tmp_path, {"a": {}, "drawn": {"lesions": True}})
    with pytest.raises(ValueError, match=r"at least two backgrounds without their own lesion masks.*drawn"):
        prepare_mixes([a, drawn])
    with pytest.raises(ValueError, match="at least two backgrounds"):  # one background listed twice
        prepare_mixes([a, a])
    assert not list(a.parent.glob("mix_*"))


def test_background_without_lungs_is_refused_by_name(tmp_path):
    """A background whose lung mask is empty (a teacher that found no lung) has a NaN lung centre: as the
    moving case it was warped into mixes without lungs, without a word; as the fixed case SimpleITK failed
    (``BSplineTransformInitializer``) with a RuntimeError naming no file, which the recipe does not catch."""
    pytest.importorskip("SimpleITK")
    from segmentation.anatomy_mix import prepare_mixes

    files = _cache(tmp_path, {"a": {}, "b": {"lung_r": (12.0, 9.0, 9.0)}, "nolung": {"no_lungs": True}})
    with pytest.raises(ValueError, match=r"nolung\.npz has no lung voxel"):
        prepare_mixes(files, alphas=(1.0,))
    assert not list(files[0].parent.glob("mix_*"))


def test_alphas_with_one_file_name_are_refused(tmp_path):
    """Mix files carry the alpha in hundredths: alphas 0.5 and 0.504 both wrote mix_a__b_a050.npz (the 0.5 mix
    lost, the file listed twice for training)."""
    pytest.importorskip("SimpleITK")
    from segmentation.anatomy_mix import prepare_mixes

    files = _cache(tmp_path, {"a": {}, "b": {"lung_r": (12.0, 9.0, 9.0)}})
    with pytest.raises(ValueError, match=r"alphas 0\.5 and 0\.504 .*_a050"):
        prepare_mixes(files, alphas=(0.5, 0.504))
    assert not list(files[0].parent.glob("mix_*"))


# --- segmentation/weight_averaging.py, scripts/average_weights.py ----------------------------------------


def _model(folder: Path, shift: float) -> Path:
    """A tiny model folder (tests/test_weight_averaging.py's stand-in fine-tune)."""
    from tests.test_weight_averaging import fine_tune

    return fine_tune(folder, shift)


def test_unreadable_weights_or_description_with_a_fitting_manifest_name_the_file(tmp_path, capsys):
    """A manifest written over a Git LFS pointer (or a truncated copy) fits its file, so only reading it fails:
    ``SafetensorError: header too large`` (and a YAML ParserError or ``'str' object has no attribute 'get'`` for
    a bad model.yaml), a traceback from the command instead of its error naming the file."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from segmentation.training import write_manifest
    from segmentation.weight_averaging import AveragingError, average_weights
    from tests.scripts_loader import load_script

    a, b = _model(tmp_path / "a", 0.0), _model(tmp_path / "b", 0.1)
    (b / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    write_manifest(b)
    with pytest.raises(AveragingError, match=r"b/model.safetensors: unreadable weights, not a safetensors file"):
        average_weights([a, b], tmp_path / "avg")
    cli = load_script("average_weights")
    assert cli.main([str(a), str(b), "--out", str(tmp_path / "avg")]) == 2
    assert "b/model.safetensors: unreadable weights" in capsys.readouterr().err
    c = _model(tmp_path / "c", 0.1)
    for text, why in (("arch: [unclosed\n", "unreadable model description"),
                      ("just text\n", r"not a model description, it lacks \['arch'"),
                      ("arch: {name: unet}\n", r"it lacks \['model_spacing_mm', 'hu_window'\]")):
        (c / "model.yaml").write_text(text)
        write_manifest(c)
        with pytest.raises(AveragingError, match=rf"c/model.yaml: .*{why}"):
            average_weights([a, c], tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


def test_what_is_averaged_is_what_was_verified(tmp_path, monkeypatch):
    """The sources were hashed, then read again from disk: weights replaced in between (a fine-tune finishing
    into the folder) were averaged under the sha256 of the old ones (averaged_from naming weights not used)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from safetensors.torch import load_file, save_file

    import segmentation.monai_segmenter as ms
    from segmentation.weight_averaging import average_weights

    a, b = _model(tmp_path / "a", 0.0), _model(tmp_path / "b", 0.4)
    sa, sb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    sha_b = ms.check_manifest(b, ["model.safetensors"])["model.safetensors"]
    real, replaced = ms.read_verified, []

    def replaced_after_check(folder, files):
        got = real(folder, files)
        if Path(folder) == b and "model.safetensors" in files and not replaced:
            save_file({k: (v + 5.0).contiguous() for k, v in sb.items()}, str(b / "model.safetensors"))
            replaced.append(True)
        return got

    monkeypatch.setattr(ms, "read_verified", replaced_after_check)
    meta = average_weights([a, b], tmp_path / "avg")
    assert replaced
    avg = load_file(str(tmp_path / "avg" / "model.safetensors"))
    for k in sa:
        assert torch.allclose(avg[k], 0.5 * sa[k] + 0.5 * sb[k], atol=1e-6), k
    assert meta["averaged_from"][1]["sha256"] == sha_b


def test_output_that_cannot_be_created_is_an_averaging_error(tmp_path, capsys):
    """``--out`` where no folder can be made (read-only place; here a file on the way) was an OSError traceback
    from the command, not its ``error: ...`` and exit code 2."""
    pytest.importorskip("torch")
    pytest.importorskip("monai")
    from segmentation.weight_averaging import AveragingError, average_weights
    from tests.scripts_loader import load_script

    a, b = _model(tmp_path / "a", 0.0), _model(tmp_path / "b", 0.1)
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "soup"
    with pytest.raises(AveragingError, match=r"file/soup: cannot create a folder there"):
        average_weights([a, b], out)
    assert load_script("average_weights").main([str(a), str(b), "--out", str(out)]) == 2
    assert "cannot create a folder there" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "not a folder"


def test_a_peripheral_scale_of_zero_is_refused_by_the_training_config_check():
    """Before: ``synth.peripheral_scale_mm: 0`` passed check_train_config, then divided by zero in every case
    (NaN weights: the preference for peripheral centres silently off). Now it is named like other bad values."""
    from segmentation.training import check_train_config

    assert check_train_config({"synth": {"peripheral_scale_mm": 15.0}}) == []
    for bad in (0, 0.0, -5):
        [msg] = check_train_config({"synth": {"peripheral_scale_mm": bad}})
        assert msg.startswith(f"synth.peripheral_scale_mm: bad value {bad!r}")
