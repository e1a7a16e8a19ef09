"""Writes the Grafana dashboards (helm/perennial/dashboards/*.json) from the panel lists below.

The JSON files are committed and are what Grafana, the Helm chart (``.Files.Get``) and the compose
stack load; a test checks they are up to date with this script and that every panel's query returns
series from a real Prometheus scraping a live server and learner.

Several releases (one per model or team, in one namespace or several) may be scraped by one
Prometheus: the ``namespace`` and ``release`` labels tell them apart (the chart's ServiceMonitor and the
compose stack's scrape config set both). Every query keeps to the releases the dashboard's
``namespace`` and ``release`` variables pick and aggregates by both labels, so two releases are
never added together; every legend starts with ``namespace/release``.

    python observability/build_dashboards.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "helm" / "perennial" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RELEASE = ("namespace", "release")
PICKED = ", ".join(f'{label}=~"${label}"' for label in RELEASE)
PREDICT = 'route="/v1/predict"'


def sel(metric: str, where: str = "") -> str:
    """The metric's series of the picked releases, with the extra matchers `where`."""
    return f"{metric}{{{PICKED}{', ' + where if where else ''}}}"


def agg(op: str, expr: str, *labels: str) -> str:
    """`op` of `expr` per release (and per `labels`)."""
    return f"{op} by ({', '.join((*RELEASE, *labels))}) ({expr})"


def rate(metric: str, window: str = "1m", where: str = "", fn: str = "rate") -> str:
    return f"{fn}({sel(metric, where)}[{window}])"


def increase(metric: str, window: str, where: str = "") -> str:
    return rate(metric, window, where, fn="increase")


def ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator per release, 0 where the numerator has no series yet, no division by 0."""
    return f"({numerator} or 0 * {denominator}) / clamp_min({denominator}, 1e-9)"


def quantile(metric: str, p: float, where: str = "", window: str = "1m", by: tuple[str, ...] = ()) -> str:
    return f"histogram_quantile({p}, {agg('sum', rate(f'{metric}_bucket', window, where), 'le', *by)})"


def mean(histogram: str, window: str = "1m") -> str:
    return ratio(agg("sum", rate(f"{histogram}_sum", window)), agg("sum", rate(f"{histogram}_count", window)))


def since(metric: str) -> str:
    return f"time() - {agg('max', sel(metric))}"


def retention_lost(model: str) -> str:
    """Average precision on the retention set that `model` has lost since pretraining."""
    ap = sel("perennial_learner_average_precision", f'{model}, set="retention"')
    return f"{agg('max', sel('perennial_learner_retention_baseline_average_precision'))} - {agg('max', ap)}"


def q(expr: str, legend: str) -> dict:
    return {"expr": expr, "legendFormat": " ".join(part for part in ("{{namespace}}/{{release}}", legend) if part)}


def gauge(metric: str, legend: str, where: str = "") -> dict:
    return q(agg("max", sel(metric, where)), legend)


INCUMBENT, CANDIDATE = 'model="incumbent"', 'model="candidate"'
REQUESTS = "perennial_server_requests_total"
DEAD = "perennial_learner_events_dead_lettered_total"
CONSUMED = "perennial_learner_events_consumed_total"
LABELS = "perennial_join_labels_total"
ALERT_RATE = "perennial_learner_alert_rate"

SERVING = [
    ("Prediction requests by status", "reqps", "timeseries", [
        q(agg("sum", rate(REQUESTS, where=PREDICT), "code"), "{{code}}"),
    ]),
    ("Prediction latency", "s", "timeseries", [
        q(quantile("perennial_server_request_duration_seconds", 0.5, PREDICT), "p50"),
        q(quantile("perennial_server_request_duration_seconds", 0.99, PREDICT), "p99"),
    ]),
    ("Events scored per second by outcome and version", "cps", "timeseries", [
        q(agg("sum", rate("perennial_server_predictions_total"), "outcome", "version"), "{{outcome}} {{version}}"),
    ]),
    ("Server error ratio (5xx)", "percentunit", "timeseries", [
        q(ratio(agg("sum", rate(REQUESTS, "5m", 'code=~"5.."')), agg("sum", rate(REQUESTS, "5m"))), "5xx ratio"),
    ]),
    ("Requests in flight", "short", "timeseries", [
        q(agg("sum", sel("perennial_server_requests_in_flight")), "in flight"),
    ]),
    ("Events per forward pass (micro-batching)", "short", "timeseries", [
        q(quantile("perennial_server_forward_pass_rows", 0.5), "median"),
        q(mean("perennial_server_forward_pass_rows"), "mean"),
    ]),
    ("Fraud score of served predictions", "percentunit", "timeseries", [
        q(quantile("perennial_server_fraud_score", 0.5, window="5m"), "median"),
        q(quantile("perennial_server_fraud_score", 0.99, window="5m"), "p99"),
    ]),
    ("Served version", "none", "stat", [
        gauge("perennial_server_model_version_number", "served"),
        gauge("perennial_server_registry_current_version_number", "registry CURRENT"),
    ]),
    ("Served model", "none", "table", [
        q(agg("max", sel("perennial_server_model_info"), "version", "sha256", "parent"), ""),
    ]),
    ("Age of the served version", "s", "timeseries", [gauge("perennial_server_model_age_seconds", "age")]),
    ("Model swaps by result", "short", "timeseries", [
        q(agg("sum", increase("perennial_server_swaps_total", "5m"), "result"), "{{result}}"),
    ]),
    ("Swap time (verify, load, warm)", "s", "timeseries", [
        q(quantile("perennial_server_swap_duration_seconds", 0.99, window="15m"), "p99"),
    ]),
    ("Admin commands sent", "short", "timeseries", [
        q(agg("sum", increase("perennial_server_admin_commands_total", "15m"), "action"), "{{action}}"),
    ]),
]

LEARNING = [
    ("Labeled events per second", "cps", "timeseries", [
        q(agg("sum", rate(CONSUMED)), "consumed"),
        q(agg("sum", rate("perennial_learner_events_trained_total")), "trained"),
        q(agg("sum", rate("perennial_learner_events_held_out_total")), "held out"),
    ]),
    ("Dead-lettered events by reason", "short", "timeseries", [
        q(agg("sum", increase(DEAD, "5m"), "reason"), "{{reason}}"),
    ]),
    ("Duplicate events dropped", "short", "timeseries", [
        q(agg("sum", increase(DEAD, "5m", 'reason="duplicate_id"')), "duplicates"),
    ]),
    ("Consumer lag by partition", "short", "timeseries", [
        q(agg("sum", sel("perennial_learner_consumer_lag"), "partition"), "partition {{partition}}"),
    ]),
    ("Label delay (event time to consumption)", "s", "timeseries", [
        q(quantile("perennial_learner_label_delay_seconds", 0.5, window="5m"), "p50"),
        q(quantile("perennial_learner_label_delay_seconds", 0.95, window="5m"), "p95"),
    ]),
    ("Training rounds per minute", "short", "timeseries", [
        q(f"{agg('sum', rate('perennial_learner_rounds_total', '5m'))} * 60", "rounds/min"),
    ]),
    ("Round duration", "s", "timeseries", [
        q(quantile("perennial_learner_round_duration_seconds", 0.95, window="5m"), "p95"),
    ]),
    ("Train loss and EWC penalty", "none", "timeseries", [
        gauge("perennial_learner_train_loss", "train loss"),
        gauge("perennial_learner_ewc_penalty", "EWC penalty"),
    ]),
    ("Replay memory", "short", "timeseries", [gauge("perennial_learner_replay_events", "events")]),
    ("Replay memory: share of fraud", "percentunit", "timeseries", [
        gauge("perennial_learner_replay_positive_ratio", "fraud share"),
    ]),
    ("Gate decisions by result", "short", "timeseries", [
        q(agg("sum", increase("perennial_learner_gate_decisions_total", "15m"), "result"), "{{result}}"),
    ]),
    ("Failed gate checks", "short", "timeseries", [
        q(agg("sum", increase("perennial_learner_gate_failures_total", "15m"), "check"), "{{check}}"),
    ]),
    ("Gate comparison: candidate minus served AP, with its bootstrap interval", "none", "timeseries", [
        q(agg("max", sel("perennial_learner_gate_ap_difference"), "set", "bound"), "{{set}} {{bound}}"),
    ]),
    ("Evidence behind the gate: frauds and events", "short", "timeseries", [
        q(agg("max", sel("perennial_learner_gate_frauds"), "set"), "frauds in the {{set}} set"),
        gauge("perennial_learner_candidate_evidence_frauds", "frauds since the candidate was cut"),
        gauge("perennial_learner_candidate_evidence_events", "events since the candidate was cut"),
    ]),
    ("Average precision: candidate vs served", "percentunit", "timeseries", [
        q(agg("max", sel("perennial_learner_average_precision"), "model", "set"), "{{model}} on {{set}}"),
    ]),
    ("ROC-AUC: candidate vs served", "percentunit", "timeseries", [
        q(agg("max", sel("perennial_learner_roc_auc"), "model", "set"), "{{model}} on {{set}}"),
    ]),
    ("Forgetting: retention AP lost since pretraining", "percentunit", "timeseries", [
        q(retention_lost(INCUMBENT), "served"),
        q(retention_lost(CANDIDATE), "candidate"),
    ]),
    ("Alert rate at the operating point: candidate vs served", "percentunit", "timeseries", [
        q(agg("max", sel(ALERT_RATE), "model"), "{{model}}"),
    ]),
    ("Alert volume change and negative flip rate (candidate vs served)", "percentunit", "timeseries", [
        q(f"{agg('max', sel(ALERT_RATE, CANDIDATE))} / {agg('max', sel(ALERT_RATE, INCUMBENT))} - 1",
          "alert volume change"),
        gauge("perennial_learner_negative_flip_rate", "frauds dropped (negative flip rate)"),
    ]),
    ("Counts behind the operating-point figures", "short", "timeseries", [
        q(agg("max", sel("perennial_learner_alerts"), "model"), "alerts of {{model}}"),
        gauge("perennial_learner_negative_flip_base_frauds", "frauds the served version alerts on"),
    ]),
    ("Operating threshold and calibration error of the served version", "percentunit", "timeseries", [
        gauge("perennial_learner_operating_threshold", "threshold (fraud probability)"),
        gauge("perennial_learner_served_expected_calibration_error", "expected calibration error"),
    ]),
    ("Drift (river ADWIN on the served model's loss)", "none", "timeseries", [
        gauge("perennial_learner_drift_loss_estimation", "loss estimation"),
        q(agg("sum", increase("perennial_learner_drift_detected_total", "5m")), "drifts"),
        gauge("perennial_learner_drift_reacting", "reacting"),
        gauge("perennial_learner_concept_change_rounds", "concept change confirmed: rounds left"),
    ]),
    ("ADWIN window", "short", "timeseries", [gauge("perennial_learner_drift_window_events", "events")]),
    ("Checkpoint write time", "s", "timeseries", [
        q(quantile("perennial_learner_checkpoint_duration_seconds", 0.95, window="5m"), "p95"),
    ]),
    ("Versions published", "short", "timeseries", [
        q(agg("sum", increase("perennial_learner_versions_published_total", "15m")), "published"),
        gauge("perennial_learner_published_version_number", "newest"),
    ]),
    ("Time since the last published version", "s", "stat", [
        q(since("perennial_learner_last_publish_timestamp_seconds"), "since publish"),
    ]),
    ("Time since the last round", "s", "stat", [
        q(since("perennial_learner_last_round_timestamp_seconds"), "since round"),
    ]),
    ("Learning paused by an operator", "bool_yes_no", "stat", [gauge("perennial_learner_paused", "paused")]),
    ("Rollbacks by trigger", "short", "timeseries", [
        q(agg("sum", increase("perennial_learner_rollbacks_total", "1h"), "trigger"), "{{trigger}}"),
    ]),
    ("Events quarantined by reason (label-poisoning guards)", "short", "timeseries", [
        q(agg("sum", increase("perennial_learner_events_quarantined_total", "15m"), "reason"), "{{reason}}"),
    ]),
    ("Quarantined rounds: kept for an operator, released", "short", "timeseries", [
        gauge("perennial_learner_quarantine_kept_events", "kept"),
        q(agg("sum", increase("perennial_learner_quarantine_released_events_total", "1h"), "trigger"),
          "released ({{trigger}})"),
    ]),
    ("Contradicting labels: share of the served model's fraud calls labeled legitimate", "percentunit", "timeseries", [
        gauge("perennial_learner_contradiction_rate", "last round"),
        gauge("perennial_learner_contradiction_usual_rate", "usual"),
    ]),
    ("Share of consumed events dead-lettered", "percentunit", "timeseries", [
        q(ratio(agg("sum", rate(DEAD, "10m")), agg("sum", rate(CONSUMED, "10m"))), "dead-lettered"),
    ]),
    ("Kafka broker reachable, failed requests", "short", "timeseries", [
        gauge("perennial_learner_broker_up", "reachable"),
        q(agg("sum", increase("perennial_learner_broker_errors_total", "5m")), "failed requests"),
    ]),
    ("Offset resets by partition", "short", "timeseries", [
        q(agg("sum", increase("perennial_learner_offset_resets_total", "1h"), "partition"), "partition {{partition}}"),
    ]),
    # the join of late labels (join.enabled)
    ("Late labels read, by outcome", "short", "timeseries", [
        q(agg("sum", increase(LABELS, "15m"), "outcome"), "{{outcome}}"),
    ]),
    ("Late labels: join hit rate (joined / read)", "percentunit", "timeseries", [
        q(ratio(agg("sum", increase(LABELS, "15m", 'outcome="joined"')), agg("sum", increase(LABELS, "15m"))),
          "hit rate"),
    ]),
    ("Late labels: pending predictions, parked labels, matured negatives", "short", "timeseries", [
        gauge("perennial_join_pending_predictions", "pending predictions"),
        gauge("perennial_join_parked_labels", "parked labels (no prediction)"),
        q(agg("sum", increase("perennial_join_matured_total", "15m")), "matured into negatives"),
    ]),
    ("Late labels: delay from event to label, by source", "s", "timeseries", [
        q(quantile("perennial_join_label_delay_seconds", 0.5, window="15m", by=("source",)), "p50 {{source}}"),
        q(quantile("perennial_join_label_delay_seconds", 0.95, window="15m", by=("source",)), "p95 {{source}}"),
    ]),
    ("Late labels: oldest pending prediction, time since the last label", "s", "timeseries", [
        gauge("perennial_join_oldest_pending_age_seconds", "oldest pending (event time)"),
        q(since("perennial_join_last_label_timestamp_seconds"), "since the last label"),
    ]),
]


def variables(metric: str) -> list[dict]:
    """The datasource, then `namespace` and `release` as listed by `metric` (which every release exports)."""
    def pick(name: str, query: str) -> dict:
        return {
            "name": name, "label": name.capitalize(), "type": "query", "datasource": DS,
            "query": query, "definition": query, "refresh": 2, "sort": 1, "regex": "", "hide": 0,
            "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
        }

    return [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {},
         "hide": 0},
        pick("namespace", f"label_values({metric}, namespace)"),
        pick("release", f'label_values({metric}{{namespace=~"$namespace"}}, release)'),
    ]


def dashboard(uid: str, title: str, panels: list, metric: str) -> dict:
    out = []
    for i, (ptitle, unit, kind, targets) in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": kind,
            "title": ptitle,
            "datasource": DS,
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
            "targets": [{"refId": chr(65 + j), "datasource": DS, **t} for j, t in enumerate(targets)],
        })
    return {
        "uid": uid,
        "title": title,
        "tags": ["perennial"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables(metric)},
        "panels": out,
    }


DASHBOARDS = {
    "perennial-serving.json": dashboard("perennial-serving", "Perennial / Serving", SERVING,
                                        "perennial_server_model_version_number"),
    "perennial-learning.json": dashboard("perennial-learning", "Perennial / Learning", LEARNING, CONSUMED),
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name], indent=2) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / name).write_text(render(name))
        print(out / name)
