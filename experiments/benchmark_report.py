"""Tables (markdown) and a chart (PNG) of an experiments/benchmark.py run: medians, min-max, ratios."""

import os

import numpy as np

GB = 1e9


def images_per_second(times, batch_size):
    """(median, slowest, fastest) images/s of a list of step times."""
    times = np.asarray(times)
    return batch_size / np.median(times), batch_size / times.max(), batch_size / times.min()


def rate_cell(times, batch_size) -> str:
    median, low, high = images_per_second(times["wall"], batch_size)
    return f"{median:.1f} ({low:.1f}-{high:.1f})"


def ratio(a_times, b_times, clock="wall") -> float:
    """Speed of a over speed of b (median step times by `clock`, 'wall' or 'cpu'): above 1, a is faster."""
    return float(np.median(b_times[clock]) / np.median(a_times[clock]))


def _ratio_cell(a_times, b_times) -> str:
    return f"{ratio(a_times, b_times):.2f} ({ratio(a_times, b_times, 'cpu'):.2f})"


def _kernel_cell(side: dict) -> str:
    """Median system CPU seconds and minor page faults of a side's train steps ('?' in older runs)."""
    times = side["train_times"]
    if "page_faults" not in times:
        return "?"
    return f"{np.median(times['system']):.2f} s, {np.median(times['page_faults']) / 1e3:.0f}k"


def _seconds(side: dict, name: str) -> str:
    """'wall (CPU)' seconds of a timed phase."""
    return f"{side[name + '_s']:.1f} ({side[name + '_cpu_s']:.1f})"


