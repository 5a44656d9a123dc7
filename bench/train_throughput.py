"""Local-training throughput per modality: Rosetta's LocalTrainer vs a plain PyTorch loop.

Both run the same work on the same model (the default MiniLM backbone with adapters): two
augmented views of a private batch, InfoNCE, the CKA term on a random anchor subset against a
fixed target, AdamW. The plain loop is written out here with no Rosetta training code around
it (no LocalTrainer, no Fisher accumulation, no state bookkeeping); the difference is Rosetta's
overhead. Inputs are synthetic tensors of each modality's real shape: speed does not depend
on their content.

    python -m bench.train_throughput --out docs/PERFORMANCE.md [--steps 6 --repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common.alignment import anchor_gram
from common.config import ModelConfig, TrainConfig
from common.partition import local_names, shared_names
from common.pretrained import build_model
from node.augment import AUGMENTERS
from node.training import LocalTrainer, take

MODALITIES = ("image", "audio", "text", "sensor")


def synthetic_inputs(modality: str, n: int, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    tk = cfg.tokenizers
    if modality == "image":
        return {"pixels": torch.rand(n, 1, 28, 28, generator=gen)}
    if modality == "audio":
        return {"waveform": torch.randn(n, tk.audio_samples, generator=gen) * 0.1}
    if modality == "text":
        lengths = torch.randint(6, tk.text_max_tokens, (n,), generator=gen)
        ids = torch.randint(1000, 20000, (n, tk.text_max_tokens), generator=gen)
        mask = (torch.arange(tk.text_max_tokens)[None] < lengths[:, None]).long()
        return {"input_ids": ids * mask, "attention_mask": mask}
    return {"signal": torch.randn(n, 1, tk.sensor_length, generator=gen)}


def plain_loop(model, modality, data, anchors, target, cfg: TrainConfig, steps: int) -> None:
    """The same objective as LocalTrainer.step, written as a bare PyTorch loop."""
    params = dict(model.named_parameters())
    opt = torch.optim.AdamW(
        [
            {"params": [params[n] for n in shared_names(model)], "lr": cfg.lr},
            {"params": [params[n] for n in local_names(model)], "lr": cfg.magnitude_lr},
        ]
    )
    gen = torch.Generator().manual_seed(1)
    n, n_anchors = next(iter(data.values())).shape[0], target.shape[0]
    augment = AUGMENTERS[modality]
    for _ in range(steps):
        idx = torch.randint(n, (cfg.batch_size,), generator=gen)
        batch = take(data, idx)
        v1, v2 = augment(batch, gen), augment(batch, gen)
        z = F.normalize(model(modality, {k: torch.cat([v1[k], v2[k]]) for k in v1}), dim=1)
        b = cfg.batch_size
        logits = (z @ z.T / cfg.temperature).fill_diagonal_(float("-inf"))
        labels = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)])
        loss = F.cross_entropy(logits, labels)
        sub = torch.randperm(n_anchors, generator=gen)[: cfg.anchors_per_step].sort().values
        za = F.normalize(model(modality, take(anchors, sub)), dim=1)
        h = torch.eye(len(sub)) - 1.0 / len(sub)
        k = h @ (za @ za.T) @ h
        t = h @ target[sub][:, sub] @ h
        loss = loss + cfg.cka_weight * (1 - (k * t).sum() / (k.norm() * t.norm()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def measure(modality: str, steps: int, repeats: int, n_anchors: int) -> dict[str, float]:
    cfg = ModelConfig(device="cpu").with_modalities(modality)
    train = TrainConfig(steps=steps)
    data = synthetic_inputs(modality, 512, cfg)
    anchors = synthetic_inputs(modality, n_anchors, cfg)
    target = anchor_gram(torch.randn(n_anchors, 16, generator=torch.Generator().manual_seed(2)))
    rosetta_model, plain_model = build_model(cfg), build_model(cfg)
    trainer = LocalTrainer(rosetta_model, modality, data, anchors, train)
    trainer.step(target)  # warm-up both (allocator, kernels)
    plain_loop(plain_model, modality, data, anchors, target, train, 1)
    times: dict[str, list[float]] = {"rosetta_steps": [], "rosetta_round": [], "plain": []}
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step(target)
        times["rosetta_steps"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_loop(plain_model, modality, data, anchors, target, train, steps)
        times["plain"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        trainer.run_round(target, steps=steps)  # steps + end-of-round Gram, deltas, precisions
        times["rosetta_round"].append(time.perf_counter() - t0)
    samples = steps * train.batch_size
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "plain": samples / med["plain"],
        "rosetta_steps": samples / med["rosetta_steps"],
        "rosetta_round": samples / med["rosetta_round"],
        "overhead_steps": med["rosetta_steps"] / med["plain"] - 1.0,
        "overhead_round": med["rosetta_round"] / med["plain"] - 1.0,
    }


def render(results: dict[str, dict[str, float]], args: argparse.Namespace, wall: float) -> str:
    train = TrainConfig()
    lines = [
        "# Performance",
        "",
        "## Local training throughput (`make bench-train`)",
        "",
        f"Command: `python -m bench.train_throughput --out docs/PERFORMANCE.md --steps {args.steps}"
        f" --repeats {args.repeats} --anchors {args.anchors}` (what `make bench-train` runs).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads,"
        f" torch {torch.__version__}, Python {platform.python_version()}; CPU only.",
        f"Model: default config (all-MiniLM-L6-v2 backbone, 6 layers, d=384, adapters rank"
        f" {ModelConfig().adapter.rank} on q/k/v/o/MLP). Batch {train.batch_size} private samples"
        f" x 2 views + {train.anchors_per_step} of {args.anchors} anchors per step for the CKA term.",
        f"Median of {args.repeats} repeats of {args.steps} steps; samples/s counts private samples.",
        "",
        "| modality | plain PyTorch loop (samples/s) | Rosetta steps (samples/s) | overhead |"
        " Rosetta whole round (samples/s) | overhead incl. end-of-round Gram |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in results.items():
        lines.append(
            f"| {m} | {r['plain']:.1f} | {r['rosetta_steps']:.1f} | {100 * r['overhead_steps']:+.1f}% |"
            f" {r['rosetta_round']:.1f} | {100 * r['overhead_round']:+.1f}% |"
        )
    lines += [
        "",
        '"Rosetta steps" is LocalTrainer.step (the loop plus Fisher accumulation and loss'
        ' bookkeeping). "Whole round" is LocalTrainer.run_round with the same number of steps: it'
        f" also embeds all {args.anchors} anchors once for the Gram the node sends and extracts"
        " deltas and precisions, a fixed cost per round that shrinks as steps per round grow"
        f" (default {train.steps}). Target: overhead of the steps under 10%.",
        "",
        f"Total wall time of the benchmark: {wall:.0f} s.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/PERFORMANCE.md"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--anchors", type=int, default=200)
    parser.add_argument("--modalities", nargs="+", default=list(MODALITIES), choices=MODALITIES)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    results = {}
    for m in args.modalities:
        results[m] = measure(m, args.steps, args.repeats, args.anchors)
        r = results[m]
        print(
            f"{m:7s} plain {r['plain']:7.1f}/s  rosetta {r['rosetta_steps']:7.1f}/s "
            f"({100 * r['overhead_steps']:+.1f}%)  round {r['rosetta_round']:7.1f}/s",
            file=sys.stderr,
        )
    text = render(results, args, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
