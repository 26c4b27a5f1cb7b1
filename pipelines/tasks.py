"""Job steps as Prefect tasks: retries for IO only, and the optional Dask fan-out.

`prefect_executor(settings)` returns a `salesml.job_lifecycle.Executor` that runs each step of a job
(`JobRun.step`) as a Prefect task named after the step, so every pull / validate / train /
score / write shows in the Prefect UI with its own state and duration.

- Steps marked `io=True` (read inputs, load a model, write) retry `compute.io_retries` times
  with exponential backoff (`compute.io_retry_backoff_seconds`, doubling). Errors that a retry
  cannot fix (bad data, bad config, no champion, a model whose files are gone, a run
  already going) are never retried.
- Other steps (validation, features, training, scoring) run once: a DataValidationError fails
  the flow at once.
- `JobRun.map` (work split into partitions, e.g. forecasting by partition of series) fans out
  to Dask through `prefect_dask.DaskTaskRunner` when `compute.dask` is set. Frames never travel
  through the scheduler: the shared inputs are written once to a scratch folder, each task gets
  its path and writes its result next to it, and only paths go back and forth.

Task results are not persisted and never cached (`NO_CACHE`): each flow run recomputes.
"""

from __future__ import annotations

import functools
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from salesml.job_lifecycle import Executor

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import State, TaskRun
    from prefect_dask.task_runners import DaskTaskRunner

    from salesml.config import Settings

T = TypeVar("T")

WRITE_TAG = "salesml-warehouse-write"
"""Tag of every write step: `prefect concurrency-limit create salesml-warehouse-write 1` makes
all flows write one at a time (the warehouse serialises writers anyway; this queues them in
Prefect instead of in the database)."""


def permanent_errors() -> tuple[type[BaseException], ...]:
    """Errors that retrying an IO step cannot fix."""
    from salesml.config import ConfigError
    from salesml.tracking import ModelArtifactsMissingError, NoChampionError
    from salesml.validation import DataValidationError
    from salesml.warehouse import RunConflictError

    return (
        DataValidationError,
        ConfigError,
        NoChampionError,
        ModelArtifactsMissingError,
        RunConflictError,
        TypeError,
    )


def should_retry(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect `retry_condition_fn`: retry unless the failure is a permanent error."""
    return not isinstance(state.data, permanent_errors())


class PrefectExecutor(Executor):
    """Each step a Prefect task; IO steps retried; `map` on Dask when a runner is given."""

    def __init__(
        self,
        io_retries: int = 3,
        backoff_seconds: float = 2.0,
        task_runner: DaskTaskRunner | None = None,
        partitions: int = 1,
        scratch_dir: Path | None = None,
    ) -> None:
        self.io_retries = io_retries
        self.backoff_seconds = backoff_seconds
        self.task_runner = task_runner  # a prefect_dask.DaskTaskRunner (not started) or None
        self.partitions = partitions if task_runner is not None else 1
        self.scratch_dir = scratch_dir

    def task(self, name: str, fn: Callable[..., T], *, io: bool) -> Task[..., T]:
        """`fn` as a Prefect task named `name`: retried with exponential backoff only if io."""
        from prefect import Task
        from prefect.cache_policies import NO_CACHE
        from prefect.tasks import exponential_backoff

        retries = self.io_retries if io else 0
        return Task(
            fn,
            name=name,
            retries=retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=self.backoff_seconds)
            if retries
            else 0,
            retry_condition_fn=should_retry if retries else None,
            cache_policy=NO_CACHE,
            persist_result=False,
            tags=[WRITE_TAG] if name == "write" else None,
        )

    def run(
        self,
        name: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        io: bool,
    ) -> T:
        """Run `fn(*args, **kwargs)` as one Prefect task named `name` (retried only if `io`)."""
        result: T = self.task(name, fn, io=io)(*args, **kwargs)
        return result

    def map(
        self, name: str, fn: Callable[..., T], items: Sequence[Any], shared: dict[str, Any]
    ) -> list[T]:
        """`[fn(item, **shared) for item in items]`: in-process, or on Dask when a runner is set."""
        if self.task_runner is None or len(items) <= 1:
            return super().map(name, fn, items, shared)
        folder = Path(self.scratch_dir or tempfile.gettempdir()) / f"salesml-{uuid.uuid4().hex}"
        folder.mkdir(parents=True)
        try:
            shared_path = _dump(shared, folder / "shared.pkl")
            part = self.task(name, run_partition, io=False)
            with self.task_runner.duplicate() as runner:
                futures = [
                    runner.submit(
                        part,
                        parameters={
                            "fn": fn,
                            "item": item,
                            "shared_path": str(shared_path),
                            "out_path": str(folder / f"part-{number}.pkl"),
                        },
                    )
                    for number, item in enumerate(items)
                ]
                paths = [future.result() for future in futures]
            return [_load(Path(path)) for path in paths]
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            _load_shared.cache_clear()  # threads-mode workers share this process's cache


def run_partition(fn: Callable[..., Any], item: Any, shared_path: str, out_path: str) -> str:
    """On a worker: `fn(item, **shared)` with `shared` read from its file; the result is
    written to `out_path`, whose path is returned (frames never go through the scheduler).
    """
    result = fn(item, **_load_shared(shared_path))
    return str(_dump(result, Path(out_path)))


@functools.lru_cache(maxsize=1)
def _load_shared(path: str) -> dict[str, Any]:
    """Shared inputs, read once per worker process for all its partitions of one map (a
    long-lived worker keeps at most the last map's inputs).
    """
    shared = _load(Path(path))
    assert isinstance(shared, dict)
    return shared


def _dump(value: Any, path: Path) -> Path:
    with path.open("wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _load(path: Path) -> Any:
    with path.open("rb") as handle:
        return pickle.load(handle)


def dask_task_runner(settings: Settings) -> DaskTaskRunner | None:
    """A `DaskTaskRunner` for `compute.dask` ('local-cluster' or a scheduler address), or None."""
    address = settings.compute.dask
    if not address:
        return None
    from prefect_dask.task_runners import DaskTaskRunner

    if address == "local-cluster":
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.compute.dask_workers,
                "threads_per_worker": 1,
                "processes": settings.compute.dask_processes,
                "dashboard_address": None,
            }
        )
    return DaskTaskRunner(address=address)


def prefect_executor(settings: Settings | None = None) -> PrefectExecutor:
    """The executor flows use: retries and backoff from `settings.compute`; Dask if set."""
    if settings is None:
        return PrefectExecutor()
    compute = settings.compute
    return PrefectExecutor(
        io_retries=compute.io_retries,
        backoff_seconds=compute.io_retry_backoff_seconds,
        task_runner=dask_task_runner(settings),
        partitions=compute.partitions,
        scratch_dir=compute.scratch_dir,
    )


def log_progress() -> Callable[[str, float], None]:
    """A `salesml.progress.Progress` that logs each new step to the flow run's log."""
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    last: list[str] = []

    def progress(step: str, fraction: float) -> None:
        if not last or last[-1] != step:
            last.append(step)
            logger.info("%3.0f%% %s", 100 * fraction, step)

    return progress
