"""The evaluation report: per scenario, the served figures with their intervals, the figures of
learning and memory with the frauds they rest on, the targets, plots; a headline table across
scenarios first."""

from __future__ import annotations

import datetime as dt
import platform
from pathlib import Path
from typing import Any

import numpy as np

from perennial.evaluation.scores import (
    ACCURACY_MIN_FRAUD_RATE,
    ECE_BINS,
    MIN_CELL_FRAUDS,
    absence,
    acc,
    adaptation_events,
    bwt,
    enough_frauds,
    forgetting,
    largest_alert_change,
    recurrence,
)
from perennial.evaluation.strategies import DESCRIPTIONS, EXTRA, STRATEGIES

HEADLINE = ("product", "frozen", "naive", "replay", "cumulative")
"""The columns of the headline table across scenarios (those run), before any other strategy run."""
ORDER = ("product", "frozen", "naive", "replay", "cumulative", "operated", "ewc", "product_no_drift_reaction", "sliding", "river")


def figures(result: dict[str, Any], scn_meta: dict[str, Any]) -> dict[str, Any]:
    """Per-run figures from one harness result. R-matrix columns (probes) with fewer than
    ``MIN_CELL_FRAUDS`` frauds are left out of ACC, BWT and forgetting."""
    cps = [p["card_precision"] for p in result["periods"] if "card_precision" in p]
    Rp = np.array(result["R_pattern"], float) if result["R_pattern"] and result["R_pattern"][0] else None
    Rt = np.array(result["R_period"], float)
    period_ok = enough_frauds(scn_meta["period_probe_frauds"])
    s = result["served"]
    versions = result["versions"]
    out: dict[str, Any] = {
        **{k: s.get(k) for k in SERVED},
        "card_precision": float(np.mean(cps)) if cps else None,
        "acc_period": acc(Rt, period_ok), "bwt_period": bwt(Rt, period_ok),
        "learn_s": result["learn_s"], "labels_per_s": result["labels"] / result["learn_s"] if result["learn_s"] > 0.05 else None,
        "versions": len(versions), "alert_change": largest_alert_change([v["alerts"] for v in versions]),
        "false_alert_change": largest_alert_change([v["false_alerts"] for v in versions]) if "false_alerts" in versions[0] else None,
        "alerts_min": min(v["alerts"] for v in versions), "alerts_max": max(v["alerts"] for v in versions),
        "pattern_ap": {}, "pattern_auc": {}, "forgetting": {}, "recurrence": {}, "adaptation": {},
    }
    names = scn_meta["patterns"]
    pattern_ok = dict(zip(names, enough_frauds([scn_meta["pattern_probe_frauds"][n] for n in names])))
    if Rp is not None:
        out["acc_pattern"] = acc(Rp, [pattern_ok[n] for n in names])
        out["forgetting"] = {n: f for n, f in zip(names, forgetting(Rp)) if pattern_ok[n]}
    for name in names:
        got = s["patterns"].get(name, {})
        out["pattern_ap"][name], out["pattern_auc"][name] = got.get("ap"), got.get("auc")
        if not pattern_ok[name]:
            continue
        curve = result["curves"].get(name, [])
        rec = recurrence([(t, q) for t, _, q in curve], scn_meta["presence"].get(name, []), np.array(scn_meta["edges"]))
        if rec:
            out["recurrence"][name] = rec
        if name in scn_meta["new_patterns"]:
            # counted from the arrival of the pattern's first label
            since = [(n, q) for t, n, q in curve if t >= scn_meta["first_label"][name]]
            found = adaptation_events(since)
            out["adaptation"][name] = None if found is None or not since else found - since[0][0]
    return out


SERVED = ("ap", "auc", "log_loss", "brier", "recall_at_budget", "accuracy", "ece")


def _agg(values: list[float | None]) -> tuple[float, float | None] | None:
    """Mean and standard deviation over seeds; no deviation from a single value."""
    v = [x for x in values if x is not None and np.isfinite(x)]
    return (float(np.mean(v)), float(np.std(v)) if len(v) > 1 else None) if v else None


