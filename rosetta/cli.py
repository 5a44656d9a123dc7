"""The `rosetta` command line.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage, config or data; 3 security (a key,
a certificate, TLS or the node's identity refused); 4 federation mismatch (anchor set, model,
checkpoint of another federation); 5 coordinator unreachable for longer than node.give_up_s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from common.config import ModelConfig, TrainConfig, from_mapping
from common.dataformat import DataFormatError, read_anchor_set, read_data_folder

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_SECURITY, EXIT_MISMATCH = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def read_toml(path: Path, tables: tuple[str, ...]) -> dict[str, Any]:
    """A TOML file whose top-level tables are all in `tables`; UsageError otherwise."""
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: invalid TOML: {exc}") from None
    unknown = set(doc) - set(tables)
    if unknown:
        expected = ", ".join(f"[{t}]" for t in tables)
        raise UsageError(f"{path}: unknown table(s) {sorted(unknown)} (expected {expected})")
    return doc


def load_configs(path: Path | None, extra: tuple[str, ...] = ()) -> tuple[ModelConfig, TrainConfig]:
    """[model] and [train] tables of a TOML file (both optional); defaults without a file."""
    if path is None:
        return ModelConfig(), TrainConfig()
    doc = read_toml(path, ("model", "train", *extra))
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


def cmd_data_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rosetta.digits4m.build import FULL, TINY, build
    from rosetta.digits4m.sources import missing_engines

    if args.dataset != "digits4m":
        raise UsageError(f"unknown dataset {args.dataset!r} (available: digits4m)")
    missing = missing_engines()
    if missing:
        raise UsageError(
            f"TTS engines not installed: {', '.join(missing)} (run 'make data', which installs them)"
        )
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            for previous in bars.values():
                previous.close()
            bar = bars[stage] = tqdm(total=total, desc=f"{stage:14s}", unit="item", leave=True)
        bar.update(done - bar.n)

    summary = build(args.out, seed=args.seed, scale=TINY if args.tiny else FULL, progress=progress)
    for bar in bars.values():
        bar.close()
    print(f"built Digits-4M ({summary['scale']}, seed {summary['seed']}) in {args.out}")
    return EXIT_OK


def cmd_data_check(args: argparse.Namespace) -> int:
    root: Path = args.path
    try:
        if (root / "layouts").is_dir():
            folders = sorted(
                p.parent for p in root.glob("**/manifest.json") if "eval" not in p.parts
            )
        elif (root / "manifest.json").is_file():
            folders = [root]
        else:
            raise UsageError(f"{root}: neither a data folder, an anchor set nor a dataset")
        for folder in folders:
            if '"rosetta.anchors.v1"' in (folder / "manifest.json").read_text(encoding="utf-8"):
                anchors = read_anchor_set(folder)
                print(
                    f"ok  {folder}  anchor set, {len(anchors)} concepts x {sorted(anchors.modalities)}"
                )
            else:
                samples = read_data_folder(folder)
                print(f"ok  {folder}  {samples.modality}, {len(samples)} samples")
    except DataFormatError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    from coordinator.strategy import StrategyConfig
    from rosetta.simulate import SimulationConfig, run

    tables = ("simulation", "strategy")
    model_cfg, train_cfg = load_configs(args.config, tables)
    doc = read_toml(args.config, ("model", "train", *tables))
    try:
        sim = from_mapping(SimulationConfig, doc.get("simulation", {}), "simulation")
        strategy = from_mapping(StrategyConfig, doc.get("strategy", {}), "strategy")
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{args.config}: {exc}") from None
    if args.out is not None:
        sim = dataclasses.replace(sim, out=str(args.out))
    if not (Path(sim.dataset) / "layouts" / f"{sim.layout}.json").is_file():
        raise UsageError(
            f"{sim.dataset}: no layout {sim.layout!r} (build the data with 'make data')"
        )
    try:
        results = run(sim, model_cfg, train_cfg, strategy, log=lambda line: print(line, flush=True))
    except ValueError as exc:  # DataFormatError included: bad data or config, one line
        raise UsageError(str(exc)) from None
    print(
        f"mean cross-modal mAP {results['mean_map']:.3f} (chance {results['final']['chance_map']:.3f}); "
        f"results in {sim.out}/results.json, plots in {sim.out}/results.png"
    )
    return EXIT_OK


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rosetta.evaluate import evaluate_exported

    try:
        result = evaluate_exported(
            args.model, args.dataset, args.layout, args.anchors, args.max_test, args.seed
        )
    except (DataFormatError, ValueError, KeyError) as exc:
        raise UsageError(str(exc)) from None
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.out:
        args.out.write_text(text + "\n")
    print(text if args.json else f"mean cross-modal mAP {result['mean_map']:.3f} (anchor-relative), "
          f"{result['shared_mean_map']:.3f} (shared space), chance {result['chance_map']:.3f}")  # fmt: skip
    return EXIT_OK


def cmd_certs(args: argparse.Namespace) -> int:
    from common import certs

    try:
        if args.certs_command == "init-ca":
            key, crt = certs.create_ca(args.out, args.name, args.days)
            print(f"created {crt} and {key} (keep the key offline; it signs every party)")
        elif args.certs_command == "request":
            key, csr = certs.create_request(args.out, args.name, args.host)
            print(
                f"created {key} (stays on this machine) and {csr} (send it to the federation operator)"
            )
        elif args.certs_command == "sign":
            out = certs.sign_request(args.ca, args.csr, args.out, args.days, args.server)
            print(f"signed {out}")
        else:
            info = certs.describe(args.cert)
            print(f"subject     {info.subject}")
            print(f"issuer      {info.issuer}")
            print(f"valid       {info.not_before.isoformat()} .. {info.not_after.isoformat()}")
            print(f"hosts       {', '.join(info.hosts) or '-'}")
            print(f"ca          {'yes' if info.is_ca else 'no'}")
            print(f"sha256      {info.sha256}")
    except certs.CertError as exc:
        raise UsageError(str(exc)) from None
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from rosetta.demo import DemoError, run_demo

    try:
        return run_demo(args.dataset, args.out, args.config, rounds=args.rounds)
    except DemoError as exc:
        print(f"rosetta demo: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _run_daemon(
    args: argparse.Namespace,
    load: Any,
    section: str,
    run: Any,
    mismatch: tuple[type[Exception], ...],
) -> int:
    """Load the config, set up logs, run; map failures to the documented exit codes."""
    from common.certs import CertError
    from common.daemon import ConfigError
    from common.logs import setup_logging

    try:
        cfg = load(args.config)
        settings = getattr(cfg, section)
        setup_logging(settings.log_format, settings.log_level)
        return int(run(cfg, insecure=args.insecure))
    except (ConfigError, DataFormatError) as exc:
        raise UsageError(str(exc)) from None
    except CertError as exc:
        print(f"rosetta: security: {exc}", file=sys.stderr)
        return EXIT_SECURITY
    except mismatch as exc:
        print(f"rosetta: mismatch: {exc}", file=sys.stderr)
        return EXIT_MISMATCH


def cmd_coordinator(args: argparse.Namespace) -> int:
    from coordinator import daemon
    from coordinator.config import load_coordinator_config
    from coordinator.service import StateMismatchError

    try:
        return _run_daemon(
            args, load_coordinator_config, "coordinator", daemon.run, (StateMismatchError,)
        )
    except ValueError as exc:  # e.g. corrupt durable state
        print(f"rosetta: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def cmd_node(args: argparse.Namespace) -> int:
    from node import daemon
    from node.checkpoint import CheckpointError
    from node.config import load_node_config

    try:
        return _run_daemon(args, load_node_config, "node", daemon.run, (CheckpointError,))
    except daemon.NodeExit as exc:
        print(f"rosetta: {exc}", file=sys.stderr)
        return exc.code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rosetta",
        description="Federated training of one multimodal transformer on unpaired private data.",
        epilog="Exit codes: 0 success, 1 unexpected failure, 2 bad usage, config or data, "
        "3 security (key, certificate, TLS, identity), 4 federation mismatch, "
        "5 coordinator unreachable (node.give_up_s).",
    )
    parser.add_argument("--version", action="version", version="rosetta 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="print the resolved config and the model's parameter layout")
    info.add_argument("--config", type=Path, help="TOML file with [model] and [train] tables")
    info.set_defaults(func=cmd_info)

    data = sub.add_parser("data", help="build or check datasets in Rosetta's on-disk format")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    build = data_sub.add_parser("build", help="build a benchmark dataset offline")
    build.add_argument("dataset", help="digits4m")
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--tiny", action="store_true", help="a few samples per class, for tests")
    build.set_defaults(func=cmd_data_build)
    check = data_sub.add_parser(
        "check", help="verify a data folder, an anchor set or a whole dataset"
    )
    check.add_argument("path", type=Path)
    check.set_defaults(func=cmd_data_check)

    simulate = sub.add_parser("simulate", help="run a whole federation on this machine")
    simulate.add_argument(
        "--config", type=Path, required=True, help="TOML: [simulation] [strategy] [model] [train]"
    )
    simulate.add_argument("--out", type=Path, help="output folder (overrides simulation.out)")
    simulate.set_defaults(func=cmd_simulate)

    evaluate = sub.add_parser(
        "evaluate", help="retrieval, probes and CKA of an exported model on test sets"
    )
    evaluate.add_argument(
        "--model", type=Path, required=True, help="exported model folder (model.json)"
    )
    evaluate.add_argument(
        "--dataset", type=Path, help="dataset folder (default: the one in model.json)"
    )
    evaluate.add_argument("--layout", help="layout naming the test sets (default: model.json's)")
    evaluate.add_argument("--anchors", help="anchor set name in the layout (default: model.json's)")
    evaluate.add_argument(
        "--max-test", type=int, default=0, help="cap per test set: a seeded random subset (0 = all)"
    )
    evaluate.add_argument(
        "--seed", type=int, default=0, help="seed of the capped subsets (a simulation's seed)"
    )
    evaluate.add_argument("--out", type=Path, help="write the full metrics JSON here")
    evaluate.add_argument("--json", action="store_true", help="print the full metrics JSON")
    evaluate.set_defaults(func=cmd_evaluate)

    certs = sub.add_parser("certs", help="federation CA, keys, signing requests, certificates")
    certs_sub = certs.add_subparsers(dest="certs_command", required=True)
    ca = certs_sub.add_parser("init-ca", help="create the federation CA (ca.key, ca.crt)")
    ca.add_argument("--out", type=Path, required=True)
    ca.add_argument("--name", default="Rosetta federation CA")
    ca.add_argument("--days", type=int, default=3650)
    req = certs_sub.add_parser("request", help="create a key and a signing request on this machine")
    req.add_argument(
        "--name", required=True, help="the party's name: its identity in the federation"
    )
    req.add_argument("--out", type=Path, required=True)
    req.add_argument(
        "--host", action="append", default=[], help="DNS name or IP (servers); repeatable"
    )
    sign = certs_sub.add_parser("sign", help="sign a request with the CA")
    sign.add_argument("--ca", type=Path, required=True, help="folder with ca.key and ca.crt")
    sign.add_argument("--csr", type=Path, required=True)
    sign.add_argument("--out", type=Path, required=True)
    sign.add_argument("--days", type=int, default=365)
    sign.add_argument(
        "--server", action="store_true", help="a server certificate (needs --host in the request)"
    )
    show = certs_sub.add_parser(
        "show", help="print a certificate's subject, issuer, validity, hosts"
    )
    show.add_argument("cert", type=Path)
    for p in (ca, req, sign, show):
        p.set_defaults(func=cmd_certs)

    coord = sub.add_parser("coordinator", help="run the coordinator daemon")
    coord.add_argument("--config", type=Path, required=True, help="TOML (deploy/coordinator.toml)")
    node = sub.add_parser("node", help="run a node daemon for one site")
    node.add_argument("--config", type=Path, required=True, help="TOML (deploy/node.toml)")
    for p in (coord, node):
        p.add_argument(
            "--insecure",
            action="store_true",
            help="NO TLS, identities unchecked: local experiments only",
        )
    coord.set_defaults(func=cmd_coordinator)
    node.set_defaults(func=cmd_node)

    demo = sub.add_parser("demo", help="a whole federation on this machine over mTLS (make demo)")
    demo.add_argument("--dataset", type=Path, default=Path("data/digits4m"))
    demo.add_argument("--out", type=Path, default=Path("runs/demo"))
    demo.add_argument("--config", type=Path, default=Path("deploy/demo.toml"))
    demo.add_argument("--rounds", type=int, help="override federation.rounds")
    demo.set_defaults(func=cmd_demo)
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
