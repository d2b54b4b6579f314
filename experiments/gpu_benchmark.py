"""bfloat16 ViT-B/16 training on one NVIDIA GPU: ours against timm with torch.compile + AMP, one run.

  bash experiments/gpu_benchmark.sh        # a fresh GPU machine: installs, compiles, measures (< 10 min)
  python experiments/gpu_benchmark.py --device=cpu --small --timm_python=PY   # the same code, tiny, on CPU

Sides, each in its own worker process (experiments/benchmark.py's), timed calls alternating A B C C B A:
- ours: the trainer's own jitted train step of configs/vit_b16.py's recipe with `model.dtype='bfloat16'`
  (bfloat16 compute, float32 parameters and optimizer state), attention through cuDNN's fused kernel
  (layers/attention.py picks it on a GPU for bfloat16; the compiled step's count of cuDNN attention
  calls is reported), XLA's default flags;
- ours_flags: the same with the XLA GPU flags JAX's GPU performance guide recommends (GPU_FLAGS);
- timm: vit_base_patch16_224 (global average pooling, as ours) with torch.compile and bfloat16
  autocast, the same recipe extras (experiments/benchmark_timm_worker.py).
MFU = model FLOPs per step (torch's count of timm's train step: matrix products and convolutions) /
step time / the GPU's dense bfloat16 peak (PEAK_TFLOPS by device name, or --peak_tflops); the measured
bfloat16 8192^3 matmul rate is reported beside it. Writes experiments/results/benchmark_gpu.{md,json}.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

import benchmark
import benchmark_report
import worker_protocol

GPU_FLAGS = "--xla_gpu_triton_gemm_any=true --xla_gpu_enable_latency_hiding_scheduler=true"
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device_kind: str, override: float) -> float:
    if override > 0:
        return override
    return next((value for name, value in PEAK_TFLOPS.items() if name in device_kind.upper()), float("nan"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="gpu", choices=("gpu", "cpu"))
    parser.add_argument("--small", action="store_true", help="ViT-Ti/16 at 64px, batch 2: a test of the code")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warm_steps", type=int, default=2,
                        help="untimed steps of each side before its timed ones in every round")
    parser.add_argument("--timm_python", default="", help="python of a venv with torch and timm ('': no timm)")
    parser.add_argument("--peak_tflops", type=float, default=0.0, help="dense bf16 peak; 0: by device name")
    parser.add_argument("--output", default=os.path.join(benchmark.RESULTS, "benchmark_gpu"))
    parser.add_argument("--log_dir", default="/tmp/tokenlearner_gpu_benchmark_logs")
    args = parser.parse_args()
    model, size, batch = ("vit_ti16", 64, 2) if args.small else ("vit_b16", 224, args.batch_size)
    steps, rounds, warm_steps = (1, 2, 1) if args.small else (args.steps, args.rounds, args.warm_steps)
    os.makedirs(args.log_dir, exist_ok=True)
    log = os.path.join(args.log_dir, "gpu.log")

    env = {"JAX_PLATFORMS": "cuda" if args.device == "gpu" else "cpu", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.9"}
    argv = [sys.executable, os.path.join(benchmark.HERE, "benchmark.py"), "--worker"]
    path = {"PYTHONPATH": os.pathsep.join([benchmark.ROOT, benchmark.HERE])}
    workers = [worker_protocol.Worker("ours", argv, {**env, **path}, log),
               worker_protocol.Worker("ours_flags", argv, {**env, **path, "XLA_FLAGS": GPU_FLAGS}, log)]
    if args.timm_python:
        workers.append(worker_protocol.Worker(
            "timm", [args.timm_python, os.path.join(benchmark.HERE, "benchmark_timm_worker.py")],
            {"PYTHONPATH": benchmark.HERE}, log))
    run = {"command": "python " + " ".join(["experiments/gpu_benchmark.py"] + sys.argv[1:]),
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "model": model, "image_size": size, "batch_size": batch,
           "rounds": rounds, "steps": steps, "warm_steps": warm_steps, "gpu_flags": GPU_FLAGS, "sides": {}}
    try:
        for worker in workers:
            watch = worker_protocol.Stopwatch()
            if worker.name == "timm":
                spec = benchmark.timm_spec(model, batch)
                spec["model_kwargs"] = dict(spec["model_kwargs"], img_size=size)
                spec.update(input_shape=[batch, 3, size, size], compile=True, amp=True,
                            device="cuda" if args.device == "gpu" else "cpu")
                result = worker.call("setup", **spec)
                result["flops"] = worker.call("flops")
            else:
                result = worker.call("setup", model=model, batch_size=batch, dtype="bfloat16", image_size=size)
            result.update(worker.call("warmup"))
            result["setup_to_first_step_s"] = watch.read()[0]
            run["sides"][worker.name] = result
            print(f"{worker.name}: {json.dumps(result)}", flush=True)
        for cmd in ("train", "infer"):
            for name, times in benchmark.interleaved(workers, cmd, rounds, steps, warm_steps).items():
                run["sides"][name][f"{cmd}_times"] = times
        for worker in workers:
            run["sides"][worker.name]["device_peak_bytes"] = worker.call("device_peak_memory")
            run["sides"][worker.name]["peak_rss_bytes"] = worker.call("peak_rss")
        run["bf16_matmul_gflops"] = workers[0].call("matmul_peak", size=512 if args.small else 8192,
                                                    dtype="bfloat16")["median"]
    finally:
        for worker in workers:
            worker.close()
    with open(args.output + ".json", "w", encoding="utf-8") as f:
        json.dump(run, f, indent=1)
    text = report(run, args.peak_tflops)
    with open(args.output + ".md", "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


def report(run: dict, peak_override: float) -> str:
    sides, batch = run["sides"], run["batch_size"]
    device = sides["ours"]["device"]
    peak = peak_tflops(device, peak_override)
    model_flops = sides["timm"]["flops"]["train"] if "timm" in sides else 3 * sides["ours"]["infer_flops"]
    lines = [f"# {benchmark.MODELS[run['model']][0]} training in bfloat16 on {device}", "",
             f"Command: `{run['command']}` ({run['started']}). Batch {batch}, {run['image_size']}px; "
             f"{run['rounds']} interleaved rounds of {run['steps']} timed steps per side, each after "
             f"{run.get('warm_steps', 0)} untimed ones of its own. Model FLOPs per train step: "
             f"{model_flops / 1e12:.2f} T; peak {peak:.0f} TFLOP/s dense bf16; measured bf16 matmul "
             f"{run['bf16_matmul_gflops'] / 1e3:.0f} TFLOP/s. ours_flags: XLA_FLAGS='{run['gpu_flags']}'.", "",
             "| side | train img/s (min-max) | MFU | inference img/s | vs timm (train / inference) | "
             "compile or first step s | device peak GB | cuDNN attention calls |", "|---|---|---|---|---|---|---|---|"]
    for name, side in sides.items():
        step = float(np.median(side["train_times"]["wall"]))
        versus = "-"
        if "timm" in sides and name != "timm":
            versus = (f"{benchmark_report.ratio(side['train_times'], sides['timm']['train_times']):.2f} / "
                      f"{benchmark_report.ratio(side['infer_times'], sides['timm']['infer_times']):.2f}")
        compile_s = side.get("compile_s", side["first_train_s"])
        memory = side.get("device_peak_bytes")
        lines.append(f"| {name} | {benchmark_report.rate_cell(side['train_times'], batch)} | "
                     f"{model_flops / step / (peak * 1e12):.0%} | {benchmark_report.rate_cell(side['infer_times'], batch)} | "
                     f"{versus} | {compile_s:.1f} | {'-' if memory is None else f'{memory / 1e9:.1f}'} | "
                     f"{side.get('cudnn_attention_calls', '-')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
