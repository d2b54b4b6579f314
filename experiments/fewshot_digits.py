"""Few-shot linear evaluation on digits: features of the trained quickstart model against features of a
randomly initialised model of the same shape.

  python experiments/fewshot_digits.py [--workdir=runs/quickstart] [--seeds=5]

Uses the latest checkpoint of --workdir (a run of configs/quickstart.py); if it has none, trains the
quickstart there first (`python main.py --config=configs/quickstart.py --workdir=...`, about 4 minutes
on 2 CPU cores). Both models go through the same evaluator as `main.py --mode=fewshot`: pre-logit
features of the 1,437 training and 360 test digits, k = 1, 5, 10, 25 shots per class, --seeds draws
each, ridge regression with the regulariser chosen by leave-one-out on the shots. Writes
experiments/results/fewshot_digits.md.
"""

import argparse
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import quickstart  # noqa: E402  pylint: disable=wrong-import-position
from tokenlearner_jax import data  # noqa: E402  pylint: disable=wrong-import-position
from tokenlearner_jax.weights import init_from  # noqa: E402
from tokenlearner_jax.train import trainer  # noqa: E402  pylint: disable=wrong-import-position

SHOTS = (1, 5, 10, 25)


def per_seed(metrics: dict, shots: int, seeds: int) -> np.ndarray:
    return np.array([metrics[f"fewshot/digits_{shots}shot_seed{s}"] for s in range(seeds)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "quickstart"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "fewshot_digits.md"))
    args = parser.parse_args()
    if not os.path.isdir(os.path.join(args.workdir, "checkpoints")) or not os.listdir(
            os.path.join(args.workdir, "checkpoints")):
        command = [sys.executable, "main.py", "--config=configs/quickstart.py", f"--workdir={args.workdir}"]
        subprocess.run(command, cwd=ROOT, check=True)

    config = quickstart.get_config()
    config.fewshot.datasets = ("digits",)
    config.fewshot.shots = SHOTS
    config.fewshot.seeds = args.seeds
    info = data.get_info(config.dataset)
    setup = trainer.Setup(config, info, trainer.num_train_steps(config, info))
    evaluator = setup.fewshot_evaluator()

    variables, step = init_from.restore_variables(args.workdir, setup.task.variables(setup.abstract_state))
    start = time.time()
    trained = evaluator.run(variables)
    trained_seconds = time.time() - start
    params = variables.pop("params")
    supervised = setup.evaluate(setup.abstract_state.replace(params=params, model_state=variables))
    untrained = evaluator.run(setup.task.variables(setup.init_state()))

    lines = [f"| shots per class | quickstart features (step {step}) | random-init features |", "|---|---|---|"]
    for k in SHOTS:
        cells = [f"{100 * a.mean():.1f}% ± {100 * a.std():.1f}"
                 for a in (per_seed(trained, k, args.seeds), per_seed(untrained, k, args.seeds))]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + (
        f"\n\nTop-1 on the 360 digits test images, mean ± standard deviation over {args.seeds} draws of the "
        f"shots; "
        f"chance is 10%. The same checkpoint's own head (trained on all 1,437 training digits) gets "
        f"{100 * supervised['eval/accuracy']:.2f}%. Features: the {np.shape(params['head']['kernel'])[0]}-d "
        f"pre-logits (GAP after the final LayerNorm); the random-init model is configs/quickstart.py's at "
        f"seed {config.seed}. One evaluation of the four shot counts took {trained_seconds:.1f} s on "
        f"{os.cpu_count()} CPU cores (feature extraction included). The quickstart's features were learned "
        f"from all labelled training digits of the same ten classes, so this measures how linearly separable "
        f"they made the classes, not transfer to new classes; the random-init column is the floor of the "
        f"architecture.")
    print(text)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("# Few-shot linear evaluation on digits\n\n"
                f"Command: `python experiments/fewshot_digits.py --workdir=W --seeds={args.seeds}` where W "
                "holds a run of `configs/quickstart.py` (trained by the script when W has no checkpoint)\n\n"
                + text + "\n")


if __name__ == "__main__":
    main()
