"""`facecast jobs submit generate ...`: its arguments and the job's params from them. Apart from
the kind itself (which imports OpenCV and the media writers) so that building the command's parser
stays cheap for every `facecast` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from facecast.jobs import loras as lora_files
from facecast.jobs.runner import JobRejected


def _lora_argument(spec: str) -> dict[str, Any]:
    try:
        name, weight = lora_files.parse_spec(spec)
    except JobRejected as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return {"name": name, "weight": weight}


def _shots_file(path: str) -> list[str]:
    """One prompt per non-blank line, # starts a comment line; read here (the daemon may not see the file)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc}") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def add_cli_arguments(generate: argparse.ArgumentParser) -> None:
    """`facecast jobs submit generate ...`."""
    generate.add_argument("--character", metavar="IMG", help="portrait: image-to-video reference of every shot")
    generate.add_argument(
        "--prompt", action="append", metavar="TEXT", help="what happens; repeat for several shots (joined in order)"
    )
    generate.add_argument("--shots", type=_shots_file, metavar="FILE", help="a text file, one shot's prompt per line")
    generate.add_argument("--mode", choices=["t2v", "i2v"], help="default: i2v with --character, t2v without")
    generate.add_argument(
        "--shot-start", choices=["character", "previous"], help="what each shot after the first starts from"
    )
    generate.add_argument(
        "--lora", type=_lora_argument, action="append", metavar="NAME[:WEIGHT]", help="a LoRA in jobs.lora_dirs"
    )
    generate.add_argument("--model", metavar="DIR", help="diffusers pipeline folder (default: jobs.generate_model)")
    for name in ("frames", "width", "height"):
        generate.add_argument(f"--{name}", type=int, help="default: the model's own")
    generate.add_argument("--steps", type=int, default=30)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--fps", type=float)
    generate.add_argument("--camera-from", metavar="VIDEO", help="add this video's camera movement to the prompt")
    generate.add_argument(
        "--no-audio", dest="audio", action="store_false", help="video only, for models that make a soundtrack (LTX-2)"
    )


def cli_params(args: argparse.Namespace, absolute: Callable[[str], str]) -> dict[str, Any]:
    """The job's params from the command line (paths made absolute: the daemon has another cwd)."""
    prompts = [*(args.prompt or []), *(args.shots or [])]
    p: dict[str, Any] = {"steps": args.steps, "seed": args.seed}
    if len(prompts) == 1:
        p["prompt"] = prompts[0]
    elif prompts:
        p["shots"] = [{"prompt": text} for text in prompts]
    if args.character:
        p["character"] = absolute(args.character)
    if args.model:
        p["model"] = absolute(args.model)
    for key in ("mode", "shot_start", "frames", "width", "height", "fps"):
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    if args.lora:
        p["loras"] = args.lora
    if args.camera_from:
        p["camera_from"] = absolute(args.camera_from)
    if not args.audio:
        p["audio"] = False
    return p
