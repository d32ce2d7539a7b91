"""``ctscore share OUT DEST`` (pipeline.share.share_outputs): a data-protection audit found that an OUT folder shared
as it is leaks input paths (inventory, failures, run.json, .status, report.html), every patient attribute (seg.dcm)
and, with the built-in salt, numeric PatientIDs (by enumeration). The share copies only what can leave, never
touches OUT, and refuses pseudonyms of the built-in salt."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
from pathlib import Path

import pydicom
import pytest

from pipeline.errors import CTScoreError
from pipeline.share import MANIFEST_NAME, share_outputs
from tests.conftest import SAMPLE
from tests.dicom_factory import write_series
from tests.test_privacy_review import _texts

SALT = "d3f1c0a7e9b24f58a61c0e2b7d94a3c5"  # a site's own secret (config outputs.pseudonym_salt)
#: identifying values planted into the copy of the sample (and the input folder's name)
PLANTED = {"PatientID": "4711235", "PatientName": "MUELLER^HANS", "PatientBirthDate": "19570312",
           "InstitutionName": "Klinikum Testhausen", "AccessionNumber": "ACC998877",
           "ReferringPhysicianName": "DR^WEISSKITTEL"}
TOKENS = ("MUELLER", "4711235", "19570312", "Testhausen", "ACC998877", "WEISSKITTEL")


def _plant(root: Path) -> Path:
    """A copy of sample_dicoms with identifying headers under a folder named after the patient, and a series that
    fails (a slice gap) whose files are named after the patient too."""
    case = root / "MUELLER_HANS_1957"
    ct = case / "ct"
    ct.mkdir(parents=True)
    for src in sorted(SAMPLE.iterdir()):
        if src.name == "ground_truth.json" or not src.is_file():
            continue
        ds = pydicom.dcmread(src)
        for key, value in PLANTED.items():
            setattr(ds, key, value)
        ds.save_as(ct / f"MUELLER_HANS_{src.name}.dcm")
    zs = [-100.0 + 2.0 * k for k in range(40) if k not in (20, 21, 22)]
    write_series(case / "broken", positions=zs, size=48, prefix="MUELLER_HANS_")
    return case


def _listing(folder: Path) -> dict[str, tuple]:
    """Every file and folder under ``folder`` (hidden ones too) with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size if p.is_file() else None, st.st_mtime_ns)
    st = folder.stat()
    out["."] = (None, st.st_mtime_ns)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from pipeline.cli import main

    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.fixture(scope="module")
def site_run(tmp_path_factory) -> tuple[Path, Path]:
    """(input root, OUT) of a real classical run with a site salt and DICOM-SEG, one series scored and one failed,
    and files a user left in OUT (a log, a note, stacks.csv), all naming the patient."""
    from pipeline.run import run_pipeline

    root = tmp_path_factory.mktemp("share")
    case = _plant(root / "in")
    out = root / "out"
    from tests.conftest import segment_memo

    with segment_memo():  # the sample's pixels, segmented once per test process (tests/conftest.py)
        summary = run_pipeline(case, out, {"segmentation": {"method": "classical"},
                                           "outputs": {"pseudonym_salt": SALT, "write_dicom_seg": True}})
    assert summary["n_ok"] == 1 and summary["n_failed"] == 1
    (out / "run_MUELLER_HANS.log").write_text(f"ERROR could not read {case}/broken/MUELLER_HANS_0003.dcm\n")
    (out / "notes_MUELLER_HANS.txt").write_text("MUELLER HANS, 4711235\n")
    (out / "stacks.csv").write_text("stack_id,series_description\nx,MUELLER HANS Thorax\n")
    # the inputs hold what the outputs must not: the check below is not vacuous
    assert "MUELLER" in (out / "failures.csv").read_text() and str(case) in (out / "run.json").read_text()
    assert 'href="inventory.csv"' in (out / "report.html").read_text()
    assert any(b"MUELLER" in p.read_bytes() for p in out.glob("scan-*/seg.dcm"))
    return case, out


@pytest.fixture(scope="module")
def shared(site_run, tmp_path_factory) -> tuple[Path, dict]:
    _, out = site_run
    before = _listing(out)
    dest = tmp_path_factory.mktemp("dest_parent") / "to_partner"
    summary = share_outputs(out, dest)
    assert _listing(out) == before, "ctscore share changed OUT"
    return dest, summary


