"""The report's PNG figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Every plot function takes records, writes `<out_dir>/<name>.png` and returns a `Plot`; when its data
is missing it writes nothing and returns a `Plot` whose `skipped` says why, so the page can too.
Accuracies are in percent with their 95% intervals as error bars; titles state what the plot shows.
matplotlib is imported inside the functions so `scalingdown --help` stays fast.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from scalingdown.report.collect import ModelRecord, RunRecords, TeacherRecord
from scalingdown.report.finder import AblationPair, Finding, format_count, format_p

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
}
COLORS = {"student": "#1f77b4", "reference": "#d62728", "teacher": "#2ca02c", "model": "#7f7f7f"}
DPI = 110


@dataclass
class Plot:
    name: str  # file stem: plots/<name>.png
    title: str
    caption: str = ""
    path: Path | None = None
    skipped: str | None = None  # why it was not drawn


def _new_figure(width: float = 8.0, height: float = 5.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, title: str, path: Path) -> None:
    figure.suptitle(textwrap.fill(title, 80), fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=DPI)


def _percent(record: ModelRecord) -> tuple[float, float, float]:
    """(accuracy, lower error, upper error) in percent."""
    acc = record.accuracy
    return 100 * acc.accuracy, 100 * (acc.accuracy - acc.ci_low), 100 * (acc.ci_high - acc.accuracy)


def _error_points(ax, records: list[ModelRecord], xs: list[float], *, label_points: bool = True) -> None:
    """Accuracy points with 95% CI bars, coloured by kind, one legend entry per kind."""
    seen: set[str] = set()
    for record, x in zip(records, xs, strict=True):
        y, low, high = _percent(record)
        label = None if record.kind in seen else record.kind
        seen.add(record.kind)
        ax.errorbar(
            [x],
            [y],
            yerr=[[low], [high]],
            fmt="o",
            color=COLORS.get(record.kind, "black"),
            capsize=4,
            markersize=7,
            label=label,
        )
        if label_points:
            ax.annotate(record.name, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=9)


def _log_x(ax, values: list[float]) -> bool:
    """A log x axis labelled with plain numbers (30, 300, 3,000) when `values` span more than 10x;
    a linear one otherwise (a log axis within one decade shows hardly a tick). Returns whether log."""
    from matplotlib.ticker import FuncFormatter

    if max(values) / max(min(values), 1e-12) <= 10:
        return False
    ax.set_xscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:,.0f}" if value >= 1 else f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
    return True


def _finding_title(findings: list[Finding]) -> str:
    findings = [f for f in findings if f.scale == "parameters"]
    for f in findings:
        if f.winner and f.comparison:
            smaller = "" if not f.not_smaller else " (not smaller)"
            return (
                f"{f.winner} ({format_count(f.winner_parameters)} params){smaller} beats {f.reference} "
                f"({format_count(f.reference_parameters)}) by {100 * f.comparison.diff:+.1f} points"
            )
    if findings and not findings[0].problem:
        return f"No student beats {findings[0].reference} at p < {findings[0].alpha:g}"
    return "Accuracy vs model size"


def accuracy_vs_parameters(records: RunRecords, findings: list[Finding], out_dir: Path) -> Plot:
    plot = Plot("accuracy_vs_parameters", _finding_title(findings))
    points = [
        m
        for m in records.models
        if m.evaluated and m.parameters and m.kind != "reference" and not m.quantized_from
    ]
    references = [m for m in records.models if m.evaluated and m.kind == "reference"]
    if not points:
        plot.skipped = "no evaluated student or model with a known parameter count"
        return plot
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = _new_figure()
        ax = figure.add_subplot()
        points.sort(key=lambda m: m.parameters)
        _error_points(ax, points, [m.parameters for m in points])
        palette = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b"]
        for i, ref in enumerate(references):
            color = palette[i % len(palette)]
            y, low, high = _percent(ref)
            ax.axhspan(y - low, y + high, color=color, alpha=0.12)
            label = f"{ref.name} ({format_count(ref.parameters)} params), 95% CI band"
            ax.axhline(y, color=color, linestyle="--", linewidth=1.5, label=label)
            if ref.parameters:
                ax.plot([ref.parameters], [y], marker="*", markersize=14, color=color, linestyle="none")
        fitted = next(
            (
                f.crossover
                for f in findings
                if f.crossover and f.crossover.get("status") in ("bracketed", "extrapolated")
            ),
            None,
        )
        if fitted:
            _draw_crossover(ax, fitted)
        winners = [m for m in points if m.name in {f.winner for f in findings if f.scale == "parameters"}]
        for k, m in enumerate(winners):  # ring the finding(s): the smallest student that wins
            ax.plot(
                [m.parameters],
                [100 * m.accuracy.accuracy],
                marker="o",
                markersize=17,
                color="black",
                fillstyle="none",
                linestyle="none",
                label=None if k else "smallest winner",
            )
        ax.set_xscale("log")
        ax.set_xlabel("Parameters (count, log scale)")
        ax.set_ylabel("Test accuracy (%), 95% CI")
        ax.legend(loc="best")
        plot.path = out_dir / f"{plot.name}.png"
        _save(figure, plot.title, plot.path)
    plot.caption = (
        "Each point is a model's accuracy with its 95% interval (pooled over seeds where a student has "
        "several); dashed lines are the references with their 95% bands (a star marks a reference's own "
        "size)." + (" " + crossover_caption(fitted) if fitted else "")
    )
    return plot


def _draw_crossover(ax, fit: dict) -> None:
    """The fitted logistic curve of the ladder, its bootstrap band, and N* with its interval."""
    grid = fit["grid"]
    ax.plot(
        grid, [100 * y for y in fit["curve"]], color="#1f77b4", linewidth=1.2, label="fit over the ladder"
    )
    ax.fill_between(
        grid,
        [100 * y for y in fit["band_low"]],
        [100 * y for y in fit["band_high"]],
        color="#1f77b4",
        alpha=0.12,
    )
    n_star = fit.get("n_star")
    if n_star:
        style = "-" if fit["status"] == "bracketed" else ":"
        ax.axvline(
            n_star,
            color="#2ca02c",
            linestyle=style,
            linewidth=1.4,
            label=f"N* = {format_count(n_star)} ({fit['status']})",
        )
        low, high = fit.get("ci_low"), fit.get("ci_high")
        if low and high and high != float("inf"):
            ax.axvspan(max(low, grid[0]), min(high, grid[-1]), color="#2ca02c", alpha=0.08)


def crossover_caption(fit: dict) -> str:
    n_star, low, high = fit.get("n_star"), fit.get("ci_low"), fit.get("ci_high")
    if not n_star:
        return ""
    label = "extrapolated beyond the ladder, " if fit["status"] == "extrapolated" else ""
    return (
        "The curve is accuracy = floor + (1 - floor) sigmoid(a + b log N) fitted over the ladder's sizes "
        f"and seeds; it reaches the reference at N* = {format_count(n_star)} parameters "
        f"({label}95% bootstrap interval {format_count(low)}-{format_count(high)})."
    )


def pareto_front(records: list[ModelRecord]) -> list[ModelRecord]:
    """Models no other model beats on both latency and accuracy, fastest first."""
    ordered = sorted(records, key=lambda m: (m.seconds_per_problem, -m.accuracy.accuracy))
    front, best = [], -1.0
    for record in ordered:
        if record.accuracy.accuracy > best:
            front.append(record)
            best = record.accuracy.accuracy
    return front


def accuracy_vs_latency(records: RunRecords, out_dir: Path) -> Plot:
    plot = Plot("accuracy_vs_latency", "Accuracy vs latency")
    points = [m for m in records.models if m.evaluated and m.seconds_per_problem]
    if len(points) < 2:
        plot.skipped = "fewer than two models have both accuracy and a measured latency"
        return plot
    front = pareto_front(points)
    plot.title = "Pareto front (faster to more accurate): " + " -> ".join(m.name for m in front)
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = _new_figure()
        ax = figure.add_subplot()
        ms = [1000 * m.seconds_per_problem for m in points]
        _error_points(ax, points, ms)
        front_x = [1000 * m.seconds_per_problem for m in front]
        front_y = [100 * m.accuracy.accuracy for m in front]
        ax.plot(front_x, front_y, drawstyle="steps-post", color="black", alpha=0.6, label="Pareto front")
        log = _log_x(ax, ms)
        ax.set_xlabel(f"Latency per problem (ms{', log scale' if log else ''})")
        ax.set_ylabel("Test accuracy (%), 95% CI")
        ax.legend(loc="best")
        plot.path = out_dir / f"{plot.name}.png"
        _save(figure, plot.title, plot.path)
    plot.caption = (
        "Latency is the median time to answer one problem at batch 1 in a fresh process on the eval "
        "hardware where the speed measurement ran (else each problem's share of its batch's wall time); "
        "models on the black line are not beaten by any other on both speed and accuracy."
    )
    return plot


def cost_vs_accuracy(records: RunRecords, findings: list[Finding], out_dir: Path) -> Plot:
    plot = Plot("cost_vs_accuracy", "Training and teacher cost vs accuracy")
    trained = [m for m in records.models if m.evaluated and m.train_seconds]
    taught = [m for m in records.models if m.evaluated and m.teacher_cost is not None]
    use_tokens = bool(taught) and not any(m.teacher_cost for m in taught)  # local teachers cost 0
    if use_tokens:
        taught = [m for m in taught if m.teacher_tokens]
    if not trained and not taught:
        plot.skipped = "no model has training time or teacher cost recorded"
        return plot
    winner = next((f.winner for f in findings if f.winner), None)
    best = records.model(winner) if winner else max(trained or taught, key=lambda m: m.accuracy.accuracy)
    if best is not None and best.train_seconds:
        accuracy = 100 * best.accuracy.accuracy
        plot.title = f"{best.name} reaches {accuracy:.1f}% after {best.train_seconds:.0f} s of training"
    import matplotlib

    with matplotlib.rc_context(STYLE):
        panels = [p for p in (trained, taught) if p]
        figure = _new_figure(6.0 * len(panels) + 1, 5.0)
        axes = [figure.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
        column = 0
        if trained:
            ax = axes[column]
            seconds = [m.train_seconds for m in trained]
            _error_points(ax, trained, seconds)
            log = _log_x(ax, seconds)
            ax.set_xlabel("Training time (s, log scale)" if log else "Training time (s)")
            ax.set_ylabel("Test accuracy (%), 95% CI")
            ax.set_title("Training")
            ax.legend(loc="best")
            column += 1
        if taught:
            ax = axes[column]
            xs = [m.teacher_tokens if use_tokens else m.teacher_cost for m in taught]
            _error_points(ax, taught, xs)
            ax.set_xlabel("Teacher tokens used (count)" if use_tokens else "Teacher cost (price units)")
            ax.set_ylabel("Test accuracy (%), 95% CI")
            ax.set_title("Teachers' rationales")
            ax.legend(loc="best")
        plot.path = out_dir / f"{plot.name}.png"
        _save(figure, plot.title, plot.path)
    plot.caption = (
        "Training time is the train stage's wall time (for a locally built model, its pretraining); "
        "teacher cost is the price of the rationales a student learned from"
        + (" (all teachers are free here, so their tokens are shown)." if use_tokens else ".")
    )
    return plot


def teacher_statistics(teachers: list[TeacherRecord], out_dir: Path) -> Plot:
    plot = Plot("teacher_statistics", "Teachers' rationales")
    shown = [t for t in teachers if t.kept_share is not None]
    if not shown:
        plot.skipped = "no teacher statistics (teachers/<name>/stats.json) in the run directory"
        return plot
    plot.title = "Rationales kept: " + ", ".join(f"{t.name} {100 * t.kept_share:.0f}%" for t in shown)
    import matplotlib

    with matplotlib.rc_context(STYLE):
        figure = _new_figure(max(6.0, 2.5 * len(shown) + 2), 5.0)
        ax = figure.add_subplot()
        width = 0.26
        for i, t in enumerate(shown):
            kept, verified = 100 * t.kept_share, 100 * (t.verified_share or 0.0)
            bars = [
                (i - width, kept, None, "#1f77b4", "kept share"),
                (i, verified, None, "#2ca02c", "verified share"),
            ]
            if t.free_accuracy is not None:
                acc = t.free_accuracy
                err = [[100 * (acc.accuracy - acc.ci_low)], [100 * (acc.ci_high - acc.accuracy)]]
                bars.append((i + width, 100 * acc.accuracy, err, "#ff7f0e", "free-mode accuracy (95% CI)"))
            for x, height, err, color, label in bars:
                ax.bar(
                    [x],
                    [height],
                    width=width,
                    color=color,
                    yerr=err,
                    capsize=4,
                    label=label if i == 0 else None,
                )
                top = height + (err[1][0] if err else 0.0)  # above the error bar, not through it
                ax.annotate(
                    f"{height:.0f}%",
                    (x, top),
                    textcoords="offset points",
                    xytext=(0, 3),
                    ha="center",
                    fontsize=9,
                )
        ax.set_xticks(range(len(shown)), [t.name for t in shown])
        ax.set_ylabel("Share of rationales / accuracy (%)")
        ax.set_xlabel("Teacher")
        ax.set_ylim(0, 110)
        ax.legend(loc="upper right")
        plot.path = out_dir / f"{plot.name}.png"
        _save(figure, plot.title, plot.path)
    plot.caption = (
        "Kept: rationales the teach stage kept for training; verified: those whose answer, arithmetic and "
        "shown work checked out (or whose program returned the gold answer); free-mode accuracy: the "
        "teacher answering test problems without the gold answer."
    )
    return plot


def teacher_ablation(records: RunRecords, pairs: list[AblationPair], samples: int, out_dir: Path) -> Plot:
    plot = Plot("teacher_ablation", "Multi- vs single-teacher ablation")
    students = [
        m for m in records.models if m.evaluated and m.teachers and m.kind in ("student", "reference")
    ]
    if len({tuple(sorted(m.teachers)) for m in students}) < 2:
        plot.skipped = (
            "every evaluated student learned from the same teachers (no teacher ablation in this study)"
        )
        return plot
    if pairs:
        p = pairs[0]
        plot.title = (
            f"{p.multi} ({len(p.multi_teachers)} teachers) vs {p.single} ({'+'.join(p.single_teachers)}): "
            f"{100 * p.comparison.diff:+.1f} points, "
            f"p {format_p(p.comparison.p, samples, p.comparison.exact)}"
        )
    else:
        plot.title = "Students by teacher set (sizes differ, so this is not a controlled ablation)"
    import matplotlib

    with matplotlib.rc_context(STYLE):
        students.sort(key=lambda m: (m.parameters or 0, -len(m.teachers), m.name))
        figure = _new_figure(max(6.0, 1.6 * len(students) + 2), 5.0)
        ax = figure.add_subplot()
        palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
        sets = list(dict.fromkeys("+".join(sorted(m.teachers)) for m in students))
        labelled: set[str] = set()
        for i, m in enumerate(students):
            y, low, high = _percent(m)
            key = "+".join(sorted(m.teachers))
            label = None if key in labelled else f"teachers: {key}"
            labelled.add(key)
            color = palette[sets.index(key) % len(palette)]
            ax.bar([i], [y], yerr=[[low], [high]], capsize=4, color=color, width=0.6, label=label)
        ax.legend(loc="upper left")
        ax.set_xticks(range(len(students)), [f"{m.name}\n{format_count(m.parameters)}" for m in students])
        ax.set_xlabel("Student (parameters)")
        ax.set_ylabel("Test accuracy (%), 95% CI")
        ax.set_ylim(0, 105)
        plot.path = out_dir / f"{plot.name}.png"
        _save(figure, plot.title, plot.path)
    plot.caption = (
        "Bars are accuracies with 95% intervals, coloured by the teachers a student learned from."
        + (" " + " ".join(p.statement(samples) for p in pairs) if pairs else "")
    )
    return plot


def make_plots(
    records: RunRecords, findings: list[Finding], pairs: list[AblationPair], out_dir: Path, *, samples: int
) -> list[Plot]:
    """Every plot of the report, in page order; skipped ones carry their reason."""
    return [
        accuracy_vs_parameters(records, findings, out_dir),
        accuracy_vs_latency(records, out_dir),
        cost_vs_accuracy(records, findings, out_dir),
        teacher_statistics(records.teachers, out_dir),
        teacher_ablation(records, pairs, samples, out_dir),
    ]
