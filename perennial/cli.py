"""`perennial <command>`: broker, simulate, pretrain, serve, learn, demo, evaluate.

Settings come from the environment (``PERENNIAL_<SECTION>__<FIELD>``) and from flags, which override
it: every subcommand takes every setting as ``--<section>.<field>`` (pydantic-settings' CLI source over
perennial/settings.py, so a new setting is a flag with no code here), and a few common ones have short
aliases (``--port`` for ``--serve.port``). The settings tree is built here, once, and passed down.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic_settings import CliSettingsSource

from learners.registry import RegistryError
from perennial import logs, package_version
from perennial.settings import Settings

log = logging.getLogger("perennial.learn")  # its one line: why `perennial learn` stopped

# short alias (flag dest) -> the setting it sets, for the flags every user types
_ALIASES: dict[str, tuple[str, str]] = {
    "bootstrap": ("kafka", "bootstrap_servers"),
    "topic": ("kafka", "topic"),
    "registry_path": ("registry", "path"),
    "host": ("serve", "host"),
    "port": ("serve", "port"),
    "checkpoint": ("learn", "checkpoint_path"),
    "metrics_port": ("learn", "metrics_port"),
    "rate": ("simulate", "rate"),
    "seed": ("simulate", "seed"),
    "duration": ("demo", "duration_s"),
    "workdir": ("demo", "workdir"),
    "labels": ("demo", "labels"),
}


DEMO_SCENARIOS = {"default": 1.0, "rare": 0.15}
"""Share of the simulator's frauds each demo scenario keeps (simulate.fraud_keep)."""

def settings_flags(sp: argparse.ArgumentParser) -> None:
    """Every setting as ``--<section>.<field>`` on this subcommand (help from the settings' docstrings)."""
    source: CliSettingsSource[Settings] = CliSettingsSource(
        Settings, root_parser=sp, cli_avoid_json=True, cli_hide_none_type=True, cli_use_class_docs_for_groups=True,
    )
    sp.set_defaults(settings_source=source)


def build_settings(args: argparse.Namespace) -> Settings:
    """Defaults < environment < ``--<section>.<field>`` flags < their short aliases."""
    for dest, (section, field) in _ALIASES.items():
        value = getattr(args, dest, None)
        if value is not None:
            setattr(args, f"{section}.{field}", str(value))
    source: CliSettingsSource[Settings] = args.settings_source  # every subcommand's parser has one
    return Settings(_cli_settings_source=source(parsed_args=args))


def emit_json(kind: str, **fields: Any) -> None:
    """One event on stdout (a JSON line unless at a terminal: perennial/logs.py): what `perennial
    demo` and log collectors read."""
    logs.emit(kind, fields)


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.broker import LocalBroker

    with LocalBroker(port=args.broker_port) as broker:
        emit_json("broker", bootstrap=broker.bootstrap)
        stop = stop_on_signals()
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                return 1
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streams import simulate as sim_io
    from streams.simulator import DEFAULT_SCHEDULE, Simulator

    sim = Simulator.from_settings(settings.simulate, args.schedule or DEFAULT_SCHEDULE)
    if args.history:
        n = sim_io.write_history(sim, Path(args.history), args.start_day, args.days or 45)
        emit_json("history", path=args.history, events=n)
        return 0
    stop = stop_on_signals()
    end = args.start_day + args.days if args.days else float("inf")
    if args.server:
        counts = sim_io.score_and_label(sim, settings, args.server, args.start_day, end, stop, max_events=args.max_events)
        emit_json("simulated", **counts)
        return 0
    sent = sim_io.push(sim, settings, args.start_day, end, stop, max_events=args.max_events)
    emit_json("simulated", events=sent)
    return 0