def _fmt(a: tuple[float, float | None] | None, digits: int = 3, pct: bool = False, spread: bool = True) -> str:
    if a is None:
        return "n/a"
    std = a[1] if spread else None
    if pct:
        return f"{a[0] * 100:.1f}%" + (f" ± {std * 100:.1f}" if std is not None else "")
    return f"{a[0]:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def cell(value: float | None, frauds: int, digits: int = 3) -> str:
    """A figure that rests on ``frauds`` frauds: the number, or "— (n frauds)" under the minimum."""
    if not enough_frauds(frauds):
        return f"— ({frauds} frauds)"
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def summarise(results: list[dict[str, Any]], scn_meta: dict[str, Any], intervals: dict[str, Any]) -> dict[str, Any]:
    """Figures per strategy over seeds: {strategy: {figure: (mean, std)}} plus the targets."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by.setdefault(r["strategy"], []).append(figures(r, scn_meta))
    agg: dict[str, dict[str, Any]] = {}
    for name, runs in by.items():
        keys = (*SERVED, "card_precision", "acc_period", "bwt_period", "acc_pattern", "learn_s", "labels_per_s", "versions",
                "alerts_min", "alerts_max")
        a: dict[str, Any] = {k: _agg([r[k] for r in runs]) for k in keys if k in runs[0]}
        a["alert_change"] = _agg([r["alert_change"]["relative"] for r in runs if r["alert_change"]])
        a["alert_change_alerts"] = _agg([r["alert_change"]["alerts"] for r in runs if r["alert_change"]])
        a["false_alert_change"] = _agg([r["false_alert_change"]["relative"] for r in runs if r.get("false_alert_change")])
        a["false_alert_change_alerts"] = _agg([r["false_alert_change"]["alerts"] for r in runs if r.get("false_alert_change")])
        for key in ("pattern_ap", "pattern_auc", "forgetting"):
            a[key] = {p: _agg([r[key].get(p) for r in runs]) for p in scn_meta["patterns"]}
        a["recurrence_drop"] = {p: _agg([r["recurrence"][p]["drop"] for r in runs if p in r["recurrence"]]) for p in scn_meta["patterns"]}
        a["recurrence_drop"] = {p: v for p, v in a["recurrence_drop"].items() if v is not None}
        a["adaptation"] = {p: _agg([r["adaptation"].get(p) for r in runs]) for p in scn_meta["new_patterns"]}
        a["seeds"] = len(runs)
        agg[name] = a
    return {"strategies": agg, "targets": targets(agg, intervals, scn_meta)}


def targets(agg: dict[str, dict[str, Any]], intervals: dict[str, Any], scn_meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The promotion-decisions issue's targets that one scenario can show, met or not."""
    out: list[dict[str, Any]] = []
    prod, naive = agg.get("product"), agg.get("naive")
    for head, diff in (("product", intervals["difference"]), ("operated", intervals.get("operated_difference", {}))):
        for base in ("frozen", "naive", "replay"):
            if base not in diff:
                continue
            d = diff[base]
            margin = 0.005 if base == "replay" else 0.0
            target = f"served AP: {head} at least {base}'s" + (f" − {margin}" if margin else "") + " (within the paired interval)"
            if not enough_frauds(d["frauds"]):
                out.append({"target": target, "figure": f"— ({d['frauds']} frauds)", "met": None})
            else:
                out.append({"target": target, "figure": f"{head} − {base} {_difference(d)}: {d['verdict']}", "met": d["high"] >= -margin})
    if prod and prod["alert_change"]:
        c, n = prod["alert_change"], prod["alert_change_alerts"]
        figure = f"largest change {_fmt(c, pct=True, spread=False)} ({n[0]:.0f} alerts) over {prod['versions'][0]:.0f} versions"
        if prod.get("false_alert_change"):  # what the gate holds: false alerts, not alerts on frauds caught
            fc, fn = prod["false_alert_change"], prod["false_alert_change_alerts"]
            figure += f"; false alerts: largest change {_fmt(fc, pct=True, spread=False)} ({fn[0]:.0f})"
        out.append({"target": "alert volume at the operating point changes by at most 20% between consecutive served versions",
                    "figure": figure, "met": bool(c[0] <= 0.20)})
    for head in ("product", "operated"):
        mine = agg.get(head)
        if not (mine and naive):
            continue
        for p, drop in mine["recurrence_drop"].items():
            nd = naive["recurrence_drop"].get(p)
            out.append({"target": f"recurring pattern {p}: {head} drop ≤ 5%, naive drop > 10%",
                        "figure": f"{head} {_fmt(drop, pct=True)}, naive {_fmt(nd, pct=True)}",
                        "met": bool(drop[0] <= 0.05 and nd is not None and nd[0] > 0.10)})
        for pat, a in mine["adaptation"].items():
            b = naive["adaptation"].get(pat)
            if a and b:
                ratio = f"{a[0] / b[0]:.2f}×" if b[0] > 0 else "naive needed none"
                out.append({"target": f"adaptation to new pattern {pat}: {head} ≤ 1.2 × naive",
                            "figure": f"{head} {a[0]:,.0f} labeled events, naive {b[0]:,.0f} ({ratio})",
                            "met": bool(a[0] <= 1.2 * b[0])})
    return out