def test_dest_holds_what_can_be_shared_and_nothing_else(shared):
    dest, summary = shared
    names = set(_files(dest))
    (scan,) = [p.name for p in dest.glob("scan-*")]
    assert {"scans.csv", "scans.parquet", "zones.csv", "zones.parquet", "data_dictionary.csv", "failures.csv",
            "failures.parquet", "run.json", "report.html", MANIFEST_NAME} <= names
    assert {f"{scan}/{n}" for n in ("result.json", "lungs.nii.gz", "lesions.nii.gz", "qc.png", "thumb.png",
                                    "levels.png")} <= names
    assert not [n for n in names if n.startswith(".status") or "inventory" in n or n.endswith("seg.dcm")
                or n.endswith(".log") or "stacks" in n or "notes" in n], names
    assert not (dest / ".status").exists()
    left = {x["path"]: x["reason"] for x in summary["left_out"]}
    assert {".status/", "inventory.csv", "inventory.parquet", "stacks.csv", f"{scan}/seg.dcm",
            "run_MUELLER_HANS.log", "notes_MUELLER_HANS.txt"} <= set(left)
    assert summary["not_recognised"] == ["notes_MUELLER_HANS.txt"]
    # no temporary folder left beside DEST
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


def test_dest_holds_no_input_path_and_no_planted_identifier(shared, site_run):
    case, out = site_run
    dest, _ = shared
    host = socket.gethostname()
    for rel, data in _files(dest).items():
        for blob in _texts(dest / rel):  # gunzipped NIfTI headers and PNG text chunks too
            for token in TOKENS:
                assert token.encode() not in blob, f"{token} in {rel}"
            assert str(case).encode() not in blob and str(out).encode() not in blob, rel
            assert str(case.parent.parent).encode() not in blob, rel  # the test's folder: any path under it
        if rel.endswith((".csv", ".json", ".html", ".txt")) and len(host) >= 4:
            assert host not in data.decode("utf-8"), f"host name in {rel}"


def test_failures_keep_scan_id_and_code_only(shared):
    import pandas as pd

    dest, _ = shared
    failures = pd.read_csv(dest / "failures.csv", dtype=str)
    assert list(failures.columns) == ["scan_id", "code"]
    assert failures["code"].tolist() == ["SLICE_GAP"]
    assert list(pd.read_parquet(dest / "failures.parquet").columns) == ["scan_id", "code"]
    dictionary = pd.read_csv(dest / "data_dictionary.csv", dtype=str)
    assert dictionary[dictionary["table"] == "failures"]["column"].tolist() == ["scan_id", "code"]


def test_run_json_and_result_json_keep_provenance_and_scores_without_the_input(shared, site_run):
    _, out = site_run
    dest, summary = shared
    run, orig = json.loads((dest / "run.json").read_text()), json.loads((out / "run.json").read_text())
    assert run["input"] == "<redacted by ctscore share>"
    assert "input_id" not in run and "input_names" not in run
    for key in ("ctscore_version", "versions", "config_sha256", "segmenter", "n_series", "n_ok", "n_failed"):
        assert run[key] == orig[key], key
    assert run["config"]["outputs"]["pseudonym_salt"].startswith("<redacted")
    assert run["config"]["segmentation"]["method"] == "classical"
    (folder,) = list(dest.glob("scan-*"))
    res, orig_res = (json.loads((d / folder.name / "result.json").read_text()) for d in (dest, out))
    assert res["scores"] == orig_res["scores"] and res["zones"] == orig_res["zones"]
    assert res["segmenter"] == orig_res["segmenter"] and res["pseudonym_salt_id"] == orig_res["pseudonym_salt_id"]
    assert res["image_sha256"] == orig_res["image_sha256"]  # keyed with the site's salt
    assert not {"input_fingerprint", "input_id", "lobe_map_file"} & set(res)
    assert summary["salt"] == "site"
    assert "run.json: input" in summary["redacted"]


def test_report_links_lead_to_files_in_dest(shared):
    dest, _ = shared
    html = (dest / "report.html").read_text()
    links = re.findall(r'(?:href|src)="([^"#]+)"', html)
    assert any(link.endswith("thumb.png") for link in links) and "scans.csv" in links
    assert not [link for link in links if not (dest / link).is_file()]
    assert "seg.dcm" not in html and "redacted" in html


