"""The shape of the repository: imports run one way, nothing points outside it, the README stays short,
and the documentation's links resolve."""

import glob
import os
import re

from helpers import ROOT, run_python


def test_imports_run_one_way():
    proc = run_python(["experiments/import_graph.py"], check=False)
    assert proc.returncode == 0, proc.stdout


def test_no_file_points_outside_the_repository():
    offenders = []
    for pattern in ("tokenlearner_jax/**/*.py", "configs/*.py", "experiments/*.py", "tests/*.py", "docs/*.md",
                    "README.md"):
        for path in glob.glob(os.path.join(ROOT, pattern), recursive=True):
            text = open(path, encoding="utf-8").read()
            if re.search(r"\.\./shared/|shared/reference/", text) and not path.endswith("test_architecture.py"):
                offenders.append(os.path.relpath(path, ROOT))
    assert not offenders


def test_the_readme_is_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert len(f.readlines()) <= 250


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: str) -> set:
    found, in_code = set(), False
    for line in open(path, encoding="utf-8"):
        in_code ^= line.startswith("```")
        if not in_code and line.startswith("#"):
            found.add(_slug(line.lstrip("#")))
    return found


def test_every_relative_link_of_the_docs_resolves():
    pages = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    bad, checked = [], 0
    for page in pages:
        text = re.sub(r"```.*?```", "", open(page, encoding="utf-8").read(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(full) or (anchor and (not full.endswith(".md") or anchor not in _anchors(full))):
                bad.append(f"{os.path.relpath(page, ROOT)}: {target}")
    assert checked and not bad
