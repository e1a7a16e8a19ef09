"""Writes the Grafana dashboards (helm/perennial/dashboards/*.json) from the panel lists below.

The JSON files are committed and are what Grafana, the Helm chart (``.Files.Get``) and the compose
stack load; a test checks they are up to date with this script and that every panel's query returns
series from a real Prometheus scraping a live server and learner.

    python observability/build_dashboards.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "helm" / "perennial" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
PREDICT = 'route="/v1/predict"'


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legendFormat": legend}


def quantile(metric: str, p: float, where: str = "", window: str = "1m") -> str:
    sel = f"{{{where}}}" if where else ""
    return f"histogram_quantile({p}, sum by (le) (rate({metric}_bucket{sel}[{window}])))"


SERVING = [
    ("Prediction requests by status", "reqps", "timeseries", [q(f"sum by (code) (rate(perennial_server_requests_total{{{PREDICT}}}[1m]))", "{{code}}")]),
    ("Prediction latency", "s", "timeseries", [
        q(quantile("perennial_server_request_duration_seconds", 0.5, PREDICT), "p50"),
        q(quantile("perennial_server_request_duration_seconds", 0.99, PREDICT), "p99"),
    ]),
    ("Events scored per second by outcome and version", "cps", "timeseries", [q("sum by (outcome, version) (rate(perennial_server_predictions_total[1m]))", "{{outcome}} {{version}}")]),
    ("Server error ratio (5xx)", "percentunit", "timeseries", [
        q('(sum(rate(perennial_server_requests_total{code=~"5.."}[5m])) or vector(0)) / clamp_min(sum(rate(perennial_server_requests_total[5m])), 1e-9)', "5xx ratio"),
    ]),
    ("Requests in flight", "short", "timeseries", [q("sum(perennial_server_requests_in_flight)", "in flight")]),
    ("Events per forward pass (micro-batching)", "short", "timeseries", [
        q(quantile("perennial_server_forward_pass_rows", 0.5), "median"),
        q("sum(rate(perennial_server_forward_pass_rows_sum[1m])) / clamp_min(sum(rate(perennial_server_forward_pass_rows_count[1m])), 1e-9)", "mean"),
    ]),
    ("Fraud score of served predictions", "percentunit", "timeseries", [
        q(quantile("perennial_server_fraud_score", 0.5, window="5m"), "median"),
        q(quantile("perennial_server_fraud_score", 0.99, window="5m"), "p99"),
    ]),
    ("Served version", "none", "stat", [q("max(perennial_server_model_version_number)", "served"), q("max(perennial_server_registry_current_version_number)", "registry CURRENT")]),
    ("Served model", "none", "table", [q("max by (version, sha256, parent) (perennial_server_model_info)", "")]),
    ("Age of the served version", "s", "timeseries", [q("max(perennial_server_model_age_seconds)", "age")]),
    ("Model swaps by result", "short", "timeseries", [q("sum by (result) (increase(perennial_server_swaps_total[5m]))", "{{result}}")]),
    ("Swap time (verify, load, warm)", "s", "timeseries", [q(quantile("perennial_server_swap_duration_seconds", 0.99, window="15m"), "p99")]),
    ("Admin commands sent", "short", "timeseries", [q("sum by (action) (increase(perennial_server_admin_commands_total[15m]))", "{{action}}")]),
]

LEARNING = [
    ("Labeled events per second", "cps", "timeseries", [
        q("sum(rate(perennial_learner_events_consumed_total[1m]))", "consumed"),
        q("sum(rate(perennial_learner_events_trained_total[1m]))", "trained"),
        q("sum(rate(perennial_learner_events_held_out_total[1m]))", "held out"),
    ]),
    ("Dead-lettered events by reason", "short", "timeseries", [q("sum by (reason) (increase(perennial_learner_events_dead_lettered_total[5m]))", "{{reason}}")]),
    ("Duplicate events dropped", "short", "timeseries", [q('sum(increase(perennial_learner_events_dead_lettered_total{reason="duplicate_id"}[5m]))', "duplicates")]),
    ("Consumer lag by partition", "short", "timeseries", [q("sum by (partition) (perennial_learner_consumer_lag)", "partition {{partition}}")]),
    ("Label delay (event time to consumption)", "s", "timeseries", [
        q(quantile("perennial_learner_label_delay_seconds", 0.5, window="5m"), "p50"),
        q(quantile("perennial_learner_label_delay_seconds", 0.95, window="5m"), "p95"),
    ]),
    ("Training rounds per minute", "short", "timeseries", [q("sum(rate(perennial_learner_rounds_total[5m])) * 60", "rounds/min")]),
    ("Round duration", "s", "timeseries", [q(quantile("perennial_learner_round_duration_seconds", 0.95, window="5m"), "p95")]),
    ("Train loss and EWC penalty", "none", "timeseries", [q("max(perennial_learner_train_loss)", "train loss"), q("max(perennial_learner_ewc_penalty)", "EWC penalty")]),
    ("Replay memory", "short", "timeseries", [q("max(perennial_learner_replay_events)", "events")]),
    ("Replay memory: share of fraud", "percentunit", "timeseries", [q("max(perennial_learner_replay_positive_ratio)", "fraud share")]),
    ("Gate decisions by result", "short", "timeseries", [q("sum by (result) (increase(perennial_learner_gate_decisions_total[15m]))", "{{result}}")]),
    ("Failed gate checks", "short", "timeseries", [q("sum by (check) (increase(perennial_learner_gate_failures_total[15m]))", "{{check}}")]),
    ("Gate comparison: candidate minus served AP, with its bootstrap interval", "none", "timeseries", [
        q("max by (set, bound) (perennial_learner_gate_ap_difference)", "{{set}} {{bound}}"),
    ]),
    ("Evidence behind the gate: frauds and events", "short", "timeseries", [
        q("max by (set) (perennial_learner_gate_frauds)", "frauds in the {{set}} set"),
        q("max(perennial_learner_candidate_evidence_frauds)", "frauds since the candidate was cut"),
        q("max(perennial_learner_candidate_evidence_events)", "events since the candidate was cut"),
    ]),
    ("Average precision: candidate vs served", "percentunit", "timeseries", [q("max by (model, set) (perennial_learner_average_precision)", "{{model}} on {{set}}")]),
    ("ROC-AUC: candidate vs served", "percentunit", "timeseries", [q("max by (model, set) (perennial_learner_roc_auc)", "{{model}} on {{set}}")]),
    ("Forgetting: retention AP lost since pretraining", "percentunit", "timeseries", [
        q('max(perennial_learner_retention_baseline_average_precision) - max(perennial_learner_average_precision{model="incumbent", set="retention"})', "served"),
        q('max(perennial_learner_retention_baseline_average_precision) - max(perennial_learner_average_precision{model="candidate", set="retention"})', "candidate"),
    ]),
    ("Alert rate at the operating point: candidate vs served", "percentunit", "timeseries", [
        q("max by (model) (perennial_learner_alert_rate)", "{{model}}"),
    ]),
    ("Alert volume change and negative flip rate (candidate vs served)", "percentunit", "timeseries", [
        q('max(perennial_learner_alert_rate{model="candidate"}) / max(perennial_learner_alert_rate{model="incumbent"}) - 1', "alert volume change"),
        q("max(perennial_learner_negative_flip_rate)", "frauds dropped (negative flip rate)"),
    ]),
    ("Counts behind the operating-point figures", "short", "timeseries", [
        q("max by (model) (perennial_learner_alerts)", "alerts of {{model}}"),
        q("max(perennial_learner_negative_flip_base_frauds)", "frauds the served version alerts on"),
    ]),
    ("Operating threshold and calibration error of the served version", "percentunit", "timeseries", [
        q("max(perennial_learner_operating_threshold)", "threshold (fraud probability)"),
        q("max(perennial_learner_served_expected_calibration_error)", "expected calibration error"),
    ]),
    ("Drift (river ADWIN on the served model's loss)", "none", "timeseries", [
        q("max(perennial_learner_drift_loss_estimation)", "loss estimation"),
        q("sum(increase(perennial_learner_drift_detected_total[5m]))", "drifts"),
        q("max(perennial_learner_drift_reacting)", "reacting"),
    ]),
    ("ADWIN window", "short", "timeseries", [q("max(perennial_learner_drift_window_events)", "events")]),
    ("Checkpoint write time", "s", "timeseries", [q(quantile("perennial_learner_checkpoint_duration_seconds", 0.95, window="5m"), "p95")]),
    ("Versions published", "short", "timeseries", [q("sum(increase(perennial_learner_versions_published_total[15m]))", "published"), q("max(perennial_learner_published_version_number)", "newest")]),
    ("Time since the last published version", "s", "stat", [q("time() - max(perennial_learner_last_publish_timestamp_seconds)", "since publish")]),
    ("Time since the last round", "s", "stat", [q("time() - max(perennial_learner_last_round_timestamp_seconds)", "since round")]),
    ("Learning paused by an operator", "bool_yes_no", "stat", [q("max(perennial_learner_paused)", "paused")]),
    ("Rollbacks by trigger", "short", "timeseries", [q("sum by (trigger) (increase(perennial_learner_rollbacks_total[1h]))", "{{trigger}}")]),
    ("Events quarantined by reason (label-poisoning guards)", "short", "timeseries", [
        q("sum by (reason) (increase(perennial_learner_events_quarantined_total[15m]))", "{{reason}}"),
    ]),
    ("Quarantined rounds: kept for an operator, released", "short", "timeseries", [
        q("max(perennial_learner_quarantine_kept_events)", "kept"),
        q("sum by (trigger) (increase(perennial_learner_quarantine_released_events_total[1h]))", "released ({{trigger}})"),
    ]),
    ("Contradicting labels: share of the served model's fraud calls labeled legitimate", "percentunit", "timeseries", [
        q("max(perennial_learner_contradiction_rate)", "last round"),
        q("max(perennial_learner_contradiction_usual_rate)", "usual"),
    ]),
    ("Share of consumed events dead-lettered", "percentunit", "timeseries", [
        q("sum(rate(perennial_learner_events_dead_lettered_total[10m])) / clamp_min(sum(rate(perennial_learner_events_consumed_total[10m])), 1e-9)", "dead-lettered"),
    ]),
    ("Kafka broker reachable, failed requests", "short", "timeseries", [
        q("max(perennial_learner_broker_up)", "reachable"),
        q("sum(increase(perennial_learner_broker_errors_total[5m]))", "failed requests"),
    ]),
    ("Offset resets by partition", "short", "timeseries", [q("sum by (partition) (increase(perennial_learner_offset_resets_total[1h]))", "partition {{partition}}")]),
    # the join of late labels (join.enabled)
    ("Late labels read, by outcome", "short", "timeseries", [q("sum by (outcome) (increase(perennial_join_labels_total[15m]))", "{{outcome}}")]),
    ("Late labels: join hit rate (joined / read)", "percentunit", "timeseries", [
        q('(sum(increase(perennial_join_labels_total{outcome="joined"}[15m])) or vector(0)) / clamp_min(sum(increase(perennial_join_labels_total[15m])), 1e-9)', "hit rate"),
    ]),
    ("Late labels: pending predictions, parked labels, matured negatives", "short", "timeseries", [
        q("max(perennial_join_pending_predictions)", "pending predictions"),
        q("max(perennial_join_parked_labels)", "parked labels (no prediction)"),
        q("sum(increase(perennial_join_matured_total[15m]))", "matured into negatives"),
    ]),
    ("Late labels: delay from event to label, by source", "s", "timeseries", [
        q("histogram_quantile(0.5, sum by (le, source) (rate(perennial_join_label_delay_seconds_bucket[15m])))", "p50 {{source}}"),
        q("histogram_quantile(0.95, sum by (le, source) (rate(perennial_join_label_delay_seconds_bucket[15m])))", "p95 {{source}}"),
    ]),
    ("Late labels: oldest pending prediction, time since the last label", "s", "timeseries", [
        q("max(perennial_join_oldest_pending_age_seconds)", "oldest pending (event time)"),
        q("time() - max(perennial_join_last_label_timestamp_seconds)", "since the last label"),
    ]),
]


def dashboard(uid: str, title: str, panels: list) -> dict:
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
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus", "current": {}, "hide": 0}]},
        "panels": out,
    }


DASHBOARDS = {
    "perennial-serving.json": dashboard("perennial-serving", "Perennial / Serving", SERVING),
    "perennial-learning.json": dashboard("perennial-learning", "Perennial / Learning", LEARNING),
}


def render(name: str) -> str:
    return json.dumps(DASHBOARDS[name], indent=2) + "\n"


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.mkdir(parents=True, exist_ok=True)
    for name in DASHBOARDS:
        (out / name).write_text(render(name))
        print(out / name)
