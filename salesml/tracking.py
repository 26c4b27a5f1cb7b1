"""MLflow: log a training run, register the model, gate promotion, load `@champion`.

Shared by both models. The registry alias `champion` names the version that scoring uses; it
moves only through `promote_if_better`, which compares candidate and champion on the SAME
backtest (the caller evaluates both on the same origins) and records the decision on the
candidate's run. Scoring calls `load_champion`, which resolves the alias once to a version and
loads exactly that version, so a promotion in the middle of a scoring run cannot mix versions.

Model flavors: a LightGBM `Booster` is logged with `mlflow.lightgbm` (readable by any MLflow
tool); anything else (e.g. a booster + calibrator object) is pickled and logged as a
`python_function` model whose loader is this module, so generic MLflow tools can `predict` with
it while `load_champion` gives back the original Python object (SHAP needs the real booster).

mlflow is imported inside functions (`import_mlflow`): importing it costs ~3 s and the CLI must
start instantly. Decisions are tagged `salesml.promotion.*` on the candidate run and version.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd
    import polars as pl

    from salesml.config import Settings

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT = "model"
PICKLE_FILE = "model.pkl"
TAG_PREFIX = "salesml.promotion"
_PIP_PACKAGES = ("lightgbm", "numpy", "pandas", "polars", "scikit-learn", "statsmodels")


class NoChampionError(RuntimeError):
    """The registry has no `@champion` version for a model (nothing trained and promoted yet)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version created by `log_and_register`; `version` is MLflow's string number."""

    name: str
    version: str
    run_id: str


@dataclass(frozen=True)
class PromotionDecision:
    """What `promote_if_better` decided and why (also written to the candidate run's tags)."""

    promoted: bool
    reason: str
    model_name: str
    candidate_version: str
    metric: str
    candidate_value: float
    champion_value: float | None
    champion_version: str | None
    higher_is_better: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "model_name": self.model_name,
            "candidate_version": self.candidate_version,
            "metric": self.metric,
            "candidate_value": _json_float(self.candidate_value),
            "champion_value": _json_float(self.champion_value),
            "champion_version": self.champion_version,
            "higher_is_better": self.higher_is_better,
        }


@dataclass(frozen=True)
class LoadedModel:
    """The champion as the original Python object, with the version it was loaded from."""

    model: Any
    version: str
    run_id: str


@dataclass(frozen=True)
class ChampionInfo:
    """The current champion's version, run and logged metrics/params (no model download)."""

    version: str
    run_id: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


# --- configuration ---------------------------------------------------------------------------