def test_manifest_lists_each_file_with_its_sha256_and_names_no_file_of_the_user(shared):
    dest, summary = shared
    text = (dest / MANIFEST_NAME).read_text()
    listed = dict(reversed(m.groups()) for m in re.finditer(r"^([0-9a-f]{64})  (\S+)$", text, re.M))
    files = {rel for rel in _files(dest) if rel != MANIFEST_NAME}
    assert set(listed) == files
    for rel, sha in listed.items():
        assert hashlib.sha256((dest / rel).read_bytes()).hexdigest() == sha, rel
    assert "inventory.csv" in text and ".status/" in text and "seg.dcm" in text
    assert "MUELLER" not in text and "names not written here" in text


def test_cli_and_api_give_the_same_result(site_run, shared, tmp_path, capsys):
    _, out = site_run
    dest_api, summary = shared
    before = _listing(out)
    rc, stdout, _ = _cli(["share", str(out), str(tmp_path / "cli")], capsys)
    assert rc == 0 and "notes_MUELLER_HANS.txt" in stdout and MANIFEST_NAME in stdout
    assert _listing(out) == before
    api, cli = _files(dest_api), _files(tmp_path / "cli")
    assert set(api) == set(cli)
    assert {k for k in api if api[k] != cli[k]} <= {MANIFEST_NAME}  # its time of making


def test_dicom_seg_only_when_asked_for_with_a_warning(site_run, tmp_path, caplog):
    _, out = site_run
    before = _listing(out)
    summary = share_outputs(out, tmp_path / "with_seg", include_dicom_seg=True)
    assert _listing(out) == before
    (seg,) = list((tmp_path / "with_seg").glob("scan-*/seg.dcm"))
    assert b"MUELLER" in seg.read_bytes()  # why it is left out by default
    assert any("every patient and study attribute" in w for w in summary["warnings"])
    assert "every patient and study attribute" in caplog.text
    assert "seg.dcm files were included" in (tmp_path / "with_seg" / MANIFEST_NAME).read_text()


def test_builtin_salt_refused_unless_allowed(sample_run, tmp_path, capsys):
    """The session's sample run uses the built-in salt, which its run.json names."""
    before = _listing(sample_run)
    with pytest.raises(CTScoreError) as err:
        share_outputs(sample_run, tmp_path / "d")
    assert err.value.code == "BUILTIN_SALT" and "trying every number" in err.value.message
    rc, _, stderr = _cli(["share", str(sample_run), str(tmp_path / "d")], capsys)
    assert rc == 1 and "BUILTIN_SALT" in stderr and "--allow-builtin-salt" in stderr
    assert not (tmp_path / "d").exists() and list(tmp_path.iterdir()) == []
    summary = share_outputs(sample_run, tmp_path / "d", allow_builtin_salt=True)
    assert summary["salt"] == "builtin" and any("built-in salt" in w for w in summary["warnings"])
    (res,) = [json.loads(p.read_text()) for p in (tmp_path / "d").glob("scan-*/result.json")]
    assert "image_sha256" not in res  # unkeyed: it would tie the result to the images anywhere
    assert "BUILT-IN salt" in (tmp_path / "d" / MANIFEST_NAME).read_text()
    rc, _, _ = _cli(["share", str(sample_run), str(tmp_path / "c"), "--allow-builtin-salt"], capsys)
    assert rc == 0
    assert _listing(sample_run) == before


def test_identifiers_refused_unless_allowed(tmp_path, capsys):
    from pipeline.run import run_pipeline

    zs = [-100.0 + 2.0 * k for k in range(30) if k not in (10, 11, 12)]
    write_series(tmp_path / "in" / "case", positions=zs, size=32)
    out = tmp_path / "out"
    run_pipeline(tmp_path / "in", out, {"segmentation": {"method": "classical"},
                                        "outputs": {"pseudonymize": False, "pseudonym_salt": SALT}})
    with pytest.raises(CTScoreError) as err:
        share_outputs(out, tmp_path / "d")
    assert err.value.code == "NOT_PSEUDONYMOUS"
    rc, _, stderr = _cli(["share", str(out), str(tmp_path / "d")], capsys)
    assert rc == 1 and "NOT_PSEUDONYMOUS" in stderr
    summary = share_outputs(out, tmp_path / "d", allow_identifiers=True)
    assert summary["salt"] == "none"
    assert "NOT pseudonymous" in (tmp_path / "d" / MANIFEST_NAME).read_text()


