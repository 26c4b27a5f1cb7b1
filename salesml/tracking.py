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

Time: every version records the as_of it was trained at (`salesml.as_of`, on the version and
its run) and whether it passed the gate (`salesml.gate.passed`: champion-eligible). Scoring at
an as_of (`load_for`) uses `@champion` when it was trained at or before that as_of, else the
newest eligible version trained at or before it, else refuses naming the versions
(`choose_version`). A candidate trained at an earlier as_of than the champion never replaces
it, even when it passes the gate (`older_than_champion`); it stays eligible for past as_ofs.

Faults are one-line project errors (`TrackingError` and subclasses): a store that is not an
SQLite database, a model whose artifacts are gone. Params and tags logged go through
`salesml.secrets.redact`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from salesml.errors import first_line
from salesml.secrets import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd
    import polars as pl
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.models import ModelSignature
    from mlflow.models.model import ModelInfo

    from salesml.config import Settings

CHAMPION_ALIAS = "champion"
MODEL_ARTIFACT = "model"
PICKLE_FILE = "model.pkl"
TAG_PREFIX = "salesml.promotion"
AS_OF_TAG = "salesml.as_of"
"""The as_of a version was trained at (ISO), on the version and on its MLflow run."""
GATE_TAG = "salesml.gate.passed"
"""'true' when the version passed the gate when registered: eligible to serve past as_ofs."""
WAREHOUSE_RUN_TAG = "salesml.warehouse_run_id"
"""The warehouse `runs.run_id` of the training run (finds what an abandoned run left)."""
_PIP_PACKAGES = ("lightgbm", "numpy", "pandas", "polars", "scikit-learn", "statsmodels")
_SQLITE_HEADER = b"SQLite format 3\x00"
_LISTED_VERSIONS = 5


class TrackingError(RuntimeError):
    """The MLflow store or a model in it cannot be used; the message is one line."""


class NoChampionError(TrackingError):
    """The registry has no `@champion` version for a model (nothing trained and promoted yet)."""


class NoServableVersionError(NoChampionError):
    """No version may serve this as_of: the champion was trained later, and no eligible
    version was trained at or before it.
    """


class ModelLoadError(TrackingError):
    """A registered version could not be loaded (store unreachable, files unreadable)."""


class ModelArtifactsMissingError(ModelLoadError):
    """A registered version's artifact files are gone (e.g. its folder was deleted)."""


@dataclass(frozen=True)
class RegisteredVersion:
    """A model version created by `log_and_register`; `version` is MLflow's string number."""

    name: str
    version: str
    run_id: str


