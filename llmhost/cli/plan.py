"""``llmhost plan``: the VRAM plan of each inventory host, or a what-if for a stack.

Runs on the controller before any host is contacted: host data comes from the inventory and
``group_data/``, model metadata from the catalogue (or the hub / a local directory), and the
GPUs' sizes from ``--gpu-memory`` (one per GPU, comma separated; their order is the GPUs'
nvidia-smi indices).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from llmhost.cli.common import BadInput, Exit, inventory_hosts
from llmhost.plan.catalogue import ModelMetaError, resolve
from llmhost.plan.planner import GiB, Gpu, HostPlan, PlanError, plan_services
from llmhost.settings import Settings, SettingsError
from llmhost.stacks import STACKS

WHAT_IF = "what-if"
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(GB|GiB|TB|TiB|MB|MiB)\s*$", re.IGNORECASE)
_UNITS = {"mb": 10**6, "gb": 10**9, "tb": 10**12, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes in '80GB' (10^9), '96GiB' (2^30), '141 GB'; a unit is required."""
    match = _SIZE_RE.match(text)
    if not match:
        raise BadInput(f"--gpu-memory {text!r}: give a size with a unit, e.g. 80GB or 96GiB")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.lower()])


def parse_gpus(text: str) -> list[Gpu]:
    """The GPUs in '48GB,48GB': one size per GPU, GPU 0 first."""
    return [Gpu(index=i, total_bytes=parse_size(size)) for i, size in enumerate(text.split(","))]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inventory", nargs="?", help="pyinfra inventory file (e.g. inventories/prod.py)"
    )
    parser.add_argument(
        "--stack",
        choices=list(STACKS),
        help="plan this stack (without an inventory: a what-if on the data defaults)",
    )
    parser.add_argument(
        "--gpu-memory",
        metavar="SIZE[,SIZE...]",
        help="each GPU's total memory, GPU 0 first, e.g. 80GB, 96GiB or 48GB,48GB "
        "(required for GPU hosts)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="what-if for a CPU host (vLLM's CPU build)"
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="[SERVICE=]DIR",
        help="what-if: SERVICE (default: the stack's first) runs the model in DIR, a local "
        "directory with config.json and safetensors (or their index); repeatable",
    )
    parser.add_argument("--json", action="store_true", help="print the plans as JSON")
    parser.add_argument(
        "--project-dir",
        default=".",
        type=Path,
        help="directory holding the inventory's group_data/ (default: the current directory)",
    )


def _host_data(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(host name, merged host data) for each inventory host, or one what-if host."""
    override: dict[str, Any] = {}
    if args.stack:
        override["llmhost_stack"] = args.stack
    if args.cpu:
        override["llmhost_gpu"] = False
    if args.inventory:
        if args.model:
            raise BadInput("--model plans a what-if: use it with --stack, not an inventory")
        return inventory_hosts(args.inventory, args.project_dir, override)
    if not args.stack:
        raise BadInput("give an inventory file, or --stack NAME for a what-if")
    if args.model:
        override["llmhost_service_overrides"] = _local_models(args.stack, args.model)
    # A what-if host has nothing but the defaults (Settings' own) and the overrides.
    return [(WHAT_IF, override)]


def _local_models(stack: str, given: list[str]) -> dict[str, Any]:
    """``--model [SERVICE=]DIR`` as service overrides to a local model directory."""
    names = [svc["name"] for svc in STACKS[stack]]
    overrides: dict[str, Any] = {}
    for item in given:
        name, sep, path = item.rpartition("=")
        name = name if sep else names[0]
        if name not in names:
            raise BadInput(f"--model {item!r}: stack {stack} has services {names}, not {name!r}")
        if not Path(path).is_dir():
            raise BadInput(f"--model {item!r}: {path} is not a directory on this machine")
        model = {"source": "local", "path": path, "repo": None, "revision": None}
        overrides[name] = {"model": model}
    return overrides


def _plan_host(data: dict[str, Any], gpus: list[Gpu] | None) -> HostPlan:
    settings = Settings.from_host_data(data)
    if settings.gpu and gpus is None:
        raise BadInput(
            "llmhost_gpu is true; pass --gpu-memory with the card's total memory "
            "(e.g. 80GB, 96GiB): planning runs before any host is contacted"
        )
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    return plan_services(settings, gpus if settings.gpu else None, metas)


def run(args: argparse.Namespace) -> int:
    try:
        gpus = parse_gpus(args.gpu_memory) if args.gpu_memory else None
        hosts = _host_data(args)
    except BadInput as e:
        if args.json:
            print(json.dumps({"exit_code": int(Exit.BAD_INPUT), "error": str(e)}, indent=2))
        else:
            print(f"llmhost plan: {e}", file=sys.stderr)
        return Exit.BAD_INPUT
    plans: dict[str, HostPlan] = {}
    errors: dict[str, tuple[Exit, str]] = {}
    for name, data in hosts:
        try:
            plans[name] = _plan_host(data, gpus)
        except (BadInput, SettingsError, ModelMetaError) as e:
            errors[name] = (Exit.BAD_INPUT, str(e))
        except PlanError as e:
            errors[name] = (Exit.DOES_NOT_FIT, str(e))
    # Bad input hides whether a plan fits, so it wins over a refusal.
    kinds = {kind for kind, _ in errors.values()}
    code = min(kinds) if kinds else Exit.FITS
    if args.json:
        print(json.dumps(_as_json(plans, errors, code), indent=2))
        return code
    for name, plan in plans.items():
        print(f"== {_title(name, args, plan)} ==\n{plan.render_table()}\n")
    for name, (kind, message) in errors.items():
        verb = "refused" if kind is Exit.DOES_NOT_FIT else "cannot plan"
        print(f"llmhost plan: {_title(name, args)}: {verb}: {message}", file=sys.stderr)
    return code


def _title(name: str, args: argparse.Namespace, plan: HostPlan | None = None) -> str:
    title = f"stack {args.stack} (what-if)" if name == WHAT_IF else f"host {name}"
    if plan is None:
        return title
    if plan.mode == "cpu":
        return f"{title}, CPU"
    sizes = " + ".join(f"{g.total_bytes / GiB:.1f}" for g in plan.gpus)
    return f"{title}, GPU{'s' if len(plan.gpus) > 1 else ''} {sizes} GiB"


def _as_json(
    plans: dict[str, HostPlan], errors: dict[str, tuple[Exit, str]], code: Exit
) -> dict[str, Any]:
    hosts: dict[str, Any] = {name: {"fits": True, **plan.to_dict()} for name, plan in plans.items()}
    for name, (kind, message) in errors.items():
        hosts[name] = {"fits": False, "exit_code": int(kind), "error": message}
    return {"exit_code": int(code), "hosts": hosts}
