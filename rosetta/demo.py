"""`make demo` / `rosetta demo`: a real federation on this machine, then its report.

Builds a throwaway CA and certificates, starts the coordinator and one node process per site
of the layout over mutual TLS on loopback, follows the rounds on the coordinator's Prometheus
endpoint, evaluates the exported global model with each site's magnitudes, and writes
report.json and report.png. Every process it started is stopped, also on failure or Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any

from rosetta.localfed import LocalFederation, Proc, scrape


class DemoError(Exception):
    """The demo could not run or finish; one line (plus a log tail) for the user."""


DEMO_KEYS = {"layout", "anchors", "max_samples", "max_test", "timeout_s"}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DemoError(f"{path}: {exc}") from None
    unknown = set(doc.get("demo", {})) - DEMO_KEYS
    if unknown:
        raise DemoError(f"{path}: unknown [demo] keys {sorted(unknown)}")
    return doc


def _state_of(metrics: dict[str, float]) -> str:
    for key, value in metrics.items():
        if key.startswith("rosetta_coordinator_round_state{") and value == 1:
            return key.split('="', 1)[1].rstrip('"}')
    return "?"


def _fail(what: str, proc: Proc | None = None) -> DemoError:
    tail = f"\n--- last lines of {proc.log} ---\n{proc.tail()}" if proc else ""
    return DemoError(what + tail)


def run_demo(dataset: Path, out: Path, config: Path, rounds: int | None = None) -> int:
    from tqdm import tqdm

    start = time.perf_counter()
    doc = _read_config(config)
    demo = {"layout": "demo", "anchors": "k20", "max_samples": 0, "max_test": 300, "timeout_s": 900}
    demo.update(doc.get("demo", {}))
    federation = dict(doc.get("federation", {}))
    if rounds is not None:
        federation["rounds"] = rounds
    n_rounds = int(federation.get("rounds", 10))
    layout_path = dataset / "layouts" / f"{demo['layout']}.json"
    if not layout_path.is_file():
        raise DemoError(f"{layout_path}: missing (build the data with 'make data')")
    layout = json.loads(layout_path.read_text())
    sites = {n["name"]: dataset / n["data"] for n in layout["nodes"]}
    shutil.rmtree(out, ignore_errors=True)
    fed = LocalFederation(
        root=out,
        anchors=dataset / layout["anchors"][demo["anchors"]],
        sites=sites,
        modalities={n["name"]: n["modality"] for n in layout["nodes"]},
        model=doc.get("model", {}),
        federation=federation,
        strategy=doc.get("strategy", {}),
        train=doc.get("train", {}),
        node_extra={"max_samples": int(demo["max_samples"])},
    )
    print(
        f"[demo] throwaway CA and certificates for the coordinator and {len(sites)} sites in {fed.pki}"
    )
    fed.prepare()
    try:
        fed.start_coordinator()
        print(f"[demo] coordinator listening on 127.0.0.1:{fed.grpc_port} (mutual TLS)")
        for name in sites:
            fed.start_node(name)
        node_ports = {name: fed.node_metrics_port(name) for name in sites}
        print(f"[demo] {len(sites)} node processes started: {', '.join(sites)}")
        train_start = time.perf_counter()
        final_nodes: dict[str, dict[str, float]] = {}
        left = float(demo["timeout_s"]) - (time.perf_counter() - start)
        _follow(fed, n_rounds, left, tqdm, node_ports, final_nodes)
        training_s = time.perf_counter() - train_start
        final_coordinator = fed.coordinator_metrics()
        for name in sites:  # each node exits 0 once it has saved its final site model
            code = fed.procs[name].popen.wait(timeout=120)
            if code != 0:
                raise _fail(f"node {name} exited with code {code}", fed.procs[name])
    except (RuntimeError, TimeoutError) as exc:
        raise DemoError(str(exc)) from None
    finally:
        codes = fed.stop_all()
    print(f"[demo] every process stopped (exit codes: {codes})")
    report = _report(fed, dataset, demo, n_rounds, training_s, final_coordinator)
    report["metrics_endpoints"] = {
        "coordinator": f"http://127.0.0.1:{fed.metrics_port}/metrics",
        **{n: f"http://127.0.0.1:{p}/metrics" for n, p in node_ports.items()},
    }
    report["node_metrics_at_end"] = {
        n: {
            k: v
            for k, v in m.items()
            if k.startswith(
                ("rosetta_node_loss", "rosetta_node_cka", "rosetta_node_samples_per_second")
            )
        }
        for n, m in final_nodes.items()
    }
    report["wall_s"] = time.perf_counter() - start
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _plot(out, report)
    print("[demo] metrics endpoints were (Prometheus text format):")
    for name, url in report["metrics_endpoints"].items():
        print(f"         {name:12s} {url}")
    print(
        f"[demo] {report['rounds_completed']} rounds in {training_s:.0f}s of training, {report['wall_s']:.0f}s in all; "
        f"mean cross-modal mAP {report['mean_map']:.3f} (chance {report['chance_map']:.3f}, "
        f"{report['mean_map'] / report['chance_map']:.1f}x)"
    )
    print(f"[demo] report: {out / 'report.json'}, {out / 'report.png'}; logs: {out / 'logs'}")
    return 0


def _follow(
    fed: LocalFederation,
    n_rounds: int,
    timeout: float,
    tqdm: Any,
    node_ports: dict[str, int],
    node_metrics: dict[str, dict[str, float]],
) -> None:
    """Progress from the coordinator's metrics endpoint until the federation is done; the
    nodes' endpoints are scraped too (node_metrics keeps each node's latest scrape)."""
    end = time.monotonic() + timeout
    with tqdm(total=n_rounds, desc="rounds", unit="round") as bar:
        while True:
            for name, proc in fed.procs.items():
                code = proc.popen.poll()
                if code not in (None, 0):
                    raise _fail(f"{name} exited with code {code}", proc)
            try:
                m = fed.coordinator_metrics()
            except OSError:
                raise _fail(
                    "the coordinator's metrics endpoint stopped answering", fed.procs["coordinator"]
                ) from None
            for name, port in node_ports.items():
                with contextlib.suppress(OSError):  # a finished node has closed its endpoint
                    node_metrics[name] = scrape(port, timeout=2.0)
            done = int(m.get("rosetta_coordinator_last_completed_round", 0))
            bar.update(done - bar.n)
            state = _state_of(m)
            bar.set_postfix(state=state, nodes=int(m.get("rosetta_coordinator_nodes_connected", 0)))
            if state == "done":
                return
            if time.monotonic() > end:
                raise _fail(
                    f"timed out with {done} of {n_rounds} rounds done", fed.procs["coordinator"]
                )
            time.sleep(1.0)


def _report(
    fed: LocalFederation,
    dataset: Path,
    demo: dict[str, Any],
    n_rounds: int,
    training_s: float,
    coordinator_metrics: dict[str, float],
) -> dict[str, Any]:
    from common.modelio import load_model, save_model
    from rosetta.evaluate import evaluate_exported

    state = fed.root / "state"
    model_dir = state / "coordinator" / "model"
    cfg, shared, meta = load_model(model_dir)
    sites: dict[str, Any] = {}
    for name in fed.sites:  # the demo operates every site, so it may gather their magnitudes
        site_model = state / name / "model"
        site_doc = json.loads((site_model / "model.json").read_text())
        sites.update(site_doc["sites"])
        (model_dir / "sites").mkdir(exist_ok=True)
        shutil.copy(
            site_model / "sites" / f"{name}.safetensors",
            model_dir / "sites" / f"{name}.safetensors",
        )
    meta = {
        **meta,
        "sites": sites,
        "dataset": str(dataset),
        "layout": demo["layout"],
        "anchors": demo["anchors"],
    }
    for key in ("format", "model", "shared_sha256"):
        meta.pop(key, None)
    save_model(model_dir, cfg, shared, meta)
    result = evaluate_exported(
        model_dir, dataset, demo["layout"], demo["anchors"], int(demo["max_test"])
    )
    rounds: dict[str, list[dict[str, Any]]] = {}
    for name in fed.sites:
        lines = (state / name / "rounds.jsonl").read_text().splitlines()
        rounds[name] = [json.loads(line) for line in lines if line.strip()]
    per_node = {
        name: {
            "rounds": len(rs),
            "up": sum(r["bytes_up"] for r in rs) / max(1, len(rs)),
            "down": sum(r["bytes_down"] for r in rs) / max(1, len(rs)),
        }
        for name, rs in rounds.items()
    }
    return {
        "rounds_completed": int(
            coordinator_metrics.get("rosetta_coordinator_last_completed_round", 0)
        ),
        "rounds_configured": n_rounds,
        "mean_map": result["mean_map"],
        "mean_r1": result["mean_r1"],
        "chance_map": result["chance_map"],
        "shared_mean_map": result["shared_mean_map"],
        "pairs": {
            k: {m: v[m] for m in ("map", "r1", "p10", "shared_map") if m in v}
            for k, v in result["pairs"].items()
        },
        "bytes_per_node_per_round": per_node,
        "training_s": training_s,
        "node_rounds": rounds,
        "model": str(model_dir),
    }


def _plot(out: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for name, rs in report["node_rounds"].items():
        xs = [r["round"] for r in rs]
        axes[0].plot(xs, [r["loss"] for r in rs], "o-", label=name)
        axes[1].plot(xs, [r["cka_to_target"] for r in rs], "o-", label=name)
    axes[0].set(title="local loss per round (node daemons)", xlabel="round", ylabel="loss")
    axes[1].set(title="CKA of each site's anchor Gram with the target", xlabel="round", ylim=(0, 1))
    for ax in axes[:2]:
        ax.legend(fontsize=7)
    pairs = report["pairs"]
    names = sorted(pairs)
    axes[2].barh(names, [pairs[n]["map"] for n in names])
    axes[2].axvline(report["chance_map"], color="k", linestyle=":", label="chance")
    axes[2].set(title=f"retrieval mAP per pair (mean {report['mean_map']:.3f})", xlabel="mAP")
    axes[2].legend(fontsize=7)
    fig.suptitle(
        f"make demo: {report['rounds_completed']} rounds over mutual TLS, {report['training_s']:.0f}s training"
    )
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=110)
    plt.close(fig)