def tables(run: dict) -> str:
    from benchmark import MODELS  # the labels

    batch, peak = run["batch_size"], max(run["matmul_gflops"].values())
    by_name = {m["model"]: m for m in run["models"]}
    speed = ["| model | train img/s ours | train img/s timm | train ratio (by CPU time) | inference img/s ours | "
             "inference img/s timm | inference ratio (by CPU time) |", "|---|---|---|---|---|---|---|"]
    costs = ["| model | compile s, train / inference: wall (CPU) | init s ours / timm: wall (CPU) | peak RSS GB ours / timm | XLA temp GB | "
             "GFLOP per train step: XLA (ours) / torch (timm) | achieved GFLOP/s ours / timm | of the matmul peak "
             "ours / timm | kernel CPU s and page faults per train step, ours / timm | load (1 min) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for m in run["models"]:
        label, ours, timm = MODELS[m["model"]][0], m["ours"], m.get("timm")
        row = [label, rate_cell(ours["train_times"], batch)]
        if timm:
            row += [rate_cell(timm["train_times"], batch), _ratio_cell(ours["train_times"], timm["train_times"]),
                    rate_cell(ours["infer_times"], batch), rate_cell(timm["infer_times"], batch),
                    _ratio_cell(ours["infer_times"], timm["infer_times"])]
        else:
            row += ["-", "-", rate_cell(ours["infer_times"], batch), "-", "-"]
        speed.append("| " + " | ".join(row) + " |")
        ours_rate = ours["train_flops"] / np.median(ours["train_times"]["wall"]) / GB
        timm_rate = timm["flops"]["train"] / np.median(timm["train_times"]["wall"]) / GB if timm else None
        costs.append("| " + " | ".join([
            label, f"{_seconds(ours, 'compile')} / {_seconds(ours, 'infer_compile')}",
            f"{_seconds(ours, 'init')} / " + (_seconds(timm, "init") if timm else "-"),
            f"{ours['peak_rss_bytes'] / GB:.1f} / " + (f"{timm['peak_rss_bytes'] / GB:.1f}" if timm else "-"),
            f"{ours['xla_temp_bytes'] / GB:.1f}",
            f"{ours['train_flops'] / GB:.0f} / " + (f"{timm['flops']['train'] / GB:.0f}" if timm else "-"),
            f"{ours_rate:.0f} / " + (f"{timm_rate:.0f}" if timm else "-"),
            f"{ours_rate / peak:.0%} / " + (f"{timm_rate / peak:.0%}" if timm else "-"),
            f"{_kernel_cell(ours)} / " + (_kernel_cell(timm) if timm else "-"),
            f"{m['load_before'][0]:.1f} -> {m['load_after'][0]:.1f}"]) + " |")
        base = MODELS[m["model"]][3]
        if base in by_name:
            notes.append(f"- {label}: train step {1 / ratio(ours['train_times'], by_name[base]['ours']['train_times']):.2f}x "
                         f"as long as {MODELS[base][0]}'s, inference {1 / ratio(ours['infer_times'], by_name[base]['ours']['infer_times']):.2f}x "
                         f"(same run; no timm model of this architecture).")
    return "\n".join(speed) + "\n\n" + "\n".join(costs) + ("\n\n" + "\n".join(notes) if notes else "")


def profiles(run: dict, rows: int = 12) -> str:
    """Where each side's train step spends its time (the runs made with --profile)."""
    from benchmark import MODELS

    out = []
    for m in run["models"]:
        ours, timm = m["ours"].get("profile"), (m.get("timm") or {}).get("profile")
        if not ours:
            continue
        out += [f"### {MODELS[m['model']][0]}", "",
                f"Ours: {ours['wall_s']:.2f} s per profiled step, {ours['total_s']:.2f} s in XLA's ops; the "
                f"largest groups (pass, module: JAX primitive at the root of the fusion):", "",
                "| pass | module: primitive | s/step | share |", "|---|---|---|---|"]
        out += [f"| {g['pass_']} | {g['primitive']} | {g['self_s']:.3f} | {g['self_s'] / ours['total_s']:.0%} |"
                for g in ours["groups"][:rows]]
        if timm:
            out += ["", f"timm: {timm['total_s']:.2f} s of op self time per step (torch.profiler):", "",
                    "| op | calls | s/step | share |", "|---|---|---|---|"]
            out += [f"| {o['name']} | {o['calls']} | {o['self_s']:.3f} | {o['self_s'] / timm['total_s']:.0%} |"
                    for o in timm["ops"][:rows]]
        out.append("")
    return "\n".join(out)


def allocator(side: dict) -> str:
    """How a side's malloc was set up ('' where the run did not record it: runs before 'allocator' was
    recorded had only our side's GLIBC_TUNABLES)."""
    if "allocator" not in side and "glibc_tunables" not in side:
        return ""
    variables = side.get("allocator", {"GLIBC_TUNABLES": side.get("glibc_tunables")})
    return " ".join(f"{name}='{value}'" for name, value in variables.items() if value) or "the system's malloc"


def _warm(run: dict) -> str:
    warm = run.get("warm_steps", 0)  # runs before 2026-12-03 18:30 had none
    if not warm:
        return ""
    return f"; in every round, a side's timed steps follow {warm} untimed step{'s' if warm > 1 else ''} of its own"


def header(run: dict) -> str:
    first = run["models"][0]
    ours, timm = first["ours"], next((m["timm"] for m in run["models"] if "timm" in m), None)
    versions = f"jax {ours['jax']}" + (f", torch {timm['torch']}, timm {timm['timm']} ({timm['threads']} threads)"
                                       if timm else "")
    peaks = ", ".join(f"{name} {value:.0f}" for name, value in run["matmul_gflops"].items())
    return (f"Command: `{run['command']}`\n\nMachine: {run['machine']}; {versions}; XLA_FLAGS="
            f"'{ours['xla_flags']}'; ours with {allocator(ours)}"
            + (f", timm with {allocator(timm)}" if timm and allocator(timm) else "") + ". "
            f"Batch {run['batch_size']}, float32, {run['rounds']} interleaved rounds of "
            f"{run['steps']} timed steps per side after one warm-up step{_warm(run)}; medians with (min-max).\n\n"
            f"Float32 2048^3 matmul GFLOP/s (median): {peaks}; the peak below is the larger.\n\n"
            f"Load: `{run['uptime_before']}` before, `{run.get('uptime_after', '?')}` after.\n")


def chart(run: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmark import MODELS

    rows = [m for m in run["models"] if "timm" in m]
    labels = [MODELS[m["model"]][0] for m in rows]
    train = [ratio(m["ours"]["train_times"], m["timm"]["train_times"]) for m in rows]
    infer = [ratio(m["ours"]["infer_times"], m["timm"]["infer_times"]) for m in rows]
    memory = [m["timm"]["peak_rss_bytes"] / m["ours"]["peak_rss_bytes"] for m in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 4.2))
    for offset, values, name in ((-0.27, train, "training"), (0, infer, "inference"),
                                 (0.27, memory, "peak memory (timm's / ours)")):
        ax.bar(x + offset, values, 0.27, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("ours / timm (speed); above 1 is better")
    ax.set_title(f"tokenlearner_jax against timm on CPU, batch {run['batch_size']}, float32 (medians)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(run: dict, output: str) -> str:
    """Writes OUTPUT.md (and OUTPUT.png) for a run with the sides 'ours' and 'timm'; returns the tables."""
    text = tables(run)
    with open(output + ".md", "w", encoding="utf-8") as f:
        f.write(f"# Benchmark against timm on CPU\n\n{header(run)}\n{text}\n")
        if any("profile" in m["ours"] for m in run["models"]):
            f.write(f"\n## Profiles of one train step\n\n{profiles(run)}\n")
    if any("timm" in m for m in run["models"]):
        chart(run, output + ".png")
    return text


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Rewrites OUTPUT.md / .png from OUTPUT.json")
    parser.add_argument("output", nargs="?", default=os.path.join(os.path.dirname(__file__), "results",
                                                                   "benchmark_cpu"))
    cli = parser.parse_args()
    with open(cli.output + ".json", encoding="utf-8") as f:
        print(write(json.load(f), cli.output))
