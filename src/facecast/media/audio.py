"""A generated soundtrack written with its video: H.264 frames and an AAC audio stream in one file,
time-aligned (PyAV). For models that make audio themselves (LTX-2); audio taken from another file
is copied as packets instead (`postprocess/encode.py`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from facecast.media.video import add_video_stream, container_format, frame_rate

LAYOUTS = {1: "mono", 2: "stereo"}
AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_BITS_PER_CHANNEL = 96_000  # transparent enough for speech and music at these rates
CHUNK = 1024  # samples handed to the encoder at a time (one AAC frame)


@dataclass(frozen=True, slots=True)
class Waveform:
    """Audio samples, float32 in [-1, 1], shape (channels, samples), at `rate` samples a second."""

    samples: np.ndarray
    rate: int

    @property
    def duration_s(self) -> float:
        return self.samples.shape[1] / self.rate

    def fitted(self, duration_s: float) -> Waveform:
        """Exactly `duration_s` long: cut at the end, or padded there with silence (a model's audio
        may end a few latent frames before its video does)."""
        want = round(duration_s * self.rate)
        have = self.samples.shape[1]
        if have >= want:
            return Waveform(self.samples[:, :want], self.rate)
        pad = np.zeros((self.samples.shape[0], want - have), np.float32)
        return Waveform(np.concatenate([self.samples, pad], axis=1), self.rate)


def check_waveform(audio: Waveform) -> None:
    """ValueError naming what does not fit an AAC stream in MP4."""
    if audio.samples.ndim != 2 or audio.samples.shape[0] not in LAYOUTS:
        raise ValueError(f"audio must be (channels, samples) with 1 or 2 channels, got shape {audio.samples.shape}")
    if audio.rate not in AAC_RATES:
        raise ValueError(f"AAC takes sample rates {', '.join(map(str, AAC_RATES))}; got {audio.rate}")


def write_video_with_audio(
    path: Path, frames: Iterable[np.ndarray], fps: float, audio: Waveform, crf: int = 20
) -> tuple[int, int]:
    """Encode `frames` (HxWx3 BGR uint8) at `fps` and `audio` as AAC into `path` (MP4, MOV or MKV by
    its name). Audio sample k plays at k / rate from the first frame's time, and each frame's audio
    is muxed right after it (the file is interleaved, not all video then all audio). Returns
    (frames, audio samples) written."""
    import av

    check_waveform(audio)
    rate = frame_rate(fps)
    samples = np.ascontiguousarray(audio.samples, dtype=np.float32).clip(-1.0, 1.0)
    layout = LAYOUTS[samples.shape[0]]
    count = sent = 0
    with av.open(str(path), mode="w", format=container_format(Path(path))) as out:
        video: Any = None
        sound: Any = None

        def send_audio_until(end: int) -> None:
            nonlocal sent
            while sent < min(end, samples.shape[1]):
                chunk = samples[:, sent : min(sent + CHUNK, end, samples.shape[1])]
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=layout)
                frame.sample_rate, frame.pts = audio.rate, sent
                out.mux(sound.encode(frame))
                sent += chunk.shape[1]

        for image in frames:
            if video is None:  # every stream before the first packet: the header goes out then
                video = add_video_stream(out, image.shape[1], image.shape[0], rate, crf=crf)
                sound = out.add_stream("aac", rate=audio.rate, layout=layout)
                sound.bit_rate = AAC_BITS_PER_CHANNEL * samples.shape[0]
            bgr = np.ascontiguousarray(image[: video.height, : video.width, :3])
            picture = av.VideoFrame.from_ndarray(bgr, format="bgr24")
            picture.pts = count
            out.mux(video.encode(picture))
            count += 1
            send_audio_until(round(count / rate * audio.rate))  # the audio up to the end of this frame
        if video is None:
            raise ValueError("no frames to write")
        out.mux(video.encode(None))
        send_audio_until(samples.shape[1])
        out.mux(sound.encode(None))
    return count, sent
