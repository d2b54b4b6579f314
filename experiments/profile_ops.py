"""Where a compiled JAX step spends its time on the CPU: a jax.profiler trace of a few steps, each
executed HLO instruction (thunk) matched with the optimised HLO text for its opcode, shape and the JAX
primitive it came from, and whether that was the forward pass ('jvp'), the backward pass ('transpose')
or neither (loss, optimizer, EMA).
"""

import collections
import glob
import re
import tempfile

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"(?:^|[\s)}\]])([a-z][a-z0-9\-]*)\(")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_KIND = re.compile(r"kind=(k\w+)")


def parse_hlo(hlo_text: str) -> dict:
    """{instruction name: dict(opcode, kind, shape, op_name, ynn)} of an optimised HLO module's text; ynn:
    whether it is a fusion XLA hands to YNNPACK."""
    instructions = {}
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if not match:
            continue
        name, rest = match.groups()
        opcode = _OPCODE.search(rest)
        op_name = _OP_NAME.search(rest)
        kind = _KIND.search(rest)
        instructions[name] = dict(opcode=opcode.group(1) if opcode else "?", kind=kind.group(1) if kind else "",
                                  shape=rest.split(" ", 1)[0], op_name=op_name.group(1) if op_name else "",
                                  ynn="__ynn_fusion" in rest)
    return instructions


def pass_of(op_name: str) -> str:
    if "transpose(" in op_name:
        return "backward"
    if "jvp(" in op_name:
        return "forward"
    return "other"


def primitive_of(op_name: str) -> str:
    """The JAX primitive at the end of a metadata op_name, e.g. '.../dot_general' -> 'dot_general'."""
    return re.sub(r"\[.*$", "", op_name.rsplit("/", 1)[-1]) if op_name else "?"


def scope_of(op_name: str) -> str:
    """The module that made an op, layer numbers folded: '.../encoderblock_3/MlpBlock_3/Dense_0/dot_general'
    -> 'MlpBlock_3/Dense_0'."""
    parts = [p for p in op_name.split("/")[1:-1] if not p.startswith(("jvp(", "transpose(", "checkpoint"))]
    return "/".join(re.sub(r"_\d+$", "_*", p) if re.search(r"(block|stage|level|layer)_\d+$", p) else p
                    for p in parts[-2:]) or "-"


def thunk_events(trace_dir: str) -> list:
    """[(HLO instruction name, start ns, end ns)] of the thunks recorded in a jax.profiler trace, timed
    from the start of tracing."""
    import jax

    path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
    events = []
    for plane in jax.profiler.ProfileData.from_file(path).planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if "hlo_op" in stats:
                    events.append((stats["hlo_op"], event.start_ns, event.end_ns))
    return events


def op_times(trace_dir: str) -> collections.Counter:
    """{HLO instruction name: total seconds} of the thunks recorded in a jax.profiler trace."""
    totals = collections.Counter()
    for name, start, end in thunk_events(trace_dir):
        totals[name] += (end - start) / 1e9
    return totals


def profile_jax_step(run_once, hlo_text: str, steps: int, rows: int) -> dict:
    """Per-op seconds per step of `steps` calls of `run_once` (a compiled step whose HLO is `hlo_text`):
    the `rows` slowest instructions, and totals by pass and primitive."""
    import jax
    import time

    instructions = parse_hlo(hlo_text)
    with tempfile.TemporaryDirectory() as trace_dir:
        start = time.perf_counter()
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                run_once()
        wall = (time.perf_counter() - start) / steps
        totals = op_times(trace_dir)
    by_group = collections.Counter()
    ops = []
    for name, seconds in totals.most_common():
        info = instructions.get(name, dict(opcode="?", kind="", shape="?", op_name=""))
        group = (pass_of(info["op_name"]), f"{scope_of(info['op_name'])}: {primitive_of(info['op_name'])}")
        by_group[group] += seconds / steps
        ops.append(dict(name=name, self_s=seconds / steps, opcode=info["opcode"], kind=info["kind"],
                        shape=info["shape"], pass_=group[0], primitive=group[1]))
    return {"wall_s": wall, "total_s": sum(totals.values()) / steps, "ops": ops[:rows],
            "groups": [dict(pass_=p, primitive=q, self_s=s) for (p, q), s in by_group.most_common(rows)]}
