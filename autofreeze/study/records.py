"""What a study records, in one place: every attribute name and its read/write helpers.

Two records live on a study and its trials, each where its readers look:

- **what a person reads** in Optuna's own tools (``optuna studies``, ``optuna trials``,
  ``study.trials_dataframe()``, optuna-dashboard's tables): user attributes, each short. A trial
  carries its plan in words, its kind (and recipe), links to other trials, its cost and how it
  ended; a study what it runs, the probe's boundary and the plan chosen, in a line each.
- **the machine record** (the stored config, the probe's curve, the choice and its re-runs, a
  trial's plan as data, its blocks, per-epoch history, phase changes, caches): Optuna system
  attributes named ``autofreeze:<name>``, which ``optuna studies``, ``optuna trials`` and
  optuna-dashboard do not show. They live in the study's storage like everything else, so every
  Optuna storage (SQLite, PostgreSQL, MySQL, a gRPC proxy) carries them unchanged.

A study's system attributes are read through its storage, which ``optuna.Study`` does not make
public: the studies autofreeze opens are :class:`RecordedStudy` (``open_study``,
``load_existing_study``), which keep it. A plain ``optuna.Study`` (an in-memory study of a test,
a study loaded by ``optuna.load_study``) keeps the previous layout, everything in user
attributes, and studies written that way are read the same: every reader falls back to the user
attribute of the machine record's name. Nothing else in autofreeze spells these names; it calls
the helpers below.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from autofreeze.core.backbones import Backbone
    from autofreeze.core.train import FitResult
    from autofreeze.plan import FreezePlan

SYSTEM = "autofreeze:"  # the machine record's system attributes: SYSTEM + the name below
SHORT = 200  # the longest value of a study's user attr (``optuna studies`` prints them all)

# -- study attributes --------------------------------------------------------------------------
# the machine record (system attrs; user attrs of these names in the previous layout)
CONFIG = "autofreeze_config"  # the resolved study config every worker runs (storage masked)
CONFIG_DIR = "autofreeze_config_dir"  # the folder its relative paths are resolved against
PROBE = "autofreeze_probe"  # the transferability probe's curve, quadrant and boundary
CHOICE = "autofreeze_choice"  # the plan named best after re-evaluation, with its mean and CI
RERUNS = "autofreeze_reruns"  # the re-evaluation's runs: plan's trial, seed, value, seconds
NOTES_SAID = "notes_said"  # notes said once per study (e.g. a boundary run uncached)
HEAD_LR_FLOOR = "head_lr_floor"  # the run's head LR floor (AdamW; read by later warm starts)
# what a person reads (user attrs, a line each)
TASK = "task"  # ``resnet10t on digits, val_accuracy (maximize)``
PROBE_WORDS = "probe"  # ``boundary 1: small data, similar source``
CHOSEN = "chosen"  # ``trial 22: 0.9278 ± 0.0126 over 3 runs``

# -- trial attributes --------------------------------------------------------------------------
# what a person reads (user attrs)
BASELINE = "baseline"  # the textbook recipe an enqueued trial runs
PRIOR = "prior"  # a plan the probe suggested, enqueued after the baselines
WARM = "warm"  # a plan taken from an earlier study (``[search] warm_start``): where it came from
PORTFOLIO = "portfolio"  # a member of the shipped portfolio of first plans
# the attrs of a plan the study starts with (enqueued before the sampler proposes any)
FIRST_PLANS = (BASELINE, WARM, PORTFOLIO, PRIOR)
KIND = "kind"  # recipe, warm, portfolio, prior or searched
RETRY_OF = "retry_of"  # the trial a re-queued one replaces
REEVALUATION_OF = "reevaluation_of"  # the trial whose plan a re-evaluation re-runs
SEED = "seed"  # the training seed of a re-evaluation (others use [training] seed)
FAIL_REASON = "fail_reason"  # why the objective failed a trial (such a failure counts)
OVER_BUDGET = "over_budget"  # a trial started after other workers had taken the last of the budget
PLAN = "plan"  # in words (user attr); as data in the machine record
FROZEN_PARAM_FRACTION = "frozen_param_fraction"
FEATURE_CACHE = "feature_cache"  # whether the trial trained on cached frozen work
PRUNED_AT_EPOCH = "pruned_at_epoch"
SECONDS = "seconds"  # the trial's wall time: building, caching and training
VALIDATION_SECONDS = "validation_seconds"  # of the training loop's time, evaluating val
EXAMPLES_PER_SECOND = "train_examples_per_second"
TRAINABLE_PARAMS = "trainable_params"  # the most parameters trained at once
PEAK_MEMORY_MB = "peak_memory_mb"
COST = (SECONDS, EXAMPLES_PER_SECOND, TRAINABLE_PARAMS, PEAK_MEMORY_MB)  # a trial's cost attrs
SEARCHED = "searched"  # the name of a trial the sampler chose (not a baseline)
# the machine record (system attrs; user attrs of these names in the previous layout)
FROZEN_BLOCKS = "frozen_blocks"
BLOCKS = "blocks"  # every block's name, from the input (the rows of the freeze map)
CACHE = "cache"  # which cache: pooled (head only) or prefix, at which block, from where
AUGMENT = "augment"  # the augmentation in force: policy, online or cached views, mixing
PHASE_EVENTS = "phase_events"
HISTORY = "history"
# a running trial's heartbeat through a gRPC storage proxy, which has no heartbeat of its own
# (:mod:`autofreeze.study.proxy`): who beats, a count, after how many silent seconds it is stale
HEARTBEAT = "heartbeat"
# (PLAN as data, FAIL_REASON in full)


class RecordedStudy(optuna.Study):
    """An ``optuna.Study`` that keeps the storage it was opened on (``storage``, public), where
    its machine record (system attributes) is read and written.

    Made from a study Optuna created or loaded (``optuna.create_study``, ``optuna.load_study``)
    with the storage object it was given; it shares that study's sampler and pruner.
    """

    def __init__(self, study: optuna.Study, storage: BaseStorage) -> None:
        super().__init__(study.study_name, storage, sampler=study.sampler, pruner=study.pruner)
        self.storage = storage
        self.study_id = storage.get_study_id_from_name(study.study_name)


def with_storage(study: optuna.Study, storage: BaseStorage | None) -> optuna.Study:
    """``study`` as a :class:`RecordedStudy` on ``storage`` (the same study if it is one, or
    if there is no storage object to keep)."""
    if isinstance(study, RecordedStudy) or storage is None or isinstance(storage, str):
        return study
    return RecordedStudy(study, storage)


# -- the machine record: where it is read and written -------------------------------------------
_TRIAL_IDS: weakref.WeakKeyDictionary[optuna.Trial, int] = weakref.WeakKeyDictionary()
# what this process last wrote to a running trial's machine record, by key: a value written
# again unchanged (the history a trial's last epoch wrote, written again with its result) is a
# storage call that changes nothing. Only the worker running a trial writes its record.
_WRITTEN: weakref.WeakKeyDictionary[optuna.Trial, dict[str, Any]] = weakref.WeakKeyDictionary()


def know_trial_id(trial: optuna.Trial, trial_id: int) -> None:
    """Note the id of a trial its worker has just created or claimed (the queue knows it),
    so that its records and heartbeats need no lookup."""
    _TRIAL_IDS[trial] = trial_id


def trial_id(trial: optuna.Trial) -> int:
    """A running trial's id: the one its queue noted (:func:`know_trial_id`), else from the
    storage's public lookups (looked up once per trial)."""
    if trial not in _TRIAL_IDS:
        storage = trial.storage
        study_id = storage.get_study_id_from_name(trial.study.study_name)
        _TRIAL_IDS[trial] = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    return _TRIAL_IDS[trial]