@dataclass(frozen=True)
class SkillCheck:
    """A candidate's skill on its honest holdout: Brier skill score against the base rate
    with its bootstrap interval, and its Brier next to the logistic baseline's.
    """

    brier_skill: float
    brier_skill_low: float
    brier_skill_high: float
    brier: float
    logistic_brier: float

    def verdict(self) -> tuple[bool, str]:
        """(skilful?, one line): skill > 0 with an interval above 0, and Brier below the
        logistic baseline's. NaN anywhere is no skill.
        """
        text = (
            f"Brier skill vs base rate {self.brier_skill:.4f} "
            f"[{self.brier_skill_low:.4f}, {self.brier_skill_high:.4f}], "
            f"Brier {self.brier:.4f} vs logistic {self.logistic_brier:.4f}"
        )
        beats_base = self.brier_skill > 0 and self.brier_skill_low > 0
        beats_logistic = self.brier < self.logistic_brier
        if beats_base and beats_logistic:
            return True, f"skilful: {text}"
        missing = [
            *([] if beats_base else ["the base rate (interval must exclude 0)"]),
            *([] if beats_logistic else ["the logistic baseline"]),
        ]
        return False, f"no skill over {' and '.join(missing)}: {text}"

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready figures (NaN as null), as in the promotion decision."""
        return {
            "brier_skill": _json_float(self.brier_skill),
            "brier_skill_low": _json_float(self.brier_skill_low),
            "brier_skill_high": _json_float(self.brier_skill_high),
            "brier": _json_float(self.brier),
            "logistic_brier": _json_float(self.logistic_brier),
        }


@dataclass(frozen=True)
class BaselineCheck:
    """A candidate's loss next to a trivial baseline's on the same held-out rows (lower is
    better; demand: scaled pinball loss vs the 8-week same-bucket median). With `required`
    False the comparison is reported in the decision but never blocks it.
    """

    metric: str
    value: float
    baseline: str
    baseline_value: float
    required: bool = False

    def verdict(self) -> tuple[bool, str]:
        """(passes?, one line): value <= baseline_value; NaN fails; always passes when not
        required (the line then says so).
        """
        beats = self.value <= self.baseline_value  # False when either is NaN
        text = f"{self.metric} {self.value:.4f} vs {self.baseline} {self.baseline_value:.4f}"
        if beats:
            return True, f"beats {self.baseline}: {text}"
        if not self.required:
            return True, f"does not beat {self.baseline} (reported, not required): {text}"
        return False, f"no skill over {self.baseline}: {text}"

    def to_dict(self) -> dict[str, float | None]:
        """JSON-ready figures (NaN as null): the candidate's and the baseline's loss."""
        return {
            self.metric: _json_float(self.value),
            f"{self.baseline}_{self.metric}": _json_float(self.baseline_value),
        }


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
    passed_gate: bool = False  # eligible to serve as_ofs before a newer champion's
    skill: SkillCheck | BaselineCheck | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the decision (NaN as null), as written to the run's tags."""
        return {
            "skill": None if self.skill is None else self.skill.to_dict(),
            "promoted": self.promoted,
            "reason": self.reason,
            "model_name": self.model_name,
            "candidate_version": self.candidate_version,
            "metric": self.metric,
            "candidate_value": _json_float(self.candidate_value),
            "champion_value": _json_float(self.champion_value),
            "champion_version": self.champion_version,
            "higher_is_better": self.higher_is_better,
            "passed_gate": self.passed_gate,
        }


@dataclass(frozen=True)
class LoadedModel:
    """The champion as the original Python object, with the version it was loaded from."""

    model: Any
    version: str
    run_id: str
    trained_as_of: datetime | None = None
    note: str | None = None  # why this version and not @champion (time travel), if so


@dataclass(frozen=True)
class VersionInfo:
    """A registered version as scoring sees it: when it was trained and whether it passed the
    gate (eligible); `as_of` None when it was registered without `salesml.as_of`.
    """

    version: str
    run_id: str
    as_of: datetime | None
    eligible: bool


@dataclass(frozen=True)
class Reconciled:
    """What `reconcile_run` found and did, in one line, and the version it concerned."""

    message: str
    version: str | None


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
    uri = settings.mlflow.tracking_uri
    db = sqlite_path(uri)
    if db is not None:
        _check_sqlite_file(db)
    try:
        return _configure(settings, uri)
    except TrackingError:
        raise
    except Exception as exc:  # SQLAlchemy, alembic, HTTP: one line naming the store
        raise TrackingError(
            f"cannot use the MLflow store {redact(uri)} (mlflow.tracking_uri): "
            f"{redact(first_line(exc))}"
        ) from None


