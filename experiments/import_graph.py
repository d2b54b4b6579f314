"""The package's import graph between its parts, and the check that imports run one way.

  python experiments/import_graph.py [--output=experiments/results/import_graph.md]

Reads every module of tokenlearner_jax with `ast` (imports inside functions included; nothing is
imported) and groups modules into parts: layers, models, tasks, train (the loop), data, evaluate,
weights, recipes (what config files share) and the entry points (the package's top-level modules,
each run as `python -m tokenlearner_jax.X`). The allowed direction is

    layers <- models <- tasks <- train <- entry points

with data, evaluate and weights beside them: data imports nothing of ours; evaluate may import data
(never train or tasks); weights may import layers and models; tasks may import data, evaluate and
weights; recipes may import data, evaluate, models and tasks; only entry points import entry points.
Exits 1 and lists the edges that break this.
"""

import argparse
import ast
import collections
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "tokenlearner_jax"
ALLOWED = {
    "layers": {"layers"},
    "models": {"models", "layers"},
    "data": {"data"},
    "evaluate": {"evaluate", "data"},
    "weights": {"weights", "layers", "models"},
    "tasks": {"tasks", "models", "layers", "data", "evaluate", "weights"},
    "train": {"train", "tasks", "models", "layers", "data", "evaluate", "weights"},
    "recipes": {"recipes", "data", "evaluate", "models", "tasks"},
}
ORDER = ("layers", "models", "data", "evaluate", "weights", "tasks", "train", "recipes", "entry points")


def part(module: str) -> str:
    """'tokenlearner_jax.models.vit' -> 'models'; a top-level module is an entry point."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 2 or (len(pieces) == 2 and pieces[1] in ALLOWED) else "entry points"


def modules():
    for directory, _, files in os.walk(os.path.join(ROOT, PACKAGE)):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield module.removesuffix(".__init__"), path


def imports(path: str, module: str):
    """Modules of the package that `path` imports (absolute, or relative resolved against `module`)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[:-node.level] if not path.endswith("__init__.py") else \
                    module.split(".")[:len(module.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                yield name


def graph():
    """{(from part, to part): [example 'a -> b' edges]} over every import of the package."""
    known = dict(modules())
    edges = collections.defaultdict(list)
    for module, path in known.items():
        for target in imports(path, module):
            while target not in known and "." in target:  # 'package.module.Name' -> 'package.module'
                target = target.rsplit(".", 1)[0]
            if target == PACKAGE or target == module:
                continue
            edges[(part(module), part(target))].append(f"{module} -> {target}")
    return edges


def violations(edges):
    return {edge: examples for edge, examples in edges.items()
            if edge[0] != "entry points" and edge[1] not in ALLOWED[edge[0]]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    edges, bad = graph(), None
    bad = violations(edges)
    lines = ["| imports \\ imported | " + " | ".join(ORDER) + " |", "|---" * (len(ORDER) + 1) + "|"]
    for source in ORDER:
        cells = [str(len(edges.get((source, target), []))) if (source, target) in edges else "" for target in ORDER]
        lines.append(f"| **{source}** | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    text += "\n\nCells count module-level import edges (functions' imports included) from the row's part to the " \
            "column's. " + ("Every edge runs the allowed way." if not bad else "Edges against the direction:\n" +
                            "\n".join(f"- {e}" for examples in bad.values() for e in examples))
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("# Import graph of tokenlearner_jax\n\nCommand: `python experiments/import_graph.py "
                    f"--output={args.output}`\n\n{__doc__.split(chr(10) + chr(10), 2)[2].strip()}\n\n{text}\n")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
