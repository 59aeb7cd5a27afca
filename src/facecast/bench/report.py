"""Benchmark results as text tables (the JSON is the result dict itself)."""

from __future__ import annotations

import statistics
from typing import Any


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def mode_line(r: dict[str, Any]) -> str:
    if r["mode"] == "max":
        how = "max: as fast as it goes, source not paced, queues block"
    else:
        how = f"realtime: paced at {r['source']['fps']:.4g} fps, queue policy {r['pipeline']['queue_policy']}"
    return how


def system_lines(system: dict[str, Any], gpu_shown: bool = False) -> list[str]:
    cpu = system["cpu"]
    gpu = system["gpu"]
    ort = system["onnxruntime"]
    lines = [
        f"system     {cpu['model']}, {cpu['usable_cores']} usable of {cpu['logical_cores']} logical cores,"
        f" {system['memory_gb']} GB RAM; {system['os']}; Python {system['python']}",
    ]
    if gpu["available"]:
        names = ", ".join(f"{d['index']}: {d['name']} ({d['memory_total_mb'] / 1024:.0f} GB)" for d in gpu["devices"])
        lines.append(f"           GPU {names}; driver {gpu['driver']}")
    elif not gpu_shown:
        lines.append(f"           no GPU ({gpu['reason']})")
    if ort["version"]:
        line = f"           onnxruntime {ort['version']}: available {', '.join(ort['available_providers'])}"
        if "providers_in_use" in ort:
            line += f"; in use: {', '.join(ort['providers_in_use']) or 'none (no ONNX model loaded)'}"
        lines.append(line)
    else:
        lines.append("           onnxruntime not installed")
    versions = ", ".join(
        f"{k} {v}" for k, v in system["versions"].items() if k not in ("onnxruntime", "onnxruntime-gpu")
    )
    lines.append(f"           {versions}")
    return lines


def format_result(r: dict[str, Any]) -> str:
    src = r["source"]
    lat = r["latency_ms"]
    out_w, out_h = r["output_size"]
    size = f"{src['width']}x{src['height']}" if src["width"] else "size unknown"
    work = r.get("work_size")  # the frame size the effect received (pipeline.work_size)
    resized = work is not None and [src["width"], src["height"]] != work
    if work is not None and resized:
        size += f" in, effect at {work[0]}x{work[1]} (pipeline.work_size {r['pipeline'].get('work_size')})"
    if [src["width"], src["height"]] != [out_w, out_h]:
        size += ("" if resized else " in") + f", {out_w}x{out_h} out"
    lines = [
        f"facecast bench: {src['description']}, {size}, effect {r['effect']}",
        f"mode       {mode_line(r)}; outputs: {', '.join(r['pipeline']['outputs']) or 'none'}",
        f"measured   {r['frames']} frames after {r['warmup_frames']} warm-up frames, {r['duration_s']:.2f} s",
        "",
        f"fps        {r['fps']:.1f}  ({r['source_fps_ratio']:.2f}x the source's {src['fps']:.4g} fps;"
        f" frames captured at {src['measured_fps']:.1f} fps)"
        if r["source_fps_ratio"] is not None and src["measured_fps"] is not None
        else f"fps        {r['fps']:.1f}",
        f"latency    p50 {_ms(lat['p50'])}  p95 {_ms(lat['p95'])}  p99 {_ms(lat['p99'])}  max {_ms(lat['max'])} ms"
        "  (capture stamp to output done)",
        "",
        f"{'stage ms':<10} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}"
        f"   {'wait p50':>8} {'wait p95':>8} {'wait p99':>8}",
    ]
    for name, s in r["stages"].items():
        w = s["wait"]
        waits = f"{_ms(w['p50']):>8} {_ms(w['p95']):>8} {_ms(w['p99']):>8}" if w else f"{'':>8} {'':>8} {'':>8}"
        label = f"{name}*" if w is None else name
        lines.append(
            f"{label:<10} {_ms(s['p50']):>8} {_ms(s['p95']):>8} {_ms(s['p99']):>8} {_ms(s['mean']):>8}   {waits}"
        )
    first = next(iter(r["stages"]), "capture")
    lines.append(f"           * {first}: the frame read, which comes before the capture stamp (not in the latency)")
    lines.append("")
    dropped = ", ".join(f"{q} {n}" for q, n in r["dropped"].items()) or "-"
    lines.append(f"dropped    {dropped}; frames lost {r['frames_lost']}")
    errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"
    stuck = ", ".join(f"{k} {v}" for k, v in r["stuck"].items())
    lines.append(f"errors     {errors}" + (f"; stuck: {stuck}" if stuck else ""))
    for name, o in (r.get("outputs") or {}).items():
        olat = o.get("latency_ms") or {}
        lines.append(
            f"output     {name} ({o.get('type')}, {o.get('delivery')}): {o.get('state')}, sent {o.get('sent')},"
            f" dropped {o.get('dropped')}, errors {o.get('errors')}; capture to sent p50 {_ms(olat.get('p50'))}"
            f" p95 {_ms(olat.get('p95'))} ms (counts include the warm-up)"
        )
    tracked = "tracking off" if r["tracked_ratio"] is None else f"{_pct(r['tracked_ratio'])} of frames with a face"
    mesh = r.get("face_mesh")
    if mesh and mesh["predicted"]:
        tracked += (
            f"; the face mesh read {mesh['read']} frames, {mesh['predicted']} got predicted faces"
            f" (tracking.max_fps {mesh['max_fps']:g}; counts include the warm-up)"
        )
    lines.append(f"tracked    {tracked}")
    enhancer = r.get("enhancer")  # the swap's face enhancer (effects/enhancer.py), when one ran
    if enhancer:
        lines.append(
            f"enhancer   {enhancer['model']} ({enhancer['mode']}): {enhancer['enhanced_frames']} frames enhanced,"
            f" {enhancer['carried_frames']} got its detail carried, {enhancer['bad_outputs']} unusable outputs"
            " (counts include the warm-up)"
        )
    engines = r.get("engines") or {}
    if engines:
        lines.append("")
        lines.append(f"{'model ms':<40} {'calls/frame':>11} {'p50':>9} {'p95':>9}  providers")
        for key, e in engines.items():
            lines.append(
                f"{key:<40} {e['calls_per_frame'] if e['calls_per_frame'] is not None else '-':>11}"
                f" {_ms(e['p50']):>9} {_ms(e['p95']):>9}  {', '.join(e['providers'])} ({e['precision']})"
            )
        t = r.get("transfers") or {}
        lines.append(
            f"transfers  host->device {t.get('h2d_bytes_per_frame')} B/frame,"
            f" device->host {t.get('d2h_bytes_per_frame')} B/frame"
        )
    proc = r.get("process")
    if proc:
        lines.append(
            f"process    CPU {proc['cpu_percent']:.0f}% ({proc['cpu_percent_of_machine']:.0f}% of the machine;"
            f" whole machine {r['system_cpu_percent']:.0f}%), peak RSS {proc['rss_peak_mb']:.0f} MB"
        )
    if r.get("cpu_ms_per_frame") is not None:
        lines.append(
            f"CPU/frame  {_ms(r['cpu_ms_per_frame'])} ms of process CPU per delivered frame;"
            f" stages busy {_ms(r['stage_busy_ms_per_frame'])} ms (wall time inside the stages, summed)"
        )
    by_thread = r.get("cpu_ms_per_frame_by_thread")
    if by_thread:
        spent = ", ".join(f"{name} {_ms(ms)}" for name, ms in by_thread.items() if ms >= 0.05)
        lines.append(f"CPU/thread {spent} (ms per delivered frame)")
    threads = r.get("threads")
    if threads:
        now = ", ".join(f"{k} {v}" for k, v in threads["in_use"].items() if v is not None)
        lines.append(f"threads    total {threads['plan']['total']}; in use: {now}")
    gpu = r.get("gpu")
    if gpu:
        if gpu["available"]:
            for d in gpu["devices"]:
                util, mem, temp = d["util_percent"], d["memory_used_mb"], d["temperature_c"]
                lines.append(
                    f"GPU {d['index']}      util mean {util['mean']}% max {util['max']}%, memory max"
                    f" {mem['max']} of {d['memory_total_mb']:.0f} MB, temperature max {temp['max']} C"
                )
        else:
            lines.append(f"GPU        no GPU ({gpu['reason']})")
    lines += system_lines(r["system"], gpu_shown=bool(gpu))
    for note in r["notes"]:
        lines.append(f"note       {note}")
    return "\n".join(lines)


