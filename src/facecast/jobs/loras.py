"""LoRA files for `generate --lora NAME[:weight]`: found by name in the configured folders, and
listed with the trigger words and tags their training tools wrote into the safetensors header.

Only the header is read (`safetensors.safe_open(...).metadata()`): listing a folder of multi-GB
LoRAs loads no weights. Keys read: `modelspec.trigger_phrase` (the Stability model spec),
`ss_activation_text` and `ss_tag_frequency` (kohya's sd-scripts: tags counted over the training
captions; the most frequent are kept), `ss_base_model_version` / `modelspec.architecture`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from facecast.jobs.runner import JobRejected

SUFFIX = ".safetensors"
MAX_TAGS = 20  # kohya counts every caption word; the most frequent ones are what identifies a LoRA
WEIGHT_RANGE = (-4.0, 4.0)  # beyond this a LoRA only breaks the image; a typo like 08 is caught


@dataclass(frozen=True, slots=True)
class LoraFile:
    name: str  # the file name without .safetensors, relative to its folder ("style/anime" for a subfolder)
    path: Path
    triggers: tuple[str, ...]  # words the LoRA was trained to react to
    tags: tuple[str, ...]  # the most frequent caption tags of its training set
    base_model: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "path": str(self.path),
            "triggers": list(self.triggers),
            "tags": list(self.tags),
            "base_model": self.base_model,
        }


def _split_phrases(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,\n;]", text) if p.strip()]


def read_lora(path: Path, folder: Path) -> LoraFile:
    """The LoRA's name and header metadata; ValueError if the file is not a readable safetensors file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError for a bad header
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from None
    triggers = [*_split_phrases(meta.get("modelspec.trigger_phrase", ""))]
    triggers += _split_phrases(meta.get("ss_activation_text", ""))
    counts: dict[str, int] = {}
    try:
        frequency = json.loads(meta.get("ss_tag_frequency", "{}"))
        for dataset in frequency.values() if isinstance(frequency, dict) else ():
            for tag, n in dataset.items() if isinstance(dataset, dict) else ():
                counts[tag.strip()] = counts.get(tag.strip(), 0) + int(n)
    except (ValueError, TypeError, AttributeError):
        pass  # a malformed tag table hides the tags, not the LoRA (the file itself is fine)
    tags = sorted((t for t in counts if t), key=lambda t: (-counts[t], t))[:MAX_TAGS]
    base = meta.get("modelspec.architecture") or meta.get("ss_base_model_version") or None
    name = path.relative_to(folder).with_suffix("").as_posix()
    return LoraFile(name, path, tuple(dict.fromkeys(triggers)), tuple(tags), base)


def find_loras(folders: Iterable[Path]) -> list[LoraFile]:
    """Every readable LoRA in the folders (subfolders too), first folder first; unreadable files are skipped."""
    found: dict[str, LoraFile] = {}
    for folder in folders:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob(f"*{SUFFIX}")):
            try:
                lora = read_lora(path, folder)
            except ValueError:
                continue
            found.setdefault(lora.name, lora)  # an earlier folder wins, as in resolve()
    return list(found.values())


def matches(lora: LoraFile, prompt: str) -> list[str]:
    """The LoRA's trigger words and tags that occur in the prompt (whole words, any case)."""
    text = prompt.casefold()
    hits = []
    for word in (*lora.triggers, *lora.tags):
        if re.search(rf"(?<!\w){re.escape(word.casefold())}(?!\w)", text):
            hits.append(word)
    return list(dict.fromkeys(hits))


def parse_spec(spec: str) -> tuple[str, float]:
    """`NAME[:weight]` -> (name, weight); JobRejected naming the spec when the weight is not a number in range."""
    name, sep, weight_text = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not sep:
        name, weight_text = spec, "1"
    try:
        weight = float(weight_text)
    except ValueError:
        raise JobRejected(f"--lora {spec!r}: the weight after ':' must be a number, e.g. {name}:0.8") from None
    return name.strip(), weight


def resolve(name: str, folders: Iterable[Path]) -> Path:
    """The LoRA file called `name` (with or without .safetensors) in the folders, or JobRejected
    listing the folders and what is in them. Names cannot leave the folders."""
    folders = [Path(f).expanduser().resolve() for f in folders]
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    for folder in folders:
        candidate = (folder / f"{stem}{SUFFIX}").resolve()
        if candidate.is_relative_to(folder) and candidate.is_file():
            return candidate
    known = ", ".join(lora.name for lora in find_loras(folders)) or "none"
    where = ", ".join(map(str, folders)) or "no folder"
    raise JobRejected(f"LoRA {name!r} not found in {where} (jobs.lora_dirs); available: {known}")


def print_loras(folders: list[Path], prompt: str | None, as_json: bool) -> int:
    """`facecast jobs loras [--prompt TEXT]`: one LoRA a line (read on this machine, no daemon needed)."""
    found = find_loras(folders)
    if not found:
        where = ", ".join(str(Path(f).expanduser()) for f in folders)
        print(f"no LoRA .safetensors files in {where} (jobs.lora_dirs)", file=sys.stderr)
        return 0
    shown = 0
    for lora in found:
        hits = matches(lora, prompt) if prompt is not None else []
        if prompt is not None and not hits:
            continue
        shown += 1
        if as_json:
            print(json.dumps({**lora.as_dict(), **({"matched": hits} if prompt is not None else {})}))
            continue
        line = lora.name + (f"  [{lora.base_model}]" if lora.base_model else "")
        if lora.triggers:
            line += f"\n    triggers: {', '.join(lora.triggers)}"
        if lora.tags:
            line += f"\n    tags: {', '.join(lora.tags)}"
        if hits:
            line += f"\n    matches: {', '.join(hits)}"
        print(line)
    if prompt is not None and not shown:
        print(f"no LoRA has a trigger word or tag in {prompt!r} ({len(found)} LoRAs looked at)", file=sys.stderr)
    return 0
