"""The layer levers in isolation: forward + backward of MultiHeadAttention before / after the stacked
query/key/value projection and heads-major products, or with jax.nn.dot_product_attention's XLA code
against our einsums, and of GELU's erfc / erf forms, at the shapes of our models, interleaved in one
process (wall and CPU time, medians).

  python experiments/layer_micro_benchmark.py [--rounds=8] [--shapes=vit_s,nest_l0,maxvit_s0] [--levers=gelu,...]

'conv_kernel_grad' times nn.Conv against layers/conv.py's Conv at the dense convolutions of our models.

The 'before' attention is layers/attention.py of commit BEFORE (read from git). Writes
experiments/results/layer_micro.md.
"""

import argparse
import importlib.util
import os
import subprocess
import tempfile

import flax
import jax
import jax.numpy as jnp
import numpy as np

import benchmark
import worker_protocol
from tokenlearner_jax.layers import attention
from tokenlearner_jax.layers.conv import Conv

BEFORE = "7829f20"  # h-perf: GELU changed, attention not yet
# lever -> what 'before -> after' is
LEVERS = {
    "gelu": "GELU, erfc -> erf form",
    "attention_layout": "separate q/k/v products -> stacked projection, heads-major products",
    "dot_product_attention": "jax.nn.dot_product_attention (XLA) -> explicit einsums",
    "conv_kernel_grad": "nn.Conv (XLA's kernel gradient) -> layers.conv.Conv (one matrix product per tap)",
}
# dense convolutions of our models: (label, input shape, kernel, stride, padding, output channels)
CONVS = (
    ("NesT-T level-1 aggregation", (16, 56, 56, 96), 3, 1, ((1, 1), (1, 1)), 192),
    ("NesT-T level-2 aggregation", (16, 28, 28, 192), 3, 1, ((1, 1), (1, 1)), 384),
    ("MaxViT-T stem conv 1", (16, 224, 224, 3), 3, 2, "SAME", 64),
    ("MaxViT-T stem conv 2", (16, 112, 112, 64), 3, 1, "SAME", 64),
    ("PoolFormer-S12 stem", (16, 224, 224, 3), 7, 4, ((2, 2), (2, 2)), 64),
    ("PoolFormer-S12 downsampling 1", (16, 56, 56, 64), 3, 2, ((1, 1), (1, 1)), 128),
    ("TokenLearner v1.1 maps, ViT-B/16", (16, 14, 14, 768), 3, 1, "SAME", 8),
)
# name -> (attention batch (images x windows), length, width, heads, relative bias): the models' layers
SHAPES = {
    "vit_s": ("ViT-S/16 layer, batch 16", 16, 197, 384, 6, False),
    "nest_l0": ("NesT-T level 0: 16 images x 16 blocks", 256, 196, 96, 3, False),
    "maxvit_s0": ("MaxViT-T stage 0: 16 images x 64 windows", 1024, 49, 64, 2, True),
    "maxvit_s2": ("MaxViT-T stage 2: 16 images x 16 windows", 256, 49, 256, 8, True),
}


