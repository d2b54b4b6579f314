"""Where our CPU train step leaves a core idle, and why. `perf record -a` samples both cores while a
jax.profiler trace records the same steps; each executed HLO operation (thunk) is matched with the
samples taken while it ran, which gives the share of the step with a core idle and how many cores each
operation kept busy. Then the batched matrix products that stand out, timed alone with the paths XLA
CPU offers for them, and the attention core with its products rearranged.

  python experiments/idle_cores.py [--models=vit_s16,nest_t] [--steps=2]

Runs under the allocator main.py picks (train/allocator.py), as the benchmark's workers do. Needs Linux
`perf` allowed to sample every CPU (root, or kernel.perf_event_paranoid <= 0). Writes
experiments/results/idle_cores.md.
"""

import argparse
import bisect
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchmark
import profile_ops
import worker_protocol

OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "idle_cores.md")
SAMPLE_HZ = 1999
# (label, batch, m, k, n): the attention products of our models, [batch, m, k] x [batch, k, n]
PRODUCTS = (
    ("ViT-S/16 weights x values", 16 * 6, 196, 196, 64),
    ("ViT-S/16 queries x keys", 16 * 6, 196, 64, 196),
    ("NesT-T level-0 weights x values", 16 * 16 * 3, 196, 196, 32),
    ("MaxViT-T stage-1 window, weights x values", 16 * 64 * 2, 49, 49, 32),
)
# (label, batch, length, heads, head size): attention cores, [batch, length, heads, head size] inputs
CORES = (("ViT-S/16 layer", 16, 196, 6, 64), ("NesT-T level 0: 16 images x 16 blocks", 256, 196, 3, 32))


def perf_samples(path: str, offset_ns: int) -> dict:
    """{cpu: (sample times in wall-clock ns, sorted; whether each found the CPU busy)} of a
    `perf record -a -k CLOCK_MONOTONIC` file; a sample of the idle task (pid 0) is not busy."""
    text = subprocess.run(["perf", "script", "-i", path, "-F", "pid,cpu,time"], capture_output=True,
                          text=True, check=True).stdout
    samples = collections.defaultdict(list)
    for match in re.finditer(r"^\s*(\d+)\s+\[(\d+)\]\s+([\d.]+):", text, re.MULTILINE):
        pid, cpu, seconds = match.groups()
        samples[int(cpu)].append((round(float(seconds) * 1e9) + offset_ns, pid != "0"))
    return {cpu: tuple(zip(*sorted(values))) for cpu, values in samples.items()}


def busy_cores(samples: dict, start_ns: int, end_ns: int):
    """(busy samples, all samples) over every CPU between two wall-clock times."""
    busy = total = 0
    for times, busy_flags in samples.values():
        first, last = bisect.bisect_left(times, start_ns), bisect.bisect_right(times, end_ns)
        busy += sum(busy_flags[first:last])
        total += last - first
    return busy, total


