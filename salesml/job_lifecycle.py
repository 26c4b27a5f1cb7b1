"""The life of one batch job: a `runs` record, validated inputs, one write, a final status.

Every job (validate, train, score, forecast, backtest) goes through `job_run` so that each
leaves the same trace: a row in `runs` that ends `succeeded` or `failed` with a message, the
quarantined rows of its inputs, and outputs written in one transaction (or not at all).

Steps: a job runs its named steps through `JobRun.step` (and `JobRun.map` for work split into
partitions). The run's `Executor` decides how: the default calls each step in place; the
Prefect executor (`pipelines.tasks.prefect_executor`) makes each a Prefect task, retrying only
steps marked `io=True`, and may fan `map` out to Dask. `JobRun.load` runs "pull" (io) and
"validate" (never retried); `JobRun.write` runs "write" (io). A job that does not take an
executor still gets one: `job_run` falls back to the one set by `use_executor`.

Concurrency: `job_run` refuses to start while a live run of the same flow and as_of is
`running`; it waits up to `compute.run_wait_seconds` for it to finish, then fails with
`RunConflictError` naming the other run.

Runs that die: while a job runs, a daemon thread refreshes `runs.heartbeat_at` every
`compute.heartbeat_seconds`. Starting a run marks `abandoned` every running row whose process is
gone (same host: at once) or silent for `compute.heartbeat_timeout_seconds` (another host), and
the new run's message names them; `salesml runs abandon RUN_ID` does it by hand. A training job
then reconciles the registry for its abandoned predecessors (`JobRun.reconcile_training`).

Empty outputs: `JobRun.write(frames, main=...)` never replaces the rows an earlier run wrote
for this as_of by nothing: when the main output is empty and earlier rows exist, nothing of the
batch is written and the run's message says so (the earlier rows stay, consistent as a set).

Every message and param stored in `runs` goes through `salesml.secrets.redact`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import polars as pl

from salesml.config import Settings
from salesml.secrets import redact

if TYPE_CHECKING:
    from salesml.warehouse import AbandonedRun, OpenedRun, Warehouse

T = TypeVar("T")


class Executor:
    """Runs a job's steps. This base class runs each step in place, in order (the default).

    Subclasses override `run` (one step) and may override `map` (one step over partitions);
    `partitions` is how many parts a job should split partitionable work into.
    """

    partitions: int = 1

    def run(
        self,
        name: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        io: bool,
    ) -> T:
        """Call `fn(*args, **kwargs)` as the step `name`; io=True marks a retryable IO step."""
        return fn(*args, **kwargs)

    def map(
        self, name: str, fn: Callable[..., T], items: Sequence[Any], shared: dict[str, Any]
    ) -> list[T]:
        """`[fn(item, **shared) for item in items]`, each call a step named `name`."""
        return [self.run(name, fn, (item,), shared, io=False) for item in items]


DIRECT = Executor()

_current_executor: ContextVar[Executor | None] = ContextVar("salesml_executor", default=None)


@contextmanager
def use_executor(executor: Executor) -> Iterator[Executor]:
    """Make `executor` the one `job_run` uses when its caller passes none (e.g. a flow calling
    a job that does not take an `executor` argument).
    """
    token = _current_executor.set(executor)
    try:
        yield executor
    finally:
        _current_executor.reset(token)


def current_executor() -> Executor:
    """The executor set by `use_executor`, else the in-place default."""
    return _current_executor.get() or DIRECT


@dataclass
class JobRun:
    """Handle a job uses to read its inputs, run its steps and write its outputs."""

    settings: Settings
    warehouse: Warehouse  # imported only for type checking: not loaded at start-up
    run_id: str
    flow: str
    as_of: datetime
    model_version: str | None = None
    row_counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    executor: Executor = field(default=DIRECT, repr=False)

    @property
    def partitions(self) -> int:
        """How many parts partitionable work should be split into (1 unless scaled out)."""
        return self.executor.partitions

    def step(
        self, name: str, fn: Callable[..., T], *args: Any, io: bool = False, **kwargs: Any
    ) -> T:
        """Run `fn(*args, **kwargs)` as the step `name` through the run's executor.

        io=True marks a step that only moves data (read, load a model, write) and may be
        retried; compute and validation steps (the default) fail at once.
        """
        return self.executor.run(name, fn, args, kwargs, io=io)

    def map(self, name: str, fn: Callable[..., T], items: Sequence[Any], **shared: Any) -> list[T]:
        """`[fn(item, **shared) for item in items]` as steps `name`, maybe in parallel.

        `fn` must be a module-level function and the results picklable: a scaled-out executor
        runs it on other workers, passing `shared` and the results through files.
        """
        return self.executor.map(name, fn, items, shared)

    def load(self, names: list[str], required: list[str] | None = None) -> dict[str, pl.DataFrame]:
        """Read ("pull", io) then validate ("validate") `names` as of `as_of`.

        required: the tables that must be present with rows (default: see
        `salesml.inputs.load_tables`); the others may be absent or empty.
        """
        from salesml.inputs import read_tables

        raw = self.step("pull", read_tables, self.settings, self.as_of, names, required, io=True)
        return self.step("validate", self.validate, raw, required)

    def validate(
        self, raw: dict[str, pl.DataFrame], required: list[str] | None = None
    ) -> dict[str, pl.DataFrame]:
        """Validate raw input frames; quarantined rows are written at once.

        Raises DataValidationError (after recording the quarantine) when a table's bad
        share is at or over the configured threshold.
        """
        from salesml.validation import DataValidationError, validate_tables

        try:
            tables, quarantine = validate_tables(raw, self.settings, self.as_of, required)
        except DataValidationError as exc:
            if exc.quarantine is not None and exc.quarantine.height:
                self.warehouse.write_quarantine(self.run_id, exc.quarantine)
            raise
        if quarantine.height:
            self.warehouse.write_quarantine(self.run_id, quarantine)
        self.row_counts["quarantine"] = self.row_counts.get("quarantine", 0) + quarantine.height
        for name, frame in tables.items():
            self.row_counts[f"input_{name}"] = frame.height
        return tables

    def write(
        self,
        frames: dict[str, pl.DataFrame],
        main: str | None = None,
        scopes: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """Write all `frames` in one transaction ("write", io), replacing rows of this as_of
        (narrowed per table by `scopes`, see `Warehouse.write_batch`).

        main: the table that is the job's result. When it is empty while the warehouse holds
        rows of it for this as_of (written by an earlier run), nothing is written: an empty
        result never silently deletes earlier rows. The run's message says what was kept.
        """
        if main is not None and frames[main].height == 0:
            kept = self.warehouse.count_rows(main, self.as_of)
            if kept:
                self.notes.append(
                    f"{main}: this run produced no rows; kept the {kept} rows an earlier run "
                    f"wrote for as_of {self.as_of.isoformat()} (nothing written)"
                )
                for name in frames:
                    self.row_counts[name] = 0
                return
        self.step(
            "write",
            self.warehouse.write_batch,
            frames,
            as_of=self.as_of,
            run_id=self.run_id,
            model_version=self.model_version,
            scopes=scopes,
            io=True,
        )
        for name, frame in frames.items():
            self.row_counts[name] = frame.height

    def reconcile_training(self, model_name: str) -> list[str]:
        """Put in order what abandoned runs of this (training) flow left behind.

        For each: its MLflow run still RUNNING is ended as KILLED, and its model version gets
        the promotion decision it missed (see `tracking.reconcile_run`); the `runs` row gets
        the outcome appended to its message and `reconciled_at`. Returns one line per run.
        Call after `tracking.configure`.
        """
        from salesml import tracking

        lines = []
        for run_id in self.warehouse.abandoned_to_reconcile(self.flow):
            outcome = tracking.reconcile_run(model_name, run_id)
            self.warehouse.mark_reconciled(
                run_id, f"reconciled: {outcome.message}", outcome.version
            )
            lines.append(f"reconciled abandoned run {run_id}: {outcome.message}")
        self.notes.extend(lines)
        return lines


class Heartbeat:
    """Refreshes the run's `heartbeat_at` every `seconds` from a daemon thread.

    A failed beat (warehouse busy or unreachable) is skipped: the next one tries again; a run
    on another host is only taken as dead after `compute.heartbeat_timeout_seconds` of silence.
    """

    def __init__(self, warehouse: Warehouse, run_id: str, seconds: float) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.seconds = seconds
        self.beats = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"salesml-heartbeat-{run_id[:8]}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop beating; a beat still waiting for the warehouse is left to finish on its own
        (it only touches a row that is still 'running').
        """
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.warehouse.heartbeat(self.run_id)
                self.beats += 1
            except Exception:
                self.failures += 1


