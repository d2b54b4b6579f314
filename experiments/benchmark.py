"""Training and inference speed, compile and init time, memory and FLOP rates of our models against
timm's, measured side by side in one run.

  python experiments/benchmark.py [--models=vit_s16,nest_t] [--timm_venv=DIR] [--rounds=4 --steps=2]

Every model runs in its own worker process per side (so peak RSS is the model's), ours with the
trainer's own jitted train step for the family's ImageNet recipe (mixup / cutmix, label smoothing,
drop path, clipping, EMA, the optimizer) at batch 16, 224px, float32; timm's in its own virtual
environment (made on first use; the torch and timm versions are flags) with the same extras
(experiments/benchmark_timm_worker.py). The timed calls alternate A B B A ... between the sides,
`steps` steps per call, so both see the same machine load; the table quotes medians of the step
times, their min-max, and ratios (ours / timm, in images per second: above 1 we are faster).
XLA's FLOP count is of the compiled step (every op); torch's FlopCounterMode counts matmuls and
convolutions only. The matmul peak is the best of JAX's and torch's float32 2048^3 matmul, measured
in the same run. Writes experiments/results/benchmark_cpu.{md,png,json}.

With `--sides`, further variants of our side run interleaved in the same way (a lever against the
baseline: other XLA flags, or another source tree on PYTHONPATH): see experiments/levers.py.
"""

import argparse
import ast
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

import worker_protocol

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")

# name -> (label, our config: "family:variant" read by `benchmark_config`, timm model and its kwargs or None,
#          the model whose train step this one's is compared with when there is no timm model)
MODELS = {
    "vit_ti16": ("ViT-Ti/16", "vit:Ti/16", ("vit_tiny_patch16_224", dict(class_token=False, global_pool="avg",
                                                                       fc_norm=False)), None),
    "vit_s16": ("ViT-S/16", "vit:S/16", ("vit_small_patch16_224", dict(class_token=False, global_pool="avg",
                                                                       fc_norm=False)), None),
    "vit_b16": ("ViT-B/16", "vit:B/16", ("vit_base_patch16_224", dict(class_token=False, global_pool="avg",
                                                                      fc_norm=False)), None),
    "vit_b16_tl": ("ViT-B/16 + TokenLearner at 1/2", "vit_tl:B/16", None, "vit_b16"),
    "vivit_b16_tl": ("ViViT-B/16x2 + TokenLearner, 8 frames", "vivit_tl:B/16", None, "vit_b16"),
    "poolformer_s12": ("PoolFormer-S12", "poolformer:S12", ("poolformer_s12", {}), None),
    "nest_t": ("NesT-T", "nest:T", ("nest_tiny_jx", {}), None),
    "maxvit_t": ("MaxViT-T", "maxvit:T", ("maxvit_tiny_tf_224", {}), None),
}
TIMM_PACKAGES = "torch==2.14.1 torchvision==0.29.1 timm==1.0.31 safetensors"


# ----------------------------------------------------------------------------------------------------
# Our side (a worker process running this file with --worker).

# family -> the config file whose recipe the family is timed with (configs/*.py)
CONFIG_FILES = {"vit": "vit_b16.py", "vit_tl": "vit_b16_tl_half.py", "vivit_tl": "vivit_b16x2_tl_k400.py",
                "poolformer": "poolformer_s12.py", "nest": "nest_tiny.py", "maxvit": "maxvit_tiny.py"}


def load_config_file(name: str):
    """`configs/<name>`'s get_config(), as main.py loads it (without command-line overrides)."""
    from tokenlearner_jax.recipes import sweeps

    return sweeps.load_module(os.path.join(ROOT, "configs", name)).get_config(None)


def benchmark_config(key: str, batch_size: int, frames: int = 8, dtype: str = "float32", image_size: int = 224,
                     overrides: dict | None = None):
    """(config, DatasetInfo) of the family's config file (`CONFIG_FILES`: its ImageNet / Kinetics recipe,
    with `variant` as config.model.variant) at `batch_size`, computing in `dtype` (parameters stay float32),
    `image_size` square, videos of `frames` frames, then `overrides` ({'mesh.fsdp': -1, ...}) applied."""
    from tokenlearner_jax import data
    from tokenlearner_jax.recipes import sweeps

    family, variant = key.split(":")
    config = load_config_file(CONFIG_FILES[family])
    config.model.variant = variant
    config.batch_size = config.eval_batch_size = batch_size
    config.model.dtype = dtype
    config.dataset.image_size = size = image_size
    if config.dataset.num_frames > 0:
        config.dataset.num_frames = frames
    for path, value in (overrides or {}).items():
        sweeps.set_field(config, path, value)
    shape = (size, size, 3) if config.dataset.num_frames <= 0 else (config.dataset.num_frames, size, size, 3)
    info = data.DatasetInfo(name="benchmark", num_classes=config.model.num_classes, image_shape=shape,
                            num_train=1_000_000, num_eval=0, multi_label=False)
    return config, info