def profile_model(model: str, steps: int, rows: int) -> dict:
    import jax

    side = benchmark.JaxSide()
    side.setup(model=model, batch_size=16)
    side.train(2)
    instructions = profile_ops.parse_hlo(side.train_step.as_text())
    with tempfile.TemporaryDirectory() as work:
        perf = subprocess.Popen(["perf", "record", "-a", "-F", str(SAMPLE_HZ), "-k", "CLOCK_MONOTONIC", "-o",
                                 f"{work}/perf.data"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # perf's start-up
        offset = time.time_ns() - time.monotonic_ns()
        spans, usage = [], []
        trace_start = time.time_ns()
        with jax.profiler.trace(f"{work}/trace"):
            for _ in range(steps):
                begin, watch = time.time_ns(), worker_protocol.Stopwatch()
                side.train(1)
                wall, cpu = watch.read()
                spans.append((begin, time.time_ns()))
                usage.append(cpu / wall)
        perf.send_signal(2)
        perf.wait()
        samples = perf_samples(f"{work}/perf.data", offset)
        # the trace's times count from the start of tracing, which is trace_start to within a millisecond
        events = [(name, trace_start + start, trace_start + end)
                  for name, start, end in profile_ops.thunk_events(f"{work}/trace")]
    in_steps = [busy_cores(samples, a, b) for a, b in spans]
    cpus = len(samples)
    groups = collections.defaultdict(lambda: [0.0, 0.0, 0])  # seconds, idle core-seconds, count
    for name, start, end in events:
        info = instructions.get(name, {})
        if info.get("opcode") == "dot":  # XLA's own dots run asynchronously: the event is their dispatch
            continue
        busy, total = busy_cores(samples, start, end)
        if not total:
            continue
        seconds = (end - start) / 1e9
        op_name = info.get("op_name", "")
        kind = "YNNPACK" if info.get("ynn") else info.get("kind", "")
        key = (profile_ops.pass_of(op_name), f"{profile_ops.scope_of(op_name)}: {profile_ops.primitive_of(op_name)}",
               kind, info.get("shape", "?").split("{")[0])
        group = groups[key]
        group[0] += seconds / steps
        group[1] += seconds * cpus * (1 - busy / total) / steps
        group[2] += 1
    top = sorted(groups.items(), key=lambda item: -item[1][1])[:rows]
    return {
        "model": model, "label": benchmark.MODELS[model][0], "cpus": cpus,
        "step_s": float(np.median([(b - a) / 1e9 for a, b in spans])),
        "cpu_per_wall": float(np.median(usage)),
        "idle_share": 1 - sum(b for b, _ in in_steps) / sum(t for _, t in in_steps),
        "ops": [dict(pass_=p, where=w, kind=k, shape=s, seconds=v[0], idle_core_s=v[1],
                     cores=cpus * (1 - v[1] / (v[0] * cpus)) if v[0] else 0.0, count=v[2] // steps)
                for (p, w, k, s), v in top],
    }


def time_call(fn, args, rounds: int):
    """(median wall seconds, cores busy = CPU / wall) of `rounds` calls of a compiled function."""
    import jax

    jax.block_until_ready(fn(*args))
    times = worker_protocol.timed(lambda: jax.block_until_ready(fn(*args)), rounds)
    return float(np.median(times["wall"])), sum(times["cpu"]) / sum(times["wall"])


def product_rows(rounds: int) -> list:
    """Each attention product alone: XLA's default (YNNPACK), XLA's own dot (reached by a left operand
    stored transposed, which YNNPACK does not take), two independent products of half the batch in one
    program, and the 2-D product of the same FLOPs."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    rows = []
    for label, batch, m, k, n in PRODUCTS:
        lhs = jnp.asarray(rng.standard_normal((batch, m, k)), jnp.float32)
        rhs = jnp.asarray(rng.standard_normal((batch, k, n)), jnp.float32)
        lhs_transposed = jnp.asarray(np.swapaxes(np.asarray(lhs), 1, 2))
        product = lambda a, b: jnp.einsum("bmk,bkn->bmn", a, b)
        half = batch // 2
        forms = {
            "YNNPACK (XLA's default)": (jax.jit(product), (lhs, rhs)),
            "XLA's own dot": (jax.jit(lambda a, b: jnp.einsum("bkm,bkn->bmn", a, b)), (lhs_transposed, rhs)),
            "two independent halves": (jax.jit(lambda a1, b1, a2, b2: (product(a1, b1), product(a2, b2))),
                                       (lhs[:half], rhs[:half], lhs[half:], rhs[half:])),
            "2-D product, same FLOPs": (jax.jit(jnp.matmul), (lhs.reshape(batch * m, k), rhs[0])),
        }
        flops = 2 * batch * m * k * n
        for form, (fn, args) in forms.items():
            seconds, cores = time_call(fn, args, rounds)
            ynn = "__ynn_fusion" in fn.lower(*args).compile().as_text()
            rows.append(dict(label=label, shape=(batch, m, k, n), form=form, ms=seconds * 1e3, cores=cores,
                             gflops=flops / seconds / 1e9, ynn=ynn))
    return rows


def attention_core(form: str):
    """Softmax attention on `[batch, length, heads, head_dim]` queries, keys and values, as
    layers/attention.MultiHeadAttention._explicit computes it ('queries-major') or rearranged so that
    other products reach XLA's own dot: the weights stored keys-major, or the output head_dim-major."""
    import jax
    import jax.numpy as jnp

    def core(query, key, value):
        heads_major = lambda t: jnp.swapaxes(t, 1, 2)  # [batch, heads, length, head_dim]
        query = heads_major(query / np.sqrt(query.shape[-1]))
        key, value = heads_major(key), heads_major(value)
        if form == "keys-major weights":
            logits = jnp.einsum("bhkd,bhqd->bhkq", key, query)
            exp = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-2, keepdims=True)))
            inverse_total = jnp.swapaxes(1.0 / jnp.sum(exp, axis=-2, keepdims=True), -1, -2)
            return heads_major(jnp.einsum("bhkq,bhkd->bhqd", exp, value) * inverse_total)
        logits = jnp.einsum("bhqd,bhkd->bhqk", query, key)
        exp = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
        inverse_total = 1.0 / jnp.sum(exp, axis=-1, keepdims=True)
        if form == "output head_dim-major":
            out = jnp.einsum("bhkd,bhqk->bhdq", value, exp) * jnp.swapaxes(inverse_total, -1, -2)
            return jnp.transpose(out, (0, 3, 1, 2))
        return heads_major(jnp.einsum("bhqk,bhkd->bhqd", exp, value) * inverse_total)

    return core


