"""The one error tree of the product.

Every error a user can meet derives from :class:`FeatureStoreError`. The subtrees say what kind of
problem it is; ``serving/`` maps them to HTTP statuses, the core never speaks HTTP.
"""

from __future__ import annotations


class FeatureStoreError(Exception):
    """Root of every error raised by the feature store."""


class ConfigError(FeatureStoreError):
    """``featurestore.yaml`` (or a backend config) is invalid."""


class DefinitionError(FeatureStoreError):
    """A feature definition is invalid: names the object and, where it applies, the field."""

    def __init__(self, message: str, *, obj: str | None = None, field: str | None = None):
        super().__init__(message)
        self.obj = obj
        self.field = field


class NotFoundError(FeatureStoreError):
    """A named object (view, feature, entity, service, source file) does not exist."""


class FeatureViewNotFound(NotFoundError):
    pass


class FeatureNotFound(NotFoundError):
    pass


class ConflictError(FeatureStoreError):
    """A change conflicts with what is stored (e.g. an incompatible registry change)."""


class IncompatibleChangeError(ConflictError):
    """An ``apply`` would change a view in a way that breaks stored data (entity or key type)."""


class InvalidInputError(FeatureStoreError):
    """Input data is invalid: missing columns, wrong dtypes, name collisions, bad values."""


class CheckFailedError(InvalidInputError):
    """A view's ``on_fail="fail"`` check failed: the run stopped before writing anything.
    ``checks`` holds the run's check outcomes (``featurestore.checks``)."""

    def __init__(self, message: str, *, view: str, checks: list | None = None):
        super().__init__(message)
        self.view = view
        self.checks = checks or []


class BackendUnavailableError(FeatureStoreError):
    """An outside system (Redis, PostgreSQL, Kafka, Spark) cannot be reached."""


class DamagedStateError(FeatureStoreError):
    """Stored data cannot be read: a damaged or missing file (a table's commit log, a data file, a
    source file) or an unusable store path. ``path`` names it; ``repair`` says what repairs it (a
    command where the product has one), and the message ends with it."""

    def __init__(self, message: str, *, path: str | None = None, repair: str | None = None):
        super().__init__(f"{message}. To repair: {repair}" if repair else message)
        self.detail = message
        self.path = path
        self.repair = repair

    def with_repair(self, repair: str, owner: str = "") -> "DamagedStateError":
        """The same damage, said with what the file belongs to (``owner``) and how to repair it."""
        return DamagedStateError(f"{self.detail} ({owner})" if owner else self.detail, path=self.path,
                                 repair=repair)


class MissingDependencyError(FeatureStoreError, ImportError):
    """An optional dependency is not installed; the message says which extra to install."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed: pip install 'featurestore[{extra}]'")
        self.package = package
        self.extra = extra


class StreamIncompleteWarning(UserWarning):
    """An export asked for times its stream jobs have not completed: on-time events for those times
    may still arrive (see the README's Semantics section)."""

