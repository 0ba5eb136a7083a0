"""Sandboxing of the llmhost units on a lab guest: ``systemd-analyze security`` exposure per unit,
and for every setting it counts as off, why vLLM needs it off.

    python bench/hardening_report.py [--name GUEST] [--max-exposure 4.0]

The lab's units are scored as systemd loaded them. The GPU host's units differ only in their
device settings (``DevicePolicy=closed`` + ``DeviceAllow=`` the NVIDIA nodes instead of
``PrivateDevices=yes``); no lab guest has a GPU, so they are rendered for
``group_data/prod.py`` and scored with ``--offline=true`` beside the lab unit scored the same
way (offline scores run a little higher than loaded ones). Exits 1 when a unit is above
``--max-exposure`` or a setting is off without a reason in ``REASONS``, so the table stays
complete when the template or systemd changes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from llmhost.applied_plan import AppliedPlan
from llmhost.layout import GATEWAY_UNIT, UNIT_DIR, Layout
from llmhost.plan.catalogue import resolve
from llmhost.plan.planner import GiB, plan_services
from llmhost.render import render
from llmhost.service import units
from llmhost.settings import group_settings
from llmhost_lab import lab

ROOT = Path(__file__).resolve().parents[1]
GOAL = 4.0
OVERALL = re.compile(r"Overall exposure level for \S+: ([\d.]+)")

# Why each setting systemd-analyze counts as off stays off (keys: its "name" column). "Tried":
# the setting was added to a lab service, which then failed as quoted.
REASONS = {
    "PrivateNetwork=": "vLLM serves HTTP on llmhost_bind_host to clients outside the unit",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "the HTTP server, and torch.distributed's gloo "
    "rendezvous over 127.0.0.1 even for one process",
    "RestrictAddressFamilies=~AF_UNIX": "vLLM's API server talks to its engine process over "
    "ZeroMQ ipc:// sockets",
    "RestrictAddressFamilies=~AF_NETLINK": "tried: the worker dies in gloo's device.cc with "
    "'Address family not supported' (gloo finds GLOO_SOCKET_IFNAME=lo's address over netlink)",
    "SystemCallFilter=~@resources": "tried: the API server aborts (SIGABRT) at start; the group "
    "holds sched_setaffinity, set_mempolicy/mbind and setrlimit (thread binding, libnuma, vLLM "
    "raising its fd limit)",
    "ProcSubset=": "tried: vLLM exits at start with FileNotFoundError: '/proc/meminfo' (and "
    "'failed to parse processor information from /proc/cpuinfo')",
    "MemoryDenyWriteExecute=": "passes on the lab's CPU build in eager mode, but is unproven for "
    "the CUDA build (JIT compilation, cffi callbacks) and no systemd GPU host is at hand",
    "PrivateUsers=": "passes on the lab's CPU build, but the NVIDIA driver has refused GPU access "
    "inside user namespaces ('GPU access blocked by the operating system', systemd #38018) and "
    "no systemd GPU host is at hand to prove it",
    "IPAddressDeny=": "unprovable in the lab, whose hybrid cgroups make IP filters a silent no-op "
    "(a unit with IPAddressDeny=any still reached 127.0.0.1 and PyPI) though systemd-analyze "
    "credits them; clients' networks are the firewall's business",
    "RootDirectory=/RootImage=": "the venv, models and caches are ordinary host paths; "
    "ProtectSystem=strict already makes the rest read-only",
    "PrivateMounts=": "on: ProtectSystem=, PrivateTmp= and the other namespace settings imply it "
    "when systemd loads the unit; only --offline scoring misses that",
    "DeviceAllow=": "lab: PrivateDevices=yes keeps systemd's default char-rtc read access; GPU "
    "hosts: the NVIDIA nodes (char-nvidiactl, -uvm, -frontend, -caps), unprovable in the lab",
    "PrivateDevices=": "GPU hosts: the NVIDIA device nodes must be reachable "
    "(DevicePolicy=closed + DeviceAllow= allows only those)",
}


# The gateway (Debian's haproxy.service + llmhost's drop-in): why each setting left off stays off.
GATEWAY_REASONS = {
    "PrivateNetwork=": "the gateway is the one thing that serves clients on the network",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "it listens for clients and connects to the "
    "services over TCP",
    "RestrictAddressFamilies=~AF_UNIX": "the master's control socket (-S /run/haproxy/master.sock) "
    "and systemd's notify socket (Type=notify)",
    "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)": "CAP_NET_BIND_SERVICE only: "
    "port 443 as the unprivileged haproxy user",
    "AmbientCapabilities=": "that one capability, so no part of HAProxy ever runs as root",
    "SystemCallFilter=~@resources": "HAProxy raises its open-file limit to fit maxconn (setrlimit)",
    "PrivateUsers=": "capabilities inside a user namespace do not count in the host's network "
    "namespace, so CAP_NET_BIND_SERVICE could no longer bind port 443",
    "IPAddressDeny=": "clients come from anywhere the firewall lets them; hybrid cgroups in the "
    "lab make IP filters a silent no-op",
    "RootDirectory=/RootImage=": "ProtectSystem=strict already makes the OS read-only; HAProxy's "
    "own chroot needs CAP_SYS_CHROOT, which it does not get",
    "DeviceAllow=": "PrivateDevices=yes keeps systemd's default char-rtc read access",
    "PrivateMounts=": REASONS["PrivateMounts="],
}


def gateway_report(guest: lab.Guest, max_exposure: float) -> bool:
    """The gateway unit's score and why each setting off stays off; False if it fails."""
    if "active" not in guest_run(guest, f"systemctl is-active {GATEWAY_UNIT} || true"):
        print(f"\n{GATEWAY_UNIT}: not running (llmhost_gateway = False?), not scored")
        return True
    score, rows = analyse(guest, GATEWAY_UNIT)
    print(f"\n{GATEWAY_UNIT:<26}{'gateway, loaded':<20}{score:.1f}")
    missing = [row["name"] for row in rows if row["name"] not in GATEWAY_REASONS]
    for row in rows:
        reason = GATEWAY_REASONS.get(row["name"], "NO REASON RECORDED")
        print(f"  {row['name']}  {float(row['exposure']):.1f}\n      {reason}")
    if score > max_exposure:
        print(f"FAIL: {GATEWAY_UNIT} exposure {score:.1f} > {max_exposure}")
    if missing:
        print(f"FAIL: off without a reason in GATEWAY_REASONS: {', '.join(missing)}")
    return score <= max_exposure and not missing


