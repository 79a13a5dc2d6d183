"""Composition root: builds the adapters, wires them into the pipeline, owns process lifecycle.

``fleet worker`` runs the inference worker; ``fleet dlq-handler`` answers dead-lettered jobs. This is the
only module that imports both the Pub/Sub intake and the Triton adapter.
"""

# Imports are lazy on purpose: `fleet --help` and other sub-commands must not pay for gRPC/Triton imports.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from worker.runtime.settings import (
    BATCH_STORAGE_THREADS,
    INTERACTIVE_STORAGE_THREADS,
    WorkerSettings,
    describe_options,
)
from worker.shared import exit_codes

if TYPE_CHECKING:  # the wiring's types; the modules themselves are imported when a command runs
    import grpc

    from worker.runtime.inference import TritonModel
    from worker.runtime.model_packages.catalog import Catalog
    from worker.runtime.notify import PubSubNotifier
    from worker.runtime.pipeline.core import Pipeline
    from worker.runtime.pipeline.preprocessors import InlinePreprocessor, PoolPreprocessor
    from worker.runtime.preemption import PreemptionWatcher
    from worker.runtime.storage import GcsStorage
    from worker.runtime.telemetry import Metrics, MonitoringExporter


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for option, default in describe_options():
        help_text = f"{option.help} [env {option.env}; default {default!r}]"
        if option.kind == "bool":
            parser.add_argument(
                _flag(option.field),
                dest=option.field,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                _flag(option.field),
                dest=option.field,
                default=None,
                metavar="A,B" if option.kind.startswith("tuple") else None,
                type=option.parse,
                help=help_text,
            )


def register(subparsers: Any) -> None:
    """Add ``fleet worker`` and ``fleet dlq-handler``."""
    worker = subparsers.add_parser(
        "worker",
        help="run an inference worker (pull jobs, batch into Triton, write results, notify)",
        description="Run an inference worker. Every option can also be set by its environment variable; "
        "flags win. Units are in the option names (_s seconds, _ms milliseconds).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_setting_flags(worker)
    worker.set_defaults(func=run_worker_command)
    dlq = subparsers.add_parser(
        "dlq-handler",
        help="answer dead-lettered jobs with a DEAD_LETTERED failure result and notification",
        description="Pull the dead-letter handler subscription and answer every dead-lettered job.",
    )
    _add_setting_flags(dlq)
    dlq.set_defaults(func=run_dlq_command)


def settings_from_args(args: argparse.Namespace) -> WorkerSettings:
    """Settings from the environment, with the command line's flags winning."""
    names = {f.name for f in dataclasses.fields(WorkerSettings)}
    overrides = {k: v for k, v in vars(args).items() if k in names and v is not None}
    settings = WorkerSettings.from_env(**overrides)
    if settings.one_at_a_time:
        # The naive baseline of the benchmark: one job in flight, no batching, no settle batching,
        # decode in the main process, one worker process.
        settings = dataclasses.replace(
            settings,
            pipeline_slots=1,
            worker_processes=1,
            max_batch_size=1,
            max_batch_delay_ms=0.0,
            settle_interval_ms=0.0,
        )
    return settings


def run_worker_command(args: argparse.Namespace) -> int:
    """``fleet worker``: the process exit code."""
    if os.environ.get("FLEET_SUPERVISOR_PID"):  # a supervisor's child: die with it
        from worker.runtime.supervisor import die_with_supervisor

        die_with_supervisor()
    settings = settings_from_args(args)
    if settings.worker_processes > 1:
        from worker.runtime.supervisor import run_supervisor

        return asyncio.run(run_supervisor(settings))
    return asyncio.run(run_worker(settings))


def run_dlq_command(args: argparse.Namespace) -> int:
    """``fleet dlq-handler``: the process exit code."""
    settings = settings_from_args(args)
    return asyncio.run(run_dlq_handler(settings))


@dataclasses.dataclass
class _Worker:
    """The wired worker: what ``run_worker`` starts and closes, each part by its own start/close."""

    pipeline: Pipeline
    models: dict[str, TritonModel]
    notifier: PubSubNotifier
    preprocessor: PoolPreprocessor | InlinePreprocessor
    watcher: PreemptionWatcher
    exporter: MonitoringExporter | None
    threads: tuple[concurrent.futures.ThreadPoolExecutor, ...]
    #: The preprocess pool's start-up (spawning and importing), awaited before the first pull.
    warm_up: asyncio.Task[None]

    async def close(self) -> None:
        """Close every part, in the reverse of the order they start."""
        self.watcher.stop()
        await self.notifier.close()
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.stop)
        await asyncio.to_thread(self.preprocessor.close)
        for model in self.models.values():
            await model.close()
        for pool in self.threads:
            pool.shutdown(wait=False)


