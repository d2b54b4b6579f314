"""Before / after measurements of the speed and memory levers of issue 17, each in one run.

  python experiments/levers.py --levers=gelu_erf,attention_layout [--models=...] [--rounds=4 --steps=1]

A lever compares two sides of our train step and forward pass, run as in experiments/benchmark.py
(one worker process per side, timed calls alternating A B B A ..., batch 16, 224px, float32; runs since
2026-12-03 18:30 take one untimed step per side before each round's timed ones, --warm_steps): the
source tree of two commits of this repository (exported with `git archive`), or XLA flags. Each run
is written to experiments/results/levers/LEVER.json (LEVER.MODELS.json for a run with --models other
than the lever's own); the table of every lever measured so far, with
the decision rule below applied, to experiments/results/levers.md.

Decision: a speed lever is kept when the median train step is at least 3% faster by both wall and
CPU time on every model measured, the numerics are unchanged (the parity tests) and peak RSS grows by
5% or less on every model (a faster lever that costs more memory is at most an option); a memory lever
when peak RSS drops by 5% or more at no more than 5% of speed; a lever that changes only the
initialisation when init takes 10% less CPU time or more on every model and the train step compiles to
the same program (XLA's FLOP count and buffer sizes equal), since its timings then differ only by noise;
a lever that removes a cost only some models have when it makes one model's train step 10% faster or more
(wall and CPU time) and no model's 3% slower, at no more than 5% more peak RSS on any.
"""

import argparse
import glob
import json
import os
import subprocess
import tempfile
import time

import numpy as np

import benchmark
import benchmark_report
import worker_protocol

RESULTS = os.path.join(benchmark.RESULTS, "levers")
BASE = "56c1ae1"  # main before this work

# name -> what it changes, and the two sides: {'rev': commit} (a source tree), {'xla_flags': ...}, or the
# malloc: {'glibc_tunables', 'ld_preload', 'malloc_conf'} (a side naming none runs under the allocator
# main.py would pick, train/allocator.py; ld_preload BLOCK_CACHE is train/block_cache.c, compiled)
HUGE_PAGES = {"glibc_tunables": "glibc.malloc.hugetlb=1"}
BLOCK_CACHE = "<block cache>"
# The CPU as one or as two jax devices (a side naming neither gets main.py's choice, train/distributed.py)
ONE_DEVICE, TWO_DEVICES = "--xla_force_host_platform_device_count=1", "--xla_force_host_platform_device_count=2"


def _jemalloc(conf: str) -> dict:
    """A side under jemalloc (Debian's libjemalloc2) with MALLOC_CONF=conf."""
    return {"glibc_tunables": "", "ld_preload": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "malloc_conf": conf}