def _check_sqlite_file(db: Path) -> None:
    """The folder exists (created) and the file, if any, is an SQLite database."""
    where = f"the MLflow store {db} (mlflow.tracking_uri)"
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        if db.is_dir():
            raise TrackingError(f"{where} is a folder; point mlflow.tracking_uri at a file")
        if db.is_file() and db.stat().st_size:
            with db.open("rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
            if header != _SQLITE_HEADER:
                raise TrackingError(
                    f"{where} is not an SQLite database; move it away or point "
                    "mlflow.tracking_uri at another file"
                )
    except OSError as exc:
        raise TrackingError(f"cannot use {where}: {exc.strerror or exc}") from None


def _configure(settings: Settings, uri: str) -> str:
    import logging

    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    # a new SQLite store logs "Creating initial MLflow database tables..." at INFO to stderr,
    # which breaks the CLI's one-line promise for a failure right after it
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
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
    as_of: datetime | None = None,
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
    `as_of`: the training as_of, tagged `salesml.as_of` on the run and the version (scoring
    at an earlier as_of never uses this version). Params and tags are redacted.
    """
    mlflow = import_mlflow()

    missing = [
        f"{name}: {path}" for name, path in (artifacts or {}).items() if not Path(path).is_file()
    ]
    if missing:  # before the run starts, so a typo leaves no half-logged run behind
        raise FileNotFoundError(f"artifact files not found: {', '.join(missing)}")
    example = _as_pandas(input_example)  # infer_signature reads polars strings as AnyType
    active = mlflow.active_run()
    run_tags = {key: redact(str(value)) for key, value in (tags or {}).items()}
    if as_of is not None:
        run_tags[AS_OF_TAG] = as_of.isoformat()
    with mlflow.start_run(run_name=run_name, tags=run_tags, nested=active is not None) as run:
        if params:
            mlflow.log_params({key: redact(_param_value(value)) for key, value in params.items()})
        numeric = {key: float(value) for key, value in metrics.items() if _is_number(value)}
        if numeric:  # NaN is logged as NaN: an undefined metric is information
            mlflow.log_metrics(numeric)
        if artifacts:
            _log_artifact_files(artifacts)
        info = _log_model(model, model_name, example)
        version = info.registered_model_version
        if version is None:  # pragma: no cover - MLflow always registers when a name is given
            raise RuntimeError(f"MLflow did not register a version of {model_name}")
        if as_of is not None:
            mlflow.MlflowClient().set_model_version_tag(
                model_name, str(version), AS_OF_TAG, as_of.isoformat()
            )
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


def _is_booster(model: object) -> bool:
    """A plain LightGBM Booster (sklearn-API models go through pickle: MLflow would use skops)."""
    if not type(model).__module__.startswith("lightgbm"):
        return False
    import lightgbm

    return isinstance(model, lightgbm.Booster)


def _log_model(model: Any, model_name: str, input_example: pd.DataFrame | None) -> ModelInfo:
    """Log `model` under the run's `model` artifact and register it; returns MLflow's ModelInfo."""
    mlflow = import_mlflow()

    if _is_booster(model):
        signature = _signature(input_example, model.predict)
        booster_info: ModelInfo = mlflow.lightgbm.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=input_example,
            registered_model_name=model_name,
            pip_requirements=_pip_requirements(("lightgbm", "numpy", "pandas")),
        )
        return booster_info
    adapter = PickledModel(model)
    signature = _signature(input_example, adapter.predict)
    with tempfile.TemporaryDirectory(prefix="salesml-model-") as staging:
        data_path = Path(staging) / PICKLE_FILE
        data_path.write_bytes(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
        pickled_info: ModelInfo = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            loader_module=__name__,
            data_path=str(data_path),
            signature=signature,
            input_example=input_example,
            registered_model_name=model_name,
            pip_requirements=_pip_requirements(_PIP_PACKAGES),
        )
        return pickled_info


def _signature(
    input_example: pd.DataFrame | None, predict: Callable[[pd.DataFrame], object]
) -> ModelSignature | None:
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
    subprocess that imports the model; we know what we need).
    """
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
        """The model's predictions, or its positive-class probability for a classifier."""
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
    as_of: datetime | None = None,
    skill: SkillCheck | BaselineCheck | None = None,
) -> PromotionDecision:
    """Gate `candidate` and move `@champion` to it when it passed and may replace the champion;
    log the decision on the candidate run and version.

    The gate compares the candidate with the reference version on the SAME backtest (the
    caller evaluates the reference and passes its value, and ideally its `champion_version`:
    if the reference changed since, e.g. another trainer promoted meanwhile, the candidate
    fails). Without `as_of` the reference is `@champion`. With `as_of` (the candidate's
    training as_of) it is the version that serves that as_of (`reference_version`): usually
    the champion, but an older eligible version when the champion was trained later; and a
    candidate that passes is promoted only if it is not older than the champion
    (`older_than_champion`). Passing is recorded as `salesml.gate.passed` (eligible to serve
    past as_ofs); the rule itself is `decide`, including the skill gate when `skill` is
    given (a candidate without skill never passes, first model included). Tags are written
    before the alias moves, so a crash in between leaves a decision `reconcile_run` can mend.
    """
    mlflow = import_mlflow()

    client = mlflow.MlflowClient()
    current, current_as_of, reference = _gate_references(client, model_name, candidate, as_of)
    passed, reason = _gate(
        candidate, metric, candidate_value, champion_value, higher_is_better,
        champion_version, as_of, skill, current=current, reference=reference,
    )  # fmt: skip
    blocked = older_than_champion(as_of, current, current_as_of)
    promoted = passed and blocked is None
    if passed and blocked is not None:
        reason = f"{reason}; not promoted: {blocked}"
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
        passed_gate=passed,
        skill=skill,
    )
    _record_decision(client, candidate, decision)
    if promoted and current != candidate.version:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, candidate.version)
    return decision