def core_rows(rounds: int) -> list:
    """Forward + backward of each attention-core form, interleaved, with its count of YNNPACK fusions and
    XLA dots, and its largest difference from the queries-major form."""
    import jax
    import jax.numpy as jnp

    forms = ("queries-major (ours)", "keys-major weights", "output head_dim-major")
    rng = np.random.default_rng(0)
    rows = []
    for label, batch, length, heads, head_dim in CORES:
        inputs = [jnp.asarray(rng.standard_normal((batch, length, heads, head_dim)), jnp.float32) for _ in range(4)]
        steps, results = {}, {}
        for form in forms:
            core = attention_core(form)
            step = jax.jit(lambda q, k, v, g, core=core: jax.vjp(core, q, k, v)[1](g))
            entry = step.lower(*inputs).compile().as_text().split("\nENTRY")[1]
            results[form] = [np.asarray(x) for x in step(*inputs)]
            steps[form] = (step, entry.count("__ynn_fusion"), len(re.findall(r" dot\(", entry)))
        times = {form: {"wall": [], "cpu": []} for form in forms}
        for _ in range(rounds):
            for form, (step, _, _) in steps.items():
                timed = worker_protocol.timed(lambda: jax.block_until_ready(step(*inputs)), 1)
                times[form]["wall"] += timed["wall"]
                times[form]["cpu"] += timed["cpu"]
        for form, (_, ynn, dots) in steps.items():
            wall = times[form]["wall"]
            difference = max(float(np.max(np.abs(a - b))) for a, b in zip(results[form], results[forms[0]]))
            rows.append(dict(label=label, shape=(batch, length, heads, head_dim), form=form, ynn=ynn, dots=dots,
                             ms=float(np.median(wall)) * 1e3, low=min(wall) * 1e3, high=max(wall) * 1e3,
                             cores=sum(times[form]["cpu"]) / sum(wall), difference=difference))
    return rows


def write(path: str, command: str, runs: list, products: list, cores: list, machine: str) -> None:
    lines = ["# Idle cores in our CPU train step", "",
             f"Command: `{command}`", "", f"Machine: {machine}. Batch 16, float32, the benchmark's train step "
             "(experiments/benchmark.py JaxSide) under the allocator main.py picks.", "",
             "## Idle share of the step, and the operations that ran while a core was idle", "",
             "Idle share: of the `perf record -a` samples taken on the CPUs during the steps, those of the idle "
             "task. Each operation's cores busy = CPUs x its busy samples / its samples. XLA's own dots "
             "(opcode `dot`) run asynchronously, so their trace event covers only their dispatch: left out.", ""]
    for run in runs:
        lines += [f"### {run['label']}", "",
                  f"Step {run['step_s']:.2f} s (median), CPU time / wall {run['cpu_per_wall']:.2f} of "
                  f"{run['cpus']} cores, a core idle {100 * run['idle_share']:.1f}% of the samples.", "",
                  "| pass | where: primitive | fusion | shape | per step | s per step | idle core-s per step "
                  "| cores busy |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {op['pass_']} | {op['where']} | {op['kind'] or '-'} | {op['shape']} | {op['count']} | "
                  f"{op['seconds']:.3f} | {op['idle_core_s']:.3f} | {op['cores']:.2f} |" for op in run["ops"]]
        lines.append("")
    lines += ["## The attention products alone", "",
              "[batch, m, k] x [batch, k, n], median of the calls; cores busy = process CPU time / wall.", "",
              "| product | [batch, m, k, n] | form | YNNPACK fusion | ms | cores busy | GFLOP/s |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {row['label']} | {list(row['shape'])} | {row['form']} | {'yes' if row['ynn'] else 'no'} | "
              f"{row['ms']:.2f} | {row['cores']:.2f} | {row['gflops']:.0f} |" for row in products]
    lines += ["", "## Attention cores rearranged", "",
              "Forward + backward of softmax attention (the math of layers/attention.py's explicit path), in "
              "three arrangements of its products; the forms interleaved, median (min-max) of the calls.", "",
              "| attention | [batch, length, heads, head size] | form | YNNPACK fusions | XLA dots | ms | cores busy | "
              "largest difference |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {row['label']} | {list(row['shape'])} | {row['form']} | {row['ynn']} | {row['dots']} | "
              f"{row['ms']:.1f} ({row['low']:.1f}-{row['high']:.1f}) | {row['cores']:.2f} | {row['difference']:.1e} |"
              for row in cores]
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    from tokenlearner_jax.train import allocator

    changes = allocator.environment()
    if changes:  # as main.py: the allocator is chosen before the process starts
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **changes})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vit_s16,nest_t",
                        help=f"comma-separated, from {', '.join(benchmark.MODELS)}")
    parser.add_argument("--steps", type=int, default=2, help="profiled train steps per model")
    parser.add_argument("--rounds", type=int, default=20, help="calls per attention product and core form")
    parser.add_argument("--rows", type=int, default=12, help="operations listed per model")
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args()
    command = "python experiments/idle_cores.py " + " ".join(sys.argv[1:])
    runs = [profile_model(model, args.steps, args.rows) for model in args.models.split(",")]
    products = product_rows(args.rounds)
    cores = core_rows(args.rounds)
    write(args.output, command.strip(), runs, products, cores, benchmark.machine_description())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