def guest_run(guest: lab.Guest, command: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        lab.ssh_command(guest, command), input=stdin, text=True, capture_output=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{command!r} on {guest.name}: {result.stderr.strip()}")
    return result.stdout


def analyse(guest: lab.Guest, target: str, offline: bool = False) -> tuple[float, list[dict]]:
    """(overall exposure, the settings that count as off) of a loaded unit or a unit file."""
    command = f"systemd-analyze security --no-pager --offline={str(offline).lower()} {target}"
    overall = OVERALL.search(guest_run(guest, command))
    if overall is None:
        raise SystemExit(f"{command!r}: no overall exposure in its output")
    rows = json.loads(guest_run(guest, command.replace("--no-pager", "--no-pager --json=short")))
    return float(overall.group(1)), [r for r in rows if not r["set"] and r["exposure"]]


def gpu_units() -> dict[str, str]:
    """The prod GPU host's unit files, rendered as the deploy would (planned for an 80 GB card)."""
    settings = group_settings(ROOT, "prod")
    metas = {svc.name: resolve(svc.model) for svc in settings.services}
    plan = plan_services(settings, 80 * GiB, metas)
    return {
        Layout.unit_name(svc): render(
            "service/vllm.service.j2", units.context(settings, svc, metas[svc.name], plan)
        )
        for svc in settings.services
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="default", help="lab guest (llmhost lab up --name)")
    parser.add_argument("--max-exposure", type=float, default=GOAL)
    args = parser.parse_args()
    guest = lab.find(args.name)
    if guest is None or not lab.is_running(guest):
        raise SystemExit(f"no running lab guest {args.name!r}: llmhost lab up --name {args.name}")

    # The services the deploy applied (its plan.json), not every unit named llmhost-*.
    path = Layout(group_settings(ROOT, "lab")).plan
    plan = AppliedPlan.from_json(guest_run(guest, f"cat {path}"), f"lab-{args.name}: {path}")
    loaded = sorted(svc.unit for svc in plan.services.values())
    # (unit, how it is scored, what systemd-analyze is given, offline).
    targets = [
        target
        for unit in loaded
        for target in (
            (unit, "lab, loaded", unit, False),
            (unit, "lab, offline", f"{UNIT_DIR}/{unit}", True),
        )
    ]
    guest_run(guest, "rm -rf /run/llmhost-gpu-units && mkdir /run/llmhost-gpu-units")
    for unit, text in gpu_units().items():
        path = f"/run/llmhost-gpu-units/{unit}"
        guest_run(guest, f"cat > {path}", stdin=text)
        targets.append((unit, "GPU host, offline", path, True))

    scores: list[tuple[str, str, float]] = []
    # Setting -> (exposure it adds, how it was scored where it counts as off).
    off: dict[str, tuple[float, set[str]]] = {}
    for unit, kind, target, offline in targets:
        score, rows = analyse(guest, target, offline)
        scores.append((unit, kind, score))
        for row in rows:
            off.setdefault(row["name"], (float(row["exposure"]), set()))[1].add(kind)

    print(f"{'unit':<26}{'scored as':<20}exposure (goal <= {args.max_exposure})")
    for unit, kind, score in scores:
        print(f"{unit:<26}{kind:<20}{score:.1f}")
    print("\nsettings left off (exposure each adds; where scored off) and why:")
    width = max(map(len, off))
    missing = []
    for name, (exposure, kinds) in sorted(off.items(), key=lambda kv: -kv[1][0]):
        reason = REASONS.get(name)
        if reason is None:
            missing.append(name)
        where = "all" if len(kinds) == 3 else " + ".join(sorted(kinds))
        print(f"  {name:<{width}}  {exposure:.1f}  {where}\n      {reason or 'NO REASON RECORDED'}")
    over = [(u, k, s) for u, k, s in scores if s > args.max_exposure]
    for unit, kind, score in over:
        print(f"FAIL: {unit} ({kind}) exposure {score:.1f} > {args.max_exposure}")
    if missing:
        print(f"FAIL: off without a reason in REASONS: {', '.join(missing)}")
    gateway_ok = gateway_report(guest, args.max_exposure)
    return 1 if over or missing or not gateway_ok else 0


if __name__ == "__main__":
    sys.exit(main())