def import_mlflow() -> Any:
    """Import mlflow lazily, with its usage telemetry off unless the user turned it on.

    A batch job on a machine without internet should not start a background sender; the
    variable must be set before the first import. Set MLFLOW_DISABLE_TELEMETRY=false to opt in.
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Batch jobs and the CLI's own progress bar: no tqdm bars from artifact downloads.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    return mlflow


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///...` URI (relative to the cwd, as MLflow reads it)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    rest = tracking_uri[len(prefix) :].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def default_artifact_location(settings: Settings) -> str | None:
    """Where a new experiment stores artifacts: `mlartifacts/` beside a SQLite DB.

    Without this, MLflow would put artifacts in `./mlruns` of whatever the cwd happens to be.
    For a server or database URI, None: the server's default artifact root applies.
    """
    db = sqlite_path(settings.mlflow.tracking_uri)
    if db is None:
        return None
    return (db.parent.resolve() / "mlartifacts").as_uri()


def configure(settings: Settings) -> str:
    """Point MLflow at `settings.mlflow` (tracking + registry URI, experiment); return its id.

    Creates the parent folder of a SQLite database and the experiment if missing. Safe to call
    again (e.g. once per flow run) and from concurrent processes.
    """
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    uri = settings.mlflow.tracking_uri
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    name = settings.mlflow.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            experiment_id = client.create_experiment(
                name, artifact_location=default_artifact_location(settings)
            )
        except MlflowException:  # created by a concurrent process in the meantime
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            experiment_id = found.experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)


# --- logging and registering -----------------------------------------------------------------


def log_and_register(
    model_name: str,
    model: Any,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    artifacts: Mapping[str, str | Path] | None = None,
    input_example: pd.DataFrame | pl.DataFrame | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Log one MLflow run (params, metrics, artifact files, the model) and register a version.

    `artifacts` maps the name to log under (may contain `/`) to a local file. `input_example`
    (pandas, or polars converted to pandas; a few feature rows) gives the model signature. A
    LightGBM `Booster` is logged with the lightgbm flavor; any other object (a composite, an
    sklearn-API LightGBM model) is pickled, so its class must be importable (define it in a
    salesml module, not in a script), and generic MLflow tools call its `predict(X)` (or
    `predict_proba(X)[:, 1]`). Non-scalar params are logged as JSON; NaN metrics as NaN.
    Call `configure(settings)` first. The new version is NOT champion until `promote_if_better`
    says so. Inside an active run (e.g. a flow's), the run is nested under it.
    """
    mlflow = import_mlflow()

    missing = [
        f"{name}: {path}" for name, path in (artifacts or {}).items() if not Path(path).is_file()
    ]
    if missing:  # before the run starts, so a typo leaves no half-logged run behind
        raise FileNotFoundError(f"artifact files not found: {', '.join(missing)}")
    example = _as_pandas(input_example)  # infer_signature reads polars strings as AnyType
    active = mlflow.active_run()
    with mlflow.start_run(
        run_name=run_name, tags=dict(tags or {}), nested=active is not None
    ) as run:
        if params:
            mlflow.log_params({key: _param_value(value) for key, value in params.items()})
        numeric = {key: float(value) for key, value in metrics.items() if _is_number(value)}
        if numeric:  # NaN is logged as NaN: an undefined metric is information
            mlflow.log_metrics(numeric)
        if artifacts:
            _log_artifact_files(artifacts)
        info = _log_model(model, model_name, example)
        version = info.registered_model_version
        if version is None:  # pragma: no cover - MLflow always registers when a name is given
            raise RuntimeError(f"MLflow did not register a version of {model_name}")
        return RegisteredVersion(name=model_name, version=str(version), run_id=run.info.run_id)


def _as_pandas(frame: pd.DataFrame | pl.DataFrame | None) -> pd.DataFrame | None:
    if frame is None:
        return None
    import polars as pl

    return frame.to_pandas() if isinstance(frame, pl.DataFrame) else frame


def _log_artifact_files(artifacts: Mapping[str, str | Path]) -> None:
    mlflow = import_mlflow()

    with tempfile.TemporaryDirectory(prefix="salesml-artifacts-") as staging:
        root = Path(staging)
        for name, source in artifacts.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        mlflow.log_artifacts(str(root))


def _is_booster(model: Any) -> bool:
    """A plain LightGBM Booster (sklearn-API models go through pickle: MLflow would use skops)."""
    if not type(model).__module__.startswith("lightgbm"):
        return False
    import lightgbm

    return isinstance(model, lightgbm.Booster)


def _log_model(model: Any, model_name: str, input_example: pd.DataFrame | None) -> Any:
    """Log `model` under the run's `model` artifact and register it; returns MLflow's ModelInfo."""
    mlflow = import_mlflow()

    if _is_booster(model):
        signature = _signature(input_example, lambda frame: model.predict(frame))
        return mlflow.lightgbm.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=input_example,
            registered_model_name=model_name,
            pip_requirements=_pip_requirements(("lightgbm", "numpy", "pandas")),
        )
    adapter = PickledModel(model)
    signature = _signature(input_example, adapter.predict)
    with tempfile.TemporaryDirectory(prefix="salesml-model-") as staging:
        data_path = Path(staging) / PICKLE_FILE
        data_path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            loader_module=__name__,
            data_path=str(data_path),
            signature=signature,
            input_example=input_example,
            registered_model_name=model_name,
            pip_requirements=_pip_requirements(_PIP_PACKAGES),
        )


