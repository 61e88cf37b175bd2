"""Results as a Markdown table (printed and pasted into docs), ``results.json`` and
``latency.png``. matplotlib is optional: without it the plot is skipped with a note."""
from __future__ import annotations

import json

__all__ = ["format_table", "format_header", "format_compile_table", "write_json", "plot",
           "summary_text"]


def _us(row) -> str:
    m = row["median_us"]
    text = f"{m:.2f}" if m < 10 else f"{m:.1f}" if m < 1000 else f"{m:,.0f}"
    if row.get("iqr_us") is not None and m > 0:
        text += f" ±{100 * row['iqr_us'] / m / 2:.0f}%"  # half the IQR, relative to the median
    return text


def _index(results) -> dict:
    return {(r["model"], r["batch"], r["impl"]): r for r in results["records"]}


def _ok(row):
    return row is not None and row["status"] == "ok"


def format_header(results) -> str:
    """The lines naming the machine, versions, BLAS and the timing settings."""
    m, v, b, c = results["machine"], results["versions"], results["blas"], results["config"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val is not None)
    blas = b.get("numpy_blas", {})
    blas_text = f"{blas.get('name')} {blas.get('version')}" if blas.get("name") else "unknown"
    threads = [f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('num_threads')} "
               f"threads)" for lib in b.get("libraries", [])]
    if threads:
        blas_text += "; loaded: " + ", ".join(threads)
    env = results.get("environment", {})
    blas_text += "".join(f"; {k}={v}" for k, v in env.items()
                         if v is not None and k.endswith("_THREADS"))
    if b.get("OPENBLAS_CORETYPE"):
        blas_text += f"; OPENBLAS_CORETYPE={b['OPENBLAS_CORETYPE']}"
    return "\n".join([
        f"machine: {m['cpu_model']}, {m['cpus_usable']} usable of {m['cpu_count']} cores, "
        f"{m['platform']}; load average {m.get('load_average')} before, "
        f"{m.get('load_average_end')} after",
        f"versions: {libs}",
        f"BLAS (numpy): {blas_text}",
        f"timing: forward under no_grad, median of {c['repeats']} samples of >= "
        f"{c['min_sample_s'] * 1e3:g} ms each (± is half the IQR), after {c['warmup']} "
        "warm-up calls; times in microseconds per call"])


def format_table(results) -> str:
    """The Markdown table: medians per implementation, then fused's ratios, then notes."""
    cfg, rows = results["config"], _index(results)
    impls = cfg["impls"]
    peers = [i for i in impls if i not in ("eager", "fused")]
    ratio_cols = (["eager/fused"] if {"eager", "fused"} <= set(impls) else []) + (
        [f"fused/{p}" for p in peers] if "fused" in impls else [])
    head = ["model", "batch"] + [f"{i} (us)" for i in impls] + ratio_cols
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes, fallbacks = {}, {}
    for model in cfg["models"]:
        for batch in cfg["batch_sizes"]:
            cells = [model, str(batch)]
            for impl in impls:
                row = rows.get((model, batch, impl))
                if row is None:
                    cells.append("")
                    continue
                if row["status"] != "ok":
                    mark = _mark(notes, f"{impl}: {row['note']}")
                    cells.append(f"{'FAILED' if row['status'] == 'FAILED' else 'skip'} {mark}")
                    continue
                text = _us(row)
                if row.get("fallback"):
                    text += " " + _mark(fallbacks, f"{model}: fused ran eagerly: "
                                                   f"{row['fallback']}", "†")
                cells.append(text)
            fused = rows.get((model, batch, "fused"))
            if "eager/fused" in ratio_cols:
                cells.append(_ratio(rows.get((model, batch, "eager")), fused))
            if "fused" in impls:
                cells += [_ratio(fused, rows.get((model, batch, p))) for p in peers]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("eager/fused: how many times faster fused is than fusionnet eager; "
                 "fused/PEER: fused time over the peer's (below 1 = fused faster).")
    lines += [f"{mark} {text}" for text, mark in {**fallbacks, **notes}.items()]
    return "\n".join(lines)


