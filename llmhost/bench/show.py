"""``llmhost bench``'s output for people: the terminal table and the PNG (matplotlib, the
optional ``bench`` extra, imported only for ``--plot``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmhost.bench.results import Metrics, Report, Spread
from llmhost.bench.sweep import Tried
from llmhost.settings import Slo

HEADINGS = [
    "service", "load", "via", "ok/sent", "TTFT p50/p99 ms", "ITL p50/p99 ms", "TPOT p50/p99 ms",
    "E2E p50/p99 ms", "out tok/s", "req/s", "goodput req/s (SLO met)", "KV peak", "preempt",
    "restarts",
]  # fmt: skip


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def _spread(s: Spread | None) -> str:
    return "-" if s is None else f"{s.p50:.0f}/{s.p99:.0f}"


def _rate(per_s: float | None) -> str:
    return f", {per_s:g} requests/s" if per_s else ""


def _row(name: str, load: str, via: str, m: Metrics) -> list[str]:
    return [
        name, load, via, f"{m.completed}/{m.requests}", _spread(m.ttft_ms), _spread(m.itl_ms),
        _spread(m.tpot_ms), _spread(m.e2el_ms), f"{m.output_tokens_per_s:.1f}",
        f"{m.requests_per_s:.2f}", f"{m.goodput_rps:.2f} ({m.slo_met:.0%})",
        f"{m.kv_cache_peak:.1%}", str(m.preemptions), str(m.restarts),
    ]  # fmt: skip


def _troubles(where: str, m: Metrics) -> list[str]:
    """A service's failures, journal errors and restarts in one case, a line each."""
    lines = [f"!! {where}: {m.failures} failed: {error}" for error in m.errors]
    lines += [f"!! {where}: journal: {line}" for line in m.journal]
    if m.restarts:
        lines.append(f"!! {where}: restarted {m.restarts} time(s) during the case")
    return lines


def _problems(report: Report) -> list[str]:
    return [
        line
        for name, load, via, m in report.rows()
        for line in _troubles(f"{name} {load} {via}", m)
    ]


def table(report: Report) -> str:
    """The run at a glance: one row per service, load and path; then the targets, what the
    gateway adds, and every failure, journal error and restart."""
    rows = [HEADINGS, *(_row(*r) for r in report.rows())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADINGS))]
    lines = [f"== {report.host}: {report.duration_s:g} s per case =="]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    for name in report.found:
        slo, work = report.slo[name], report.workload[name]
        lines.append(
            f"{name}: targets TTFT <= {slo.ttft_ms:g} ms, TPOT <= {slo.itl_ms:g} ms; load "
            f"{work['concurrency']} at once{_rate(work.get('request_rate'))}, "
            f"{work['prompt_tokens']} tokens in, {work['output_tokens']} out"
        )
        for load, added in report.gateway_added(name).items():
            shown = ", ".join(f"{k} {v:+.1f} ms" for k, v in added.items() if v is not None)
            lines.append(f"{name}: the gateway adds ({load}): {shown or '-'}")
    return "\n".join([*lines, *_problems(report), *report.notes])


def require_matplotlib() -> None:
    """Refuse ``--plot`` before any load when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib: pip install 'llmhost[bench]' (or leave out --plot)"
        ) from None


def plot(report: Report, path: Path) -> None:
    """Latency against output throughput, one point per case, a colour per service: TTFT p50
    and TPOT p50 (a request's mean gap between tokens, what ``itl_ms`` holds) side by side."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (what, target) in zip(
        axes, (("ttft_ms", "ttft_ms"), ("tpot_ms", "itl_ms")), strict=True
    ):
        _panel(ax, report, what, target)
    fig.suptitle(f"llmhost bench {report.host}: {report.duration_s:g} s per case")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


MARKERS = {("alone", "direct"): "o", ("alone", "gateway"): "s",
           ("co-loaded", "direct"): "^", ("co-loaded", "gateway"): "D"}  # fmt: skip


