"""The timm side of experiments/benchmark.py, run in timm's own virtual environment (never a dependency
of tokenlearner_jax): one model, trained and evaluated on request over experiments/worker_protocol.py.

The train step mirrors ours: timm's Mixup / CutMix (with label smoothing) -> forward in train mode
(drop path) -> loss -> backward -> global-norm clipping -> timm's optimizer (AdamW or SGD, no weight
decay on biases and norms) -> EMA of the weights (timm's ModelEmaV3).
"""

import torch
import timm
import timm.data
import timm.loss
import timm.optim
import timm.utils

import worker_protocol

_state = {}


def setup(*, model: str, model_kwargs: dict, input_shape: list, num_classes: int, drop_path_rate: float,
          mixup: dict, label_smoothing: float, loss: str, optimizer: dict, clip: float, ema_decay: float,
          seed: int = 0, channels_last: bool = False, compile: bool = False, amp: bool = False,
          device: str = "cpu"):
    """Builds the model, optimizer and a fixed batch; returns the model's build time and size."""
    torch.manual_seed(seed)
    watch = worker_protocol.Stopwatch()
    net = timm.create_model(model, pretrained=False, num_classes=num_classes, drop_path_rate=drop_path_rate,
                            **model_kwargs).to(device)
    init_s, init_cpu_s = watch.read()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=memory_format)
    images = torch.randn(*input_shape, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, num_classes, (input_shape[0],), device=device)
    mixing = timm.data.Mixup(num_classes=num_classes, label_smoothing=label_smoothing, **mixup) \
        if mixup["mixup_alpha"] > 0 or mixup["cutmix_alpha"] > 0 else None
    criterion = torch.nn.BCEWithLogitsLoss() if loss == "sigmoid_xent" else timm.loss.SoftTargetCrossEntropy()
    opt = timm.optim.create_optimizer_v2(net, optimizer["name"], lr=optimizer["lr"],
                                         weight_decay=optimizer["weight_decay"], **optimizer.get("kwargs", {}))
    ema = timm.utils.ModelEmaV3(net, decay=ema_decay) if ema_decay > 0 else None
    forward = torch.compile(net) if compile else net
    autocast = lambda: torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=amp)

    def train_step():
        net.train()
        x, y = images, labels
        if mixing is not None:
            x, y = mixing(x.clone(), y)
        else:
            y = timm.data.mixup.one_hot(y, num_classes, on_value=1.0 - label_smoothing + label_smoothing / num_classes,
                                        off_value=label_smoothing / num_classes)
        with autocast():
            logits = forward(x)
        value = criterion(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        value.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        if ema is not None:
            ema.update(net)
        synchronize()

    def infer_step():
        net.eval()
        with torch.inference_mode(), autocast():
            forward(images)
        synchronize()

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    _state.update(net=net, train_step=train_step, infer_step=infer_step, images=images, device=device)
    return {"init_s": init_s, "init_cpu_s": init_cpu_s, "params": sum(p.numel() for p in net.parameters()),
            "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
            "allocator": worker_protocol.allocator_environment()}


def warmup():
    """Seconds of the first train step and the first inference (torch.compile compiles in them)."""
    first_train = worker_protocol.timed(_state["train_step"], 1)["wall"][0]
    first_infer = worker_protocol.timed(_state["infer_step"], 1)["wall"][0]
    return {"first_train_s": first_train, "first_infer_s": first_infer}


def train(count: int):
    return worker_protocol.timed(_state["train_step"], count)


def infer(count: int):
    return worker_protocol.timed(_state["infer_step"], count)


def flops():
    """torch's FLOP count (matmuls and convolutions only) of one train step and one forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = {}
    for name, step in (("train", _state["train_step"]), ("infer", _state["infer_step"])):
        with FlopCounterMode(display=False) as counter:
            step()
        counts[name] = counter.get_total_flops()
    return counts


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: str = "float32", device: str = "cpu"):
    """GFLOP/s of a `size x size` matmul in `dtype`: median and best of `repeats`."""
    a, b = (torch.randn(size, size, device=device, dtype=getattr(torch, dtype)) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b
    sync()
    times = worker_protocol.timed(lambda: (a @ b, sync()), repeats)["wall"]
    flop = 2 * size ** 3
    return {"median": flop / sorted(times)[len(times) // 2] / 1e9, "best": flop / min(times) / 1e9}


def profile(steps: int = 2, rows: int = 25):
    """torch.profiler's table of the ops with the most self CPU time over `steps` train steps."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            _state["train_step"]()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    return {"total_s": total / 1e6 / steps,
            "ops": [{"name": e.key, "self_s": e.self_cpu_time_total / 1e6 / steps, "calls": e.count // steps}
                    for e in top]}


def device_peak_memory():
    """Peak bytes torch allocated on the GPU (None on CPU)."""
    return torch.cuda.max_memory_allocated() if _state["device"] == "cuda" else None


def peak_rss():
    return worker_protocol.peak_rss_bytes()


if __name__ == "__main__":
    worker_protocol.serve(dict(setup=setup, warmup=warmup, train=train, infer=infer, flops=flops,
                               matmul_peak=matmul_peak, profile=profile, peak_rss=peak_rss,
                               device_peak_memory=device_peak_memory))