def _met(met: bool | None) -> str:
    return "n/a: too few frauds" if met is None else "yes" if met else "**no**"


def _difference(d: dict[str, Any]) -> str:
    return f"{d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def _ap_interval(a: dict[str, Any]) -> str:
    if not enough_frauds(a["frauds"]):
        return f"— ({a['frauds']} frauds)"
    return f"{a['ap']:.3f} [{a['low']:.3f}, {a['high']:.3f}]"


def _order(names) -> list[str]:
    return [s for s in ORDER if s in names] + sorted(set(names) - set(ORDER))


def write(sections: list[dict[str, Any]], out_md: Path, command: str, notes: str = "") -> dict[str, Any]:
    """The report of every scenario (``sections``: name, description, meta, intervals, results) in
    one markdown file, plots in a folder named after it; returns the summaries by scenario."""
    img_root = out_md.parent / out_md.stem
    results = [r for sec in sections for r in sec["results"]]
    order = _order({r["strategy"] for r in results})
    seeds = sorted({r["seed"] for r in results})
    meta0 = sections[0]["meta"]
    L = [
        "# Continual-learning quality: `perennial evaluate`", "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node() or 'this machine'} "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()}) by `{command}`.", "",
        f"Scenarios: {', '.join(sec['name'] for sec in sections)}. Strategies: {', '.join(order)} ({len(order)} of the "
        f"{len(STRATEGIES) + len(EXTRA)} available; `--strategies all` runs every one). Seeds: {', '.join(map(str, seeds))}; "
        "figures are means over seeds.", "",
        "**Served** figures are prequential: every event is scored by the version served at its moment, and no strategy "
        "sees a label before its label time. Intervals are "
        f"{meta0['confidence']:.0%} paired bootstrap intervals ({meta0['resamples']} resamples of the same events, stratified "
        "by class; with several seeds the replicates are averaged over seeds). A verdict is \"better\" or \"worse\" only when "
        "the interval of the difference excludes 0, else \"no evidence either way\". Every figure says how many frauds it "
        f"rests on; one resting on fewer than {MIN_CELL_FRAUDS} frauds is shown as \"— (n frauds)\" and left out of ACC, BWT "
        "and forgetting.", "",
        "## Strategies", "",
        *[f"- **{s}**: {DESCRIPTIONS[s]}" for s in order], "",
    ]
    summaries = {}
    for sec in sections:
        summaries[sec["name"]] = summarise(sec["results"], sec["meta"], sec["intervals"])
    L += _headline(sections, order)
    L += _label_delay(sections, order)
    for sec in sections:
        L += _section(sec, summaries[sec["name"]], img_root / sec["name"], out_md.parent, order)
    if notes:
        L += ["", notes.strip()]
    out_md.write_text("\n".join(L) + "\n")
    return summaries