def _panel(ax: Any, report: Report, what: str, target: str) -> None:
    """One latency (``ttft_ms`` or ``tpot_ms``) at p50 against output tokens/s, each
    service's ``target`` dashed."""
    for i, name in enumerate(report.found):
        colour = f"C{i}"
        for svc, load, via, m in report.rows():
            spread = getattr(m, what)
            if svc == name and spread is not None:
                ax.scatter(m.output_tokens_per_s, spread.p50, color=colour,
                           marker=MARKERS[(load, via)], label=f"{name} {load} {via}")  # fmt: skip
        ax.axhline(getattr(report.slo[name], target), color=colour, linestyle="--", linewidth=0.8)
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel(f"{what.split('_')[0].upper()} p50 (ms), target dashed")
    ax.legend(fontsize=7)


SWEEP_HEADINGS = [
    "config", "ok/sent", "TTFT p50/p99 ms", "TPOT p50/p99 ms", "E2E p50/p99 ms", "out tok/s",
    "goodput req/s (SLO met)", "KV peak", "preempt", "others co-loaded", "others in the switch",
]  # fmt: skip


def _others(found: dict[str, Metrics], service: str) -> str:
    shown = [f"{n} {m.completed}/{m.requests}" for n, m in found.items() if n != service]
    return ", ".join(shown) or "-"


def sweep_table(
    host: str,
    service: str,
    duration_s: float,
    results: list[Tried],
    winner: Tried | None,
    line: str | None,
) -> str:
    """One row per config tried: the service's numbers with the others loaded beside it, and
    the others' requests answered while it was switched; then the best and its data line."""
    rows = [SWEEP_HEADINGS]
    for t in results:
        name = f"{t.config}{' (deployed)' if t.deployed else ''}"
        m = t.measured.get(service)
        if m is None:
            rows.append([name, "not switched", *["-"] * 7, "-", _others(t.during_switch, service)])
            continue
        rows.append([
            name, f"{m.completed}/{m.requests}", _spread(m.ttft_ms), _spread(m.tpot_ms),
            _spread(m.e2el_ms), f"{m.output_tokens_per_s:.1f}",
            f"{m.goodput_rps:.2f} ({m.slo_met:.0%})", f"{m.kv_cache_peak:.1%}",
            str(m.preemptions), _others(t.measured, service), _others(t.during_switch, service),
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(SWEEP_HEADINGS))]
    lines = [f"== {host}: {service}'s batching, {duration_s:g} s per config =="]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    lines += [f"!! {t.config}: {t.error}" for t in results if t.error]
    for t in results:
        for load, found in (("co-loaded", t.measured), ("in the switch", t.during_switch)):
            for name, m in found.items():
                lines += _troubles(f"{t.config}: {name} {load}", m)
    if winner is None:
        lines.append("best: none (no config was served)")
    else:
        m = winner.measured[service]
        lines.append(
            f"best by goodput: {winner.config} ({m.goodput_rps:.2f} req/s met the targets, "
            f"{m.output_tokens_per_s:.1f} tokens/s)"
            + ("; the deployed settings: nothing to change" if winner.deployed else "")
        )
        if not winner.deployed:
            lines.append(f"to deploy it, in the host's group data: {line}")
    return "\n".join(lines)


def sweep_plot(host: str, service: str, results: list[Tried], slo: Slo, path: Path) -> None:
    """TTFT p50 and TPOT p50 against output tokens/s, one labelled point per config served,
    the service's targets dashed."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (what, target) in zip(
        axes, (("ttft_ms", slo.ttft_ms), ("tpot_ms", slo.itl_ms)), strict=True
    ):
        for i, t in enumerate(results):
            m = t.measured.get(service)
            spread = getattr(m, what) if m else None
            if m is None or spread is None:
                continue
            ax.scatter(m.output_tokens_per_s, spread.p50, color=f"C{i}", label=str(t.config))
        ax.axhline(target, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(f"{what.split('_')[0].upper()} p50 (ms), target dashed")
        ax.legend(fontsize=7)
    fig.suptitle(f"llmhost bench --sweep {host}: {service}, the others loaded beside it")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
