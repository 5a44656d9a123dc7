"""The `rosetta` command line. Exit codes: 0 success, 1 unexpected failure, 2 bad usage or config."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from common.config import ModelConfig, TrainConfig, from_mapping

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def load_configs(path: Path | None) -> tuple[ModelConfig, TrainConfig]:
    """[model] and [train] tables of a TOML file (both optional); defaults without a file."""
    if path is None:
        return ModelConfig(), TrainConfig()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(doc) - {"model", "train"}
    if unknown:
        raise UsageError(f"{path}: unknown table(s) {sorted(unknown)} (expected [model], [train])")
    try:
        return (
            from_mapping(ModelConfig, doc.get("model", {}), "model"),
            from_mapping(TrainConfig, doc.get("train", {}), "train"),
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: {exc}") from None


def _layout(cfg: ModelConfig) -> dict[str, Any]:
    from common.partition import frozen_names, local_names, shared_names
    from common.pretrained import build_model

    model = build_model(dataclasses.replace(cfg, device="cpu"))
    params = dict(model.named_parameters())

    def count(names: list[str]) -> int:
        return sum(params[n].numel() for n in names)

    shared = shared_names(model)
    backbone_shared = [n for n in shared if not n.startswith("tokenizers.")]
    return {
        "shared_parameters": count(shared),
        "shared_backbone_parameters": count(backbone_shared),
        "shared_tokenizer_parameters": {
            m: count([n for n in shared if n.startswith(f"tokenizers.{m}.")])
            for m in cfg.modalities
        },
        "local_parameters": count(local_names(model)),
        "frozen_parameters": count(frozen_names(model)),
        "delta_bytes_per_node_per_round": {
            m: 4
            * (
                count(backbone_shared)
                + count([n for n in shared if n.startswith(f"tokenizers.{m}.")])
            )
            for m in cfg.modalities
        },
    }


def cmd_info(args: argparse.Namespace) -> int:
    model_cfg, train_cfg = load_configs(args.config)
    out = {"model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg)}
    out["layout"] = _layout(model_cfg)
    print(json.dumps(out, indent=2))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rosetta",
        description="Federated training of one multimodal transformer on unpaired private data.",
        epilog="Exit codes: 0 success, 1 unexpected failure, 2 bad usage or configuration.",
    )
    parser.add_argument("--version", action="version", version="rosetta 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the resolved config and the model's parameter layout")
    info.add_argument("--config", type=Path, help="TOML file with [model] and [train] tables")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"rosetta: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