def _gate_references(
    client: MlflowClient, model_name: str, candidate: RegisteredVersion, as_of: datetime | None
) -> tuple[str | None, datetime | None, str | None]:
    """(champion version, its training as_of, the reference version the gate compares with).

    Without `as_of` the reference is the champion (its as_of is not looked up); with it, the
    version serving that as_of (`reference_version`), the candidate itself left out.
    """
    current = _champion_version(client, model_name)
    if as_of is None:
        return current, None, current
    versions = [v for v in list_versions(model_name) if v.version != candidate.version]
    current_as_of = next((v.as_of for v in versions if v.version == current), None)
    return current, current_as_of, _reference(model_name, versions, current, as_of)


def _gate(
    candidate: RegisteredVersion,
    metric: str,
    candidate_value: float,
    champion_value: float | None,
    higher_is_better: bool,
    champion_version: str | None,
    as_of: datetime | None,
    skill: SkillCheck | BaselineCheck | None,
    *,
    current: str | None,
    reference: str | None,
) -> tuple[bool, str]:
    """(passed, reason) of the gate before the older-than-champion check (see promote_if_better)."""
    if champion_version is not None and reference != champion_version:
        return False, (
            f"champion moved from v{champion_version} (evaluated) to "
            f"{f'v{reference}' if reference else 'none'}; "
            "evaluate the new champion on the same backtest"
        )
    if reference is None and current is not None and (skill is None or skill.verdict()[0]):
        # a champion exists but none may serve this as_of: a skilful candidate needs no rival
        # (one without skill falls through to `decide`, which refuses it)
        return not math.isnan(float(candidate_value)), (
            f"no eligible version trained at or before as_of {_iso(as_of)} to compare with; "
            f"candidate {metric}={candidate_value:.6g}"
        )
    return decide(
        metric,
        candidate.version,
        reference,
        candidate_value,
        champion_value,
        higher_is_better,
        skill,
    )


def older_than_champion(
    as_of: datetime | None, champion_version: str | None, champion_as_of: datetime | None
) -> str | None:
    """Why a candidate trained at `as_of` may not replace the champion (pure), or None.

    A model trained at an earlier as_of knows less than the champion; promoting it would
    make every later score use older knowledge. Unknown as_ofs never block.
    """
    if as_of is None or champion_version is None or champion_as_of is None:
        return None
    if as_of >= champion_as_of:
        return None
    return (
        f"champion v{champion_version} was trained as of {_iso(champion_as_of)}, later than "
        f"this candidate's as_of {_iso(as_of)}; a model trained on older data never replaces "
        "it (kept eligible for scoring as_ofs before the champion's)"
    )