def cmd_pretrain(args: argparse.Namespace, settings: Settings) -> int:
    from learners import network as networks
    from learners.pretrain import ensure_no_versions, fit_schema, pretrain, served_version
    from learners.registry import Registry
    from learners.schema import declaration_from_file
    from streams.simulator import FEATURES, Simulator
    from streams.tables import read_labeled_table

    registry = Registry(settings.registry.path)
    if args.if_empty and (version := served_version(registry)) is not None:
        emit_json("pretrained", version=version, skipped="the registry already has a version")
        return 0
    ensure_no_versions(registry)  # before reading history: refusing must not wait for it
    # the user's files and code before the history too: a mistake in them is refused at once, having written nothing
    declaration = declaration_from_file(args.schema) if args.schema else None
    p = settings.pretrain
    spec = network_spec(args, settings)
    excluded: dict[str, str] = {}
    if args.history:
        features = args.features.split(",") if args.features else None
        table = read_labeled_table(args.history, args.label_column, args.time_column or None, features)
        names, x, y, excluded = table.features, table.x, table.y, table.excluded
        source = {"history": args.history, "label_column": args.label_column, "time_column": args.time_column or ROW_ORDER}
    else:
        s = settings.simulate
        tx = Simulator.from_settings(s).generate(0, p.history_days)
        names, x, y = FEATURES, tx.features, tx.label
        source = {"history": f"simulated, days 0-{p.history_days}", "label_column": "label", "time_column": "time"}
    if declaration and (strange := [d["name"] for d in declaration if d["name"] not in names]):
        why = f" ({excluded[strange[0]]})" if strange[0] in excluded else ""
        raise ValueError(f"{args.schema} declares {strange[0]!r}, which is not a feature of the history{why}; the features are "
                         f"{', '.join(names)}: remove it from the declaration, or name the features with --features")
    schema = fit_schema(names, x, declaration)
    networks.build(spec, schema)  # refused here, before anything is printed or written
    schema_out = Path(args.schema_out) if args.schema_out else Path(settings.registry.path) / "schema.json"
    emit_json("pretrain_data", **source, features=list(names), excluded=excluded)
    logging.getLogger("perennial.pretrain").info("feature schema (edit %s and pass it back with --schema):\n%s", schema_out, schema.describe())
    try:
        schema_out.parent.mkdir(parents=True, exist_ok=True)
        schema_out.write_bytes(orjson.dumps(schema.declaration(), option=orjson.OPT_INDENT_2) + b"\n")
    except OSError as exc:  # a read-only or missing place: the user's mistake, refused before training
        raise ValueError(f"cannot write the feature schema to {schema_out} ({exc.strerror}); name a writable file with --schema-out") from exc
    emit_json("pretrain_schema", path=str(schema_out), features=schema.declaration(), network=spec.to_dict())
    manifest = pretrain(
        names,
        x,
        y,
        registry,
        schema=schema,
        network=spec,
        epochs=p.epochs,
        hidden=p.hidden,
        retention_size=p.retention_size,
        retention_frauds=p.retention_frauds,
        seed=settings.simulate.seed,
        contradiction_score=settings.learn.contradiction_score,
    )
    m = manifest["metrics"]
    split = {part: {"events": m[f"{part}_events"], "frauds": m[f"{part}_frauds"]} for part in ("train", "validation")}
    emit_json("pretrained", version=manifest["version"], split=split, metrics=m, registry=str(settings.registry.path))
    return 0


ROW_ORDER = "row order (--time-column '')"


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from perennial.cpus import limit_threads
    from service.app import create_app
    from service.protocol import with_request_deadline

    serve = settings.serve
    limit_threads(serve.numeric_threads)
    uvicorn.run(
        create_app(settings), host=serve.host, port=serve.port, log_level="warning", access_log=False,
        log_config=None,  # uvicorn's loggers reach the root handler of perennial/logs.py: JSON in a pod
        http=with_request_deadline(serve.request_timeout_s),
        # uvicorn annotates int but hands the value to asyncio's call_later, which takes fractional seconds
        timeout_keep_alive=serve.keep_alive_s,  # type: ignore[arg-type]
        limit_concurrency=serve.max_connections,
    )
    return 0