def _system_key(name: str) -> str:
    """``autofreeze:history``, ``autofreeze:config``: a record's system attribute."""
    return SYSTEM + name.removeprefix("autofreeze_")


def _get(trial: Any, name: str, default: Any = None) -> Any:
    """A trial's machine record ``name``: its system attr, else (a trial of the previous layout,
    or a ``FixedTrial``) its user attr of that name."""
    if isinstance(trial, optuna.Trial):  # running: its system attrs are in the storage
        system = trial.storage.get_trial(trial_id(trial)).system_attrs
    else:
        system = getattr(trial, "system_attrs", None) or {}
    key = _system_key(name)
    return system[key] if key in system else trial.user_attrs.get(name, default)


def _put(trial: Any, name: str, value: Any) -> None:
    """Write a trial's machine record ``name``: a system attr of a running trial. A
    ``FixedTrial`` (re-runs, ``autofreeze train``) is never stored: it keeps it as a user attr."""
    if isinstance(trial, optuna.Trial):
        key = _system_key(name)
        written = _WRITTEN.setdefault(trial, {})
        if key in written and written[key] == value:
            return
        trial.storage.set_trial_system_attr(trial_id(trial), key, value)
        written[key] = copy.deepcopy(value)  # the caller may change its own later
    else:
        trial.set_user_attr(name, value)


