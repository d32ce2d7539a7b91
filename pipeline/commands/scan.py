"""``ctscore scan INPUT [-o inventory.csv]``: a header-only inventory of the DICOM under INPUT.

Every file gets a row (used, not scored, or skipped with a code); every stack its modality, image
type, orientation, slice count, thickness, spacing, z coverage, kernel, manufacturer/model, transfer
syntax, contrast, body part, and the selection decision with its reason. Pixel data are read only for files of a
series sharing a SOPInstanceUID and a position (copies or edited copies), and decoded only where those copies differ
in transfer syntax.
Exit codes: see docs/dicom_input.md.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.errors import (
    EXIT_NOTHING_ELIGIBLE,
    EXIT_OK,
    EXIT_SOME_FAILED,
    CTScoreError,
)
from pipeline.outputs import atomic_write_bytes


def register(sub) -> None:
    from pipeline.commands.run import add_config_args, add_log_args

    p = sub.add_parser("scan", help="list the DICOM files, series and stacks under INPUT and what would be scored",
                       description="Header-only inventory of INPUT: every file with a decision, every stack with "
                                   "its geometry and the reason it is scored or skipped. Pixels are read only for files of "
                                   "a series sharing a SOPInstanceUID and a position, to compare them, and decoded "
                                   "only where those files differ in transfer syntax.")
    p.add_argument("input", help="folder (any depth) or file with DICOM data")
    p.add_argument("-o", "--out", metavar="CSV", help="write the per-file inventory here (inventory.csv)")
    p.add_argument("--stacks", metavar="CSV", help="also write one row per stack here")
    p.add_argument("--series-uid", metavar="UID",
                   help="consider only this SeriesInstanceUID (or stack id): chosen over the other stacks of its "
                        "study, but the hard filters of selection: still apply (its reason says which refused it)")
    p.add_argument("--all-series", action="store_true", help="select every eligible stack, not one per study")
    p.add_argument("--identifiers", action="store_true",
                   help="include patient id and study date in the tables (left out by default)")
    add_config_args(p)
    add_log_args(p)
    p.set_defaults(func=main)


def check_destination(dest: str) -> None:
    """OUTPUT_UNWRITABLE for a table that could not be written, found before the inventory is built (and before
    the other table is written): a folder in its place, or no writable folder to make it in."""
    from pipeline.outputs import folder_problem

    path = Path(dest).absolute()
    why = "a folder is in its place" if path.is_dir() else folder_problem(path.parent)
    if why:
        raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the table ({why})", dest)


def exit_code(inv) -> int:
    """0 selected stacks all look loadable; 8 some selected stack is predicted to fail; 2 nothing eligible."""
    if not inv.chosen:
        return EXIT_NOTHING_ELIGIBLE
    if any(c.problems for c in inv.chosen):
        return EXIT_SOME_FAILED
    return EXIT_OK


def stack_folders(files, input_path: str | Path) -> dict[str, str]:
    """stack id -> the folder holding its files (their common folder), relative to ``input_path`` ("." for the
    input itself)."""
    root = Path(input_path).resolve()
    root = root.parent if root.is_file() else root
    out: dict[str, str] = {}
    used = files[files["stack_id"].fillna("") != ""]
    for stack, paths in used.groupby("stack_id")["path"]:
        folders = {str(Path(p).resolve().parent) for p in paths}
        common = Path(os.path.commonpath(sorted(folders)))
        try:
            out[stack] = common.relative_to(root).as_posix() or "."
        except ValueError:
            out[stack] = str(common)
    return out


def common_folder(folders: list[str]) -> str:
    """The leading folders that every one of two or more stacks' folders shares ('' when none or one stack): each
    is a folder relative to INPUT, '/'-separated, and the common part is never a whole folder of the list."""
    if len(folders) < 2:
        return ""
    parts = [f.split("/") for f in folders]
    n = 0
    while all(len(p) > n + 1 and p[n] == parts[0][n] for p in parts):
        n += 1
    return "/".join(parts[0][:n])


def short_folder(folder: str, width: int = 60) -> str:
    """A stack's folder cut to ``width`` characters in its middle, so that both its start (the patient's or the
    download's folder) and its end (the series folder) show: cut at its start, two patients' series folders of a TCIA
    download read alike (".../2.000000-ROUTINE CHEST NON-CON-67890"); the folders the stacks share are said once
    above the table (:func:`common_folder`)."""
    if len(folder) <= width:
        return folder
    head = (width - 3) * 2 // 5
    return folder[:head] + "..." + folder[-(width - 3 - head):]


def main(args: argparse.Namespace) -> int:
    import pandas as pd

    from pipeline.config import load_config
    from pipeline.inventory import (
        build_inventory,
        input_hints,
        inventory_table,
        no_stack_sentence,
        requested_series_problem,
    )

    cfg = load_config(args.config, args.overrides)
    for dest in (args.out, args.stacks):
        if dest:
            check_destination(dest)
    # INPUT_NOT_FOUND: "ctscore: error: ..." and exit 4 from the CLI's handler, as for every command
    inv = build_inventory(args.input, cfg, series_uid=args.series_uid, all_series=args.all_series,
                          identifiers=args.identifiers)
    for dest, table in ((args.out, inv.files), (args.stacks, inv.stacks)):
        if dest:
            try:
                atomic_write_bytes(Path(dest), inventory_table(table).to_csv(index=False).encode())
            except OSError as exc:
                raise CTScoreError("OUTPUT_UNWRITABLE", f"cannot write the table ({exc.strerror or exc})", dest) from exc

    files = inv.files
    folders = files["file_code"] == "HIDDEN_FOLDER"  # folders not read: not counted as files
    n_folders = int(folders.sum())
    files_only = files[~folders]
    counts = files_only["file_status"].value_counts().to_dict()
    skip_codes = files_only.loc[files_only["file_status"] == "skipped", "file_code"].value_counts().to_dict()
    # files skipped one by one (not DICOM, unreadable, no image) are not the stacks skipped below (a localizer ...)
    print(f"{len(files_only)} files: {counts.get('used', 0)} in selected stacks, {counts.get('not scored', 0)} in stacks "
          f"not selected, {counts.get('skipped', 0)} skipped as files (not DICOM, unreadable or no image)"
          + (f" ({', '.join(f'{k} {v}' for k, v in skip_codes.items())})" if skip_codes else "")
          + (f"; {n_folders} hidden or system folder{'s' if n_folders > 1 else ''} not read (HIDDEN_FOLDER)"
             if n_folders else ""))
    if not len(inv.stacks):  # not an empty table: what was found instead (NIfTI/NRRD files: ctscore reads DICOM)
        print(no_stack_sentence(files, args.input))
        print("\n0 stack(s) selected of 0" + (f"; written {args.out}" if args.out else ""))
        return exit_code(inv)
    cols = ["folder", "stack_id", "modality", "orientation", "n_slices", "slice_thickness_mm", "slice_spacing_mm",
            "z_coverage_mm", "kernel", "decision", "reason"]
    stacks = inv.stacks.copy()
    # which of the user's folders each stack is in (its files' common folder, relative to INPUT): the stack ids
    # alone do not say which row is which patient
    stacks["folder"] = stacks["stack_id"].map(stack_folders(files, args.input))
    stacks = stacks[cols]
    stacks["stack_id"] = stacks["stack_id"].map(lambda s: s if len(s) <= 28 else "..." + s[-25:])
    common = common_folder(list(stacks["folder"].dropna().astype(str)))
    if common:  # said once above the table (a TCIA download: manifest-.../COLLECTION/), not on every row
        print(f"folders below INPUT/{common}:")
        stacks["folder"] = stacks["folder"].fillna("").map(lambda s: s[len(common) + 1:] or ".")
    stacks["folder"] = stacks["folder"].fillna("").map(short_folder)
    with pd.option_context("display.width", 220, "display.max_columns", 20, "display.max_colwidth", 70,
                           "display.max_rows", 500):
        print(stacks.to_string(index=False))
    print(f"\n{len(inv.chosen)} stack(s) selected of {len(inv.candidates)}"
          + (f"; written {args.out}" if args.out else ""))
    if args.series_uid and not inv.chosen:
        print(requested_series_problem(inv.candidates, args.series_uid, cfg))
    if not inv.chosen and (hints := input_hints(files, args.input, inv.candidates)):
        print("; ".join(hints))  # INPUT one file of a series, hidden folders, archives: why nothing is selected
    return exit_code(inv)