def trainer_step(config, info):
    """The trainer's own pieces for `config`; the only function here that knows the trainer's API.

    Returns (model, init_state() -> state, compile_train_step(state, global batch) -> the compiled train
    step (state, global batch) -> (state, metrics, finite) that donates the state, to_global(numpy
    batch) -> global batch, context() -> the context manager the step runs in, variables(state) -> the
    model's variables). init_state and compile_train_step give back the memory compiling freed, as in a run;
    in source trees older than that (levers.py's lever release_compile_memory) the step is compiled as it was."""
    from tokenlearner_jax.train import trainer

    setup = trainer.Setup(config, info, total_steps=100_000)
    variables = lambda state: {"params": state.params, **state.model_state}
    compile_train_step = getattr(setup, "compile_train_step", None) or (
        lambda state, batch: setup.train_step.lower(state, batch).compile())
    return setup.task.model, setup.init_state, compile_train_step, setup.to_global, setup.context, variables


class JaxSide:
    """Builds one of our models and times its train step and forward pass on request."""

    def setup(self, *, model: str, batch_size: int, dtype: str = "float32", image_size: int = 224, seed: int = 0,
              config_overrides: dict | None = None):
        """Builds the state and compiles the train step and the forward pass; returns their times
        (wall and this process's CPU seconds), XLA's FLOP counts and memory sizes. The CPU is split into as
        many jax devices as main.py would split it (train/distributed.py) unless XLA_FLAGS says."""
        import jax

        config, info = benchmark_config(MODELS[model][1], batch_size, dtype=dtype, image_size=image_size,
                                        overrides=config_overrides)
        from tokenlearner_jax.train import distributed
        getattr(distributed, "split_cpu", lambda config, requested: 0)(config, 0)  # absent from older trees
        times = {}
        # Importing the trainer is timed on its own, as timm's worker imports torch and timm untimed.
        watch = worker_protocol.Stopwatch()
        from tokenlearner_jax.train import allocator, trainer
        times["import"] = watch.read()
        watch = worker_protocol.Stopwatch()
        net, init_state, compile_train_step, to_global, self.context, self.variables = trainer_step(config, info)
        with self.context():
            self.state = jax.block_until_ready(init_state())
        times["init"] = watch.read()
        rng = np.random.RandomState(seed)
        batch = {"image": rng.randn(batch_size, *info.image_shape).astype(np.float32),
                 "label": rng.randint(0, info.num_classes, batch_size).astype(np.int32)}
        with self.context():
            self.batch = to_global(batch)
            watch = worker_protocol.Stopwatch()
            self.train_step = compile_train_step(self.state, self.batch)
            times["compile"] = watch.read()
            watch = worker_protocol.Stopwatch()
            forward = jax.jit(lambda v, x: net.apply(v, x, train=False),
                              compiler_options=trainer.step_compiler_options())
            self.forward = forward.lower(self.variables(self.state), self.batch["image"]).compile()
            getattr(allocator, "release_free_memory", lambda: None)()  # as the trainer does after its eval step
            times["infer_compile"] = watch.read()
        memory = self.train_step.memory_analysis()
        result = {f"{name}_s": wall for name, (wall, _) in times.items()}
        result.update({f"{name}_cpu_s": cpu for name, (_, cpu) in times.items()})
        # XLA's figures are one device's program; every device runs one like it (data-parallel over the CPU's
        # devices, train/distributed.py): the step's are that many times theirs.
        devices = jax.device_count()
        return {**result, "train_flops": devices * self.train_step.cost_analysis()["flops"],
                "infer_flops": devices * self.forward.cost_analysis()["flops"],
                "xla_temp_bytes": devices * memory.temp_size_in_bytes,
                "xla_argument_bytes": devices * memory.argument_size_in_bytes,
                "params": sum(x.size for x in jax.tree.leaves(self.state.params)),
                "cudnn_attention_calls": self.train_step.as_text().count("__cudnn$fmha"),
                "device": jax.devices()[0].device_kind, "devices": devices,
                "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "allocator": worker_protocol.allocator_environment()}

    def _train_once(self):
        import jax

        self.state, metrics, finite = self.train_step(self.state, self.batch)
        jax.block_until_ready((self.state, metrics, finite))

    def _infer_once(self):
        self.forward(self.variables(self.state), self.batch["image"]).block_until_ready()

    def warmup(self):
        return {"first_train_s": worker_protocol.timed(self._train_once, 1)["wall"][0],
                "first_infer_s": worker_protocol.timed(self._infer_once, 1)["wall"][0]}

    def train(self, count: int):
        return worker_protocol.timed(self._train_once, count)

    def infer(self, count: int):
        return worker_protocol.timed(self._infer_once, count)

    def matmul_peak(self, size: int = 2048, repeats: int = 10, dtype: str = "float32"):
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(np.random.RandomState(0).randn(size, size), dtype)
        matmul = jax.jit(lambda x, y: x @ y)
        matmul(a, a).block_until_ready()
        times = worker_protocol.timed(lambda: matmul(a, a).block_until_ready(), repeats)["wall"]
        flop = 2 * size ** 3
        return {"median": flop / float(np.median(times)) / 1e9, "best": flop / min(times) / 1e9}

    def device_peak_memory(self):
        """Peak bytes in use on the accelerator (None on CPU, whose allocations are the process's RSS)."""
        import jax

        stats = jax.devices()[0].memory_stats()
        return stats.get("peak_bytes_in_use") if stats else None

    def profile(self, steps: int = 2, rows: int = 25):
        import profile_ops  # experiments/profile_ops.py

        return profile_ops.profile_jax_step(self._train_once, self.train_step.as_text(), steps, rows)

    def handlers(self):
        return dict(setup=self.setup, warmup=self.warmup, train=self.train, infer=self.infer,
                    matmul_peak=self.matmul_peak, profile=self.profile, peak_rss=worker_protocol.peak_rss_bytes,
                    device_peak_memory=self.device_peak_memory)


# ----------------------------------------------------------------------------------------------------
# The driver.

def ensure_timm_venv(path: str, packages: str, index_url: str) -> str:
    """Python of timm's virtual environment at `path`, created with `packages` on first use."""
    python = os.path.join(path, "bin", "python")
    if not os.path.exists(python):
        print(f"Creating timm's virtual environment at {path} ({packages}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", path], check=True)
        extra = ["--index-url", index_url, "--extra-index-url", "https://pypi.org/simple"] if index_url else []
        subprocess.run([python, "-m", "pip", "install", "-q", *extra, *packages.split()], check=True)
    return python