def _headline(sections: list[dict[str, Any]], order: list[str]) -> list[str]:
    cols = [s for s in HEADLINE if s in order] + [s for s in order if s not in HEADLINE]
    L = ["## Headline: served prequential AP per scenario", "",
         "AP of the served versions over the whole stream, with its interval; frauds: in the stream (per seed, the fewest).", "",
         "| scenario | frauds | " + " | ".join(cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for sec in sections:
        ap = sec["intervals"]["ap"]
        frauds = min(a["frauds"] for a in ap.values())
        L.append(f"| {sec['name']} | {frauds:,} | " + " | ".join(_ap_interval(ap[s]) if s in ap else "not run" for s in cols) + " |")
    others = [s for s in cols if s != "product"]
    if "product" in order and others:
        L += ["", "Product minus each strategy, paired on the same events: difference [interval], verdict.", "",
              "| scenario | " + " | ".join(f"product − {s}" for s in others) + " |", "|---" * (1 + len(others)) + "|"]
        for sec in sections:
            diff = sec["intervals"]["difference"]
            L.append(f"| {sec['name']} | " + " | ".join(
                (f"{_difference(diff[s])} {diff[s]['verdict']}" if enough_frauds(diff[s]["frauds"]) else f"— ({diff[s]['frauds']} frauds)")
                if s in diff else "not run" for s in others) + " |")
    return L + [""]


def _label_delay(sections: list[dict[str, Any]], order: list[str]) -> list[str]:
    """How waiting for labels changes what is served: each scenario replayed with joined labels
    against the same scenario with every label at its label time (``harness.label_delay``)."""
    joined = [sec for sec in sections if "label_delay" in sec]
    if not joined:
        return []
    cols = [s for s in order if any(s in sec["label_delay"]["difference"] for sec in joined)]
    L = ["## How the label delay changes quality", "",
         "Each scenario replayed as `perennial learn` joins late labels to the prediction log: only frauds are labeled, at their "
         "label time (a chargeback feed); every other event becomes a negative once it has matured; a fraud labeled after "
         "maturity arrives as a negative, then as a correction. Labels due after the stream's end never arrive. Figures: "
         "served AP with joined labels minus served AP with every label at its label time (a producer sending labeled events), "
         "paired on the same events from the same pretrained version. Labels received over the stream (first seed): explicit "
         "frauds / matured negatives / corrections / frauds whose label never came.", "",
         "| scenario | labels received | " + " | ".join(f"{s}: joined − explicit" for s in cols) + " |", "|---" * (2 + len(cols)) + "|"]
    for sec in joined:
        diff, feed = sec["label_delay"]["difference"], sec["feed"][0]
        received = f"{feed['frauds']:,} / {feed['negatives']:,} / {feed['corrections']:,} / {feed['never_arrived_frauds']:,}"
        L.append(f"| {sec['name']} | {received} | " + " | ".join(
            (f"{_difference(diff[s])} {diff[s]['verdict']}" if enough_frauds(diff[s]["frauds"]) else f"— ({diff[s]['frauds']} frauds)")
            if s in diff else "not run" for s in cols) + " |")
    return L + [""]


def _data_lines(used: dict[str, Any]) -> list[str]:
    def counts(c: dict[str, Any]) -> str:
        frauds = "?" if c.get("frauds") is None else f"{c['frauds']:,}"
        return f"{c['events']:,} events, {frauds} frauds"

    columns = ", ".join(f"{k.replace('_', ' ')} `{used[k]}`" for k in ("label_time_column", "pattern_column", "entity_column") if k in used)
    return [
        f"Data: label `{used['label_column']}`, time `{used['time_column']}`" + (f", {columns}" if columns else "")
        + f" (never features); features ({len(used['features'])}): " + ", ".join(f"`{f}`" for f in used["features"]) + ".",
        f"History {counts(used['history'])}, pretrained on its earlier 80% ({counts(used['pretraining_train'])}) and validated on "
        f"its later 20% ({counts(used['pretraining_validation'])}); stream {counts(used['stream'])}, of which the held-out "
        f"probes are not part: {counts(used['held_out_probes'])}.", "",
    ]


def _section(sec: dict[str, Any], summary: dict[str, Any], img_dir: Path, root: Path, order_all: list[str]) -> list[str]:
    meta, results, intervals = sec["meta"], sec["results"], sec["intervals"]
    agg = summary["strategies"]
    order = [s for s in order_all if s in agg]
    budget = meta["alert_budget"]
    L = [f"## Scenario `{sec['name']}`", "", f"{sec['description'][:1].upper()}{sec['description'][1:]}.", "",
         f"{meta['scenario']}.", "", *_data_lines(meta["data"])]
    L += [
        "### Served quality",
        "",
        f"Over every stream event, scored by the version served at its moment. Recall at budget: frauds among the top "
        f"{budget:.1%} of each day's events (the alerts a team reviews). Accuracy at a 0.5 threshold, only where frauds are "
        f"at least {ACCURACY_MIN_FRAUD_RATE:.0%} of events. ECE: expected calibration error over {ECE_BINS} equal-width "
        f"score bins. Alerts: each served version's alerts on {results[0]['alert_sample_events']:,} held-out events at the "
        f"learner's default operating point, the threshold where the pretrained version alerts on as many of them as there "
        f"are frauds among them, at least {budget:.1%} ({results[0]['alert_rate']:.2%} here); the largest change between "
        "consecutive versions, relative to the earlier one.",
        "",
        "| strategy | AP [interval] | ROC-AUC | log-loss | Brier | recall at budget | accuracy | ECE | versions | alerts per version | largest alert change |",
        "|---" * 11 + "|",
    ]
    frauds = min(a["frauds"] for a in intervals["ap"].values())
    for s in order:
        a = agg[s]
        acc_cell = "n/a (rare)" if a["accuracy"] is None else _fmt(a["accuracy"], spread=False)
        change = "none (one version)" if a["alert_change"] is None else \
            f"{_fmt(a['alert_change'], pct=True, spread=False)} ({a['alert_change_alerts'][0]:.0f} alerts)"
        figs = [
            cell(a[k][0] if a[k] else None, frauds, 4 if k in ("log_loss", "brier", "ece") else 3) for k in ("auc", "log_loss", "brier", "recall_at_budget")
        ]
        L.append(f"| {s} | {_ap_interval(intervals['ap'][s])} | " + " | ".join(figs) + f" | {acc_cell} | "
                 f"{cell(a['ece'][0] if a['ece'] else None, frauds, 4)} | {a['versions'][0]:.0f} | "
                 f"{a['alerts_min'][0]:.0f} to {a['alerts_max'][0]:.0f} | {change} |")
    diff = intervals["difference"]
    if diff:
        L += ["", "Product minus each strategy (served AP, paired on the same events):", "",
              "| strategy | difference | interval | verdict | frauds |", "|---|---|---|---|---|"]
        for s in [s for s in order if s in diff]:
            d = diff[s]
            if enough_frauds(d["frauds"]):
                L.append(f"| {s} | {d['difference']:+.3f} | [{d['low']:+.3f}, {d['high']:+.3f}] | {d['verdict']} | {d['frauds']:,} |")
            else:
                L.append(f"| {s} | — | — | too few frauds | {d['frauds']:,} |")
    if summary["targets"]:
        L += ["", "### Targets", "", "| target | figure | met |", "|---|---|---|",
              *[f"| {t['target']} | {t['figure']} | {_met(t['met'])} |" for t in summary["targets"]]]
    L += _memory(meta, agg, order, results)
    img_dir.mkdir(parents=True, exist_ok=True)
    plots = _plots(results, meta, img_dir, order)
    L += ["", "### Plots", ""] + [f"![{t}]({p.relative_to(root).as_posix()})" for t, p in plots] + [""]
    return L


def _memory(meta: dict[str, Any], agg: dict[str, Any], order: list[str], results: list[dict[str, Any]]) -> list[str]:
    """Per-period, per-pattern and R-matrix figures, each marked with the frauds it rests on."""
    period_frauds = meta["period_probe_frauds"]
    left_out = int((~enough_frauds(period_frauds)).sum())
    card = meta["card_k"] is not None
    L = ["", "### Learning and memory", "",
         "ACC: mean final AP over the held-out per-period probes; BWT: backward transfer over them"
         + (f" ({left_out} of {len(period_frauds)} probes left out: under {MIN_CELL_FRAUDS} frauds)" if left_out else "")
         + ". Learning time: seconds spent in the strategy's updates; labels/s: labeled events per second of it."
         + (f" Card precision@k: the Fraud Detection Handbook's daily top-{meta['card_k']} cards, known cards excluded." if card else ""), "",
         "| strategy | " + ("card precision@k | " if card else "") + "ACC | BWT | learning s | labels/s |", "|---" * (5 + card) + "|"]
    for s in order:
        a = agg[s]
        L.append(f"| {s} | " + (f"{_fmt(a['card_precision'])} | " if card else "")
                 + f"{_fmt(a['acc_period'])} | {_fmt(a['bwt_period'])} | {_fmt(a['learn_s'], 1)} | {_fmt(a['labels_per_s'], 0)} |")
    labels = meta["period_labels"]
    L += ["", "Prequential AP per period (mean over seeds):", "",
          "| strategy | " + " | ".join(labels) + " |", "|---" * (1 + len(labels)) + "|"]
    first = [r for r in results if r["strategy"] == order[0]]
    frauds = [min(r["periods"][i]["overall"]["frauds"] for r in first) for i in range(len(labels))]
    L.append("| frauds | " + " | ".join(f"{f:,}" for f in frauds) + " |")
    for s in order:
        rows = [r for r in results if r["strategy"] == s]
        cells = []
        for i, f in enumerate(frauds):
            v = [r["periods"][i]["overall"]["ap"] for r in rows if r["periods"][i]["overall"]["ap"] is not None]
            cells.append(cell(float(np.mean(v)) if v else None, f))
        L.append(f"| {s} | " + " | ".join(cells) + " |")
    pats = meta["patterns"]
    if not pats:
        return L
    probe_frauds = [meta["pattern_probe_frauds"][p] for p in pats]
    stream_frauds = meta["pattern_stream_frauds"]
    L += ["", "### Per pattern", "",
          "Served AP per pattern: the stream's legitimate events plus that pattern's frauds. Forgetting, on the pattern probes: "
          "the best AP at any earlier period end minus the final AP. Recurrence drop: the share of a recurring pattern's best "
          "AP before it vanished that is lost when it comes back. Adaptation: labeled events, from the arrival of its first "
          "label, until a new pattern's probe AP first reaches 90% of its best.", "",
          "| strategy | " + " | ".join(f"AP {p}" for p in pats) + " | " + " | ".join(f"forgetting {p}" for p in pats)
          + "".join(f" | recurrence drop {p}" for p in meta["recurring"]) + "".join(f" | adaptation {p}" for p in meta["new_patterns"]) + " |",
          "|---" * (1 + 2 * len(pats) + len(meta["recurring"]) + len(meta["new_patterns"])) + "|"]
    by = dict(zip(pats, probe_frauds))
    L.append("| frauds (stream / probe) | " + " | ".join(f"{stream_frauds[p]:,}" for p in pats) + " | "
             + " | ".join(f"{by[p]:,}" for p in pats) + "".join(f" | {by[p]:,}" for p in meta["recurring"])
             + "".join(f" | {by[p]:,}" for p in meta["new_patterns"]) + " |")
    for s in order:
        a = agg[s]
        cells = [cell(a["pattern_ap"][p][0] if a["pattern_ap"].get(p) else None, stream_frauds[p]) for p in pats]
        cells += [_fmt(a["forgetting"].get(p)) if enough_frauds(by[p]) else f"— ({by[p]} frauds)" for p in pats]
        cells += [_fmt(a["recurrence_drop"].get(p), pct=True) if enough_frauds(by[p]) else f"— ({by[p]} frauds)" for p in meta["recurring"]]
        cells += [_fmt(a["adaptation"].get(p), 0) if enough_frauds(by[p]) else f"— ({by[p]} frauds)" for p in meta["new_patterns"]]
        L.append(f"| {s} | " + " | ".join(cells) + " |")
    for s in ("product", "naive"):
        rows = [r for r in results if r["strategy"] == s]
        if rows:
            R = np.nanmean([np.array(r["R_pattern"], float) for r in rows], axis=0)
            L += ["", f"R matrix, {s} (AP on pattern j's probe after period i; row 0 is the pretrained version):", "",
                  "| after | " + " | ".join(pats) + " |", "|---" * (1 + len(pats)) + "|",
                  "| frauds | " + " | ".join(f"{f:,}" for f in probe_frauds) + " |"]
            row_labels = ["start"] + labels
            L += [f"| {row_labels[i]} | " + " | ".join(cell(v, f) for v, f in zip(R[i], probe_frauds)) + " |" for i in range(len(R))]
    if "product_no_drift_reaction" in agg:
        a, b = agg["product"], agg["product_no_drift_reaction"]
        drifts = [len(r["summary"].get("drifts", [])) for r in results if r["strategy"] == "product"]
        parts = [f"served AP {_fmt(a['ap'])} with the reaction, {_fmt(b['ap'])} without"]
        parts += [f"adaptation to {p}: {_fmt(a['adaptation'].get(p), 0)} vs {_fmt(b['adaptation'].get(p), 0)} events" for p in meta["new_patterns"]]
        parts += [
            f"recurrence drop of {p}: {_fmt(a['recurrence_drop'].get(p), pct=True)} vs {_fmt(b['recurrence_drop'].get(p), pct=True)}" for p in meta["recurring"]
        ]
        L += ["", "### Does reacting to drift help?", "",
              f"river's ADWIN found {np.mean(drifts):.1f} drifts per run in the served model's loss. With the reaction (rounds "
              "shortened and the learning rate raised for a few rounds) and without it: " + "; ".join(parts) + "."]
    prod_runs = [r for r in results if r["strategy"] == "product"]
    if prod_runs:
        keys = ("rounds", "published", "gate_failures", "resets", "rollbacks", "quarantines")
        L += [
            "",
            "Product learner, per run: " + ", ".join(f"{k.replace('_', ' ')} {np.mean([r['summary'].get(k, 0) for r in prod_runs]):.1f}" for k in keys) + ".",
        ]
    return L


def _plots(results, scn_meta, img_dir: Path, order) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale, unit = scn_meta["time_unit"]
    origin = scn_meta["origin"]
    colors = dict(zip(order, matplotlib.color_sequences["tab10"]))
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
        if not shown:
            return out
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


def _marks(ax, scn_meta, results, origin, scale) -> None:
    for t, what in scn_meta["drift_points"]:
        ax.axvline((t - origin) / scale, color="grey", ls="--", lw=0.8)
        ax.text((t - origin) / scale, 0.02, what, rotation=90, fontsize=7, color="grey", va="bottom", transform=ax.get_xaxis_transform())
    drifts = [t for r in results if r["strategy"] == "product" for t in r["summary"].get("drifts", [])]
    if drifts:
        ax.plot((np.array(drifts) - origin) / scale, np.full(len(drifts), 0.01), "v", color="red", ms=5,
                transform=ax.get_xaxis_transform(), label="ADWIN drift (product)")


def _save(fig, path: Path, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def scenario_meta(built: list, card_k: int) -> dict[str, Any]:
    """What the report needs of a scenario, from its first seed's build; fraud counts are the fewest
    over the seeds' builds (``built``)."""
    scn = built[0]
    presence = scn.presence()
    recurring = [name for name, counts in presence.items() if absence(counts) is not None]
    return {
        "scenario": scn.name, "patterns": list(scn.pattern_probes), "presence": presence, "edges": scn.period_edges.tolist(),
        "new_patterns": [p for p in scn.pattern_probes if p not in scn.history_patterns and sum(presence.get(p, [])) > 0],
        "first_label": {p: float(scn.label_time[scn.pattern == code].min()) if scn.pattern is not None and (scn.pattern == code).any() else None
                        for code, p in enumerate(scn.pattern_names, start=1)},
        "recurring": recurring, "period_labels": scn.period_labels(), "drift_points": scn.drift_points,
        "time_unit": scn.time_unit, "origin": scn.origin, "card_k": card_k if scn.entity is not None else None,
        "period_probe_frauds": np.min([[int(py.sum()) for _, py in b.period_probes] for b in built], axis=0).tolist(),
        "pattern_probe_frauds": {p: min(int(b.pattern_probes[p][1].sum()) for b in built) for p in scn.pattern_probes},
        "pattern_stream_frauds": {p: min(int(sum(b.presence().get(p, []))) for b in built) for p in scn.pattern_probes},
    }