def decide(
    metric: str,
    candidate_version: str,
    champion_version: str | None,
    candidate_value: float,
    champion_value: float | None,
    higher_is_better: bool = True,
    skill: SkillCheck | BaselineCheck | None = None,
) -> tuple[bool, str]:
    """The promotion rule (pure): (promote?, reason in one line).

    - `skill` given and not skilful (`SkillCheck.verdict`): never promote, first model
      included; otherwise its line is appended to the reason;
    - no champion: promote (a first model must be servable);
    - candidate value NaN: never promote;
    - a champion but no `champion_value`: do not promote (nothing comparable; pass -inf/+inf
      deliberately to force a replacement, e.g. after a feature change the champion cannot run);
    - champion value NaN (undefined on this backtest): promote a candidate with a real value;
    - otherwise promote when candidate >= champion (<= when lower is better): ties promote, so
      retraining on fresher data with equal backtest quality moves forward.
    """
    if skill is not None:
        skilful, line = skill.verdict()
        if not skilful:
            return False, line
        passed, reason = decide(
            metric,
            candidate_version,
            champion_version,
            candidate_value,
            champion_value,
            higher_is_better,
        )
        return passed, f"{reason}; {line}"
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
    client: MlflowClient, candidate: RegisteredVersion, decision: PromotionDecision
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
        GATE_TAG: str(decision.passed_gate).lower(),
    }
    if decision.skill is not None:
        tags |= {f"salesml.skill.{k}": repr(v) for k, v in decision.skill.to_dict().items()}
    for key, value in tags.items():
        client.set_tag(candidate.run_id, key, value)
    client.log_dict(candidate.run_id, decision.to_dict(), "promotion_decision.json")
    for key in (f"{TAG_PREFIX}.promoted", f"{TAG_PREFIX}.reason", GATE_TAG):
        client.set_model_version_tag(candidate.name, candidate.version, key, tags[key])


# --- reading the champion --------------------------------------------------------------------


def _champion_version(client: MlflowClient, model_name: str) -> str | None:
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
    """Load one registered version as the original Python object (see `load_champion`).

    Raises ModelArtifactsMissingError (one line) when its files are gone, ModelLoadError when
    it cannot be loaded for another reason (unreadable store, unknown version).
    """
    mlflow = import_mlflow()

    client = mlflow.MlflowClient()
    run_id = "?"
    try:
        model_version = client.get_model_version(model_name, version)
        run_id = str(model_version.run_id)
        uri = f"models:/{model_name}/{version}"
        flavors = mlflow.models.get_model_info(uri).flavors
        if "lightgbm" in flavors:
            model = mlflow.lightgbm.load_model(uri)
        else:
            with tempfile.TemporaryDirectory(prefix="salesml-load-") as staging:
                local = Path(
                    mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=staging)
                )
                data = flavors["python_function"].get("data", PICKLE_FILE)
                model = _unpickle(local / data)
    except Exception as exc:
        raise _load_error(model_name, version, run_id, exc) from None
    return LoadedModel(model=model, version=str(version), run_id=run_id)


def _load_error(model_name: str, version: str, run_id: str, exc: Exception) -> ModelLoadError:
    text = redact(first_line(exc))
    command = model_name.removeprefix("salesml-")
    where = f"{model_name} v{version} (MLflow run {run_id})"
    if isinstance(exc, FileNotFoundError) or re.search(r"no such (artifact|file)", text, re.I):
        return ModelArtifactsMissingError(
            f"cannot load {where}: its model artifacts are missing ({text}); restore them or "
            f"train a new version with `salesml train {command}`"
        )
    return ModelLoadError(f"cannot load {where}: {text}")


# --- reading runs (the report) ---------------------------------------------------------------


@dataclass(frozen=True)
class RunData:
    """A run's tags and metrics as MLflow stores them (a metric: its latest logged value)."""

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float]


def version_run_id(model_name: str, version: str) -> str:
    """The id of the run that logged `version` of `model_name` (call `configure` first)."""
    client = import_mlflow().MlflowClient()
    return str(client.get_model_version(model_name, version).run_id)


def version_run(model_name: str, version: str) -> RunData:
    """Tags and metrics of the run behind `version` of `model_name` (call `configure` first)."""
    client = import_mlflow().MlflowClient()
    run_id = str(client.get_model_version(model_name, version).run_id)
    run = client.get_run(run_id)
    return RunData(run_id=run_id, tags=dict(run.data.tags), metrics=dict(run.data.metrics))


def read_artifact(run_id: str, artifact_path: str) -> bytes:
    """The bytes of one artifact file of a run (staged in a temporary folder, then removed).

    The artifacts progress bar is off during the download even when the user turned it on:
    callers print to the user's terminal.
    """
    mlflow = import_mlflow()
    quiet = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with tempfile.TemporaryDirectory(prefix="salesml-artifact-") as folder, _environ(quiet):
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=folder
        )
        return Path(local).read_bytes()


@contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- versions and time -----------------------------------------------------------------------


def list_versions(model_name: str) -> list[VersionInfo]:
    """Every registered version of `model_name` with its training as_of and eligibility.

    The as_of comes from the version's `salesml.as_of` tag, else its run's tag or `as_of`
    param (versions registered before the tag existed). Eligible: `salesml.gate.passed` is
    'true' or, on a version from before that tag, it was promoted.
    """
    mlflow = import_mlflow()
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        found = client.search_model_versions(f"name='{_quoted(model_name)}'")
    except MlflowException:
        return []
    out = []
    for item in found:
        tags = dict(item.tags or {})
        text = tags.get(AS_OF_TAG) or _run_as_of_text(client, str(item.run_id))
        gate = tags.get(GATE_TAG)
        eligible = (
            gate == "true" if gate is not None else tags.get(f"{TAG_PREFIX}.promoted") == "true"
        )
        out.append(VersionInfo(str(item.version), str(item.run_id), _parse_as_of(text), eligible))
    return sorted(out, key=lambda v: _version_number(v.version))


def choose_version(
    model_name: str,
    versions: Sequence[VersionInfo],
    champion: str | None,
    as_of: datetime,
) -> tuple[VersionInfo, str | None]:
    """The version that may serve `as_of` (pure), with a note when it is not the champion.

    The champion, when it was trained at or before `as_of` (or its as_of is unknown: nothing
    to check); else the newest eligible version trained at or before `as_of`. Raises
    NoChampionError without a champion, NoServableVersionError when nothing qualifies (one
    line naming the newest versions and their as_of).
    """
    if champion is None:
        raise _no_champion(model_name)
    by_version = {v.version: v for v in versions}
    current = by_version.get(champion, VersionInfo(champion, "", None, True))
    if current.as_of is None or current.as_of <= as_of:
        return current, None
    usable = [v for v in versions if v.eligible and v.as_of is not None and v.as_of <= as_of]
    if not usable:
        raise _no_servable(model_name, versions, champion, as_of)
    best = max(usable, key=lambda v: (v.as_of, _version_number(v.version)))
    note = (
        f"{model_name} champion v{champion} was trained as of {_iso(current.as_of)}, after "
        f"as_of {_iso(as_of)}; used v{best.version} (trained as of {_iso(best.as_of)}), the "
        "newest eligible version trained at or before it"
    )
    return best, note


def serving_version(model_name: str, as_of: datetime) -> tuple[VersionInfo, str | None]:
    """`choose_version` on the registry as it is now (see there)."""
    mlflow = import_mlflow()

    champion = _champion_version(mlflow.MlflowClient(), model_name)
    if champion is None:
        raise _no_champion(model_name)
    return choose_version(model_name, list_versions(model_name), champion, as_of)


def reference_version(model_name: str, as_of: datetime) -> VersionInfo | None:
    """The version a candidate trained at `as_of` is gated against: the one serving `as_of`;
    None when there is none (no champion, or only versions trained later).
    """
    try:
        return serving_version(model_name, as_of)[0]
    except NoChampionError:
        return None


def load_for(model_name: str, as_of: datetime) -> LoadedModel:
    """Load the version that may serve `as_of` (see `choose_version`), resolved once.

    Nothing trained after `as_of` is used: scoring the past with a model that saw later
    outcomes would let the future in. `note` says when the champion was passed over.
    """
    choice, note = serving_version(model_name, as_of)
    loaded = load_version(model_name, choice.version)
    return replace(loaded, trained_as_of=choice.as_of, note=note)


def _reference(
    model_name: str, versions: Sequence[VersionInfo], champion: str | None, as_of: datetime
) -> str | None:
    try:
        return choose_version(model_name, versions, champion, as_of)[0].version
    except NoChampionError:
        return None