def cmd_learn(args: argparse.Namespace, settings: Settings) -> int:
    from prometheus_client import start_http_server

    from learners.learner import Learner
    from learners.loop import run
    from learners.metrics import LearnerMetrics

    metrics = LearnerMetrics()
    if settings.learn.metrics_port:
        start_http_server(settings.learn.metrics_port, addr=settings.learn.metrics_host, registry=metrics.registry)
    stop = stop_on_signals()
    learner = Learner(settings, metrics, emit_json)
    emit_json("learning", topic=settings.kafka.topic, incumbent=learner.incumbent.version, metrics_port=settings.learn.metrics_port)
    if settings.join.enabled:
        from learners.joiner import Joiner

        joiner = Joiner(settings, learner.schema.features, metrics.registry)
        joiner.start(stop)
        emit_json("joining", predictions=settings.kafka.predictions_topic, labels=settings.kafka.labels_topic,
                  maturity_s=settings.join.maturity_s, state=str(joiner.state.path))
    try:
        run(learner, stop)
    except Exception:
        # The traceback with its whole chain, the first exception first: an error while closing the
        # clients must not hide the one that stopped the learner (main would print only the last).
        log.exception("the learner stopped on an error; restarted, it resumes from its last checkpoint")
        emit_json("stopped", accounting=learner.acct.__dict__, failed=True)
        return 1
    emit_json("stopped", accounting=learner.acct.__dict__)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from perennial.demo import run_demo

    keep_share = DEMO_SCENARIOS[args.scenario]
    if keep_share != 1.0:
        update: dict[str, Any] = {"simulate": settings.simulate.model_copy(update={"fraud_keep": keep_share})}
        if args.workdir is None:
            update["demo"] = settings.demo.model_copy(update={"workdir": settings.demo.workdir.with_name(f"{settings.demo.workdir.name}-{args.scenario}")})
        settings = settings.model_copy(update=update)
    return run_demo(settings, summary_json=Path(args.summary_json) if args.summary_json else None, keep=args.keep, prometheus=args.prometheus)


DEFAULT_STRATEGIES = "product,frozen,naive,replay,cumulative"
"""What `perennial evaluate` runs unless told otherwise: the product and the baselines of the headline,
one seed; every built-in scenario then fits in about 13 minutes on 2 cores."""


def evaluation_specs(args: argparse.Namespace) -> list[Any]:
    """The scenarios asked for, each also with joined labels after every maturity of --label-join."""
    from dataclasses import replace

    from streams.simulator import DAY

    specs = _scenario_specs(args)
    if not args.label_join:
        return specs
    days = [float(d) for d in args.label_join.split(",") if d.strip()]
    if not days or min(days) <= 0:
        raise ValueError(f"--label-join takes positive days of maturity, not {args.label_join!r}")
    return [s for spec in specs for s in (spec, *(replace(spec, maturity_s=d * DAY) for d in days))]