# a side's malloc: option name -> environment variable (glibc_tunables -> GLIBC_TUNABLES, ...)
ALLOCATOR_OPTIONS = {name.lower(): name for name in worker_protocol.ALLOCATOR_VARIABLES}
SIDE_OPTIONS = ("xla_flags", "pythonpath", "config", *ALLOCATOR_OPTIONS)


def parse_side(text: str, default_pythonpath: str) -> dict:
    """'name' or 'name:KEY=VALUE;KEY=VALUE' with keys SIDE_OPTIONS -> a side of ours. `config` overrides
    fields of the benchmarked config: 'config=mesh.data:1,mesh.fsdp:-1,shard_optimizer_state:False'."""
    name, _, options = text.partition(":")
    side = {"name": name, "kind": "jax", "pythonpath": default_pythonpath, "xla_flags": ""}
    for option in filter(None, options.split(";")):
        key, _, value = option.partition("=")
        if key not in SIDE_OPTIONS:
            raise ValueError(f"--sides: unknown option {key!r} in {text!r}: expected one of {SIDE_OPTIONS}")
        side[key] = parse_overrides(value, text) if key == "config" else value
    return side


def parse_overrides(value: str, text: str) -> dict:
    """'mesh.fsdp:-1,shard_optimizer_state:False' -> {'mesh.fsdp': -1, 'shard_optimizer_state': False}."""
    try:
        return {path: ast.literal_eval(literal) for path, literal in (item.split(":") for item in value.split(","))}
    except (ValueError, SyntaxError):
        raise ValueError(f"--sides: config={value!r} in {text!r}: expected FIELD:PYTHON_LITERAL,... e.g. "
                         f"mesh.fsdp:-1,shard_optimizer_state:False") from None