def _study_get(study: optuna.Study, name: str, default: Any = None) -> Any:
    """The study's machine record ``name``: its system attr, else the previous layout's (or a
    plain ``optuna.Study``'s) user attr."""
    if isinstance(study, RecordedStudy):
        system = study.storage.get_study_system_attrs(study.study_id)
        if (key := _system_key(name)) in system:
            return system[key]
    else:
        _reachable(study, name)
    return study.user_attrs.get(name, default)


def _study_put(study: optuna.Study, name: str, value: Any) -> None:
    if isinstance(study, RecordedStudy):
        study.storage.set_study_system_attr(study.study_id, _system_key(name), value)
    else:  # no storage to reach its system attrs: the previous layout
        _reachable(study, name)
        study.set_user_attr(name, value)


def _reachable(study: optuna.Study, name: str) -> None:
    """A plain ``optuna.Study`` of a study whose record is in system attrs (it says its
    ``task``) cannot reach it: fail loudly rather than read nothing or mix the layouts."""
    attrs = study.user_attrs
    if TASK in attrs and name not in attrs:
        raise TypeError(
            f"study {study.study_name!r} keeps its autofreeze record in Optuna system "
            "attributes, which optuna.Study cannot read: open it with "
            "autofreeze.study.storage.load_existing_study(url, name), or wrap it with "
            "records.with_storage(study, storage)"
        )


def _line(text: str) -> str:
    """A value a person reads in a table cell: one line of at most :data:`SHORT` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= SHORT else text[: SHORT - 1] + "…"


def _g(value: Any, digits: int = 2) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def plan_words(plan: dict[str, Any], n_blocks: int | None = None) -> str:
    """The plan in one short line, as the trial's ``plan`` user attr shows it: ``3/5 blocks
    frozen, gradual(every=1), head lr 0.02, backbone 0.47x, layer decay 0.64, wd 0.098``
    (BatchNorm, init and augmentation where not the default)."""
    k = plan.get("boundary", 0)
    frozen = f"{k}/{n_blocks} blocks frozen" if n_blocks else f"{k} blocks frozen"
    knobs = ", ".join(f"{n}={_g(v)}" for n, v in (plan.get("schedule_params") or {}).items())
    schedule = plan.get("schedule", "static")
    parts = [frozen, f"{schedule}({knobs})" if knobs else schedule]
    parts.append(f"head lr {_g(plan.get('head_lr'))}")
    if n_blocks is None or k < n_blocks or schedule != "static":
        parts.append(f"backbone {_g(plan.get('backbone_lr_ratio', 1.0))}x")
    if plan.get("layer_decay", 1.0) != 1.0:
        parts.append(f"layer decay {_g(plan['layer_decay'])}")
    parts.append(f"wd {_g(plan.get('weight_decay', 0.0))}")
    if plan.get("bn_mode", "eval") != "eval":
        parts.append(f"bn {plan['bn_mode']}")
    if plan.get("init", "pretrained") != "pretrained":
        parts.append(str(plan["init"]))
    if plan.get("augment"):
        parts.append(f"augment {plan['augment']}")
    return ", ".join(parts)


# -- reading -------------------------------------------------------------------------------------
def baseline(trial: FrozenTrial | optuna.Trial) -> str | None:
    return trial.user_attrs.get(BASELINE)


def reevaluation_of(trial: FrozenTrial | optuna.Trial) -> int | None:
    return trial.user_attrs.get(REEVALUATION_OF)


def name(trial: FrozenTrial) -> str:
    """The recipe a trial ran, ``searched``, or ``re-eval #N`` for a re-run of trial N."""
    again = reevaluation_of(trial)
    if again is not None:
        return f"re-eval #{again}"
    return next(
        (str(trial.user_attrs[k]) for k in FIRST_PLANS if trial.user_attrs.get(k)), SEARCHED
    )


