"""The evaluation report: figures aggregated over seeds (mean ± spread), targets, plots."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import numpy as np

from perennial.evaluation.scores import absence, acc, adaptation_events, bwt, forgetting, recurrence
from perennial.evaluation.strategies import DESCRIPTIONS

TARGETS = {
    "forgetting": "product forgets at most 5% of a recurring pattern's peak AP; naive fine-tuning visibly forgets (over 10%)",
    "mean_ap": "product mean AP within 2 points of cumulative retraining, above sliding-window retraining and river, at a fraction of cumulative's cost",
    "adaptation": "product adapts to a new pattern no slower than naive fine-tuning + 20%",
}


def figures(result: dict[str, Any], scn_meta: dict[str, Any]) -> dict[str, Any]:
    """Per-run figures from one harness result."""
    aps = [p["overall"]["ap"] for p in result["periods"] if p["overall"]["ap"] is not None]
    aucs = [p["overall"]["auc"] for p in result["periods"] if p["overall"]["auc"] is not None]
    cps = [p["card_precision"] for p in result["periods"] if "card_precision" in p]
    Rp = np.array(result["R_pattern"], float) if result["R_pattern"] and result["R_pattern"][0] else None
    Rt = np.array(result["R_period"], float)
    out: dict[str, Any] = {
        "mean_ap": float(np.mean(aps)) if aps else None,
        "mean_auc": float(np.mean(aucs)) if aucs else None,
        "card_precision": float(np.mean(cps)) if cps else None,
        "acc_period": acc(Rt), "bwt_period": bwt(Rt[:, : Rt.shape[1]]),
        "learn_s": result["learn_s"], "labels_per_s": result["labels"] / result["learn_s"] if result["learn_s"] > 0.05 else None,
        "pattern_ap": {}, "pattern_auc": {}, "forgetting": {}, "recurrence": {}, "adaptation": {},
    }
    names = scn_meta["patterns"]
    if Rp is not None:
        out["acc_pattern"] = acc(Rp)
        out["forgetting"] = dict(zip(names, forgetting(Rp)))
    for name in names:
        for key, figure in (("pattern_ap", "ap"), ("pattern_auc", "auc")):
            vals = [p["patterns"][name][figure] for p in result["periods"] if p["patterns"].get(name, {}).get(figure) is not None]
            out[key][name] = float(np.mean(vals)) if vals else None
        curve = result["curves"].get(name, [])
        rec = recurrence([(t, q) for t, _, q in curve], scn_meta["presence"].get(name, []), np.array(scn_meta["edges"]))
        if rec:
            out["recurrence"][name] = rec
        if name in scn_meta["new_patterns"]:
            # counted from the arrival of the pattern's first label
            since = [(n, q) for t, n, q in curve if t >= scn_meta["first_label"][name]]
            found = adaptation_events(since)
            out["adaptation"][name] = None if found is None else found - since[0][0]
    return out


def _agg(values: list[float | None]) -> tuple[float, float] | None:
    v = [x for x in values if x is not None and np.isfinite(x)]
    return (float(np.mean(v)), float(np.std(v))) if v else None


def _fmt(a: tuple[float, float] | None, digits: int = 3, pct: bool = False) -> str:
    if a is None:
        return "n/a"
    if pct:
        return f"{a[0] * 100:.1f}% ± {a[1] * 100:.1f}"
    return f"{a[0]:.{digits}f} ± {a[1]:.{digits}f}"


def summarise(results: list[dict[str, Any]], scn_meta: dict[str, Any]) -> dict[str, Any]:
    """Figures per strategy over seeds: {strategy: {figure: (mean, std)}} plus the targets."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["strategy"], []).append(figures(r, scn_meta))
    agg: dict[str, dict[str, Any]] = {}
    for name, runs in by.items():
        a: dict[str, Any] = {k: _agg([r[k] for r in runs]) for k in ("mean_ap", "mean_auc", "card_precision", "acc_period", "bwt_period", "acc_pattern", "learn_s", "labels_per_s") if k in runs[0]}
        a["pattern_ap"] = {p: _agg([r["pattern_ap"].get(p) for r in runs]) for p in scn_meta["patterns"]}
        a["pattern_auc"] = {p: _agg([r["pattern_auc"].get(p) for r in runs]) for p in scn_meta["patterns"]}
        a["forgetting"] = {p: _agg([r["forgetting"].get(p) for r in runs]) for p in scn_meta["patterns"]}
        a["recurrence_drop"] = {p: _agg([r["recurrence"][p]["drop"] for r in runs if p in r["recurrence"]]) for p in scn_meta["patterns"]}
        a["recurrence_drop"] = {p: v for p, v in a["recurrence_drop"].items() if v is not None}
        a["adaptation"] = {p: _agg([r["adaptation"].get(p) for r in runs]) for p in scn_meta["new_patterns"]}
        a["seeds"] = len(runs)
        agg[name] = a
    return {"strategies": agg, "targets": targets(agg)}