def start_worker(side: dict, timm_python: str, log_path: str) -> worker_protocol.Worker:
    """A worker for `side`. Ours runs under the allocator main.py would pick (train/allocator.py), or the
    side's own glibc_tunables / ld_preload / malloc_conf where it names any; timm with this process's
    environment."""
    if side["kind"] == "timm":
        argv = [timm_python, os.path.join(HERE, "benchmark_timm_worker.py")]
        return worker_protocol.Worker(side["name"], argv, {"PYTHONPATH": HERE}, log_path)
    from tokenlearner_jax.train import allocator

    if any(key in side for key in ALLOCATOR_OPTIONS):
        memory = {variable: side.get(key, "") for key, variable in ALLOCATOR_OPTIONS.items()}
    else:
        memory = {**{variable: os.environ.get(variable, "") for variable in ALLOCATOR_OPTIONS.values()},
                  **allocator.environment()}
    env = {"PYTHONPATH": os.pathsep.join([side["pythonpath"], HERE]), "XLA_FLAGS": side["xla_flags"], **memory}
    return worker_protocol.Worker(side["name"], [sys.executable, os.path.abspath(__file__), "--worker"], env, log_path)


def timm_spec(model: str, batch_size: int) -> dict:
    """The timm worker's setup arguments: timm's model and the same recipe extras as our config."""
    from tokenlearner_jax import models

    from_config = benchmark_config(MODELS[model][1], batch_size)[0]  # imported in the driver: config only
    drop_path_rate = models.build(from_config.model).drop_path_rate  # the variant's when the config says -1
    name, kwargs = MODELS[model][2]
    optimizer = from_config.optimizer
    if optimizer.name == "sgd":
        opt = {"name": "momentum", "lr": optimizer.learning_rate, "weight_decay": optimizer.weight_decay,
               "kwargs": {"momentum": optimizer.momentum}}
    else:
        opt = {"name": optimizer.name, "lr": optimizer.learning_rate, "weight_decay": optimizer.weight_decay,
               "kwargs": {"betas": [optimizer.b1, optimizer.b2], "eps": optimizer.eps}}
    return dict(model=name, model_kwargs=kwargs, input_shape=[batch_size, 3, 224, 224],
                num_classes=from_config.model.num_classes, drop_path_rate=drop_path_rate,
                mixup=dict(from_config.mixup), label_smoothing=from_config.label_smoothing, loss=from_config.loss,
                optimizer=opt, clip=optimizer.grad_clip_norm, ema_decay=from_config.ema.decay)


def interleaved(workers: list, cmd: str, rounds: int, steps: int, warm_steps: int = 0) -> dict:
    """{worker name: {'wall': step times, 'cpu': ...}} from `rounds` rounds of `steps` steps, A B, B A, A B, ...,
    each side's timed steps of a round preceded by `warm_steps` untimed ones. Those are there because the
    first step after the other side ran is not one a training loop takes: on a virtual machine whose host
    takes back the memory the guest frees, it faults back in memory freed seconds before (up to 15 s of
    system time for MaxViT-T's step; experiments/results/keep_freed_heap_trainer.md)."""
    times = {w.name: {} for w in workers}
    for r in range(rounds):
        for w in (workers if r % 2 == 0 else workers[::-1]):
            if warm_steps:
                w.call(cmd, count=warm_steps)
            for clock, values in w.call(cmd, count=steps).items():
                times[w.name].setdefault(clock, []).extend(values)
    return times


def measure_model(model: str, sides: list, args, timm_python: str) -> dict:
    log_path = os.path.join(args.log_dir, f"{model}.log")
    workers, result = [], {"model": model, "load_before": os.getloadavg()}
    try:
        for side in sides:
            if side["kind"] == "timm" and MODELS[model][2] is None:
                continue
            worker = start_worker(side, timm_python, log_path)
            workers.append(worker)
            if side["kind"] == "timm":
                setup = worker.call("setup", **timm_spec(model, args.batch_size))
                setup["flops"] = worker.call("flops")
            else:
                setup = worker.call("setup", model=model, batch_size=args.batch_size,
                                    **({"config_overrides": side["config"]} if "config" in side else {}))
            setup.update(worker.call("warmup"))
            result[side["name"]] = setup
            print(f"  {model} / {side['name']}: {json.dumps(setup)}", flush=True)
        for cmd in ("train", "infer"):
            for name, times in interleaved(workers, cmd, args.rounds, args.steps, args.warm_steps).items():
                result[name][f"{cmd}_times"] = times
        for worker in workers:
            result[worker.name]["peak_rss_bytes"] = worker.call("peak_rss")
            if args.profile:
                result[worker.name]["profile"] = worker.call("profile", steps=args.profile)
    finally:
        for worker in workers:
            worker.close()
    result["load_after"] = os.getloadavg()
    return result