def kind(trial: FrozenTrial | optuna.Trial) -> str:
    """``recipe`` (a textbook recipe), ``warm`` (from an earlier study), ``portfolio`` (the
    shipped portfolio), ``prior`` (one of the probe's plans) or ``searched``."""
    if baseline(trial):
        return "recipe"
    return next((k for k in FIRST_PLANS[1:] if trial.user_attrs.get(k)), SEARCHED)


def initial_design(trials: list[FrozenTrial]) -> int:
    """How many trials the study was seeded with: the baselines and the probe's prior (their
    retries and re-evaluations are not new points of the design)."""
    return sum(
        1
        for t in trials
        if any(t.user_attrs.get(k) for k in FIRST_PLANS)
        and not is_retry(t)
        and reevaluation_of(t) is None
    )


def retry_of(trial: FrozenTrial) -> int | None:
    """The number of the trial this one re-runs (the first of a chain), or None."""
    return trial.user_attrs.get(RETRY_OF)


def is_retry(trial: FrozenTrial) -> bool:
    """Whether the trial was queued to replace one cut short (it carries ``retry_of``)."""
    return RETRY_OF in trial.user_attrs


def seed(trial: FrozenTrial | optuna.Trial, default: int | None = None) -> int | None:
    """The training seed a re-evaluation runs with; ``default`` for any other trial."""
    return trial.user_attrs.get(SEED, default)


def blocks(trial: FrozenTrial) -> list[str] | None:
    """Every block's name, input first; None for a trial that never built its backbone (or of
    an older version, which stored the frozen blocks only)."""
    return _get(trial, BLOCKS)


def n_blocks(trial: FrozenTrial) -> int | None:
    """How many blocks the trial's backbone has; None when it recorded none."""
    return len(blocks(trial) or []) or None


def frozen_blocks(trial: FrozenTrial) -> list[str] | None:
    """The names of the blocks below the plan's boundary."""
    return _get(trial, FROZEN_BLOCKS)


def frozen_fraction(trial: FrozenTrial) -> float | None:
    """The share of the backbone's parameters below the plan's boundary."""
    return trial.user_attrs.get(FROZEN_PARAM_FRACTION)


def history(trial: FrozenTrial) -> list[dict[str, Any]]:
    """Each epoch run (see :func:`write_history`); empty before the first one. An epoch that
    was not validated has ``val_loss`` and ``val_accuracy`` None (the last one always has them).
    """
    return _get(trial, HISTORY) or []


def phase_events(trial: FrozenTrial) -> list[str]:
    """The schedule's phase changes, in words, in the order they happened."""
    return _get(trial, PHASE_EVENTS) or []


def pruned_at_epoch(trial: FrozenTrial) -> int | None:
    """The epoch at which the pruner stopped the trial, if it did."""
    return trial.user_attrs.get(PRUNED_AT_EPOCH)


def seconds(trial: FrozenTrial, default: float | None = None) -> float | None:
    """The trial's wall time (building, caching and training); ``default`` if not recorded."""
    return trial.user_attrs.get(SECONDS, default)


def cost_value(trial: FrozenTrial, name: str) -> Any:
    """One of the trial's cost attrs (a name of :data:`COST`), None if not recorded."""
    return trial.user_attrs.get(name)


def cost(trial: FrozenTrial) -> dict[str, Any]:
    """Every cost attr of :data:`COST` by name, None for those not recorded."""
    return {k: cost_value(trial, k) for k in COST}


def cache(trial: FrozenTrial) -> dict[str, Any] | None:
    """The cached frozen work the trial used (see :func:`write_cache`, :func:`write_uncached`)."""
    return _get(trial, CACHE)


def cache_kind(trial: FrozenTrial) -> str | None:
    """``pooled``, ``prefix`` or ``none`` (could not be cached); None: no cache recorded."""
    return (cache(trial) or {}).get("kind")


def feature_cache(trial: FrozenTrial) -> bool | None:
    """Whether the trial trained on cached frozen work (None: not recorded)."""
    return trial.user_attrs.get(FEATURE_CACHE)


def augment(trial: FrozenTrial) -> dict[str, Any] | None:
    """The augmentation in force (see :func:`write_augment`), or None."""
    return _get(trial, AUGMENT)