def format_compare(c: dict[str, Any]) -> str:
    a, b, ratios = c["a"], c["b"], c["ratios"]
    first = a["runs"][0]
    lines = [
        f"facecast bench --compare: {c['rounds']} rounds of {first['frames_requested']} frames"
        f" (+{first['warmup_frames']} warm-up) per config, run alternately (A B, B A, ...)",
        f"mode       {mode_line(first)}",
        *(
            f"{label}          {side['config']}: {side['summary']['description']}"
            + (
                f"; onnxruntime {', '.join(side['summary']['providers_in_use'])}"
                if side["summary"]["providers_in_use"]
                else ""
            )
            for label, side in (("A", a), ("B", b))
        ),
        "",
        f"{'':<10} {'fps':>8} {'lat p50':>8} {'lat p95':>8} {'lat p99':>8}   fps per round",
    ]
    for label, side in (("A", a), ("B", b)):
        s = side["summary"]
        rounds = " ".join(f"{x:.1f}" for x in s["fps_runs"])
        lines.append(
            f"{label + ' median':<10} {s['fps']:>8.1f} {_ms(s['latency_ms']['p50']):>8}"
            f" {_ms(s['latency_ms']['p95']):>8} {_ms(s['latency_ms']['p99']):>8}   {rounds}"
        )

    def ratio(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}x"

    spread = ratios["fps_per_round"]
    lines.append(
        f"{'B/A':<10} {ratio(ratios['fps']):>8} {ratio(ratios['latency_p50']):>8} {ratio(ratios['latency_p95']):>8}"
        f" {ratio(ratios['latency_p99']):>8}   per round fps B/A {min(spread):.3f}..{max(spread):.3f}"
    )
    cpu = [[r.get("cpu_ms_per_frame") for r in side["runs"]] for side in (a, b)]
    if all(v is not None for side in cpu for v in side):
        med_a, med_b = statistics.median(cpu[0]), statistics.median(cpu[1])
        per_round = [y / x for x, y in zip(cpu[0], cpu[1], strict=False) if x]
        lines.append(
            f"CPU/frame  A {med_a:.2f} ms, B {med_b:.2f} ms (medians of process CPU per delivered frame);"
            f" B/A {ratio(med_b / med_a if med_a else None)}"
            + (f", per round {min(per_round):.3f}..{max(per_round):.3f}" if per_round else "")
        )
    lines.append("")
    lines += system_lines(c["system"])
    for note in c["notes"]:
        lines.append(f"note       {note}")
    return "\n".join(lines)