@contextmanager
def job_run(
    settings: Settings,
    flow: str,
    as_of: datetime,
    params: dict[str, Any] | None = None,
    executor: Executor | None = None,
) -> Iterator[JobRun]:
    """Open a `runs` record for `flow` at `as_of`; close it as succeeded or failed.

    executor: how steps run (default: the one set by `use_executor`, else in place).
    Raises RunConflictError when another run of `flow` at `as_of` is still running after
    `compute.run_wait_seconds`.
    """
    from salesml.warehouse import Warehouse

    warehouse = Warehouse.from_settings(settings)
    opened = start_exclusive(warehouse, settings, flow, as_of, params)
    run = JobRun(
        settings=settings,
        warehouse=warehouse,
        run_id=opened.run_id,
        flow=flow,
        as_of=as_of,
        notes=[f"marked abandoned: {dead.describe()}" for dead in opened.abandoned],
        executor=executor or current_executor(),
    )
    try:
        with Heartbeat(warehouse, run.run_id, settings.compute.heartbeat_seconds):
            yield run
    except BaseException as exc:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        message = redact(f"{type(exc).__name__}: {first}")[:1000]
        warehouse.finish_run(
            run.run_id,
            status="failed",
            model_version=run.model_version,
            row_counts=run.row_counts,
            message=message,
        )
        raise
    warehouse.finish_run(
        run.run_id,
        status="succeeded",
        model_version=run.model_version,
        row_counts=run.row_counts,
        message=redact("; ".join(run.notes)) or None,
    )