def metric_value(trial: FrozenTrial) -> float | None:
    """The trial's metric: its value, or its first value in a multi-objective study."""
    return trial.values[0] if trial.values else None


def maximizes(study: optuna.Study) -> bool:
    """Whether the study's metric (its first objective) is maximised."""
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


def fail_reason(trial: FrozenTrial) -> str:
    """Why the objective failed the trial, in full ("" if it did not)."""
    return _get(trial, FAIL_REASON, "")  # the user attr is cut to a line


def plan(trial: FrozenTrial) -> dict[str, Any]:
    """The plan the trial ran, as data (``FreezePlan.to_dict``); ``{}`` before it ran."""
    found = _get(trial, PLAN)
    return found if isinstance(found, dict) else {}  # the user attr is the plan in words


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial used up budget: it finished, or the objective failed it with a reason.

    A trial that failed without a reason was cut short (Ctrl-C, a dead worker) and is retried.
    Re-evaluations run after the budget and are not counted in it.
    """
    if reevaluation_of(trial) is not None:
        return False
    finished = trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    return finished or (trial.state == TrialState.FAIL and FAIL_REASON in trial.user_attrs)


def over_budget(trial: FrozenTrial | optuna.Trial) -> bool:
    return bool(trial.user_attrs.get(OVER_BUDGET))


def claimed_ahead(trials: Iterable[FrozenTrial], number: int) -> int:
    """How much of the budget is spent or taken ahead of the running trial ``number``: trials
    that count, and running ones that started before it (by start time, then number).

    Workers check the budget before they start a trial, but two of them can both see one trial
    left and both start one (measured: 101 trials for a budget of 100 with 8 workers). Every
    worker orders the running trials the same way from the stored start times, so of the
    trials that raced for the last place exactly one finds nothing ahead of it. On SQLite the
    start times are stamped inside serialised transactions; across machines they come from
    each machine's clock, which only decides which of two racers goes on.
    """
    trials = list(trials)
    mine = next(t for t in trials if t.number == number)
    key = (mine.datetime_start, number)
    ahead = sum(
        1
        for t in trials
        if t.state == TrialState.RUNNING
        and t.number != number
        and reevaluation_of(t) is None
        and t.datetime_start is not None
        and (t.datetime_start, t.number) < key
    )
    return ahead + sum(counts(t) for t in trials)


def budget(trials: Iterable[FrozenTrial]) -> tuple[int, int]:
    """(counted, running) trials of a whole study, whichever worker runs them."""
    counted = running = 0
    for t in trials:
        counted += counts(t)
        running += t.state == TrialState.RUNNING
    return counted, running


def reevaluation_attrs(number: int, seed: int) -> dict[str, Any]:
    """The user attrs of a trial that re-runs the plan of trial ``number`` with ``seed``."""
    return {REEVALUATION_OF: number, SEED: seed}


def retry_attrs(trial: FrozenTrial) -> dict[str, Any]:
    """The user attrs of a trial that re-runs ``trial``: its recipe name and the link back."""
    attrs: dict[str, Any] = {RETRY_OF: trial.number}
    for key in FIRST_PLANS:
        if trial.user_attrs.get(key):
            attrs[key] = trial.user_attrs[key]
    return attrs


def params_of(trial: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial ran, or was enqueued with if it was cut short before asking."""
    return dict(trial.params or trial.system_attrs.get("fixed_params") or {})


# -- reading a study ------------------------------------------------------------------------------
def has_config(study: optuna.Study) -> bool:
    """Whether the study's search has stored its config yet."""
    return config(study) is not None


def config(study: optuna.Study) -> dict[str, Any] | None:
    """The resolved config the study runs, as stored (a dict; storage masked), or None."""
    return _study_get(study, CONFIG)


def config_dir(study: optuna.Study) -> str:
    """The folder the stored config's relative paths are resolved against (``.`` if none)."""
    return _study_get(study, CONFIG_DIR, ".")


def metric_of(study: optuna.Study) -> str | None:
    """The metric the study's stored config names, if it stored one."""
    return ((config(study) or {}).get("study") or {}).get("metric")


def choice(study: optuna.Study) -> dict[str, Any] | None:
    """The plan named best after re-evaluation (trial, mean, 95 % half-width, runs,
    candidates), or None before (or without) a re-evaluation."""
    return _study_get(study, CHOICE)