def targets(agg: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    prod, naive = agg.get("product"), agg.get("naive")
    if prod and naive and prod["recurrence_drop"]:
        for p, drop in prod["recurrence_drop"].items():
            nd = naive["recurrence_drop"].get(p)
            out.append({"target": f"recurring pattern {p}: product drop ≤ 5%, naive drop > 10%",
                        "figure": f"product {_fmt(drop, pct=True)}, naive {_fmt(nd, pct=True)}",
                        "met": bool(drop[0] <= 0.05 and nd is not None and nd[0] > 0.10)})
    if prod and all(k in agg for k in ("cumulative", "sliding", "river")):
        p = prod["mean_ap"][0]
        c, s, r = (agg[k]["mean_ap"][0] for k in ("cumulative", "sliding", "river"))
        cost = prod["learn_s"][0] / agg["cumulative"]["learn_s"][0]
        out.append({"target": "mean AP: product ≥ cumulative − 0.02, > sliding, > river; cost below cumulative's",
                    "figure": f"product {p:.3f}, cumulative {c:.3f}, sliding {s:.3f}, river {r:.3f}; product learning time {cost:.2f}× cumulative's",
                    "met": bool(p >= c - 0.02 and p > s and p > r and cost < 1)})
    if prod and naive:
        for pat, a in prod["adaptation"].items():
            b = naive["adaptation"].get(pat)
            if a and b:
                ratio = f"{a[0] / b[0]:.2f}×" if b[0] > 0 else "naive needed none"
                out.append({"target": f"adaptation to new pattern {pat}: product ≤ 1.2 × naive",
                            "figure": f"product {a[0]:,.0f} labeled events, naive {b[0]:,.0f} ({ratio})",
                            "met": bool(a[0] <= 1.2 * b[0])})
    return out


def write(results: list[dict[str, Any]], scn_meta: dict[str, Any], out_md: Path, command: str, notes: str = "") -> dict[str, Any]:
    summary = summarise(results, scn_meta)
    agg = summary["strategies"]
    order = [s for s in ("frozen", "naive", "replay", "ewc", "product", "product_no_drift_reaction", "sliding", "cumulative", "river") if s in agg]
    img_dir = out_md.parent / out_md.stem
    img_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, scn_meta, img_dir, order)
    seeds = sorted({r["seed"] for r in results})
    L = [
        "# Continual-learning quality: `perennial evaluate`", "",
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()}) by `{command}`.", "",
        f"Scenario: {scn_meta['scenario']}. Seeds: {', '.join(map(str, seeds))}; figures are mean ± standard deviation over seeds.", "",
        "Every event is scored by the model that would have been served at that moment (prequential), and no strategy "
        "sees a label before its label time. A hashed tenth of the stream is held out from everything and judged per period "
        "(`R_period`); per-pattern probes judge what each pattern's detection is at every moment (`R_pattern`, adaptation, recurrence).", "",
        "## Strategies", "",
        *[f"- **{s}**: {DESCRIPTIONS[s]}" for s in order], "",
        "## Targets", "",
        "| target | figure | met |", "|---|---|---|",
        *[f"| {t['target']} | {t['figure']} | {'yes' if t['met'] else '**no**'} |" for t in summary["targets"]], "",
        "## Headline figures", "",
        "Mean AP and ROC-AUC: prequential, averaged over periods. Card precision@k: the Fraud Detection Handbook's daily "
        f"top-{scn_meta['card_k']} cards, known cards excluded. ACC: mean final AP over the per-period probes; BWT: backward "
        "transfer over them. Learning time: seconds spent in the strategy's updates; labels/s: labeled events per second of it.", "",
        "| strategy | mean AP | ROC-AUC | card precision@k | ACC | BWT | learning s | labels/s |", "|---|---|---|---|---|---|---|---|",
    ]
    for s in order:
        a = agg[s]
        L.append(f"| {s} | {_fmt(a['mean_ap'])} | {_fmt(a['mean_auc'])} | {_fmt(a['card_precision'])} | {_fmt(a['acc_period'])} | "
                 f"{_fmt(a['bwt_period'])} | {_fmt(a['learn_s'], 1)} | {_fmt(a['labels_per_s'], 0)} |")
    pats = scn_meta["patterns"]
    if pats:
        L += ["", "## Per pattern", "",
              "Prequential AP per pattern (legitimate events plus that pattern's frauds, periods where it occurs); forgetting "
              "on the pattern probes as the best AP at any earlier period end minus the final AP; the recurrence drop as the "
              "share of a recurring pattern's best AP before it vanished that is lost when it comes back; adaptation as the "
              "labeled events, from the arrival of its first label, until a new pattern's probe AP first reaches 90% of its best.", "",
              "| strategy | " + " | ".join(f"AP {p}" for p in pats) + " | " + " | ".join(f"forgetting {p}" for p in pats)
              + "".join(f" | recurrence drop {p}" for p in scn_meta["recurring"]) + "".join(f" | adaptation {p}" for p in scn_meta["new_patterns"]) + " |",
              "|---" * (1 + 2 * len(pats) + len(scn_meta["recurring"]) + len(scn_meta["new_patterns"])) + "|"]
        for s in order:
            a = agg[s]
            cells = [_fmt(a["pattern_ap"].get(p)) for p in pats] + [_fmt(a["forgetting"].get(p)) for p in pats]
            cells += [_fmt(a["recurrence_drop"].get(p), pct=True) for p in scn_meta["recurring"]]
            cells += [_fmt(a["adaptation"].get(p), 0) for p in scn_meta["new_patterns"]]
            L.append(f"| {s} | " + " | ".join(cells) + " |")
    if pats:
        L += ["", "Prequential ROC-AUC per pattern (same events as the AP above):", "",
              "| strategy | " + " | ".join(f"ROC-AUC {p}" for p in pats) + " |", "|---" * (1 + len(pats)) + "|"]
        L += [f"| {s} | " + " | ".join(_fmt(agg[s]["pattern_auc"].get(p)) for p in pats) + " |" for s in order]
    L += ["", "## Per period (prequential AP, mean over seeds)", "",
          "| strategy | " + " | ".join(scn_meta["period_labels"]) + " |", "|---" * (1 + len(scn_meta["period_labels"])) + "|"]
    for s in order:
        rows = [r for r in results if r["strategy"] == s]
        cells = []
        for i in range(len(scn_meta["period_labels"])):
            v = [r["periods"][i]["overall"]["ap"] for r in rows if r["periods"][i]["overall"]["ap"] is not None]
            cells.append(f"{np.mean(v):.3f}" if v else "n/a")
        L.append(f"| {s} | " + " | ".join(cells) + " |")
    for s in ("product", "naive"):
        rows = [r for r in results if r["strategy"] == s]
        if rows and pats:
            R = np.nanmean([np.array(r["R_pattern"], float) for r in rows], axis=0)
            L += ["", f"### R matrix, {s} (AP on pattern j after period i; row 0 is the pretrained version)", "",
                  "| after | " + " | ".join(pats) + " |", "|---" * (1 + len(pats)) + "|"]
            labels = ["start"] + scn_meta["period_labels"]
            L += [f"| {labels[i]} | " + " | ".join(f"{v:.3f}" for v in R[i]) + " |" for i in range(len(R))]
    if "product_no_drift_reaction" in agg:
        a, b = agg["product"], agg["product_no_drift_reaction"]
        drifts = [len(r["summary"].get("drifts", [])) for r in results if r["strategy"] == "product"]
        L += ["", "## Does reacting to drift help?", "",
              f"river's ADWIN found {np.mean(drifts):.1f} drifts per run in the served model's loss. With the reaction "
              f"(rounds shortened and the learning rate raised for a few rounds) the mean AP is {_fmt(a['mean_ap'])}, without it "
              f"{_fmt(b['mean_ap'])}; adaptation "
              + ", ".join(f"{p}: {_fmt(a['adaptation'].get(p), 0)} vs {_fmt(b['adaptation'].get(p), 0)} events" for p in scn_meta["new_patterns"])
              + "; recurrence drop " + ", ".join(f"{p}: {_fmt(a['recurrence_drop'].get(p), pct=True)} vs {_fmt(b['recurrence_drop'].get(p), pct=True)}" for p in scn_meta["recurring"]) + "."]
    prod_runs = [r for r in results if r["strategy"] == "product"]
    if prod_runs:
        keys = ("rounds", "published", "gate_failures", "resets", "rollbacks", "quarantines")
        L += ["", "Product learner, per run: " + ", ".join(f"{k.replace('_', ' ')} {np.mean([r['summary'].get(k, 0) for r in prod_runs]):.1f}" for k in keys) + "."]
    L += ["", "## Plots", ""] + [f"![{t}]({img_dir.name}/{p.name})" for t, p in plots]
    if notes:
        L += ["", notes.strip()]
    out_md.write_text("\n".join(L) + "\n")
    return summary


