"""The registries of modalities, reports, model kinds and training objectives, and discovery:
the subpackages of ``molfuse.modalities`` and the entry points of groups ``molfuse.modalities`` and
``molfuse.objectives``, imported once; a modality whose dependencies are missing is remembered
with its install hint."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
from typing import Any, Callable

from ..base.registry import Registry, UnknownNameError
from .contracts import DataKind, MissingModalityError, Modality, ModelKind, ObjectiveKind, Report

__all__ = ["ENTRY_POINT_GROUP", "OBJECTIVE_GROUP", "MODALITIES", "discover", "register_modality", "modality", "modalities",
           "unavailable", "architecture", "data_kind", "data_kind_modality", "register_model_kind", "model_kind",
           "model_kinds", "register_report", "report", "reports", "register_objective", "objective",
           "UnknownNameError"]

ENTRY_POINT_GROUP = "molfuse.modalities"


_STATE = {"discovered": False}
_UNAVAILABLE: dict[str, str] = {}  # modality module name -> why it could not be imported


def discover() -> None:
    """Import every modality molfuse can find, once: ``molfuse.modalities.*`` and the entry points
    of group ``molfuse.modalities``; each ``register()`` runs. Import failures are remembered
    (:func:`unavailable`) with their message (which names the extra to install)."""
    if _STATE["discovered"]:
        return
    _STATE["discovered"] = True
    spec = importlib.util.find_spec("molfuse.modalities")
    paths = list(spec.submodule_search_locations or []) if spec else []
    for info in pkgutil.iter_modules(paths, "molfuse.modalities."):
        if info.ispkg:
            _load(info.name, lambda name=info.name: importlib.import_module(name))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _load(ep.value, ep.load)


def _load(label: str, load: Callable[[], Any]) -> None:
    try:
        obj = load()
    except ImportError as e:
        _UNAVAILABLE[label.rsplit(".", 1)[-1].split(":")[0]] = str(e)
        return
    register = getattr(obj, "register", obj if callable(obj) else None)
    if callable(register):
        register()


MODALITIES: Registry[Modality] = Registry("modality", discover=discover)
_REPORTS: Registry[Report] = Registry("report", discover=discover)
_MODEL_KINDS: Registry[ModelKind] = Registry("model kind", discover=discover)


OBJECTIVE_GROUP = "molfuse.objectives"


def _discover_objectives() -> None:
    """Objectives register themselves through entry points of group ``molfuse.objectives`` (the
    built-in ``distill`` is the face's own, declared in molfuse's pyproject.toml)."""
    for ep in importlib.metadata.entry_points(group=OBJECTIVE_GROUP):
        _load(ep.value, ep.load)


_OBJECTIVES: Registry[ObjectiveKind] = Registry("training objective", discover=_discover_objectives)


def register_objective(name: str, kind: ObjectiveKind, replace: bool = False) -> ObjectiveKind:
    """A training objective kind (``distill``: the campaign's own; plugins may add theirs)."""
    return _OBJECTIVES.register(name, kind, replace=replace)


def objective(name: str) -> ObjectiveKind:
    """The objective kind ``name`` (raises UnknownNameError listing the known ones)."""
    return _OBJECTIVES.get(name)


def register_modality(m: Modality, replace: bool = False) -> Modality:
    """Make ``m`` known (idempotent for the same object); its parts become findable by name."""
    return MODALITIES.register(m.name, m, replace=replace)


def modalities() -> list[Modality]:
    """Every registered modality (after discovery), by name."""
    discover()
    return [MODALITIES.get(n) for n in MODALITIES.names()]


def unavailable() -> dict[str, str]:
    """Modalities found but not importable here: name -> the import error (with install hint)."""
    discover()
    return dict(_UNAVAILABLE)


def modality(name: str) -> Modality:
    """The modality ``name``, with its dependencies importable.

    Raises:
        MissingModalityError: unknown (the registered ones are listed), not importable here or
            missing a package (the message says what to install).
    """
    if not isinstance(name, str) or name not in MODALITIES:
        if isinstance(name, str) and name in _UNAVAILABLE:
            raise MissingModalityError(f"modality {name!r} cannot be used here: {_UNAVAILABLE[name]}")
        known = ", ".join(MODALITIES.names()) or "none"
        raise MissingModalityError(f"unknown modality {name!r}; registered: {known} (a modality registers itself with "
                                   "molfuse.plugins.register_modality, or through the entry point group "
                                   f"{ENTRY_POINT_GROUP!r})")
    m = MODALITIES.get(name)
    missing = m.missing()
    if missing:
        raise MissingModalityError(f"modality {name!r} needs {', '.join(missing)}: {m.install_hint()}")
    return m


def _find(part: str, name: str, what: str) -> tuple[Modality, Any]:
    for _ in range(2):
        for m in (MODALITIES.get(n) for n in MODALITIES.names()):
            table = getattr(m, part)
            if name in table:
                missing = m.missing()
                if missing:
                    raise MissingModalityError(f"{what} {name!r} (modality {m.name!r}) needs {', '.join(missing)}: "
                                               f"{m.install_hint()}")
                return m, table[name]
        discover()
    known = sorted({k for n in MODALITIES.names() for k in getattr(MODALITIES.get(n), part)})
    hint = "".join(f"; modality {k!r} is unavailable: {v}" for k, v in _UNAVAILABLE.items())
    raise MissingModalityError(f"unknown {what} {name!r}; registered: {', '.join(known) or 'none'}{hint}")


def architecture(name: str) -> Callable[..., Any]:
    """The network builder ``name`` (``builder(**config) -> nn.Module``) of whichever modality has it."""
    return _find("architectures", name, "architecture")[1]


def data_kind(name: str) -> DataKind:
    return _find("data_kinds", name, "data kind")[1]


def data_kind_modality(name: str) -> str:
    """The name of the modality that provides data kind ``name`` (its checkpoints' ``modality``)."""
    return _find("data_kinds", name, "data kind")[0].name


def register_model_kind(name: str, kind: ModelKind, replace: bool = False) -> ModelKind:
    """A model kind that belongs to no modality (``checkpoint``, ``soup``: the campaign's own)."""
    return _MODEL_KINDS.register(name, kind, replace=replace)


def model_kind(name: str) -> tuple[str | None, ModelKind]:
    """``(modality or None, kind)`` for ``models.<x>.kind: name``."""
    if name in _MODEL_KINDS:
        return None, _MODEL_KINDS.get(name)
    m, kind = _find("model_kinds", name, "model kind")
    return m.name, kind


def model_kinds() -> list[str]:
    discover()
    return sorted({*_MODEL_KINDS.names(), *(k for n in MODALITIES.names() for k in MODALITIES.get(n).model_kinds)})


def register_report(name: str, report: Report, replace: bool = False) -> Report:
    """A report that belongs to no modality (``by_n``: the campaign's own)."""
    return _REPORTS.register(name, report, replace=replace)


def report(name: str) -> Report:
    if name in _REPORTS:
        return _REPORTS.get(name)
    return _find("reports", name, "report")[1]


def reports() -> list[str]:
    discover()
    return sorted({*_REPORTS.names(), *(k for n in MODALITIES.names() for k in MODALITIES.get(n).reports)})
