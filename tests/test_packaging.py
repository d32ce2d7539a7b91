"""What an install from a wheel or an sdist needs (a packaging audit, 2026-12-06): the licence and the training
configurations are shipped, the sdist carries the tests' helpers, ctscore's generic top-level names (``configs``,
``scoring``, ``segmentation``) cannot be taken over silently by a folder of the user's, a missing optional extra is
a clear error, and the code that scored is recorded even where no git checkout says it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_licence_and_the_training_configurations_are_shipped():
    project = _pyproject()["project"]
    assert project["license"] == "Apache-2.0"
    for name in project["license-files"]:
        assert (REPO / name).is_file()
    assert "Apache License" in (REPO / "LICENSE").read_text() and "MODEL_CARD.md" in (REPO / "NOTICE").read_text()
    data = _pyproject()["tool"]["setuptools"]["package-data"]["configs"]
    assert "training/*.yaml" in data and list((REPO / "configs" / "training").glob("*.yaml"))
    # MODEL_CARD.md and `ctscore train --help` name configs/training/*.yaml: a wheel without them lacked the recipes
    assert any(isinstance(d, str) and d.startswith("Pillow") for d in project["dependencies"])


def test_the_sdist_carries_the_tests_helpers_and_docs():
    """An unpacked sdist ran 87 test files into collection errors: conftest.py and the helper modules were left out
    (setuptools ships only tests/test_*.py without a MANIFEST.in)."""
    manifest = (REPO / "MANIFEST.in").read_text().splitlines()
    assert "recursive-include tests *.py" in manifest
    for line in ("include LICENSE NOTICE README.md CHANGELOG.md", "recursive-include docs *.md *.png"):
        assert line in manifest
    helpers = [p.name for p in (REPO / "tests").glob("*.py") if not p.name.startswith("test_")]
    assert "conftest.py" in helpers


def _python(cwd, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


def test_a_configs_package_in_the_working_folder_does_not_replace_the_defaults(tmp_path):
    """A notebook's project folder with ``configs/__init__.py`` and a default.yaml of its own: its ground-glass
    limit was read in place of ctscore's and the cohort scored with it, without a word."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "__init__.py").write_text("")
    (tmp_path / "configs" / "default.yaml").write_text("hu_classes: {ggo_min_hu: -450}\n")
    probe = ("import sys; sys.path.insert(0, ''); from pipeline.config import default_config, DEFAULT_CONFIG; "
             "import configs; print(configs.__file__); print(DEFAULT_CONFIG); print(sorted(default_config()))")
    out = _python(tmp_path, probe)
    assert out.returncode == 0, out.stderr
    shadow, path, keys = out.stdout.splitlines()
    assert shadow.startswith(str(tmp_path))  # the folder is importable as configs ...
    assert path == str(REPO / "configs" / "default.yaml") and "segmentation" in keys  # ... and not read


def test_a_scoring_folder_in_the_working_folder_is_named(tmp_path):
    (tmp_path / "scoring").mkdir()
    (tmp_path / "scoring" / "__init__.py").write_text("")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-m", "pipeline", "--version"], cwd=tmp_path, capture_output=True,
                         text=True, env=env, timeout=120)
    assert out.returncode == 1
    assert "INSTALL_SHADOWED: the module 'scoring' is imported from" in out.stderr
    assert str(tmp_path / "scoring") in out.stderr and "rename it or run ctscore from another folder" in out.stderr
    # the Python API says the same before it reads anything
    api = _python(tmp_path, "import sys; sys.path.insert(0, ''); from pipeline.run import run_pipeline\n"
                            "try:\n    run_pipeline('nowhere', 'out')\nexcept Exception as e:\n    print(e.code)")
    assert api.stdout.strip() == "INSTALL_SHADOWED", api.stderr
    from pipeline import install_problem

    assert install_problem() == ""  # here, ctscore's own


def test_slurm_without_dask_jobqueue_is_a_clear_error(monkeypatch, tmp_path):
    from pipeline.batch import BatchOptions, preflight
    from pipeline.config import ConfigError, load_config

    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # not installed
    opts = BatchOptions(executor="slurm", slurm_profile=str(tmp_path / "profile.yaml"))
    with pytest.raises(ConfigError, match='needs dask-jobqueue, which is not installed: pip install "ctscore\\[cluster'):
        preflight(load_config(), opts)


def test_the_code_digest_tells_an_edited_copy_from_its_release(tmp_path):
    from pipeline.run import code_digest, tree_digest

    for package in ("pipeline", "scoring", "segmentation", "configs"):
        (tmp_path / package).mkdir()
    (tmp_path / "scoring" / "systems.py").write_text("LIMIT = 25\n")
    (tmp_path / "configs" / "default.yaml").write_text("a: 1\n")
    (tmp_path / "scoring" / "__pycache__").mkdir()
    (tmp_path / "scoring" / "__pycache__" / "x.py").write_text("compiled\n")
    (tmp_path / "README.md").write_text("docs are not code\n")
    before = tree_digest(tmp_path)
    (tmp_path / "README.md").write_text("changed\n")
    (tmp_path / "scoring" / "__pycache__" / "x.py").write_text("changed\n")
    assert tree_digest(tmp_path) == before
    (tmp_path / "scoring" / "systems.py").write_text("LIMIT = 5\n")
    assert tree_digest(tmp_path) != before
    assert tree_digest(REPO) == code_digest()


def test_methods_name_an_installed_copy_by_its_code_digest(sample_run, tmp_path):
    import shutil

    from pipeline.methods import methods_text

    out = tmp_path / "out"
    shutil.copytree(sample_run, out)
    run = json.loads((out / "run.json").read_text())
    run["source"] = "installed, code 0123456789ab"
    run["sources"] = {"installed, code 0123456789ab": 1}
    (out / "run.json").write_text(json.dumps(run))
    assert "(installed package, code digest 0123456789ab)" in methods_text(out)
    run["sources"] = {"installed, code 0123456789ab": 1, "installed, code ba9876543210": 2}
    (out / "run.json").write_text(json.dumps(run))
    assert ("scans scored by 2 code revisions under this version label: installed package, code digest "
            "0123456789ab: 1 scan; installed package, code digest ba9876543210: 2 scans") in methods_text(out)