def load_catalog(settings: WorkerSettings) -> Catalog:
    """The packages in ``settings.models_dir`` (default: bundled); ``PackageInvalid`` names a bad one."""
    from worker.runtime.model_packages import loader

    return loader.load_packages(settings.models_dir or loader.BUNDLED_MODELS_DIR)


def _preprocessor(
    settings: WorkerSettings, metrics: Metrics, catalog: Catalog
) -> PoolPreprocessor | InlinePreprocessor:
    from worker.runtime.pipeline.preprocessors import InlinePreprocessor, PoolPreprocessor

    if settings.one_at_a_time:
        return InlinePreprocessor(metrics=metrics)
    return PoolPreprocessor(
        [str(package.folder) for package in catalog.packages],
        processes=settings.preprocess_processes,
        metrics=metrics,
        batch_nice=settings.batch_preprocess_nice,
    )


async def _build_worker(settings: WorkerSettings, metrics: Metrics, catalog: Catalog) -> _Worker:
    pre = _preprocessor(settings, metrics, catalog)
    # The pool processes start while this process imports the adapters and waits for the model: a
    # worker started during a backlog takes its first jobs that much sooner.
    warm_up = asyncio.create_task(asyncio.to_thread(pre.warm_up))
    await asyncio.sleep(0)  # let the task hand the warm-up to its thread before the imports below
    from worker.runtime import inference, intake, preemption
    from worker.runtime.pipeline.batching import INTERACTIVE_REQUESTS
    from worker.runtime.pipeline.core import Pipeline
    from worker.runtime.pipeline.ports import Ports

    models = {
        package.name: inference.TritonModel(
            settings.triton_grpc_url,
            package.declaration,
            timeout_s=settings.triton_timeout_s,
            shared_memory_min_bytes=settings.triton_shared_memory_min_bytes,
            requests_in_flight=settings.triton_batch_requests + INTERACTIVE_REQUESTS,
        )
        for package in catalog.packages
    }
    threads = concurrent.futures.ThreadPoolExecutor(BATCH_STORAGE_THREADS, thread_name_prefix="gcs")
    urgent_threads = concurrent.futures.ThreadPoolExecutor(
        INTERACTIVE_STORAGE_THREADS, thread_name_prefix="gcs-urgent"
    )
    channel = intake.pubsub_channel()  # one connection for pulls, acks and notifications
    notifier = _notifier(settings, channel)
    store = _gcs(settings, threads, urgent_threads)
    ports = Ports(
        source=intake.PubSubSource(channel, settings.project, timeout_s=settings.pubsub_timeout_s),
        inputs=store,
        results=store,
        catalog=catalog,
        models=models,
        notifier=notifier,
        preprocess=pre,
    )
    pipeline = Pipeline(settings, ports, metrics=metrics)
    watcher = preemption.PreemptionWatcher(settings.metadata_url, asyncio.get_running_loop(), pipeline.drain)
    return _Worker(
        pipeline=pipeline,
        models=models,
        notifier=notifier,
        preprocessor=pre,
        watcher=watcher,
        exporter=_exporter(settings, metrics),
        threads=(threads, urgent_threads),
        warm_up=warm_up,
    )


async def _start(worker: _Worker, settings: WorkerSettings) -> bool:
    """Wait for the model and the preprocess pool, then start the watchers; False when start-up failed."""
    from worker.runtime import telemetry
    from worker.runtime.model_packages.declaration import PackageInvalid

    log = telemetry.get_logger("worker.runtime.app")
    for name, model in worker.models.items():
        log.info("waiting for model", model=name, url=settings.triton_grpc_url)
        try:
            await model.wait_ready(timeout_s=settings.triton_ready_timeout_s)
        except PackageInvalid as exc:  # Triton serves other tensors than the package declares
            log.error("model package refused", model=exc.package, reason=exc.problem)
            return False
        except Exception as exc:
            log.error("model never became ready", model=name, reason=type(exc).__name__)
            return False
    try:
        await worker.warm_up
    except Exception as exc:
        log.error("preprocess pool did not start", reason=type(exc).__name__)
        return False
    if settings.watch_metadata:
        worker.watcher.start()
    if worker.exporter is not None:
        worker.exporter.start()
    log.info(
        "worker started",
        model="+".join(worker.models),
        version="+".join(m.version for m in worker.models.values()),
        slots=settings.pipeline_slots,
        instance=settings.instance,
        pid=os.getpid(),
    )
    return True


