"""What a TTS training run reports: ``loss.png``, ``curve.csv`` and the training summary
(steps trained against steps configured, and whether a wall-clock cap cut the run)."""

from __future__ import annotations

from pathlib import Path

def plot_losses(history: dict, path: Path, kind: str) -> None:
    """``loss.png``: cross-entropy and next-code accuracy (train and valid) against steps; for the
    AR a third panel with the alignment probe (``dmtts.tts.align_probe``): the reversed- and
    shuffled-text gaps and the best head's diagonality, so the step where reading emerges shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dmtts.utils import atomic_path

    n_panels = 3 if kind == "ar" else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 3.8))
    for ax, (train_key, valid_key, label) in zip(axes, (("train", "valid", "cross-entropy"),
                                                          ("train_acc", "valid_acc", "accuracy"))):
        if history.get(train_key):
            s, v = zip(*history[train_key])
            ax.plot(s, v, label="train")
        if history.get(valid_key):
            s, v = zip(*history[valid_key])
            ax.plot(s, v, "o-", label="valid")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(label)
        ax.set_title(f"DM-Codec-TTS {kind.upper()} {label}")
        ax.legend()
        ax.grid(alpha=0.3)
    if kind == "ar":
        ax = axes[2]
        for key, style, label in (("gap_reversed", "o-", "gap, reversed text"),
                                  ("gap_shuffled", "s--", "gap, shuffled text")):
            if history.get(key):
                s, v = zip(*history[key])
                ax.plot(s, v, style, label=label)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("CE(wrong order) - CE(text) [nats/frame]")
        ax.set_title("does the AR read? (probe)")
        ax.grid(alpha=0.3)
        ax2 = ax.twinx()
        if history.get("diag_best"):
            s, v = zip(*history["diag_best"])
            ax2.plot(s, v, "^-", color="tab:red", label="best head diagonality")
        if history.get("diag_chance"):  # what uniform attention scores on the probe texts
            s, v = zip(*history["diag_chance"])
            ax2.plot(s, v, ":", color="tab:red", label="diagonality of uniform attention")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("diagonality (best head)")
        lines = ax.get_legend_handles_labels()
        lines2 = ax2.get_legend_handles_labels()
        if lines[0] or lines2[0]:
            ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


CURVE_COLUMNS = {  # curve.csv column -> history key (empty cell where not measured)
    "minutes": "minutes", "train_loss": "train", "train_acc": "train_acc", "valid_loss": "valid",
    "valid_acc": "valid_acc", "gap_reversed": "gap_reversed", "gap_shuffled": "gap_shuffled",
    "diag_best": "diag_best",
}


def write_curve_csv(history: dict, path: Path) -> None:
    """``curve.csv``: step, training minutes, train loss/accuracy, and where run the valid
    loss/accuracy and the AR's alignment probe (``gap_reversed``, ``gap_shuffled``: CE with the
    phonemes reversed / shuffled minus CE with the right text; ``diag_best``: the best head's
    diagonality; see ``dmtts.tts.align_probe``). The NAR leaves the probe cells empty."""
    from dmtts.utils import atomic_write_text

    cols = {col: dict(history.get(key, [])) for col, key in CURVE_COLUMNS.items()}
    steps = sorted(set().union(*(cols[c] for c in CURVE_COLUMNS if c != "minutes")))
    lines = [",".join(["step", *CURVE_COLUMNS])]
    for st in steps:
        cells = [cols[c].get(st) for c in CURVE_COLUMNS]
        lines.append(",".join([str(st)] + ["" if c is None else f"{c:.5g}" for c in cells]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def training_summary(state: dict, tcfg) -> dict:
    """What the run did, for ``train_summary.json`` and the export: steps trained against steps
    configured, minutes, and whether the wall-clock cap (``max_minutes``) cut it short."""
    return {
        "steps": int(state["step"]),
        "max_steps": int(tcfg.max_steps),
        "epochs": int(state["epoch"]),
        "minutes": round(float(state.get("elapsed", 0.0)) / 60, 2),
        "max_minutes": float(tcfg.max_minutes),
        # the flag, or (checkpoints written before it existed) the clock: at the cap, short of max_steps
        "capped": bool(tcfg.max_steps) and state["step"] < tcfg.max_steps and (
            bool(state.get("capped")) or bool(tcfg.max_minutes and state.get("elapsed", 0.0) / 60 >= tcfg.max_minutes)),
        # steps and minutes above count from these weights, not from scratch
        **({"init_from": str(tcfg.init_from)} if getattr(tcfg, "init_from", "") else {}),
    }
