"""Series selection against vendor exports (an imaging-informatics audit of Siemens, GE, Philips and Canon
studies): the unenhanced series when the other names no agent but says "NONE"; a contiguous volume over sequential
HRCT; the full field of view over a targeted reconstruction; each vendor's lung kernels; inspiration over
expiration; a tie said as such; SOPInstanceUIDs reused across series; maps that are not HU; MIP inside a longer
ImageType value; the contrast agents of an enhanced CT; and the other eligible stacks named when the chosen one
fails to load."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pipeline import headers as H
from pipeline.config import load_config
from pipeline.inventory import build_inventory
from tests.dicom_factory import edit_file, write_enhanced, write_series

CLASSICAL = {"segmentation": {"method": "classical"}}
SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicoms"


def _study(root, series: dict[str, dict], n: int = 12, description: dict[str, str] | None = None) -> dict[str, str]:
    """Write one study with a series per ``series`` item (its write_series keywords); return name -> series UID."""
    study, frame = generate_uid(), generate_uid()
    uids = {}
    for name, kw in series.items():
        uids[name] = generate_uid()
        files = write_series(root / name, kw.pop("n", n), study_uid=study, frame_uid=frame, series_uid=uids[name],
                             **kw)
        if description and name in description:
            for f in files:
                edit_file(f, SeriesDescription=description[name])
    return uids


def _chosen(root, cfg=None) -> tuple[str, pd.DataFrame]:
    inv = build_inventory(root, cfg or load_config())
    assert len(inv.chosen) == 1
    return inv.chosen[0].series_uid, inv.stacks


def test_contrast_agent_none_is_no_contrast(tmp_path):
    # the thinner arterial series won "by thin": ContrastBolusAgent NONE counted as an agent
    uids = _study(tmp_path, {"plain": dict(thickness=1.0, contrast="NONE"),
                             "arterial": dict(thickness=0.75, dz=0.75, n=30, contrast="OMNIPAQUE 350")})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["plain"]
    assert "preferred by noncontrast" in stacks.loc[stacks.series_uid == uids["arterial"], "reason"].iloc[0]


def test_contrast_none_ties_with_an_agent_not_written(tmp_path):
    # "NONE" and no ContrastBolusAgent both name no agent: the next preference decides (thin), not "noncontrast"
    uids = _study(tmp_path, {"a_none": dict(thickness=1.0, contrast="NONE"),
                             "b_absent": dict(thickness=0.8, dz=0.8, n=30)})
    chosen, _ = _chosen(tmp_path)
    assert chosen == uids["b_absent"]


def test_contiguous_volume_over_sequential_hrct_and_sparse_flagged(tmp_path):
    # 1 mm slices every 10 mm (HRCT) won "by thin" over 2 mm contiguous slices, and was scored without a word
    uids = _study(tmp_path, {"hrct": dict(thickness=1.0, dz=10.0, n=14),
                             "volume": dict(thickness=2.0, dz=2.0, n=70)})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["volume"]
    hrct = stacks.loc[stacks.series_uid == uids["hrct"]].iloc[0]
    assert "preferred by contiguous" in hrct["reason"]
    assert "SPARSE_SLICES" in hrct["predicted_flags"] and "1 mm slices every 10 mm" in hrct["notes"]
    assert "SPARSE_SLICES" not in stacks.loc[stacks.series_uid == uids["volume"], "predicted_flags"].iloc[0]


@pytest.mark.parametrize("thickness,spacing,sparse", [(1.0, 10.0, True), (1.25, 5.0, True), (5.0, 2.5, False),
                                                     (1.0, 2.0, False), (0.6, 1.25, False), (2.0, 5.0, True)])
def test_sparse_rule(thickness, spacing, sparse):
    from pipeline.selection import _sparse

    assert _sparse(thickness, spacing) is sparse


def test_full_field_of_view_over_a_targeted_reconstruction(tmp_path):
    # a sharp-kernel reconstruction of half the field of view won "by kernel"
    uids = _study(tmp_path, {"full": dict(kernel="B30f", spacing=1.0),
                             "targeted": dict(kernel="B70f", spacing=0.5)})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["full"]
    assert "preferred by fov" in stacks.loc[stacks.series_uid == uids["targeted"], "reason"].iloc[0]


@pytest.mark.parametrize("lung,soft", [("FL04", "FC13"), ("BONE", "STANDARD"), ("EDGE", "SOFT"),
                                       ("Br64\\3", "Hr40\\3"), ("Hr64\\3", "Hr38\\3"), ("LUNG", "STANDARD"),
                                       ("YC", "B"), ("B_SHARP_C", "B_SOFT_B"), ("FC86", "FC13")])
def test_vendor_lung_kernels_preferred(tmp_path, lung, soft):
    # name the soft series so that it sorts first: the kernel, not the order, must decide
    uids = _study(tmp_path, {"a_soft": dict(kernel=soft), "b_lung": dict(kernel=lung)})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["b_lung"], (lung, soft)
    assert "preferred by kernel" in stacks.loc[stacks.series_uid == uids["a_soft"], "reason"].iloc[0]


def test_inspiration_over_expiration(tmp_path):
    uids = _study(tmp_path, {"a_exp": {}, "b_insp": {}},
                  description={"a_exp": "Thorax EXP 1.0 B60f", "b_insp": "Thorax INSP 1.0 B60f"})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["b_insp"]
    assert "preferred by inspiration" in stacks.loc[stacks.series_uid == uids["a_exp"], "reason"].iloc[0]


@pytest.mark.parametrize("text,expiratory", [("Thorax EXP 1.0", True), ("EXPIRATION", True), ("exhale", True),
                                             ("Exhalation HRCT", True), ("INSP/EXP", False), ("Expert lung", False),
                                             ("Lung 1mm", False), ("Exspiration", True)])
def test_expiration_words(text, expiratory):
    from pipeline.selection import _expiratory

    assert _expiratory(text) is expiratory


def test_a_tie_is_flagged_and_warned(tmp_path, caplog):
    # the tube images of a dual-energy scan: alike in every header the preferences read
    uids = _study(tmp_path, {"a": dict(kernel="Q30f"), "b": dict(kernel="Q30f")})
    with caplog.at_level(logging.WARNING, logger="pipeline.selection"):
        inv = build_inventory(tmp_path, load_config())
    chosen = inv.chosen[0]
    assert "SELECTION_TIE" in chosen.flags
    other = [c for c in inv.candidates if c is not chosen][0]
    assert other.stack_id in chosen.messages["SELECTION_TIE"]
    assert "stack order" in caplog.text and other.stack_id in caplog.text
    assert set(uids.values()) == {c.series_uid for c in inv.candidates}
    # a preference that decides: no tie
    tmp2 = tmp_path / "two"
    _study(tmp2, {"a": dict(kernel="Q30f"), "b": dict(kernel="B70f")})
    assert "SELECTION_TIE" not in build_inventory(tmp2, load_config()).chosen[0].flags


def _sample_series(dest, **values) -> str:
    """A copy of sample_dicoms/ as another series of its study (new SeriesInstanceUID and SOPInstanceUIDs), with
    header ``values`` set; returns its SeriesInstanceUID."""
    uid = generate_uid()
    dest.mkdir(parents=True)
    for src in sorted(SAMPLE.iterdir()):
        try:
            ds = pydicom.dcmread(src)
        except pydicom.errors.InvalidDicomError:  # the folder's README
            continue
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        ds.save_as(dest / src.name)
    return uid


def test_the_tie_reaches_the_scans_flags(tmp_path, classical_memo):
    from pipeline.run import run_pipeline

    _sample_series(tmp_path / "in" / "a")
    _sample_series(tmp_path / "in" / "b")
    res = run_pipeline(tmp_path / "in", tmp_path / "out", CLASSICAL)
    assert res["scans"]["status"].iloc[0] == "ok"
    assert "SELECTION_TIE" in str(res["scans"]["qc_flags"].iloc[0])


def test_sop_instance_uids_reused_across_series_are_not_duplicates(tmp_path):
    # an anonymiser gave two reconstructions the same SOPInstanceUIDs: the second series was dropped as copies
    sops = [generate_uid() for _ in range(12)]
    study, frame = generate_uid(), generate_uid()

    def sop(k, params):
        params["sop_uid"] = sops[k]

    write_series(tmp_path / "soft", study_uid=study, frame_uid=frame, kernel="B30f", per_slice=sop, shuffle=False)
    write_series(tmp_path / "sharp", study_uid=study, frame_uid=frame, kernel="B70f", per_slice=sop, shuffle=False)
    inv = build_inventory(tmp_path, load_config())
    assert "DUPLICATE_SOP_INSTANCE" not in set(inv.files["file_code"].fillna(""))
    assert len(inv.candidates) == 2
    assert inv.chosen[0].header["kernel"] == "B70f"
    # a real copy of a file in the same series is still one instance
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "x.dcm").write_bytes(next((tmp_path / "sharp").iterdir()).read_bytes())
    inv = build_inventory(tmp_path, load_config())
    assert list(inv.files["file_code"].fillna("")).count("DUPLICATE_SOP_INSTANCE") == 1


def test_a_map_whose_values_are_not_hu_is_skipped(tmp_path):
    # a spectral Z-effective map, stored as ORIGINAL and thinner, was chosen and failed NOT_HU
    uids = _study(tmp_path, {"zeff": dict(thickness=1.25, dz=1.25, n=20, image_type="ORIGINAL\\PRIMARY\\AXIAL\\Z_EFFECTIVE"),
                             "conventional": dict(thickness=2.5, dz=2.5)})
    for f in (tmp_path / "zeff").iterdir():
        edit_file(f, RescaleType="Zeff")
    for f in (tmp_path / "conventional").iterdir():
        edit_file(f, RescaleType="HU")
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["conventional"]
    assert stacks.loc[stacks.series_uid == uids["zeff"], "reason"].iloc[0] == "NOT_HU_MAP"


def test_rescale_type_of_an_enhanced_ct(tmp_path):
    path = write_enhanced(tmp_path / "e.dcm")
    assert H.rescale_type(pydicom.dcmread(path)) == "HU"


@pytest.mark.parametrize("image_type", ["DERIVED\\SECONDARY\\AXIAL\\CT_SOM5 MIP", "DERIVED\\SECONDARY\\MIP_SLAB",
                                        "DERIVED\\SECONDARY\\AXIAL\\MINIP 5MM"])
def test_projection_words_inside_an_image_type_value(tmp_path, image_type):
    write_series(tmp_path / "mip", image_type=image_type, thickness=5.0)
    inv = build_inventory(tmp_path, load_config())
    assert not inv.chosen and inv.stacks["reason"].iloc[0] == "DERIVED_REFORMAT"
    # the rule follows the config: without MIP/MINIP in the list, the slab is a stack like any other
    cfg = load_config(overrides=["selection.exclude_image_types=LOCALIZER"])
    assert len(build_inventory(tmp_path, cfg).chosen) == 1


def test_siemens_spiral_image_type_is_not_a_projection(tmp_path):
    write_series(tmp_path / "spi", image_type="ORIGINAL\\PRIMARY\\AXIAL\\CT_SOM5 SPI")
    assert len(build_inventory(tmp_path, load_config()).chosen) == 1


def test_contrast_agents_of_an_enhanced_ct():
    # Enhanced Contrast/Bolus module: the agents in ContrastBolusAgentSequence, whether each was given in the
    # Contrast/Bolus Usage functional group (ContrastBolusAgentAdministered per ContrastBolusAgentNumber)
    ds = Dataset()
    iohexol, barium = Dataset(), Dataset()
    iohexol.CodeMeaning, iohexol.ContrastBolusAgentNumber = "Iohexol", 1
    barium.CodeMeaning, barium.ContrastBolusAgentNumber = "Barium sulfate", 2
    ds.ContrastBolusAgentSequence = [iohexol, barium]
    given, not_given = Dataset(), Dataset()
    given.ContrastBolusAgentNumber, given.ContrastBolusAgentAdministered = 1, "YES"
    not_given.ContrastBolusAgentNumber, not_given.ContrastBolusAgentAdministered = 2, "NO"
    shared = Dataset()
    shared.ContrastBolusUsageSequence = [given, not_given]
    ds.SharedFunctionalGroupsSequence = [shared]
    assert H.contrast_agent(ds) == "Iohexol"
    del ds.SharedFunctionalGroupsSequence  # no usage recorded: every agent named counts
    assert H.contrast_agent(ds) == "Iohexol\\Barium sulfate"
    plain = Dataset()
    plain.ContrastBolusAgent = "OMNIPAQUE"
    assert H.contrast_agent(plain) == "OMNIPAQUE"
    assert H.contrast_agent(Dataset()) == ""


@pytest.mark.parametrize("agent,contrast", [("NONE", False), ("NON-IONIC CONTRAST", True), ("Non ionic", True),
                                            ("No oral, IV Omnipaque", True), ("NATIV", False), ("ohne KM", False),
                                            ("sin contraste", False), ("NO CONTRAST AGENT", False), ("", False),
                                            ("Ultravist 370", True), ("non-contrast", False), ("ORAL", True)])
def test_contrast_agent_values(agent, contrast):
    from pipeline.hu_checks import has_contrast

    assert has_contrast(agent) is contrast


def test_a_lung_reconstruction_is_not_targeted_beside_an_extended_field_of_view(tmp_path):
    # 360 mm, 1 mm, B70f beside 512 mm, 5 mm, B30f: the lung reconstruction (thin), not "targeted" by fov
    uids = _study(tmp_path, {"a_wide": dict(spacing=16.0, thickness=5.0, dz=5.0, kernel="B30f"),
                             "b_lung": dict(spacing=11.25, thickness=1.0, dz=1.0, n=60, kernel="B70f")})
    chosen, stacks = _chosen(tmp_path)
    assert chosen == uids["b_lung"]


def test_the_widest_field_of_view_is_that_of_loadable_chest_stacks():
    from types import SimpleNamespace

    from pipeline.selection import _widest_chest_fov

    def stack(fov, part="", problems=()):
        return SimpleNamespace(info={"rows": 100, "columns": 100, "pixel_spacing_mm": fov / 100},
                               header={"body_part": part}, problems=list(problems))

    assert _widest_chest_fov([stack(240), stack(500, "ABDOMEN"), stack(480, problems=["SLICE_GAP"])]) == 240
    assert _widest_chest_fov([stack(240), stack(300, "CHEST")]) == 300


@pytest.mark.parametrize("text", ["Thorax_Exp_1.0_B70f", "EXP_HRCT", "Exp1.0 B70f", "Espiración", "espirazione",
                                  "Ausatmung"])
def test_expiration_words_bounded_by_non_letters(text):
    from pipeline.selection import _expiratory

    assert _expiratory(text)


@pytest.mark.parametrize("text", ["EXPRESS", "Exposure", "Thorax Exp/Insp", "Expert lung"])
def test_words_that_are_not_expiration(text):
    from pipeline.selection import _expiratory

    assert not _expiratory(text)


def test_sparse_needs_a_positive_thickness():
    from pipeline.selection import _sparse

    assert not _sparse(-1.0, 10.0) and not _sparse(0.0, 10.0)


@pytest.mark.parametrize("value,skipped", [("Hounsfield Units", False), ("HOUNSFIELD", False), ("US", False),
                                           ("HU", False), ("Zeff", True), ("MG/ML", True)])
def test_rescale_types(tmp_path, value, skipped):
    for f in write_series(tmp_path / "s"):
        edit_file(f, RescaleType=value)
    inv = build_inventory(tmp_path, load_config())
    assert (inv.stacks["reason"].iloc[0] == "NOT_HU_MAP") is skipped


def test_the_tie_is_warned_once_and_not_through_discovery(tmp_path, caplog):
    from pipeline.discovery import discover, select_series

    _study(tmp_path, {"a": dict(kernel="Q30f"), "b": dict(kernel="Q30f")})
    with caplog.at_level(logging.WARNING):
        build_inventory(tmp_path, load_config())
    assert sum("stack order" in r.getMessage() for r in caplog.records) == 1
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        chosen = select_series(discover(tmp_path))
    assert "SELECTION_TIE" in chosen[0].flags
    assert not any("stack order" in r.getMessage() for r in caplog.records)


def test_the_pydicom_filter_is_only_there_while_an_inventory_reads(tmp_path):
    write_series(tmp_path / "s")
    before = list(logging.getLogger("pydicom").filters)
    build_inventory(tmp_path, load_config())
    assert logging.getLogger("pydicom").filters == before


def test_an_enhanced_ct_with_contrast_in_its_sequence_ranks_and_flags_as_contrast(tmp_path):
    (tmp_path / "enh").mkdir()
    path = write_enhanced(tmp_path / "enh" / "e.dcm")
    ds = pydicom.dcmread(path)
    item = Dataset()
    item.CodeMeaning, item.ContrastBolusAgentAdministered = "Iohexol", "YES"
    ds.ContrastBolusAgentSequence = [item]
    ds.save_as(path)
    inv = build_inventory(tmp_path, load_config())
    assert inv.stacks["contrast"].iloc[0] == "Iohexol"


def test_the_other_eligible_stacks_are_named_when_the_chosen_one_fails(tmp_path, classical_memo):
    from pipeline.run import run_pipeline

    # the lung-kernel series (chosen) has an intercept that leaves air at +1000 HU: refused when loaded
    bad = _sample_series(tmp_path / "in" / "a_bad", ConvolutionKernel="B70f", RescaleIntercept=976)
    good = _sample_series(tmp_path / "in" / "b_good", ConvolutionKernel="B30f")
    inv = build_inventory(tmp_path / "in", load_config())
    assert inv.chosen[0].series_uid == bad
    other = [c for c in inv.candidates if c.series_uid == good][0]
    assert inv.chosen[0].alternatives == [other.stack_id]
    res = run_pipeline(tmp_path / "in", tmp_path / "out", CLASSICAL)
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    message = failures["message"].iloc[0]
    assert failures["code"].iloc[0] == "NOT_HU" and res["scans"]["status"].iloc[0] == "failed"
    assert f"other eligible stacks: {other.stack_id}" in message and f"--series-uid {other.stack_id}" in message
    # and --series-uid with that stack id scores it
    res2 = run_pipeline(tmp_path / "in", tmp_path / "out2", CLASSICAL, series_uid=other.stack_id)
    assert res2["scans"]["status"].iloc[0] == "ok"


def test_utf8_text_under_a_latin1_character_set_reads_as_utf8(tmp_path):
    from pydicom.dataelem import DataElement

    for f in write_series(tmp_path / "s"):
        ds = pydicom.dcmread(f)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds[0x0008, 0x103E] = DataElement(0x0008103E, "LO", "Thorax nativ Lunge Größe".encode())
        ds.save_as(f)
    inv = build_inventory(tmp_path, load_config())
    assert inv.stacks["series_description"].iloc[0] == "Thorax nativ Lunge Größe"
    # real Latin-1 stays Latin-1, also where its bytes happen to be valid UTF-8 ("ß" + no-break space)
    latin = Dataset()
    latin.SpecificCharacterSet = "ISO_IR 100"
    latin.SeriesDescription = "Fuß\xa0links Größe"
    assert H.text(latin, "SeriesDescription") == "Fuß links Größe".replace(" links", "\xa0links")
    # other character sets, and the PatientID (its pseudonym must not change), are left as decoded
    other = Dataset()
    other.SpecificCharacterSet = "ISO_IR 192"
    other.SeriesDescription = "GrÃ¶Ãe"
    assert H.text(other, "SeriesDescription") == "GrÃ¶Ãe"
    latin.PatientID = "MÃ¼ller"
    assert H.text(latin, "PatientID") == "MÃ¼ller"


def test_an_unknown_character_set_is_warned_once_not_per_file(tmp_path, caplog):
    for f in write_series(tmp_path / "s", 20):
        edit_file(f, SpecificCharacterSet="ISO_IR 999")
    caplog.clear()  # (writing the files logged it too)
    with caplog.at_level(logging.WARNING, logger="pydicom"):
        build_inventory(tmp_path, load_config())
    lines = [r for r in caplog.records if r.name == "pydicom" and "ISO_IR 999" in r.getMessage()]
    assert 1 <= len(lines) <= 2, len(lines)