def start_exclusive(
    warehouse: Warehouse,
    settings: Settings,
    flow: str,
    as_of: datetime,
    params: dict[str, Any] | None = None,
) -> OpenedRun:
    """`warehouse.open_run` (exclusive), which first marks dead runs abandoned; while a live
    run of the same flow and as_of is running, waits with backoff up to
    `compute.run_wait_seconds` for it to finish (each retry sweeps again), then re-raises
    RunConflictError with what to do about it. Returns the `OpenedRun`.
    """
    from salesml.warehouse import RunConflictError

    compute = settings.compute
    deadline = time.monotonic() + compute.run_wait_seconds
    delay = 0.2
    abandoned: list[AbandonedRun] = []
    while True:
        try:
            opened = warehouse.open_run(
                flow=flow,
                as_of=as_of,
                params=params,
                exclusive=True,
                heartbeat_timeout_seconds=compute.heartbeat_timeout_seconds,
                stale_after_seconds=compute.stale_run_minutes * 60.0,
            )
            opened.abandoned[:0] = abandoned
            return opened
        except RunConflictError as exc:
            abandoned.extend(exc.abandoned)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RunConflictError(
                    f"{exc}; waited {compute.run_wait_seconds:g} s (compute.run_wait_seconds). "
                    "A run whose process died is marked abandoned at once on its host, after "
                    f"{compute.heartbeat_timeout_seconds:g} s without heartbeat elsewhere "
                    "(compute.heartbeat_timeout_seconds); or run `salesml runs abandon RUN_ID`"
                ) from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 5.0)


def with_lineage(frame: pl.DataFrame, model_version: str, mlflow_run_id: str) -> pl.DataFrame:
    """`frame` with the model version and MLflow run that produced it (the warehouse stamps
    run_id and as_of); every model output row carries both.
    """
    return frame.with_columns(
        pl.lit(model_version, pl.String).alias("model_version"),
        pl.lit(mlflow_run_id, pl.String).alias("mlflow_run_id"),
    )