def attention_before():
    source = subprocess.run(["git", "-C", benchmark.ROOT, "show", f"{BEFORE}:tokenlearner_jax/layers/attention.py"],
                            check=True, capture_output=True, text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "attention_before.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("attention_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare(functions: dict, args: tuple, rounds: int) -> dict:
    """{name: {clock: [...]}} (wall, CPU and the others worker_protocol.timed reports) of jitted `functions`
    on `args`, alternating orders."""
    for fn in functions.values():
        jax.block_until_ready(fn(*args))
    times = {name: {} for name in functions}
    for r in range(rounds):
        for name in (list(functions) if r % 2 == 0 else list(functions)[::-1]):
            for clock, values in worker_protocol.timed(lambda: jax.block_until_ready(functions[name](*args)), 1).items():
                times[name].setdefault(clock, []).extend(values)
    return times


def attention_rows(shapes, rounds, lever="attention_layout"):
    """'attention_layout': the attention of commit BEFORE -> today's; 'dot_product_attention': today's
    with jax.nn.dot_product_attention's XLA implementation -> today's default (explicit einsums)."""
    before = attention_before() if lever == "attention_layout" else None
    rows = []
    for key in shapes:
        label, batch, length, width, heads, with_bias = SHAPES[key]
        rng = np.random.RandomState(0)
        x = jnp.asarray(rng.randn(batch, length, width), jnp.float32)
        bias = jnp.asarray(rng.randn(heads, length, length), jnp.float32) if with_bias else None
        functions, outputs = {}, {}
        modules = ((("before", before.MultiHeadAttention(heads)) if before else
                    ("before", attention.MultiHeadAttention(heads, implementation="xla"))),
                   ("after", attention.MultiHeadAttention(heads)))
        for name, module in modules:
            params = flax.core.meta.unbox(module.init(jax.random.key(0), x[:1], train=False))["params"]
            loss = lambda p, x, m=module: jnp.sum(jnp.sin(m.apply({"params": p}, x, train=True, bias=bias)))
            functions[name] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            outputs[name] = functions[name](params, x)
        pairs = list(zip(jax.tree.leaves(outputs["after"]), jax.tree.leaves(outputs["before"])))
        error = (max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
                 / max(float(jnp.max(jnp.abs(b))) for _, b in pairs))
        times = compare(functions, (params, x), rounds)
        rows.append((f"{label}: {LEVERS[lever]}", times, error))
    return rows


def gelu_rows(rounds):
    x = jnp.asarray(np.random.RandomState(0).randn(16, 197, 1536), jnp.float32)  # ViT-S's MLP hidden layer
    forms = {"before": lambda v: jax.nn.gelu(v, approximate=False), "after": attention.gelu}
    functions = {name: jax.jit(jax.value_and_grad(lambda v, g=g: jnp.sum(g(v) * v))) for name, g in forms.items()}
    error = float(jnp.max(jnp.abs(forms["after"](x) - forms["before"](x))))
    return [(f"{LEVERS['gelu']} of ViT-S/16's MLP [16, 197, 1536]", compare(functions, (x,), rounds), error)]


def conv_rows(rounds):
    rows = []
    for label, shape, kernel, stride, padding, features in CONVS:
        x = jnp.asarray(np.random.RandomState(0).randn(*shape), jnp.float32)
        modules = {"before": flax.linen.Conv(features, (kernel, kernel), (stride, stride), padding),
                   "after": Conv(features, (kernel, kernel), (stride, stride), padding)}
        params = modules["before"].init(jax.random.key(0), x[:1])["params"]
        functions, outputs = {}, {}
        for name, module in modules.items():
            loss = lambda p, x, m=module: jnp.sum(jnp.sin(m.apply({"params": p}, x)))
            functions[name] = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
            outputs[name] = functions[name](params, x)
        pairs = list(zip(jax.tree.leaves(outputs["after"]), jax.tree.leaves(outputs["before"])))
        error = (max(float(jnp.max(jnp.abs(a - b))) for a, b in pairs)
                 / max(float(jnp.max(jnp.abs(b))) for _, b in pairs))
        rows.append((f"{label} {list(shape)} -> {features}, {kernel}x{kernel} stride {stride}: "
                     f"{LEVERS['conv_kernel_grad']}", compare(functions, (params, x), rounds), error))
    return rows


def row(label, times, error):
    median = lambda side, clock: float(np.median(times[side][clock]))
    return (f"| {label} | {1e3 * median('before', 'wall'):.0f} -> {1e3 * median('after', 'wall'):.0f} | "
            f"{median('before', 'wall') / median('after', 'wall'):.2f} | {1e3 * median('before', 'cpu'):.0f} -> "
            f"{1e3 * median('after', 'cpu'):.0f} | {median('before', 'cpu') / median('after', 'cpu'):.2f} | {error:.1e} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--levers", default=",".join(LEVERS), help=f"of {list(LEVERS)}")
    parser.add_argument("--output", default=os.path.join(benchmark.RESULTS, "layer_micro.md"))
    args = parser.parse_args()
    before_load = benchmark.uptime()
    rows = []
    for lever in args.levers.split(","):
        if lever == "gelu":
            rows += gelu_rows(args.rounds)
        elif lever == "conv_kernel_grad":
            rows += conv_rows(args.rounds)
        else:
            rows += attention_rows(args.shapes.split(","), args.rounds, lever)
    lines = ["# Layer levers in isolation (forward + backward, float32)", "",
             f"Command: `python experiments/layer_micro_benchmark.py --rounds={args.rounds} --shapes={args.shapes} "
             f"--levers={args.levers}`; "
             f"{benchmark.machine_description()}, jax {jax.__version__}. `{before_load}` before, "
             f"`{benchmark.uptime()}` after. Medians of {args.rounds} interleaved calls. Speed-up = before / after "
             "time; error = the largest difference of the loss and gradients, over the largest of their values.", "",
             "| layer | wall ms before -> after | speed-up (wall) | CPU ms before -> after | speed-up (CPU) | error |",
             "|---|---|---|---|---|---|"] + [row(*r) for r in rows]
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
