#!/usr/bin/env python
"""Markdown tables from the JSON files written by ``benchmarks/parallel.py``.

Usage::

    python benchmarks/parallel_report.py benchmarks/results/parallel-*.json

Files of the same backend are merged. Prints one table per case with the
backends side by side: medians of the timed training steps, their spread (25th
to 75th percentile) where there is room, the first (compiling) step and the
ratios measured within each run.
"""

from __future__ import annotations

import argparse
import json

ORDER = {"jax": 0, "tensorflow": 1, "torch": 2}


def load(paths):
    """One entry per backend: the results of all its files, the meta of the largest."""
    by_backend = {}
    for path in paths:
        with open(path) as file:
            data = json.load(file)
        by_backend.setdefault(data["meta"]["backend"], []).append(data)
    runs = []
    for files in by_backend.values():
        files.sort(key=lambda data: -len(data["results"]))
        merged = {"meta": files[0]["meta"], "results": [], "metas": [d["meta"] for d in files]}
        for data in files:
            merged["results"].extend(data["results"])
        runs.append(merged)
    return sorted(runs, key=lambda run: ORDER.get(run["meta"]["backend"], 9))


def find(data, case, form=None, **config):
    for result in data["results"]:
        if result.get("case") != case or (form and result.get("form") != form):
            continue
        if all(result["config"].get(key) == value for key, value in config.items()):
            return result
    return None


def ms(result, spread=False):
    if result is None:
        return "-"
    if "skipped" in result:
        return "skipped"
    if "median_s" not in result:
        return "failed"
    text = f"{1000 * result['median_s']:.1f}"
    if spread:
        text += f" [{1000 * result['p25_s']:.1f}-{1000 * result['p75_s']:.1f}]"
    return text


def seconds(result):
    return "-" if result is None or "compile_s" not in result else f"{result['compile_s']:.1f}"


def ratio(slow, fast):
    if not slow or not fast or "median_s" not in slow or "median_s" not in fast:
        return "-"
    return f"{slow['median_s'] / fast['median_s']:.2f}"


def mib(kib):
    return f"{kib / 1024:.0f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def runs_table(runs) -> str:
    rows = []
    for run in runs:
        for meta in run["metas"]:
            rows.append(
                [
                    meta["backend"],
                    " ".join(meta["args"]["cases"]),
                    meta.get("floatx", "-"),
                    meta.get("threads") or "default",
                    meta["date"],
                    f"{meta.get('total_seconds', 0) / 60:.1f} min",
                    f"{meta.get('load_average_at_start', float('nan')):.1f}",
                    (meta.get("git_commit") or "-")[:12],
                ]
            )
    header = ["backend", "cases", "dtype", "threads", "start (UTC)", "run time"]
    return "### Runs\n\n" + table(header + ["load avg at start", "commit"], rows)


def pair_table(runs, backends, case, title, slow, fast) -> str:
    rows = []
    for backend, run in zip(backends, runs, strict=True):
        p, r = find(run, case, fast), find(run, case, slow)
        rows.append(
            [
                backend,
                ms(p, True),
                ms(r, True),
                f"**{ratio(r, p)}**",
                seconds(p),
                seconds(r),
                f"{p.get('n', '-') if p else '-'} / {r.get('n', '-') if r else '-'}",
            ]
        )
    header = [
        "backend",
        f"parallel ({fast}) ms [p25-p75]",
        "RNN(LMUCell) ms [p25-p75]",
        "RNN/parallel",
        "first step parallel s",
        "first step RNN s",
        "timed steps",
    ]
    return f"### {title}\n\n" + table(header, rows)


def conv_table(runs, backends) -> str:
    configs = []
    for run in runs:
        for result in run["results"]:
            if result.get("case") == "conv-mode":
                c = result["config"]
                key = (c["memory_d"], c["order"], c["steps"])
                if key not in configs:
                    configs.append(key)
    rows = []
    for memory_d, order, steps in sorted(configs):
        row = [memory_d, order, steps]
        for run in runs:
            config = {"memory_d": memory_d, "order": order, "steps": steps}
            fft = find(run, "conv-mode", "fft", **config)
            raw = find(run, "conv-mode", "raw", **config)
            if fft is None and raw is None and find(run, "conv-mode", **config) is not None:
                row += ["skipped", "skipped", "-"]  # too large for either form
                continue
            value = ratio(raw, fft)
            if value != "-" and float(value) < 1:
                value = f"**{value}**"
            row += [ms(fft), ms(raw), value]
        rows.append(row)
    header = ["memory_d", "order", "T"]
    for backend in backends:
        header += [f"{backend} fft", f"{backend} raw", f"{backend} raw/fft"]
    title = "### 3. conv-mode: batch 16, training step ms (raw/fft < 1: raw faster)"
    return title + "\n\n" + table(header, rows)