def measure_matmul_peak(sides: list, timm_python: str, log_dir: str) -> dict:
    """Best float32 matmul GFLOP/s of each framework (median of its calls' medians), interleaved."""
    workers = [start_worker(s, timm_python, os.path.join(log_dir, "matmul.log")) for s in sides[:2]]
    try:
        peaks = {w.name: [] for w in workers}
        for r in range(3):
            for w in (workers if r % 2 == 0 else workers[::-1]):
                peaks[w.name].append(w.call("matmul_peak")["median"])
    finally:
        for w in workers:
            w.close()
    return {name: float(np.median(values)) for name, values in peaks.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {list(MODELS)}")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (A B, B A, ...)")
    parser.add_argument("--warm_steps", type=int, default=1,
                        help="untimed steps of each side before its timed ones in every round")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per side and round")
    parser.add_argument("--sides", default="ours,timm",
                        help="'timm' and sides of ours: NAME or NAME:KEY=VALUE;... with keys " + ", ".join(SIDE_OPTIONS))
    parser.add_argument("--profile", type=int, default=0, help="also profile this many train steps per side")
    parser.add_argument("--timm_venv", default=os.path.expanduser("~/.cache/tokenlearner_jax/timm-venv"))
    parser.add_argument("--timm_packages", default=TIMM_PACKAGES)
    parser.add_argument("--torch_index_url", default="",
                        help="e.g. https://download.pytorch.org/whl/cpu for CPU-only torch wheels")
    parser.add_argument("--output", default=os.path.join(RESULTS, "benchmark_cpu"),
                        help="writes OUTPUT.json, and with the default sides OUTPUT.md and OUTPUT.png")
    parser.add_argument("--log_dir", default="/tmp/tokenlearner_benchmark_logs")
    args = parser.parse_args()
    if args.worker:
        return worker_protocol.serve(JaxSide().handlers())

    sides = [{"name": "timm", "kind": "timm"} if s == "timm" else parse_side(s, ROOT) for s in args.sides.split(",")]
    models = args.models.split(",")
    for model in models:
        if model not in MODELS:
            raise SystemExit(f"--models: unknown model {model!r}; expected some of {list(MODELS)}")
    os.makedirs(args.log_dir, exist_ok=True)
    timm_python = ensure_timm_venv(args.timm_venv, args.timm_packages, args.torch_index_url) \
        if any(s["kind"] == "timm" for s in sides) else None
    choice = os.environ.get("TOKENLEARNER_ALLOCATOR")
    run = {"command": (f"TOKENLEARNER_ALLOCATOR={choice} " if choice else "") + "python "
                      + " ".join([os.path.relpath(__file__, ROOT)] + sys.argv[1:]),
           "machine": machine_description(), "sides": sides, "batch_size": args.batch_size,
           "rounds": args.rounds, "steps": args.steps, "warm_steps": args.warm_steps,
           "started": time.strftime("%Y-%m-%d %H:%M:%S"),
           "uptime_before": uptime()}
    run["matmul_gflops"] = measure_matmul_peak(sides, timm_python, args.log_dir)
    print(f"matmul peak GFLOP/s: {run['matmul_gflops']}", flush=True)
    run["models"] = []
    for model in models:
        print(f"{model} ({uptime()})", flush=True)
        run["models"].append(measure_model(model, sides, args, timm_python))
        with open(args.output + ".json", "w", encoding="utf-8") as f:
            json.dump(run, f, indent=1)
    run["uptime_after"] = uptime()
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump(run, f, indent=1)
    import benchmark_report  # experiments/benchmark_report.py

    print(benchmark_report.write(run, args.output))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine_description() -> str:
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.machine()}"


if __name__ == "__main__":
    main()