def reruns(study: optuna.Study) -> list[dict[str, Any]]:
    """The re-evaluation's runs so far, each ``{"of": trial, "seed", "value", "seconds"}``.

    They are not trials: Optuna's own views (``best_trial``, the history, parameter importance)
    see the search's trials only, and a re-run's value is a second opinion of a plan, not a
    new point of the search.
    """
    return list(_study_get(study, RERUNS) or [])


def probe(study: optuna.Study) -> dict[str, Any] | None:
    """The transferability probe's result (curve, quadrant, boundary), or None."""
    return _study_get(study, PROBE)


def head_lr_floor(study: optuna.Study) -> float | None:
    """The head LR floor of the study's runs (``search.space.head_lr_floor`` of its optimizer
    steps and head), or None: a study of another optimizer, or from before it was recorded."""
    return _study_get(study, HEAD_LR_FLOOR)


# -- writing a study -----------------------------------------------------------------------------
def write_config(study: optuna.Study, stored: dict[str, Any], folder: str) -> None:
    """The resolved config (a dict, storage masked) and the folder its paths are relative to;
    the ``task`` user attr says what it runs in a line."""
    _study_put(study, CONFIG, stored)
    _study_put(study, CONFIG_DIR, folder)
    table = stored.get("study") or {}
    metric = ", ".join(table.get("objectives") or []) or table.get("metric")
    backbone = (stored.get("backbone") or {}).get("name")
    dataset = (stored.get("dataset") or {}).get("name")
    study.set_user_attr(TASK, _line(f"{backbone} on {dataset}, {metric}"))


def write_probe(study: optuna.Study, result: dict[str, Any]) -> None:
    """The probe's result (see :func:`probe`); the ``probe`` user attr: its boundary and
    quadrant in a line."""
    _study_put(study, PROBE, result)
    quadrant = f"{result.get('size', '?')} data, {result.get('similarity', '?')} source"
    study.set_user_attr(PROBE_WORDS, _line(f"boundary {result.get('boundary')}: {quadrant}"))


def write_head_lr_floor(study: optuna.Study, floor: float) -> None:
    """The head LR floor of the study's runs (see :func:`head_lr_floor`): a later study that
    warm-starts from this one scales its head LRs by the two floors."""
    _study_put(study, HEAD_LR_FLOOR, floor)


def write_choice(study: optuna.Study, chosen: dict[str, Any]) -> None:
    """The plan named best after re-evaluation (see :func:`choice`); the ``chosen`` user
    attr: its trial, mean and interval in a line."""
    _study_put(study, CHOICE, chosen)
    runs = len(chosen.get("values") or [])
    mean, ci = chosen.get("mean"), chosen.get("ci95")
    shown = "-" if mean is None else f"{mean:.4f}"
    spread = f" ± {ci:.4f}" if runs > 1 and ci is not None and math.isfinite(ci) else ""
    words = f"over {runs} runs" if runs > 1 else "one run"
    study.set_user_attr(CHOSEN, _line(f"trial {chosen.get('trial')}: {shown}{spread} {words}"))


def add_rerun(study: optuna.Study, of: int, seed: int, value: float, seconds: float) -> None:
    """Record one finished re-run (the list grows by one; an interrupted re-run is not kept)."""
    runs = reruns(study)
    runs.append({"of": of, "seed": seed, "value": value, "seconds": round(seconds, 3)})
    _study_put(study, RERUNS, runs)


def say_once(study: optuna.Study | None, note: str) -> bool:
    """Whether ``note`` is new to the study, which then records it: a note every worker may
    meet is said by the first. Without a study (a lone trial) every note is new."""
    if study is None:
        return True
    said = _study_get(study, NOTES_SAID) or []
    if note in said:
        return False
    _study_put(study, NOTES_SAID, [*said, note])
    return True


# -- writing a trial -----------------------------------------------------------------------------
def write_plan(trial: optuna.Trial, plan: FreezePlan, backbone: Backbone) -> None:
    """The plan in words and the trial's kind (user attrs); the plan as data and the blocks,
    every one and the frozen ones (the machine record)."""
    frozen = backbone.blocks[: plan.boundary]
    total = sum(p.numel() for p in backbone.model.parameters())
    trial.set_user_attr(PLAN, _line(plan_words(plan.to_dict(), backbone.n_blocks)))
    trial.set_user_attr(KIND, kind(trial))
    trial.set_user_attr(
        FROZEN_PARAM_FRACTION,
        round(sum(backbone.block_param_count(b) for b in frozen) / total, 6),
    )
    _put(trial, PLAN, plan.to_dict())
    _put(trial, FROZEN_BLOCKS, [b.name for b in frozen])
    _put(trial, BLOCKS, [b.name for b in backbone.blocks])