def m2m_table(runs, backends, case, title) -> str:
    sizes = []
    for run in runs:
        for result in run["results"]:
            if result.get("case") == case:
                key = (result["config"]["memory_d"], result["config"]["order"])
                if key not in sizes:
                    sizes.append(key)
    rows = []
    for memory_d, order in sizes:
        row = [memory_d, order, memory_d * order]
        for run in runs:
            fft = find(run, case, "fft", memory_d=memory_d, order=order)
            rnn = find(run, case, "rnn", memory_d=memory_d, order=order)
            value = ratio(rnn, fft)
            if value != "-" and float(value) > 1:
                value = f"**{value}**"
            row += [ms(fft), ms(rnn), value]
        rows.append(row)
    header = ["memory_d", "order", "d*n"]
    for backend in backends:
        header += [f"{backend} parallel", f"{backend} RNN", f"{backend} RNN/par."]
    text = f"### {title}: T=1024, batch 16, training step ms (RNN/parallel > 1: parallel faster)"
    return text + "\n\n" + table(header, rows)


def long_table(runs, backends) -> str:
    rows = []
    for steps in (4096, 16384, 65536):
        for backend, run in zip(backends, runs, strict=True):
            result = find(run, "long", steps=steps)
            if result is None:
                continue
            if "peak_rss_kib" not in result:
                rows.append([steps, backend, "failed: " + result.get("error", "?")[:80]])
                continue
            rows.append(
                [
                    steps,
                    backend,
                    ms(result, True),
                    seconds(result),
                    mib(result["rss_before_kib"]),
                    mib(result["peak_rss_kib"]),
                    mib(result["peak_rss_kib"] - result["rss_before_kib"]),
                ]
            )
    header = ["T", "backend", "step ms [p25-p75]", "first step s", "RSS before training"]
    header += ["peak RSS in training", "peak - before"]
    title = "### 5. long: one FFT training step, batch 1, own process per T (RSS in MiB)"
    return title + "\n\n" + table(header, rows)


def last_step_table(runs, backends) -> str:
    rows = []
    for reads in ("last step", "every step"):
        for backend, run in zip(backends, runs, strict=True):
            row = [reads, backend]
            growth = []
            for batch in (100, 400):
                result = find(run, "psmnist-ff", batch=batch, reads=reads)
                if result is None or "peak_rss_kib" not in result:
                    row += ["failed", "-"]
                    continue
                increase = result["peak_rss_kib"] - result["rss_before_kib"]
                growth.append(increase)
                row += [mib(result["peak_rss_kib"]), mib(increase)]
            row.append(mib(growth[1] - growth[0]) if len(growth) == 2 else "-")
            row.append(ms(find(run, "psmnist-ff", batch=400, reads=reads)))
            rows.append(row)
    header = ["reads", "backend", "b=100 peak", "b=100 peak - before", "b=400 peak"]
    header += ["b=400 peak - before", "growth 100->400", "b=400 step ms"]
    title = "### Last-step memory: psmnist-ff, T=784, order 256, own process each (RSS in MiB)"
    return title + "\n\n" + table(header, rows)


def report(runs) -> str:
    backends = [run["meta"]["backend"] for run in runs]
    parts = [runs_table(runs)]
    parts.append(
        pair_table(runs, backends, "m2m-theta", "1. m2m-theta: T=2048, batch 16", "rnn", "fft")
    )
    parts.append(
        pair_table(
            runs, backends, "psmnist-theta", "2. psmnist-theta: T=784, batch 100", "rnn", "last"
        )
    )
    parts.append(conv_table(runs, backends))
    for case, title in (
        ("m2m-size", "4. m2m-size, fixed theta"),
        ("m2m-size-theta", "4b. m2m-size-theta, trainable theta"),
    ):
        if any(r.get("case") == case for run in runs for r in run["results"]):
            parts.append(m2m_table(runs, backends, case, title))
    parts.append(long_table(runs, backends))
    parts.append(last_step_table(runs, backends))
    return "\n\n".join(parts) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    print(report(load(args.paths)), end="")


if __name__ == "__main__":
    main()