def _scenario_specs(args: argparse.Namespace) -> list[Any]:
    """The scenarios asked for: a file (--input), built-in ones (--scenario), or the simulator
    with the options given."""
    from perennial.evaluation.harness import Spec
    from perennial.evaluation.scenarios import CATALOGUE
    from perennial.evaluation.scores import ALERT_BUDGET, RESAMPLES

    common = {"card_k": args.card_k, "alert_budget": ALERT_BUDGET if args.alert_budget is None else args.alert_budget,
              "resamples": args.resamples or RESAMPLES}
    if args.input and args.scenario:
        raise ValueError("--input and --scenario both name what to evaluate; give one")
    if args.schema and not args.input:
        raise ValueError("--schema declares the features of a file: give it with --input")
    if args.input:
        options: dict[str, Any] = {
            "path": args.input, "label_column": args.label_column, "time_column": args.time_column or None,
            "features": args.features.split(",") if args.features else None, "label_delay_s": args.label_delay or 0.0,
            "label_time_column": args.label_time_column, "pattern_column": args.pattern_column,
            "entity_column": args.entity_column, "history_fraction": args.history_fraction, "periods": args.periods,
        }
        if args.schema:
            from learners.schema import declaration_from_file

            options["declaration"] = declaration_from_file(args.schema)
        return [Spec("table", options, **common)]
    if args.scenario:
        names = list(CATALOGUE) if args.scenario == "all" else [n.strip() for n in args.scenario.split(",") if n.strip()]
        unknown = [n for n in names if n not in CATALOGUE]
        if unknown:
            raise ValueError(f"unknown scenario {', '.join(unknown)}; built in: {', '.join(CATALOGUE)}")
        return [Spec("builtin", {"name": n}, **common) for n in names]
    options = {"customers": args.customers, "terminals": args.terminals, "stream_days": args.stream_days,
               "history_days": args.history_days, "period_days": args.period_days}
    if args.label_delay is not None:
        options["label_delay_days"] = args.label_delay / 86400
    if args.schedule:
        options["schedule"] = args.schedule
    return [Spec("simulator", options, **common)]


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import replace

    from perennial.evaluation.harness import evaluate
    from perennial.evaluation.scores import CONFIDENCE
    from perennial.evaluation.strategies import EXTRA, STRATEGIES

    specs = evaluation_specs(args)
    if args.model:  # every strategy starts from (and refits) this network
        network = network_spec(args, settings).to_dict()
        specs = [replace(spec, network=network) for spec in specs]
    known = STRATEGIES + EXTRA
    names = list(known) if args.strategies == "all" else [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown strategy {', '.join(unknown)}; known: {', '.join(known)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    notes = Path(args.notes).read_text() if args.notes else ""  # read first: a wrong path fails before the runs
    run_dir = Path("var/evaluate") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = Path(args.out) if args.out else run_dir / "report.md"
    workdir = Path(args.workdir) if args.workdir else run_dir / "work"
    command = "perennial " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["evaluate"] else "perennial evaluate"
    emit_json("evaluate_plan", scenarios=[spec.name for spec in specs], strategies=names, seeds=seeds, report=str(out), workdir=str(workdir))
    summary = evaluate(specs, names, seeds, settings, workdir, out, args.workers, command, emit_json, confidence=CONFIDENCE, notes=notes)
    emit_json("evaluated", report=str(out), targets={name: s["targets"] for name, s in summary.items()})
    return 0


def _model_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="MODULE:ATTR", help="a PyTorch network factory, called as factory(schema, **kwargs), "
                   "returning a module that maps the schema's input [N, input_width] to [N, 2] logits (default: the "
                   "built-in MLP, learners.model:build); importable wherever the learner and servers run")
    p.add_argument("--model-kwargs", metavar="JSON", help="keyword arguments of the factory, a JSON object (e.g. "
                   "'{\"width\": 32}'); stored in the manifest with the factory's name")


def network_spec(args: argparse.Namespace, settings: Settings) -> Any:
    """The network --model and --model-kwargs name (the built-in one with pretrain.hidden units by
    default), its factory imported: a mistake is refused before any data is read."""
    from learners import network as networks

    spec = networks.NetworkSpec.parse(args.model or networks.BUILTIN_FACTORY, args.model_kwargs)
    if spec.builtin:
        spec = networks.NetworkSpec(spec.factory, {"hidden": settings.pretrain.hidden, **spec.kwargs})
    networks.import_factory(spec)
    return spec


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perennial", description="Continual learning for streaming fraud data.")
    p.add_argument("--version", action="version", version=f"perennial {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str, *flags: str) -> argparse.ArgumentParser:
        # "resolve": the short --registry replaces the settings source's --registry (the whole section as JSON)
        sp = sub.add_parser(name, help=help_, description=help_, conflict_handler="resolve")
        settings_flags(sp)
        common: dict[str, tuple[str, dict[str, Any]]] = {
            "bootstrap": ("--bootstrap", dict(help="Kafka bootstrap servers (kafka.bootstrap_servers)")),
            "topic": ("--topic", dict(help="labeled-event topic (kafka.topic)")),
            "registry": ("--registry", dict(type=Path, dest="registry_path", help="registry directory (registry.path)")),
        }
        for f in flags:
            sp.add_argument(common[f][0], **common[f][1])
        return sp

    b = add("broker", "Run the local Kafka-protocol broker (Tansu, memory-only) on loopback.")
    b.add_argument("--broker-port", type=int, default=19092, help="port to listen on (default 19092)")

    s = add("simulate", "Push simulated labeled events to the topic at a rate, or write a history file.", "bootstrap", "topic")
    s.add_argument("--rate", type=float, help="events per second (simulate.rate)")
    s.add_argument("--seed", type=int, help="random seed (simulate.seed)")
    s.add_argument("--start-day", type=int, default=45, help="first simulated day (default 45, after the pretraining history)")
    s.add_argument("--days", type=int, help="number of days (default: without end when pushing, 45 for --history)")
    s.add_argument("--max-events", type=int, help="stop after this many events")
    s.add_argument("--schedule", help="fraud-pattern schedule, e.g. 'card_testing:45-;card_compromise:0-50,66-'")
    s.add_argument("--history", help="write a CSV of labeled events to this path instead of pushing")
    s.add_argument("--server", help="instead of labeled events: post each transaction to the server at this URL when it "
                   "happens and send each fraud's label alone to <topic>.labels at its label time (for a server logging "
                   "predictions and a learner joining labels: serve.prediction_log, join.enabled)")

    pt = add("pretrain", "Fit the first version on history (a CSV/Parquet file, or simulated) and save the retention set. "
             "Refuses a registry that already has versions.", "registry")
    pt.add_argument("--history", help="CSV or Parquet file of labeled events (default: simulate 45 days)")
    pt.add_argument("--label-column", default="label")
    pt.add_argument("--time-column", default="time", help="event time column (default time; the earlier 80%% of rows by it "
                    "train, the later 20%% validate); '' takes the row order as time, and only then")
    pt.add_argument("--features", help="comma-separated feature columns (default: every column but the label, the time, "
                    "ids and free-form text whose values are nearly all distinct); the features used and those left out are printed")
    pt.add_argument("--schema", metavar="FILE", help="a feature declaration (JSON, as --schema-out writes it, edited): per "
                    "feature its type (number or category) and whether it may be missing, and for a category max_categories "
                    "and min_count; what it leaves out is inferred from the history")
    pt.add_argument("--schema-out", metavar="FILE", help="where to write the declaration of the schema fitted, to edit and pass "
                    "back with --schema (default <registry>/schema.json); the schema is also printed to the log and carried "
                    "by the version's manifest")
    _model_flags(pt)
    pt.add_argument("--seed", type=int, help="random seed (simulate.seed)")
    pt.add_argument("--if-empty", action="store_true", help="do nothing when the registry serves a sound version; "
                    "refuse (exit 2, nothing changed) when it has versions but no sound CURRENT, or a retention set but no version")

    sv = add("serve", "Serve predictions over HTTP and follow the registry's published versions.", "bootstrap", "registry")
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)

    ln = add("learn", "Consume labeled events, fine-tune with replay + online EWC, gate, publish.", "bootstrap", "topic", "registry")
    ln.add_argument("--checkpoint", type=Path, help="checkpoint file (learn.checkpoint_path)")
    ln.add_argument("--metrics-port", type=int, help="port of the learner's /metrics (learn.metrics_port)")

    d = add("demo", "Run the whole loop locally for a bounded time and summarise it.")
    d.add_argument("--duration", type=float, help="seconds to stream (demo.duration_s, default 120)")
    d.add_argument("--rate", type=float, help="labeled events per second (simulate.rate)")
    d.add_argument("--summary-json", help="write the summary as JSON to this path")
    d.add_argument("--workdir", type=Path, help="where the demo keeps its registry and checkpoint (demo.workdir)")
    d.add_argument("--keep", action="store_true", help="keep the workdir's registry instead of starting fresh")
    d.add_argument("--scenario", choices=sorted(DEMO_SCENARIOS), default="default",
                   help="default: the simulator's fraud rate (about 1%%); rare: 15%% of its frauds kept, about 0.15%% fraud "
                        "(workdir var/demo-rare unless --workdir)")
    d.add_argument("--labels", choices=("events", "join"), help="events: labeled events with features on the topic; join: "
                   "transactions posted to the server when they happen, fraud labels alone later on <topic>.labels, joined "
                   "by the learner, the rest negatives after demo.join_maturity_s (demo.labels, default events)")
    d.add_argument("--prometheus", action="store_true", help="also start a local Prometheus (if installed) scraping both processes")

    ev = add("evaluate", "Replay labeled streams prequentially through continual-learning strategies (the product and "
             "baselines) and report served quality with paired bootstrap intervals, forgetting and cost.")
    ev.add_argument("--scenario", help="comma-separated built-in scenarios (perennial/evaluation/scenarios.py), or all")
    ev.add_argument("--input", help="CSV or Parquet file of labeled events (default: the simulator's scenario)")
    ev.add_argument("--label-column", default="label")
    ev.add_argument("--time-column", default="time", help="event time column (epoch seconds or ISO-8601; default time); "
                    "'' takes the row order as time, and only then")
    ev.add_argument("--features", help="comma-separated feature columns (default: every column but the label, the time, ids, "
                    "free-form text whose values are nearly all distinct and the columns below); the features used are printed")
    ev.add_argument("--label-delay", type=float, help="seconds from an event to its label: fixed for a file (default 0), "
                    "the mean of an exponential delay for the simulator (default 86400)")
    ev.add_argument("--label-time-column", help="column with each label's arrival time (instead of --label-delay)")
    ev.add_argument("--label-join", metavar="DAYS", help="also replay each scenario with its labels joined as `perennial learn` "
                    "joins late labels: only frauds labeled, every other event a negative after this many days of maturity "
                    "(comma-separated for several); the report compares each with every label at its label time")
    ev.add_argument("--schema", metavar="FILE", help="with --input: a feature declaration, as `perennial pretrain --schema` "
                    "takes it (default: inferred from the history part)")
    _model_flags(ev)
    ev.add_argument("--pattern-column", help="column naming each fraud's pattern (per-pattern figures)")
    ev.add_argument("--entity-column", help="card or account column (card precision@k)")
    ev.add_argument("--history-fraction", type=float, default=0.3, help="earliest share of rows that pretrains (default 0.3)")
    ev.add_argument("--periods", type=int, default=8, help="periods the stream is judged in (default 8)")
    ev.add_argument("--customers", type=int, default=2000, help="simulator: cards (default 2000)")
    ev.add_argument("--terminals", type=int, default=1000, help="simulator: terminals (default 1000)")
    ev.add_argument("--history-days", type=int, default=45, help="simulator: days of pretraining history (default 45)")
    ev.add_argument("--stream-days", type=int, default=45, help="simulator: days streamed (default 45)")
    ev.add_argument("--period-days", type=int, default=5, help="simulator: days per period (default 5)")
    ev.add_argument(
        "--schedule",
        help="simulator: fraud-pattern schedule (default: card_testing new on day 45, when the stream starts; card_compromise absent on days 50-66)",
    )
    ev.add_argument("--strategies", default=DEFAULT_STRATEGIES, help=f"comma-separated strategies, or all (default {DEFAULT_STRATEGIES})")
    ev.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    ev.add_argument("--card-k", type=int, default=20, help="cards checked per day for card precision@k (default 20)")
    ev.add_argument("--alert-budget", type=float, help="share of each day's events reviewed (recall at budget) and alert rate "
                    "of the pretrained version that fixes the alert threshold (default 0.005)")
    ev.add_argument("--resamples", type=int, help="bootstrap resamples per interval (default 200)")
    ev.add_argument("--workers", type=int, default=2, help="processes running strategies side by side (default 2)")
    ev.add_argument("--out", help="markdown report, plots in a folder beside it (default var/evaluate/<UTC time>/report.md)")
    ev.add_argument("--notes", help="a markdown file appended to the report (e.g. what was tried where a target is missed)")
    ev.add_argument("--workdir", help="pretrained registries and raw results, results.json (default var/evaluate/<UTC time>/work)")
    return p


COMMANDS = {
    "broker": cmd_broker, "simulate": cmd_simulate, "pretrain": cmd_pretrain,
    "serve": cmd_serve, "learn": cmd_learn, "demo": cmd_demo, "evaluate": cmd_evaluate,
}


def main(argv: list[str] | None = None) -> int:
    logs.configure()  # until the settings are read: auto, INFO
    args = parser().parse_args(argv)
    try:
        settings = build_settings(args)
        logs.configure(settings.log.format, settings.log.level)
        return COMMANDS[args.command](args, settings)
    except (ValueError, FileNotFoundError, RuntimeError, TimeoutError, RegistryError) as exc:
        # a user's mistake (a setting, a file), not a bug: its message, no traceback, in the log's format
        logging.getLogger(f"perennial.{args.command}").error("perennial %s: %s", args.command, exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
