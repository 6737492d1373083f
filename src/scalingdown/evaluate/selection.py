"""`eval.student_mode: select`: a student's inference mode chosen on the run's dev slice, never on test.

For one trained replicate, every mode the student learnt and the vote over them are evaluated on
`data/dev.jsonl` (train problems that `data.dev_size` held out of teaching and training), into
`eval/<name>/[seed-<s>/]dev/` (predictions and metrics, resumable like any evaluation). The rule
(`student_modes.choose`): the highest flexible accuracy on the dev slice; ties go to the cheaper mode
(the answer task, then the rationale tasks in training order, then the vote). The test set is then
answered in the chosen mode alone (all of them only when the vote is chosen), as a deployed student
would be; the selection record keeps each mode's dev accuracy.

The choice is made per replicate, so the accuracy pooled over seeds is that of the whole procedure
(train, then choose on dev), whatever each seed chose. A quantised rung reuses the choice of its
unquantised weights: the rung measures what quantisation costs the deployed mode. A student with a
single mode needs no dev evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from scalingdown.artifacts import read_json, write_json
from scalingdown.config import EvalConfig
from scalingdown.data.schema import Problem
from scalingdown.evaluate import student_modes

DEV_DIR = "dev"  # eval/<name>/[seed-<s>/]dev/: the dev-slice evaluation of one replicate
RULE = (
    "highest flexible accuracy on the dev slice; ties to the cheaper mode "
    "(answer task, then rationale tasks in training order, then the vote)"
)


def select_mode(
    dev: Sequence[Problem],
    *,
    name: str,
    model_path: str,
    settings: EvalConfig,
    out_dir: Path,
    seed: int,
    key: str,
    progress: bool = True,
) -> dict:
    """The selection record of the student at `model_path`: `chosen` mode, the `rule`, `dev_n`, each
    candidate's `dev_accuracy` and the tie-break `order`. The dev evaluation in `out_dir` is reused
    while its `spec_digest` is `key` (weights, settings and dev slice)."""
    from scalingdown.evaluate.stage import evaluate_model, student_template

    modes = student_modes.student_modes(student_template(model_path))
    order = student_modes.selection_order(list(modes))
    if len(order) == 1:
        only = {"chosen": order[0], "rule": "the student's only mode", "dev_n": 0, "dev_accuracy": {}}
        return {**only, "order": order}
    metrics_path = out_dir / "metrics.json"
    if metrics_path.is_file():
        previous = read_json(metrics_path)
        if isinstance(previous, dict) and previous.get("spec_digest") == key and "selection" in previous:
            return previous["selection"]
    metrics = evaluate_model(
        dev,
        name=f"{name} (dev)",
        model_path=model_path,
        settings=settings.model_copy(update={"limit": None}),
        out_dir=out_dir,
        prompt_format="student",
        seed=seed,
        progress=progress,
        mode_plan=student_modes.ModePlan(student_modes.VOTE, modes),
    )
    dev_accuracy = {mode: figures["accuracy"]["accuracy"] for mode, figures in metrics["modes"].items()}
    selection = {
        "chosen": student_modes.choose(dev_accuracy, order),
        "rule": RULE,
        "dev_n": metrics["n"],
        "dev_accuracy": dev_accuracy,
        "order": order,
    }
    write_json(metrics_path, {**metrics, "selection": selection, "spec_digest": key})
    return selection