async def run_worker(settings: WorkerSettings) -> int:
    """Start, run until drained or failed, stop; returns the exit code."""
    from worker.runtime import preemption, telemetry

    telemetry.configure_logging(settings.log_level)
    started = time.monotonic()
    catalog = _catalog_or_none(settings)
    if catalog is None:
        return exit_codes.STARTUP_FAILED
    metrics = telemetry.Metrics(slots=settings.pipeline_slots)
    worker = await _build_worker(settings, metrics, catalog)
    worker.notifier.start()
    preemption.install_signal_handlers(asyncio.get_running_loop(), worker.pipeline.drain)
    code: int = exit_codes.STARTUP_FAILED
    try:
        if not await _start(worker, settings):
            return code
        metrics.mark_started()
        code = await worker.pipeline.run()
        return code
    finally:
        await worker.close()
        stats = telemetry.process_stats(metrics, started_monotonic=started)
        telemetry.get_logger("worker.runtime.app").info(
            "worker stats", stats=stats, exit_code=code, reason=worker.pipeline.drain_reason
        )
        if settings.stats_file:
            telemetry.write_stats(stats, settings.stats_file)


def _catalog_or_none(settings: WorkerSettings) -> Catalog | None:
    """The packages, or None after logging which package is bad and why (the worker refuses to start)."""
    from worker.runtime import telemetry
    from worker.runtime.model_packages.declaration import PackageInvalid

    try:
        return load_catalog(settings)
    except PackageInvalid as exc:
        telemetry.get_logger("worker.runtime.app").error(
            "model package refused", model=exc.package, reason=exc.problem
        )
        return None


def _notifier(settings: WorkerSettings, channel: grpc.aio.Channel) -> PubSubNotifier:
    from worker.runtime import notify

    return notify.PubSubNotifier(
        channel,
        f"projects/{settings.project}/topics/{settings.results_topic}",
        interval_s=settings.settle_interval_ms / 1000.0,
        timeout_s=settings.pubsub_timeout_s,
    )


def _gcs(
    settings: WorkerSettings,
    threads: concurrent.futures.Executor,
    urgent_threads: concurrent.futures.Executor | None = None,
) -> GcsStorage:
    from worker.runtime.storage import GcsStorage, http_client

    http, endpoint = http_client(emulator_host=os.environ.get("STORAGE_EMULATOR_HOST") or None)
    return GcsStorage(
        http,
        results_bucket=settings.results_bucket,
        results_prefix=settings.results_prefix,
        timeout_s=settings.storage_timeout_s,
        executor=threads,
        urgent_executor=urgent_threads,
        api_endpoint=endpoint,
    )


def _exporter(settings: WorkerSettings, metrics: Metrics) -> MonitoringExporter | None:
    if not settings.metrics_export:
        return None
    from google.cloud import monitoring_v3

    from worker.runtime.telemetry import ExportLabels, MonitoringExporter

    if settings.monitoring_endpoint:
        import grpc
        from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport

        channel = grpc.insecure_channel(settings.monitoring_endpoint)
        client = monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))
    else:
        client = monitoring_v3.MetricServiceClient()
    # Each of a VM's worker processes writes its own series: one node id each (Monitoring refuses two
    # writers of one series).
    label = settings.worker_process_label
    instance = f"{settings.instance}-{label}" if label else settings.instance
    labels = ExportLabels(project=settings.project, instance=instance, group=settings.instance_group)
    return MonitoringExporter(metrics, labels, client=client, interval_s=settings.metrics_interval_s)


async def run_dlq_handler(settings: WorkerSettings) -> int:
    """Answer dead-lettered jobs until SIGTERM/SIGINT; returns the exit code."""
    from worker.runtime import intake, preemption, telemetry
    from worker.runtime.dead_letter import DeadLetterHandler
    from worker.runtime.pipeline.answering import Answerer

    telemetry.configure_logging(settings.log_level)
    catalog = _catalog_or_none(settings)
    if catalog is None:
        return exit_codes.STARTUP_FAILED
    threads = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="gcs")
    channel = intake.pubsub_channel()
    notifier = _notifier(settings, channel)
    answerer = Answerer(
        _gcs(settings, threads),
        notifier,
        settings=settings,
        model_name="+".join(catalog.by_name),  # as a result no model answered names them
        model_version=lambda: "",
    )
    source = intake.PubSubSource(channel, settings.project, timeout_s=settings.pubsub_timeout_s)
    handler = DeadLetterHandler(settings, source, answerer, offered=catalog.analyses)
    preemption.install_signal_handlers(asyncio.get_running_loop(), handler.stop)
    notifier.start()
    try:
        return await handler.run()
    finally:
        await notifier.close()
        threads.shutdown(wait=False)
        telemetry.get_logger("worker.runtime.app").info("dlq handler stopped", count=handler.answered)
