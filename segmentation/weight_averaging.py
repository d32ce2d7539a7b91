"""Averaging the weights of fine-tunes of one network (a "model soup", Wortsman et al., ICML 2022).

Fine-tunes that start from the same weights stay in one basin of the loss, so the average of their
parameters is itself a working network, and it often sits above the line joining the fine-tunes it
came from: here the lung head of a fine-tune that covers pleural consolidation well but takes dense
non-lung (stage 10) averaged with one that keeps the lung clean (stage 11) keeps most of the first's
coverage and most of the second's clean lung (figures in ``segmentation/weights/EXPERIMENTS.md``).

:func:`average_weights` reads model folders in the layout of ``segmentation/weights``
(``model.safetensors``, ``model.yaml``, ``manifest.json``), checks each against its manifest, and writes
the weighted mean of their parameters as a new folder of the same layout; ``model.yaml`` records the
sha256 and the weight of each source under ``averaged_from``. ``scripts/average_weights.py`` is the
command.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# model.yaml keys that must agree: the same network on the same input
MUST_AGREE = ("arch", "model_spacing_mm", "hu_window")


class AveragingError(ValueError):
    """The model folders cannot be averaged (different networks, bad weights, bad output folder)."""


def _folder(path: str | Path) -> Path:
    p = Path(path)
    return p.parent if p.is_file() else p


def average_weights(sources: Sequence[str | Path], out: str | Path,
                    weights: Sequence[float] | None = None) -> dict[str, Any]:
    """Write to ``out`` the weighted mean of the parameters of the model folders ``sources``.

    ``weights`` (one per source, >= 0, not all 0) are normalised to sum to 1; None = equal weights.
    Every source is verified against its ``manifest.json`` (what is read is the bytes whose sha256 was
    checked, and recorded) and must describe the same network (``arch``, ``model_spacing_mm``,
    ``hu_window`` of ``model.yaml``; the same parameter names and shapes); an unreadable or mismatched
    source is an :class:`AveragingError` naming its file, raised before anything is written. The other
    ``model.yaml`` settings (inference window, lesion threshold) are the first source's. ``out`` must
    not exist or be empty; it is filled atomically (written beside it, then renamed); a place where it
    cannot be written is an :class:`AveragingError` too. Returns the new ``model.yaml`` as a dict.
    """
    import torch
    import yaml
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes
    from safetensors.torch import save_file

    from pipeline.outputs import current_umask
    from segmentation.monai_segmenter import WeightsError, read_verified
    from segmentation.training import write_manifest

    folders = [_folder(s) for s in sources]
    if len(folders) < 2:
        raise AveragingError(f"averaging needs at least two model folders, got {len(folders)}")
    w = [1.0] * len(folders) if weights is None else [float(v) for v in weights]
    if len(w) != len(folders):
        raise AveragingError(f"{len(w)} weights for {len(folders)} model folders")
    if any(not (math.isfinite(v) and v >= 0) for v in w) or sum(w) <= 0:
        raise AveragingError(f"weights must be finite, >= 0 and not all 0, got {w}")
    w = [v / sum(w) for v in w]
    out = Path(out)
    if any(out.resolve() == f.resolve() for f in folders):
        raise AveragingError(f"output {out} is one of the source folders")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AveragingError(f"output {out} exists and is not an empty folder: refusing to overwrite")

    def verified(f: Path, name: str) -> tuple[str, bytes]:
        """sha256 and bytes of ``f/name``, checked against the manifest: parse these, not the file again."""
        try:
            got, contents = read_verified(f, [name])
        except WeightsError as e:
            raise AveragingError(str(e)) from e
        return got[name], contents[name]

    metas: list[dict[str, Any]] = []
    for f in folders:
        try:
            m = yaml.safe_load(verified(f, "model.yaml")[1].decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as e:
            raise AveragingError(f"{f / 'model.yaml'}: unreadable model description ({e})") from e
        missing = [k for k in MUST_AGREE if k not in m] if isinstance(m, dict) else list(MUST_AGREE)
        if missing:
            raise AveragingError(f"{f / 'model.yaml'}: not a model description, it lacks {missing}")
        metas.append(m)
    for f, m in zip(folders[1:], metas[1:]):
        for k in MUST_AGREE:
            if m.get(k) != metas[0].get(k):
                raise AveragingError(f"{f / 'model.yaml'}: {k} is {m.get(k)!r}, "
                                     f"{folders[0] / 'model.yaml'} has {metas[0].get(k)!r}: not the same network")

    acc: dict[str, torch.Tensor] = {}
    first: dict[str, torch.Tensor] = {}
    hashes: list[str] = []
    for i, (f, wi) in enumerate(zip(folders, w)):
        h, data = verified(f, "model.safetensors")
        hashes.append(h)
        try:
            state = load_bytes(data)  # safetensors: no pickle, no code; the bytes whose sha256 was checked
        except (SafetensorError, OSError) as e:  # truncated or not a safetensors file (its manifest hash fits)
            raise AveragingError(f"{f / 'model.safetensors'}: unreadable weights, not a safetensors file "
                                 f"({type(e).__name__}: {e})") from e
        del data
        if i == 0:
            first = state
            acc = {k: v.double() * wi for k, v in state.items() if v.is_floating_point()}
            continue
        if set(state) != set(first):
            diff = sorted(set(state) ^ set(first))[:3]
            raise AveragingError(f"{f / 'model.safetensors'}: parameter names differ from {folders[0]} (e.g. {diff})")
        for k, v in state.items():
            if v.shape != first[k].shape:
                raise AveragingError(f"{f / 'model.safetensors'}: {k} has shape {tuple(v.shape)}, "
                                     f"{folders[0]} has {tuple(first[k].shape)}")
            if k in acc:
                acc[k] += v.double() * wi
            elif not torch.equal(v, first[k]):  # integer buffers (counters) cannot be averaged
                raise AveragingError(f"{f / 'model.safetensors'}: non-float tensor {k} differs from {folders[0]}")
    merged = {k: (acc[k].to(v.dtype) if k in acc else v).contiguous() for k, v in first.items()}

    meta = dict(metas[0])
    meta["averaged_from"] = [{"folder": f.name, "sha256": h, "weight": round(wi, 6)}
                             for f, h, wi in zip(folders, hashes, w)]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as e:  # read-only place, a file on the way, ...: the command's error, not a traceback
        raise AveragingError(f"output {out}: cannot create a folder there ({e})") from e
    try:
        # the same header as training writes (the network), plus how many folders were averaged
        save_file(merged, str(tmp / "model.safetensors"),
                  metadata={"arch": json.dumps(meta["arch"]), "averaged_from": str(len(folders))})
        (tmp / "model.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        write_manifest(tmp)
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp made it private; the folder is as readable as any other
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # disk full, ...
            raise AveragingError(f"output {out}: cannot write the model there ({e})") from e
        raise
    return meta