def _no_servable(
    model_name: str, versions: Sequence[VersionInfo], champion: str, as_of: datetime
) -> NoServableVersionError:
    newest = sorted(versions, key=lambda v: _version_number(v.version), reverse=True)
    described = []
    for v in newest[:_LISTED_VERSIONS]:
        flags = ["champion"] if v.version == champion else []
        if not v.eligible:
            flags.append("not eligible")
        extra = f" ({', '.join(flags)})" if flags else ""
        described.append(f"v{v.version} as of {_iso(v.as_of)}{extra}")
    if len(newest) > _LISTED_VERSIONS:
        described.append(f"and {len(newest) - _LISTED_VERSIONS} older")
    command = model_name.removeprefix("salesml-")
    return NoServableVersionError(
        f"no version of {model_name} may serve as_of {_iso(as_of)}: every eligible version was "
        f"trained later ({', '.join(described)}); train one with "
        f"`salesml train {command} --as-of {_iso(as_of)}`"
    )


# --- runs that died --------------------------------------------------------------------------


def reconcile_run(model_name: str, warehouse_run_id: str) -> Reconciled:
    """Put in order what an abandoned training run (warehouse `run_id`) left in MLflow.

    Its MLflow run, if still RUNNING, is ended as KILLED. Its model version, if one was
    registered, gets the decision it missed:
    - it is `@champion` (died after promoting): kept; nothing to undo;
    - tagged promoted but not champion (died between recording the decision and moving the
      alias): re-tagged not promoted; it stays eligible for past as_ofs if it passed the gate;
    - no decision (died before the gate): tagged not promoted and not eligible;
    - rejected by the gate: left as it is.
    Idempotent. Returns one line for the `runs` row, and the version concerned.
    """
    mlflow = import_mlflow()

    if not re.fullmatch(r"[0-9a-f]{32}", warehouse_run_id):
        return Reconciled(f"{warehouse_run_id!r} is not a salesml run id", None)
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{WAREHOUSE_RUN_TAG}` = '{warehouse_run_id}'"
    )
    parts = []
    for run in runs:
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
            parts.append(f"MLflow run {run.info.run_id} ended as KILLED")
    run_ids = {run.info.run_id for run in runs}
    versions = [
        v
        for v in client.search_model_versions(f"name='{_quoted(model_name)}'")
        if str(v.run_id) in run_ids
    ]
    if not versions:
        parts.append("no model version was registered")
        return Reconciled("; ".join(parts), None)
    champion = _champion_version(client, model_name)
    for item in versions:
        parts.append(_reconcile_version(client, model_name, item, champion))
    return Reconciled("; ".join(parts), str(versions[-1].version))


def _reconcile_version(
    client: MlflowClient, model_name: str, item: ModelVersion, champion: str | None
) -> str:
    version, tags = str(item.version), dict(item.tags or {})
    promoted = tags.get(f"{TAG_PREFIX}.promoted")

    def record(reason: str, gate: str | None = None) -> None:
        client.set_model_version_tag(model_name, version, f"{TAG_PREFIX}.promoted", "false")
        client.set_model_version_tag(model_name, version, f"{TAG_PREFIX}.reason", reason)
        if gate is not None:
            client.set_model_version_tag(model_name, version, GATE_TAG, gate)

    if version == champion:
        return f"v{version} is champion (the run died after promoting it); nothing to undo"
    if promoted == "true":
        record("the training run died before moving @champion to it; not promoted")
        return (
            f"v{version} passed the gate but @champion never moved to it; recorded as not promoted"
        )
    if promoted is None:
        record("the training run died before the promotion gate; never promoted", gate="false")
        return f"v{version} was registered but never gated; recorded as not promoted, not eligible"
    return f"v{version} was not promoted ({tags.get(f'{TAG_PREFIX}.reason', 'gate')})"


# --- helpers ---------------------------------------------------------------------------------


def _run_as_of_text(client: MlflowClient, run_id: str) -> str | None:
    """A version's as_of from its run (tag, else param), for versions without the tag."""
    try:
        data = client.get_run(run_id).data
    except Exception:  # a deleted run: as_of unknown
        return None
    return data.tags.get(AS_OF_TAG) or data.params.get("as_of")


def _parse_as_of(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _iso(value: datetime | None) -> str:
    return "unknown" if value is None else value.isoformat()


def _version_number(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _quoted(name: str) -> str:
    return name.replace("'", "''")


def _param_value(value: object) -> str:
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