def _signature(input_example: pd.DataFrame | None, predict: Any) -> Any:
    """Input + output schema from the example; inputs only if the model cannot predict on it."""
    if input_example is None:
        return None
    from mlflow.models import infer_signature

    try:
        output = predict(input_example)
    except Exception:  # a signature is documentation; never fail a training run over it
        return infer_signature(input_example)
    return infer_signature(input_example, output)


def _pip_requirements(packages: tuple[str, ...]) -> list[str]:
    """Pinned requirements from the running environment (MLflow's inference spawns a slow
    subprocess that imports the model; we know what we need)."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


class PickledModel:
    """The `python_function` face of a pickled composite model (used by generic MLflow tools)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        if hasattr(self.model, "predict"):
            return self.model.predict(model_input)
        if hasattr(self.model, "predict_proba"):
            return self.model.predict_proba(model_input)[:, 1]
        raise TypeError(f"{type(self.model).__name__} has neither predict nor predict_proba")


def _load_pyfunc(data_path: str) -> PickledModel:
    """MLflow's loader-module hook for models logged by `_log_model` (python_function flavor)."""
    return PickledModel(_unpickle(Path(data_path)))


def _unpickle(path: Path) -> Any:
    if path.is_dir():
        path = path / PICKLE_FILE
    with path.open("rb") as handle:
        return pickle.load(handle)  # our own artifact, written by _log_model


# --- promotion gate --------------------------------------------------------------------------


def promote_if_better(
    model_name: str,
    candidate: RegisteredVersion,
    metric: str,
    candidate_value: float,
    champion_value: float | None,
    higher_is_better: bool = True,
    champion_version: str | None = None,
) -> PromotionDecision:
    """Move `@champion` to `candidate` if there is no champion or the candidate is at least as
    good as the champion on the same backtest; log the decision on the candidate run.

    Both values must come from the same backtest origins: the caller evaluates the current
    champion (`champion_info`) and passes its value, and ideally the `champion_version` it
    evaluated: if the alias has moved since (another trainer promoted meanwhile), the candidate
    is not promoted. The rule itself is `decide`.
    """
    mlflow = import_mlflow()

    client = mlflow.MlflowClient()
    current = _champion_version(client, model_name)
    if champion_version is not None and current is not None and champion_version != current:
        promoted, reason = (
            False,
            (
                f"champion moved from v{champion_version} (evaluated) to v{current}; "
                "evaluate the new champion on the same backtest"
            ),
        )
    else:
        promoted, reason = decide(
            metric, candidate.version, current, candidate_value, champion_value, higher_is_better
        )
    if promoted and current != candidate.version:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, candidate.version)
    decision = PromotionDecision(
        promoted=promoted,
        reason=reason,
        model_name=model_name,
        candidate_version=candidate.version,
        metric=metric,
        candidate_value=float(candidate_value),
        champion_value=None if champion_value is None else float(champion_value),
        champion_version=current,
        higher_is_better=higher_is_better,
    )
    _record_decision(client, candidate, decision)
    return decision


def decide(
    metric: str,
    candidate_version: str,
    champion_version: str | None,
    candidate_value: float,
    champion_value: float | None,
    higher_is_better: bool = True,
) -> tuple[bool, str]:
    """The promotion rule (pure): (promote?, reason in one line).

    - no champion: promote (a first model must be servable);
    - candidate value NaN: never promote;
    - a champion but no `champion_value`: do not promote (nothing comparable; pass -inf/+inf
      deliberately to force a replacement, e.g. after a feature change the champion cannot run);
    - champion value NaN (undefined on this backtest): promote a candidate with a real value;
    - otherwise promote when candidate >= champion (<= when lower is better): ties promote, so
      retraining on fresher data with equal backtest quality moves forward.
    """
    direction = "higher" if higher_is_better else "lower"
    if math.isnan(float(candidate_value)):
        return False, f"candidate {metric} is NaN"
    if champion_version is None:
        return True, f"no champion yet; candidate {metric}={candidate_value:.6g}"
    if champion_version == candidate_version:
        return True, f"candidate v{candidate_version} is already champion"
    if champion_value is None:
        return False, (
            f"champion v{champion_version} exists but was not evaluated on this backtest; "
            "pass champion_value to compare"
        )
    if math.isnan(float(champion_value)):
        return True, f"champion v{champion_version} {metric} is NaN on this backtest"
    better_or_equal = (
        candidate_value >= champion_value if higher_is_better else candidate_value <= champion_value
    )
    comparison = (
        f"{metric} {candidate_value:.6g} vs champion v{champion_version} {champion_value:.6g}"
    )
    if better_or_equal:
        return True, f"candidate at least as good ({direction} is better): {comparison}"
    return False, f"candidate worse ({direction} is better): {comparison}"