def _refusals(out: Path, tmp_path: Path) -> list[tuple[str, list[str], dict, str, int]]:
    full = tmp_path / "full"
    full.mkdir()
    (full / "x.txt").write_text("kept")
    empty_run = tmp_path / "not_a_run"
    empty_run.mkdir()
    return [  # (name, CLI arguments, API keywords, code, exit code)
        ("dest not empty", [str(out), str(full)], {}, "OUTPUT_NOT_EMPTY", 1),
        ("dest a file", [str(out), str(full / "x.txt")], {}, "OUTPUT_NOT_EMPTY", 1),
        ("dest inside out", [str(out), str(out / "shared")], {}, "OUTPUT_IS_INPUT", 1),
        ("dest is out", [str(out), str(out)], {}, "OUTPUT_IS_INPUT", 1),
        ("out missing", [str(tmp_path / "nothing"), str(tmp_path / "d")], {}, "INPUT_NOT_FOUND", 4),
        ("not a run", [str(empty_run), str(tmp_path / "d")], {}, "NOTHING_TO_SHARE", 1),
    ]


def test_refusals_are_the_same_in_the_cli_and_the_api(site_run, tmp_path, capsys):
    _, out = site_run
    before = _listing(out)
    for name, argv, kwargs, code, exit_code in _refusals(out, tmp_path):
        with pytest.raises(CTScoreError) as err:
            share_outputs(*argv, **kwargs)
        assert err.value.code == code, name
        rc, _, stderr = _cli(["share", *argv], capsys)
        assert rc == exit_code and f"ctscore: error: {code}: {err.value.message}" in stderr, (name, stderr)
    assert (tmp_path / "full" / "x.txt").read_text() == "kept"
    assert not (tmp_path / "d").exists() and not (out / "shared").exists()
    assert _listing(out) == before


def test_an_empty_dest_folder_is_filled(site_run, tmp_path):
    _, out = site_run
    (tmp_path / "empty").mkdir()
    share_outputs(out, tmp_path / "empty")
    assert (tmp_path / "empty" / "scans.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_a_failure_half_way_leaves_no_dest(site_run, tmp_path, monkeypatch):
    import pipeline.report

    _, out = site_run

    def broken(_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline.report, "render_run_report", broken)
    with pytest.raises(OSError):
        share_outputs(out, tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_a_run_writing_into_out_is_refused(site_run, tmp_path):
    from pipeline.batch import writer_lock

    _, out = site_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    with writer_lock(copy):
        with pytest.raises(CTScoreError) as err:
            share_outputs(copy, tmp_path / "d")
    assert err.value.code == "OUTPUT_LOCKED"
    share_outputs(copy, tmp_path / "d")  # the lock let go: shared


def test_a_file_of_out_rewritten_during_the_share_stops_it(site_run, tmp_path, monkeypatch):
    import pipeline.report

    _, out = site_run
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    render = pipeline.report.render_run_report

    def rewriting(folder):  # a run rewrites scans.csv while the share copies
        with open(copy / "scans.csv", "ab") as fh:
            fh.write(b"\n")
        return render(folder)

    monkeypatch.setattr(pipeline.report, "render_run_report", rewriting)
    with pytest.raises(CTScoreError) as err:
        share_outputs(copy, tmp_path / "d")
    assert err.value.code == "OUTPUT_CHANGED" and "scans.csv" in err.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_output_folder_in_a_folder_named_shards_is_no_shard():
    from pathlib import Path

    from pipeline.share import _is_shard, _looks_like_path

    assert _is_shard(Path("/p/out/shards/2-of-4")) and not _is_shard(Path("/proj/shards/run1"))
    assert _looks_like_path("/home/ana/model") and _looks_like_path("models/site_a")
    assert not _looks_like_path("ratio 1/2") and not _looks_like_path("LUNG|BONE|^B[5-9][0-9]")