def _plots(results, scn_meta, img_dir: Path, order) -> list[tuple[str, Path]]:  # noqa: ANN001
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, unit = scn_meta["time_unit"]
    origin = scn_meta["origin"]
    colors = dict(zip(order, plt.get_cmap("tab10").colors))
    out = []
    fig, ax = plt.subplots(figsize=(11, 5))
    for s in order:
        rows = [r for r in results if r["strategy"] == s]
        t = np.array([p[0] for p in rows[0]["daily"]])
        v = np.array([[np.nan if p[1] is None else p[1] for p in r["daily"]] for r in rows], float)
        ax.plot((t - origin) / scale, np.nanmean(v, axis=0), label=s, color=colors[s], lw=2.2 if s.startswith("product") else 1.2)
    _marks(ax, scn_meta, results, origin, scale)
    ax.set(xlabel=unit, ylabel="prequential AP", title="Average precision over time (mean over seeds)")
    ax.legend(ncol=3, fontsize=8)
    out.append(("AP over time", _save(fig, img_dir / "ap_over_time.png")))

    pats = scn_meta["patterns"]
    if pats:
        fig, axes = plt.subplots(1, len(pats), figsize=(5 * len(pats), 4), squeeze=False)
        for ax, p in zip(axes[0], pats):
            for s in order:
                rows = [r for r in results if r["strategy"] == s]
                t = np.array([c[0] for c in rows[0]["curves"][p]])
                v = np.array([[np.nan if c[2] is None else c[2] for c in r["curves"][p]] for r in rows], float)
                ax.plot((t - origin) / scale, np.nanmean(v, axis=0), label=s, color=colors[s], lw=2.2 if s.startswith("product") else 1.0)
            _marks(ax, scn_meta, results, origin, scale)
            ax.set(title=f"probe AP: {p}", xlabel=unit, ylim=(0, 1))
        axes[0][0].legend(fontsize=7)
        out.append(("Per-pattern probe AP over time", _save(fig, img_dir / "patterns_over_time.png")))

        shown = [s for s in ("naive", "product", "cumulative") if s in order]
        fig, axes = plt.subplots(1, len(shown), figsize=(4.5 * len(shown), 4.5), squeeze=False)
        for ax, s in zip(axes[0], shown):
            R = np.nanmean([np.array(r["R_pattern"], float) for r in results if r["strategy"] == s], axis=0)
            im = ax.imshow(R, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set(title=f"R matrix: {s}", xticks=range(len(pats)), yticks=range(len(R)), ylabel="after period (0 = start)")
            ax.set_xticklabels(pats, rotation=20, fontsize=8)
            for i in range(R.shape[0]):
                for j in range(R.shape[1]):
                    ax.text(j, i, f"{R[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w" if R[i, j] < 0.6 else "k")
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
        out.append(("R matrices", _save(fig, img_dir / "r_matrix.png", tight=False)))
    return out


def _marks(ax, scn_meta, results, origin, scale) -> None:  # noqa: ANN001
    for t, what in scn_meta["drift_points"]:
        ax.axvline((t - origin) / scale, color="grey", ls="--", lw=0.8)
        ax.text((t - origin) / scale, 0.02, what, rotation=90, fontsize=7, color="grey", va="bottom", transform=ax.get_xaxis_transform())
    drifts = [t for r in results if r["strategy"] == "product" for t in r["summary"].get("drifts", [])]
    if drifts:
        ax.plot((np.array(drifts) - origin) / scale, np.full(len(drifts), 0.01), "v", color="red", ms=5,
                transform=ax.get_xaxis_transform(), label="ADWIN drift (product)")


def _save(fig, path: Path, tight: bool = True) -> Path:  # noqa: ANN001
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def scenario_meta(scn, card_k: int) -> dict[str, Any]:  # noqa: ANN001
    presence = scn.presence()
    recurring = [name for name, counts in presence.items() if absence(counts) is not None]
    return {
        "scenario": scn.name, "patterns": list(scn.pattern_probes), "presence": presence, "edges": scn.period_edges.tolist(),
        "new_patterns": [p for p in scn.pattern_probes if p not in scn.history_patterns and sum(presence.get(p, [])) > 0],
        "first_label": {p: float(scn.label_time[scn.pattern == code].min()) if scn.pattern is not None and (scn.pattern == code).any() else None
                        for code, p in enumerate(scn.pattern_names, start=1)},
        "recurring": recurring, "period_labels": scn.period_labels(), "drift_points": scn.drift_points,
        "time_unit": scn.time_unit, "origin": scn.origin, "card_k": card_k if scn.entity is not None else None,
    }