def _record_decision(
    client: Any, candidate: RegisteredVersion, decision: PromotionDecision
) -> None:
    """Tags (mutable, so a re-run of the gate overwrites rather than fails) on run and version."""
    tags = {
        f"{TAG_PREFIX}.promoted": str(decision.promoted).lower(),
        f"{TAG_PREFIX}.reason": decision.reason,
        f"{TAG_PREFIX}.metric": decision.metric,
        f"{TAG_PREFIX}.higher_is_better": str(decision.higher_is_better).lower(),
        f"{TAG_PREFIX}.candidate_value": repr(decision.candidate_value),
        f"{TAG_PREFIX}.champion_value": repr(decision.champion_value),
        f"{TAG_PREFIX}.champion_version": str(decision.champion_version),
    }
    for key, value in tags.items():
        client.set_tag(candidate.run_id, key, value)
    client.log_dict(candidate.run_id, decision.to_dict(), "promotion_decision.json")
    client.set_model_version_tag(
        candidate.name, candidate.version, f"{TAG_PREFIX}.promoted", tags[f"{TAG_PREFIX}.promoted"]
    )


# --- reading the champion --------------------------------------------------------------------


def _champion_version(client: Any, model_name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, CHAMPION_ALIAS).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _no_champion(model_name: str) -> NoChampionError:
    command = model_name.removeprefix("salesml-")
    return NoChampionError(f"no champion for {model_name}: run `salesml train {command}` first")


def champion_info(model_name: str) -> ChampionInfo | None:
    """The current champion's version, run id and run metrics/params; None if there is none."""
    mlflow = import_mlflow()

    client = mlflow.MlflowClient()
    version = _champion_version(client, model_name)
    if version is None:
        return None
    model_version = client.get_model_version(model_name, version)
    run_id = str(model_version.run_id)
    run = client.get_run(run_id)
    return ChampionInfo(
        version=version,
        run_id=run_id,
        metrics=dict(run.data.metrics),
        params=dict(run.data.params),
    )


def load_champion(model_name: str) -> LoadedModel:
    """Load `models:/<name>@champion` as the original Python object (Booster or composite).

    The alias is resolved once; that exact version is loaded, so the returned `version` is the
    one whose weights are in `model`. Raises NoChampionError when nothing was promoted yet.
    """
    mlflow = import_mlflow()

    client = mlflow.MlflowClient()
    version = _champion_version(client, model_name)
    if version is None:
        raise _no_champion(model_name)
    return load_version(model_name, version)


def load_version(model_name: str, version: str) -> LoadedModel:
    """Load one registered version as the original Python object (see `load_champion`)."""
    mlflow = import_mlflow()

    client = mlflow.MlflowClient()
    model_version = client.get_model_version(model_name, version)
    uri = f"models:/{model_name}/{version}"
    flavors = mlflow.models.get_model_info(uri).flavors
    if "lightgbm" in flavors:
        model = mlflow.lightgbm.load_model(uri)
    else:
        with tempfile.TemporaryDirectory(prefix="salesml-load-") as staging:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=staging))
            data = flavors["python_function"].get("data", PICKLE_FILE)
            model = _unpickle(local / data)
    return LoadedModel(model=model, version=str(version), run_id=str(model_version.run_id))


# --- helpers ---------------------------------------------------------------------------------


def _param_value(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)