LEVERS = {
    "gelu_erf": dict(
        what="MlpBlock's exact GELU as x/2 (1 + erf(x/sqrt 2)) instead of jax.nn.gelu's erfc form "
             "(layers/attention.py)",
        before={"rev": BASE}, after={"rev": "7829f20"}, models=("vit_s16", "nest_t")),
    "attention_layout": dict(
        what="MultiHeadAttention: query/key/value kernels stacked into one [width, 3, heads, head_dim] "
             "projection at run time, products heads-major [batch, heads, length, head_dim]",
        before={"rev": "7829f20"}, after={"rev": "d83f16e"}, models=("vit_s16", "nest_t", "maxvit_t")),
    "xla_onednn": dict(
        what="XLA_FLAGS=--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT "
             "(oneDNN matrix products instead of the default YNNPACK ones)",
        before={"xla_flags": ""},
        after={"xla_flags": "--xla_cpu_use_onednn=true "
                            "--xla_cpu_experimental_onednn_fusion_type=LIBRARY_FUSION_TYPE_DOT"},
        models=("vit_s16", "maxvit_t")),
    "xla_vector_width_512": dict(
        what="XLA_FLAGS=--xla_cpu_prefer_vector_width=512 (AVX-512 vectors in XLA's own loops; the default is 256)",
        before={"xla_flags": ""}, after={"xla_flags": "--xla_cpu_prefer_vector_width=512"},
        models=("vit_s16", "maxvit_t")),
    "xla_concurrency_scheduler": dict(
        what="XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=true (XLA CPU's scheduler that orders "
             "independent operations so that more of them can run at once on the thread pool)",
        before={"xla_flags": ""}, after={"xla_flags": "--xla_cpu_enable_concurrency_optimized_scheduler=true"},
        models=("vit_s16", "nest_t")),
    "xla_ynn_fusions": dict(
        what="XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,"
             "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION (YNNPACK also for elementwise "
             "operations, reductions and convolutions, not only matrix products)",
        before={"xla_flags": ""},
        after={"xla_flags": "--xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_ELTWISE,"
                            "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"},
        models=("vit_s16", "nest_t")),
    "xla_eigen_dots": dict(
        what="XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type= (no YNNPACK fusions: matrix products through "
             "XLA CPU's own dot emitter instead of YNNPACK's kernels; in isolation a ViT-B/16 MLP's gradient "
             "took 431-440 ms instead of 455-536 ms)",
        before={"xla_flags": ""}, after={"xla_flags": "--xla_cpu_experimental_ynn_fusion_type="},
        models=("vit_b16", "nest_t")),
    "depthwise_shifted": dict(
        what="depthwise convolutions (MaxViT's MBConv) as 9 shifted, per-channel-scaled copies of the input "
             "(layers/depthwise.py) instead of lax's grouped convolution (a profile showed "
             "XLA CPU working on dense [c, 3, 3, c] forms of the depthwise kernel)",
        before={"rev": "f130ab0"}, after={"rev": "ca073da"}, models=("maxvit_t",)),
    "init_llvm_o1": dict(
        what="the state's initialisation compiled at LLVM optimisation level 1 instead of 2 "
             "(trainer.INIT_COMPILER_OPTIONS; the state is bit-identical, tests/test_trainer.py); only init "
             "changes, so the train and inference columns show the noise of the run",
        before={"rev": "43bd16f"}, after={"rev": "2b74b27"},
        models=("vit_ti16", "vit_b16", "poolformer_s12", "nest_t", "maxvit_t")),
    "no_tensorflow_import": dict(
        what="TensorBoard event files written by train/tensorboard_events.py instead of clu's writer, so that "
             "importing the trainer no longer imports TensorFlow (a memory lever: its libraries stay out of "
             "the process)",
        before={"rev": "38f8d1f"}, after={"rev": "43bd16f"}, models=("vit_ti16", "poolformer_s12")),
    "huge_pages": dict(
        what="GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which main.py now sets by re-executing itself "
             "(train/allocator.py, then train/huge_pages.py): glibc's malloc asks for transparent huge pages for the temporary buffer "
             "XLA allocates and frees at every call, so that it is faulted in 2 MiB rather than 4 KiB at a time "
             "(the kernel here gives huge pages only to memory that asks: transparent_hugepage=madvise)",
        before={"glibc_tunables": ""}, after=HUGE_PAGES,
        models=("vit_ti16", "vit_s16", "vit_b16", "poolformer_s12", "nest_t", "maxvit_t")),
    "jemalloc_retain": dict(
        what="LD_PRELOAD=libjemalloc.so.2 with MALLOC_CONF=thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1 "
             "instead of glibc's malloc with huge pages: freed memory stays mapped, so XLA's per-call "
             "temporary buffer is reused without being faulted in and zeroed again",
        before=HUGE_PAGES, after=_jemalloc("thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1"),
        models=("vit_b16", "nest_t")),
    "jemalloc_default_decay": dict(
        what="LD_PRELOAD=libjemalloc.so.2 with MALLOC_CONF=narenas:1,thp:always and jemalloc's default decay "
             "(freed memory goes back to the system after about 10 s unused) instead of glibc's malloc with "
             "huge pages; run with 4 steps in a row per side and round, so that most steps follow a step of "
             "their own side, as in training",
        before=HUGE_PAGES, after=_jemalloc("narenas:1,thp:always"),
        models=("vit_b16", "nest_t")),
    "jemalloc_one_arena": dict(
        what="jemalloc_retain's allocator with narenas:1 added to MALLOC_CONF (one arena for all threads, "
             "so that memory one thread frees can serve another's next allocation)",
        before=_jemalloc("thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1"),
        after=_jemalloc("thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1,narenas:1"),
        models=("vit_b16",)),
    "jemalloc_retain_no_thp": dict(
        what="LD_PRELOAD=libjemalloc.so.2 with MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 (jemalloc_retain "
             "without asking for huge pages) instead of glibc's malloc with huge pages",
        before=HUGE_PAGES, after=_jemalloc("dirty_decay_ms:-1,muzzy_decay_ms:-1"),
        models=("vit_b16",)),
    "jemalloc": dict(
        what="LD_PRELOAD=libjemalloc.so.2 with MALLOC_CONF=narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1 "
             "(one arena, huge pages, freed memory kept) instead of glibc's malloc with huge pages: XLA's "
             "per-call temporary buffer is reused without being faulted in and zeroed again; main.py runs "
             "under it with TOKENLEARNER_ALLOCATOR=jemalloc (train/allocator.py)",
        before=HUGE_PAGES, after=_jemalloc("narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1"),
        models=("vit_ti16", "vit_s16", "vit_b16", "poolformer_s12", "nest_t", "maxvit_t")),
    "conv_kernel_grad_matmuls": dict(
        what="dense convolutions (NesT's aggregation, MaxViT's stem, PoolFormer's stem and downsampling) through "
             "layers/conv.py, whose kernel gradient is one matrix product per kernel tap, instead of XLA's "
             "kernel-gradient convolution (in isolation 11x slower than the forward pass at MaxViT-T's second "
             "stem convolution)",
        before={"rev": "b0b88e2"}, after={"rev": "5fff94a"}, models=("poolformer_s12", "nest_t", "maxvit_t")),
    "conv_kernel_grad_matmuls_nest_maxvit": dict(
        what="conv_kernel_grad_matmuls for NesT's aggregation and MaxViT's 3x3 convolutions only (PoolFormer, which "
             "did not gain, keeps nn.Conv)",
        before={"rev": "b0b88e2"}, after={"rev": "ffae38e"}, models=("nest_t", "maxvit_t")),
    "xla_memory_scheduler": dict(
        what="XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED (XLA CPU's scheduler that "
             "orders operations to keep fewer buffers alive at once; a memory lever), which the trainer now asks "
             "for on CPU (trainer.CPU_STEP_COMPILER_OPTIONS)",
        before={"xla_flags": ""}, after={"xla_flags": "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"},
        models=("vit_s16", "nest_t")),
    "keep_freed_heap": dict(
        what="GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2**62 added to huge pages, and jax "
             "running CPU programs on the calling thread (jax_cpu_enable_async_dispatch off; train/allocator.py "
             "at 5ee6dd7), "
             "so that XLA's per-call temporary buffer is malloc'ed from glibc's main heap, which keeps it after "
             "free: the next call reuses the block already in memory instead of a fresh mmap faulted in again "
             "(on this virtual machine, whose host takes back freed memory, also from the host). Runs without "
             "--warm_steps: the first step of each round came after the other side's and paid for faulting freed "
             "memory back in from the host. Not made the default whatever the rows say: in main.py's own loop, steps "
             "back to back, NesT-T gained 1.06x at 1.07x the peak RSS, and the quickstart's peak RSS was 1.16x "
             "(experiments/results/keep_freed_heap_trainer.md)",
        before={"rev": "a9b80f7", **HUGE_PAGES}, after={"rev": "5ee6dd7"},
        models=("vit_s16", "vit_b16", "poolformer_s12", "nest_t", "maxvit_t")),
    "release_compile_memory": dict(
        what="the memory XLA's compiler frees given back before the first step (a memory lever): the state's "
             "initialisation program dropped once it has run, the train step compiled ahead of the first "
             "step, and glibc's malloc_trim(0) after each compilation (trainer.Setup.init_state and "
             "compile_train_step, train/allocator.release_free_memory); before, every step's temporary buffer "
             "was allocated on top of the compiler's freed memory, which glibc kept in its heaps",
        before={"rev": "2171793"}, after={"rev": "4997260"},
        models=("vit_ti16", "vit_s16", "vit_b16", "poolformer_s12", "nest_t", "maxvit_t")),
    "one_arena_keep_freed": dict(
        what="GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=2**62 "
             "added to huge pages, after release_compile_memory: every thread allocates from glibc's main heap, "
             "which maps no block on its own and is never trimmed, so XLA's per-call temporary buffer, "
             "malloc'ed on jax's dispatch thread, is the block the last call freed, already in memory "
             "(keep_freed_heap without turning off jax's asynchronous dispatch)",
        before=HUGE_PAGES,
        after={"glibc_tunables": "glibc.malloc.hugetlb=1:glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
                                 "glibc.malloc.trim_threshold=4611686018427387904"},
        models=("vit_b16", "nest_t")),
    "gelu_input_only_backward": dict(
        what="GELU (erf and tanh forms) with a custom VJP that keeps only its input for the backward pass and "
             "recomputes the derivative there, behind an optimization barrier (layers/attention.gelu); autodiff "
             "kept the erf / tanh term of every MLP (and of MaxViT's MBConv) alive until the backward pass "
             "(a memory lever). The rule's verdict below is for the lever as measured; kept for the MLPs of every "
             "backbone (peak RSS 6-9% lower on the ViTs and NesT-T, 0.97-1.15x the speed), while MaxViT-T's MBConv, "
             "0.93x here, went back to autodiff (maxvit_mbconv_autodiff_gelu)",
        before={"rev": "5340cdb"}, after={"rev": "cbffa7b"},
        models=("vit_ti16", "vit_s16", "vit_b16", "poolformer_s12", "nest_t", "maxvit_t")),
    "layer_norm_input_only_backward": dict(
        what="LayerNorm with a custom VJP that keeps only its input and the per-position mean and inverse "
             "standard deviation for the backward pass (layers/attention.LayerNorm, nn.LayerNorm's parameters), "
             "after gelu_input_only_backward; and MaxViT's MBConv back on jax.nn.gelu's autodiff. Dropped: XLA's "
             "temporary buffer stayed the same for the ViTs; the LayerNorm went back to nn.LayerNorm (commit f11f2d4)",
        before={"rev": "cbffa7b"}, after={"rev": "3eebf31"}, models=("vit_s16", "vit_b16", "nest_t", "maxvit_t")),
    "maxvit_mbconv_autodiff_gelu": dict(
        what="MaxViT's MBConv on jax.nn.gelu (autodiff) again instead of gelu_input_only_backward's custom VJP "
             "(its MLP keeps the custom VJP); the tree after layer_norm_input_only_backward was reverted",
        before={"rev": "cbffa7b"}, after={"rev": "f11f2d4"}, models=("maxvit_t",)),
    "block_cache": dict(
        what="LD_PRELOAD of train/block_cache.c (TOKENLEARNER_ALLOCATOR=auto since this lever): blocks of 32 MiB "
             "or more are mapped by it and the last one freed is kept for the next request it fits, so XLA's "
             "temporary buffer is the same memory at every call instead of a fresh mapping faulted in and "
             "zeroed again; glibc with huge pages on both sides for everything else",
        before=HUGE_PAGES, after={**HUGE_PAGES, "ld_preload": BLOCK_CACHE}, models=("vit_b16", "nest_t", "maxvit_t")),
    "attention_deferred_normalization": dict(
        what="explicit attention (layers/attention.MultiHeadAttention._explicit) multiplies its output "
             "`[.., query, head_dim]` by the softmax's 1 / sum instead of dividing the weights `[.., query, key]`; "
             "the weights are normalised only when sown (a memory lever). Three runs, the rule's verdict below for "
             "each: peak RSS 8-10% lower on ViT-B/16 and NesT-T and 6-8% on ViT-S/16, inference 1.03-1.21x as fast, "
             "the train step 0.88 / 0.96 / 1.09x on ViT-S/16 (overlapping ranges), 1.02x on ViT-B/16, 1.04 / 0.98x "
             "on NesT-T; kept",
        before={"rev": "a7446e1"}, after={"rev": "7d237a6"}, models=("vit_s16", "vit_b16", "nest_t")),
    "init_small_pages": dict(
        what="Setup.init_state runs the initialisation with transparent huge pages off for the process "
             "(allocator.small_pages, prctl PR_SET_THP_DISABLE): the state, touched once, is faulted in 4 KiB "
             "pages; the train step's temporary buffer still gets huge pages",
        before={"rev": "48be810"}, after={"rev": "abb4790"}, models=("vivit_b16_tl", "vit_b16", "nest_t")),
    "block_cache_several_blocks": dict(
        what="the block cache keeps up to 8 freed blocks instead of one, a request getting the smallest that "
             "fits, while what it maps (in use and kept) stays within the most in use at once and a 64th: "
             "the scratch blocks XLA's kernels malloc inside a step (ViViT's 452 and 38 MiB in turn, NesT-T's "
             "two of 40 MiB, MaxViT-T's 50 MiB) are no longer mapped afresh at every step beside the temporary "
             "buffer; block_cache.c compiled from each side's tree",
        before={"rev": "d829b24", **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        after={"rev": "2acbc31", **HUGE_PAGES, "ld_preload": BLOCK_CACHE}, models=("vivit_b16_tl", "nest_t", "maxvit_t")),
    "batched_random_draws": dict(
        what="the state's initialisation traced once (no jax.eval_shape before the jit) and its random draws "
             "of one shape, whose keys do not depend on one another, made by one vmapped call "
             "(train/state_init.py; the state is bit-identical, tests/test_state_init.py): on CPU each draw's "
             "threefry hash was a loop compiled on its own; only init changes, so the train and inference "
             "columns show the noise of the run",
        before={"rev": "e9aead5", **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        after={"rev": "43be142", **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        models=("vit_ti16", "vivit_b16_tl", "nest_t", "maxvit_t")),
    "two_host_devices": dict(
        what="XLA_FLAGS=--xla_force_host_platform_device_count=2: the CPU seen as two jax devices and the train "
             "step data-parallel over them (the config's mesh, data=-1: half the batch each, the gradients "
             "all-reduced, the state replicated), so that two programs run at once and a product YNNPACK runs "
             "on one thread has the other device's program beside it (experiments/results/idle_cores.md)",
        before={"xla_flags": ONE_DEVICE, **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        after={"xla_flags": TWO_DEVICES, "config": {"shard_optimizer_state": False}, **HUGE_PAGES,
               "ld_preload": BLOCK_CACHE},
        models=("vit_s16", "nest_t")),
    "two_host_devices_fsdp": dict(
        what="two_host_devices with the state sharded instead of replicated: the config's mesh as data=1, fsdp=-1, "
             "so that each of the two CPU devices holds half of every parameter's embed axis and of its optimizer "
             "state, the step gathering the parameters and reduce-scattering the gradients",
        before={"xla_flags": ONE_DEVICE, **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        after={"xla_flags": TWO_DEVICES, "config": {"mesh.data": 1, "mesh.fsdp": -1}, **HUGE_PAGES,
               "ld_preload": BLOCK_CACHE},
        models=("vit_s16", "nest_t")),
    "two_host_devices_sharded_optimizer": dict(
        what="two_host_devices with the optimizer state split over the data axis (config.shard_optimizer_state, "
             "ZeRO stage 1): each of the two CPU devices holds the parameters and half of their optimizer state, "
             "and updates its half of the parameters. Made main.py's default whatever the rows' rule says, "
             "against the issue's targets instead (speed at or above timm's, peak RSS no more than timm's): in "
             "the full benchmark of 2026-12-05 10:33 (experiments/results/benchmark_cpu_two_devices.md) it kept "
             "every family's peak RSS under timm's and took ViT-S/16 from 0.99x to 1.06x timm's speed, ViT-B/16 "
             "from 1.05-1.09x to 0.99x (docs/performance.md)",
        before={"xla_flags": ONE_DEVICE, **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        after={"xla_flags": TWO_DEVICES, **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        models=("vit_s16", "nest_t", "vit_b16")),
    "batched_random_draws_data_parallel": dict(
        what="batched_random_draws on a data-parallel mesh as well (both sides on two CPU devices): the draws "
             "are batched wherever every device holds the whole state (trainer.Setup.batch_draws), not only "
             "on a mesh of one device; only init changes",
        before={"rev": "d60981b", "xla_flags": TWO_DEVICES, **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        after={"rev": "56a74c5", "xla_flags": TWO_DEVICES, **HUGE_PAGES, "ld_preload": BLOCK_CACHE},
        models=("vit_ti16", "vivit_b16_tl", "nest_t", "maxvit_t")),
}


def export_tree(rev: str) -> str:
    """A directory holding this repository's files at `rev` (made once per commit)."""
    path = os.path.join(tempfile.gettempdir(), "tokenlearner_levers", rev)
    if not os.path.isdir(path):
        os.makedirs(path)
        archive = subprocess.run(["git", "-C", benchmark.ROOT, "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", path], input=archive, check=True)
    return path


def side(name: str, spec: dict) -> dict:
    pythonpath = export_tree(spec["rev"]) if "rev" in spec else benchmark.ROOT
    options = {key: spec[key] for key in benchmark.ALLOCATOR_OPTIONS if key in spec}
    if options.get("ld_preload") == BLOCK_CACHE:  # compiled from the side's own tree
        from tokenlearner_jax.train import allocator

        options["ld_preload"] = allocator.block_cache_library(source=os.path.join(
            pythonpath, os.path.relpath(allocator.BLOCK_CACHE_SOURCE, benchmark.ROOT)))
        if not options["ld_preload"]:
            raise SystemExit("lever block_cache: the block cache could not be compiled (it needs glibc and cc)")
    return {"name": name, "kind": "jax", "pythonpath": pythonpath, "xla_flags": spec.get("xla_flags", ""), **options,
            **({"config": spec["config"]} if "config" in spec else {})}


def measure(lever: str, models, args) -> dict:
    spec = LEVERS[lever]
    sides = [side("before", spec["before"]), side("after", spec["after"])]
    run = {"lever": lever, "what": spec["what"], "sides": sides, "batch_size": args.batch_size,
           "rounds": args.rounds, "steps": args.steps, "warm_steps": args.warm_steps,
           "machine": benchmark.machine_description(),
           "command": f"python experiments/levers.py --levers={lever} --models={','.join(models)} "
                      f"--rounds={args.rounds} --steps={args.steps} --warm_steps={args.warm_steps}",
           "started": time.strftime("%Y-%m-%d %H:%M:%S"), "uptime_before": benchmark.uptime(), "models": []}
    # A run on other models than the lever's own gets a file of its own, next to the first run's.
    path = os.path.join(RESULTS, f"{lever}.json" if tuple(models) == tuple(spec["models"])
                        else f"{lever}.{'_'.join(models)}.json")
    for model in models:
        print(f"{lever} / {model} ({benchmark.uptime()})", flush=True)
        try:
            run["models"].append(benchmark.measure_model(model, sides, args, timm_python=None))
        except worker_protocol.WorkerError as error:  # a side that crashes is a result too
            run["models"].append({"model": model, "failed": str(error)})
        with open(path, "w", encoding="utf-8") as f:
            json.dump(run, f, indent=1)
    run["uptime_after"] = benchmark.uptime()
    with open(path, "w", encoding="utf-8") as f:
        json.dump(run, f, indent=1)
    return run


def decision(rows) -> str:
    speed = [(r["train_wall"], r["train_cpu"]) for r in rows]
    memory = [r["rss_after"] / r["rss_before"] for r in rows]
    if all(w >= 1.03 and c >= 1.03 for w, c in speed):
        if max(memory) > 1.05:
            return f"not the default (faster on every model, but peak RSS up to {max(memory):.2f}x)"
        return "kept (faster on every model)"
    no_slower = all(w >= 0.95 and c >= 0.95 for w, c in speed)
    if all(m <= 0.95 for m in memory) and no_slower:
        return "kept (less memory)"
    if all(r["init_after"] <= 0.9 * r["init_before"] and r["same_train_program"] for r in rows):
        return "kept (init 10% or more shorter in CPU time, the same train step)"
    if (any(w >= 1.10 and c >= 1.10 for w, c in speed) and all(w >= 0.97 and c >= 0.97 for w, c in speed)
            and max(memory) <= 1.05):
        return "kept (10% or more faster on some model, no slower on any)"
    return "dropped (no gain beyond 3% on every model)"


def table() -> str:
    lines = ["| lever | model | train s/step before -> after (median, min-max) | train speed after/before: "
             "wall (CPU) | inference after/before: wall (CPU) | compile CPU s before -> after | init CPU s "
             "before -> after | peak RSS GB before -> after | load | decision |", "|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
        if run.get("uptime_after") is None:
            continue  # still running, or stopped
        rows, failed = [], [m for m in run["models"] if "failed" in m]
        for m in failed:
            lines.append(f"| {run['lever']} | {benchmark.MODELS[m['model']][0]} | {m['failed']} | - | - | - | - | - | - | "
                         f"dropped (a side failed on {run['machine']}) |")
        for m in (m for m in run["models"] if "failed" not in m):
            before, after = m["before"], m["after"]
            rows.append(dict(
                model=benchmark.MODELS[m["model"]][0],
                times=f"{_seconds(before['train_times'])} -> {_seconds(after['train_times'])}",
                train_wall=benchmark_report.ratio(after["train_times"], before["train_times"]),
                train_cpu=benchmark_report.ratio(after["train_times"], before["train_times"], "cpu"),
                infer=f"{benchmark_report.ratio(after['infer_times'], before['infer_times']):.2f} "
                      f"({benchmark_report.ratio(after['infer_times'], before['infer_times'], 'cpu'):.2f})",
                compile=f"{before['compile_cpu_s']:.0f} -> {after['compile_cpu_s']:.0f}",
                init=f"{before['init_cpu_s']:.1f} -> {after['init_cpu_s']:.1f}",
                init_before=before["init_cpu_s"], init_after=after["init_cpu_s"],
                same_train_program=all(before[k] == after[k] for k in ("train_flops", "xla_temp_bytes",
                                                                       "xla_argument_bytes")),
                rss_before=before["peak_rss_bytes"], rss_after=after["peak_rss_bytes"],
                load=f"{m['load_before'][0]:.1f} -> {m['load_after'][0]:.1f}"))
        failed_on = ", ".join(benchmark.MODELS[m["model"]][0] for m in failed)
        verdict = decision(rows) if not failed else f"not the default (a side failed on {failed_on})"
        for r in rows:
            lines.append(f"| {run['lever']} | {r['model']} | {r['times']} | {r['train_wall']:.2f} ({r['train_cpu']:.2f}) | "
                         f"{r['infer']} | {r['compile']} | {r['init']} | {r['rss_before'] / 1e9:.1f} -> "
                         f"{r['rss_after'] / 1e9:.1f} | {r['load']} | {verdict} |")
        what = LEVERS.get(run["lever"], run)["what"]  # the registry's description, which may say more by now
        notes.append(f"- **{run['lever']}**: {what}. `{run['command']}`, started {run['started']}; "
                     f"`{run['uptime_before']}` before, `{run['uptime_after']}` after.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes)


def _seconds(times) -> str:
    wall = np.asarray(times["wall"])
    return f"{np.median(wall):.2f} ({wall.min():.2f}-{wall.max():.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levers", default="", help=f"comma-separated, of {list(LEVERS)}; empty: only the table")
    parser.add_argument("--models", default="", help="instead of each lever's own models")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--warm_steps", type=int, default=1,
                        help="untimed steps of each side before its timed ones in every round (benchmark.interleaved)")
    parser.add_argument("--log_dir", default="/tmp/tokenlearner_benchmark_logs")
    args = parser.parse_args()
    args.profile = 0
    os.makedirs(RESULTS, exist_ok=True)
    os.makedirs(args.log_dir, exist_ok=True)
    for lever in filter(None, args.levers.split(",")):
        if lever not in LEVERS:
            raise SystemExit(f"--levers: unknown lever {lever!r}; expected some of {list(LEVERS)}")
        measure(lever, args.models.split(",") if args.models else LEVERS[lever]["models"], args)
    text = table()
    with open(os.path.join(benchmark.RESULTS, "levers.md"), "w", encoding="utf-8") as f:
        f.write("# Speed and memory levers, each measured before / after in one run\n\n"
                f"{__doc__.split(chr(10) + chr(10), 2)[2]}\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