def write_result(trial: optuna.Trial, result: FitResult) -> None:
    """Phase changes (none written for a schedule that had none: :func:`phase_events` reads
    the same), cost (but the wall time: :func:`write_seconds`) and the learning curves."""
    if result.events:
        _put(trial, PHASE_EVENTS, result.events)
    for key, value in result.cost.items():
        if key != SECONDS:
            trial.set_user_attr(key, round(value, 3))
    write_history(trial, result.history)


def write_history(trial: optuna.Trial, history: list[Any]) -> None:
    """The learning curves and freeze state of each epoch run (also of a pruned trial); the
    val_* of an epoch not validated are null (JSON null, never NaN: a browser reads it)."""

    def val(v: float | None) -> float | None:
        return None if v is None else round(v, 5)

    _put(
        trial,
        HISTORY,
        [
            {
                "epoch": e.epoch,
                "phase": e.phase,
                "val_accuracy": val(e.val_accuracy),
                "val_loss": val(e.val_loss),
                "train_loss": round(e.train_loss, 5),
                "trainable_from": e.first_trainable,  # blocks below it were frozen
                "cached": e.cached,  # blocks below it ran from a cache
                "lrs": {k: float(f"{v:.3g}") for k, v in e.lrs.items()},
            }
            for e in history
        ],
    )


def write_cache(trial: optuna.Trial, kind: str, boundary: int, source: str, views: int = 0) -> None:
    """The trial trained on cached frozen work: ``pooled`` features (head only) or the
    ``prefix`` output of blocks ``0..boundary-1``, read from ``source`` (memory, disk or
    computed by this trial), of ``views`` augmented views per training image (0: unaugmented)."""
    entry = {"kind": kind, "boundary": boundary, "source": source or "memory"}
    _put(trial, CACHE, {**entry, "views": views} if views else entry)


def write_augment(trial: optuna.Trial, policy: str, views: int, mixing: bool) -> None:
    """Which augmentation is in force: the policy and how it is applied (``online``: fresh
    every batch, no frozen work cached; ``cached views``: ``views`` fixed views per image, the
    caches hold them; ``none``), and whether mixup/cutmix mix the batches."""
    applied = "none" if policy == "none" else "cached views" if views and not mixing else "online"
    entry = {"policy": policy, "applied": applied, "mix": mixing}
    _put(trial, AUGMENT, {**entry, "views": views} if applied == "cached views" else entry)


def write_uncached(trial: optuna.Trial, boundary: int, reason: str) -> None:
    """The plan's frozen prefix could have been cached but the backbone cannot be split there."""
    _put(trial, CACHE, {"kind": "none", "boundary": boundary, "reason": reason})


def write_seconds(trial: optuna.Trial, seconds: float) -> None:
    trial.set_user_attr(SECONDS, round(seconds, 3))


def heartbeat(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's last heartbeat through a gRPC storage proxy (see
    :func:`write_heartbeat`), or None if it never beat that way."""
    return trial.system_attrs.get(_system_key(HEARTBEAT))


def write_heartbeat(storage: BaseStorage, trial_id: int, beat: dict[str, Any]) -> None:
    """A running trial's heartbeat through a gRPC storage proxy: a new value every beat."""
    storage.set_trial_system_attr(trial_id, _system_key(HEARTBEAT), beat)


def mark_retry_of(trial: FrozenTrial, first: int) -> None:
    """Link a copy of a stale trial, before Optuna re-queues it, to the trial it replaces."""
    trial.user_attrs[RETRY_OF] = first


def write_failure(trial: optuna.Trial, reason: str) -> None:
    """Mark the trial failed by the objective: it counts towards the budget, not retried. The
    user attr says why in a line; the machine record keeps the whole reason."""
    trial.set_user_attr(FAIL_REASON, _line(reason))
    _put(trial, FAIL_REASON, reason)