def _mark(store: dict, text: str, symbol: str = "") -> str:
    if text not in store:
        store[text] = symbol * (len(store) + 1) if symbol else f"[{len(store) + 1}]"
    return store[text]


def _ratio(num, den) -> str:
    if not (_ok(num) and _ok(den)) or den["median_us"] <= 0:
        return ""
    return f"{num['median_us'] / den['median_us']:.2f}x"


def format_compile_table(results) -> str:
    """Compile time of the fused models: cold, from the disk cache, and numba cache stats."""
    lines = ["| model | batch | fused first call, cold (s) | from disk cache (s) | "
             "numba cache (cold misses / cached hits) | compiles in this run |",
             "|---|---|---|---|---|---|"]
    for model, info in results["models"].items():
        comp = info.get("compile")
        if comp is None:
            continue
        if comp.get("error"):
            lines.append(f"| {model} | {comp['batch']} | error: {comp['error']} | | | |")
            continue
        cold, cached = comp["cold"], comp["cached"]
        stats = (f"{cold['cache_misses']} / {cached['cache_hits']}"
                 + (" (eager fallback: nothing compiled)" if cold["fallback"] else ""))
        lines.append(f"| {model} | {comp['batch']} | {comp['cold_s']:.3f} | "
                     f"{comp['cached_s']:.3f} | {stats} | "
                     f"{len(info.get('fused_compiles', []))} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def summary_text(results) -> str:
    """Header, latency table and compile table, as printed by ``fusionnet bench``."""
    parts = [format_header(results), "", format_table(results)]
    comp = format_compile_table(results)
    if comp:
        parts += ["", "compile time (" + next(iter(
            i["compile"]["method"] for i in results["models"].values()
            if i.get("compile"))) + "):", comp]
    return "\n".join(parts)


def write_json(results, path: str) -> str:
    """Write ``results`` as indented JSON; returns the path."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=1, default=str)
        fh.write("\n")
    return path


def plot(results, path: str) -> str:
    """Draw latency.png (log-log latency by batch size, a subplot per model); returns a
    note saying what was written or why nothing was."""
    try:
        import matplotlib  # noqa: PLC0415 - optional at run time
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        import matplotlib.ticker  # noqa: F401, PLC0415
    except ImportError:
        return "latency.png skipped: matplotlib is not installed (pip install 'fusionnet[bench]')"
    cfg, rows = results["config"], _index(results)
    n = len(cfg["models"])
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax, model in zip(axes.flat, cfg["models"]):
        fell_back = False
        for impl in cfg["impls"]:
            pts = [rows.get((model, b, impl)) for b in cfg["batch_sizes"]]
            pts = [(b, r) for b, r in zip(cfg["batch_sizes"], pts) if _ok(r)]
            if not pts:
                continue
            back = impl == "fused" and any(r.get("fallback") for _, r in pts)
            fell_back |= back
            xs = [b for b, _ in pts]
            ys = [r["median_us"] for _, r in pts]
            err = [[r["median_us"] - r["q1_us"] for _, r in pts],
                   [r["q3_us"] - r["median_us"] for _, r in pts]]
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2,
                        ls="--" if back else "-",
                        label=f"{impl} (eager fallback)" if back else impl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        # Plain numbers ("50", "2000") read better than 5x10^1 on a latency axis.
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(model + (" - fused falls back to eager" if fell_back else ""), fontsize=9)
        ax.set_xlabel("batch size")
        ax.set_ylabel("median latency (us)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    m = results["machine"]
    env = ", ".join(f"{k}={v}" for k, v in results.get("environment", {}).items()
                    if v is not None and k.endswith("_THREADS"))
    fig.suptitle(f"fusionnet forward latency ({m['cpu_model']}, {m['cpus_usable']} cores"
                 + (f", {env}" if env else "") + ")", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path}"
