"""On-demand feature views: Python functions over other views' features and request data, run at
request time by the server and, identically, inside training exports.

The function gets one dict of columns (feature or request field name -> list of values, one per row)
and returns a dict of its output columns; with ``mode="pandas"`` it gets and returns a DataFrame.
The registry stores where the function lives (repo module and name) and a hash of its source, so the
server runs the very function that was applied.
"""

from __future__ import annotations

import hashlib
import inspect
import linecache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa

from featurestore import values as input_values
from featurestore.definitions import FeatureView, Field, check_name
from featurestore.errors import DefinitionError, FeatureStoreError, InvalidInputError
from featurestore.user_code import import_file


class OnDemandFeatureError(FeatureStoreError):
    """An on-demand function failed or returned something other than its declared outputs."""

    def __init__(self, message: str, view: str):
        super().__init__(message)
        self.view = view


@dataclass(frozen=True)
class RequestSource:
    """Fields that arrive with the request (REST body, or entity frame columns in exports)."""

    schema: Sequence[Field] = ()
    name: str = "request"

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", tuple(self.schema))
        for f in self.schema:
            if not isinstance(f, Field):
                raise DefinitionError(f"RequestSource {self.name!r}: schema takes Field objects", obj=self.name)

    def to_spec(self) -> dict[str, Any]:
        return {"name": self.name, "schema": [f.to_spec() for f in self.schema]}


@dataclass(frozen=True, eq=False)
class OnDemandFeatureView:
    name: str
    sources: Sequence[FeatureView | RequestSource] = ()
    schema: Sequence[Field] = ()
    udf: Callable | None = None
    mode: str = "python"
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("OnDemandFeatureView", self.name)
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "schema", tuple(self.schema))
        if not callable(self.udf):
            raise DefinitionError(f"OnDemandFeatureView {self.name!r} needs a function", obj=self.name,
                                  field="udf")
        if self.mode not in ("python", "pandas"):
            raise DefinitionError(f"OnDemandFeatureView {self.name!r}: mode is 'python' or 'pandas'",
                                  obj=self.name, field="mode")
        if not self.schema:
            raise DefinitionError(f"OnDemandFeatureView {self.name!r} declares no output schema", obj=self.name,
                                  field="schema")
        for src in self.sources:
            if not isinstance(src, (FeatureView, RequestSource)):
                raise DefinitionError(f"OnDemandFeatureView {self.name!r}: sources are feature views and "
                                      f"RequestSources, got {src!r}", obj=self.name, field="sources")

    @property
    def features(self) -> tuple[Field, ...]:
        return self.schema

    def to_spec(self, repo_path: Path | None = None) -> dict[str, Any]:
        code = _source(self.udf)
        module = inspect.getsourcefile(self.udf) or ""
        if repo_path is not None:
            try:
                module = str(Path(module).resolve().relative_to(repo_path.resolve()))
            except ValueError:
                pass
        return {
            "name": self.name,
            "sources": [s.name for s in self.sources if isinstance(s, FeatureView)],
            "request_schema": [f.to_spec() for s in self.sources if isinstance(s, RequestSource)
                               for f in s.schema],
            "schema": [f.to_spec() for f in self.schema],
            "mode": self.mode,
            "udf": {"module": module, "function": self.udf.__name__,
                    "source_sha256": hashlib.sha256(code.encode()).hexdigest()},
            "description": self.description,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True)
class UdfRef:
    """Where an applied on-demand function lives (a repo module and its name) and its source's hash."""

    module: str
    function: str
    source_sha256: str


@dataclass(frozen=True)
class OnDemandSpec:
    """An applied on-demand view as the registry holds it: what the server and exports run."""

    name: str
    sources: tuple[str, ...]  # the feature views whose features it reads
    request_schema: tuple[Field, ...]
    schema: tuple[Field, ...]
    mode: str
    udf: UdfRef
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def features(self) -> tuple[Field, ...]:
        return self.schema

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.schema]

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> "OnDemandSpec":
        udf = spec["udf"]
        return cls(name=spec["name"], sources=tuple(spec["sources"]),
                   request_schema=tuple(Field.from_spec(f) for f in spec.get("request_schema", [])),
                   schema=tuple(Field.from_spec(f) for f in spec["schema"]), mode=spec["mode"],
                   udf=UdfRef(udf["module"], udf["function"], udf["source_sha256"]),
                   description=spec.get("description", ""), tags=spec.get("tags", {}))


def on_demand_feature_view(*, sources: Sequence[FeatureView | RequestSource], schema: Sequence[Field],
                           mode: str = "python", name: str | None = None, description: str = ""):
    """Declare an on-demand feature view from a function (its name is the view's name by default)."""

    def wrap(fn: Callable) -> OnDemandFeatureView:
        return OnDemandFeatureView(name=name or fn.__name__, sources=sources, schema=schema, udf=fn, mode=mode,
                                   description=description)

    return wrap


def _source(fn: Callable) -> str:
    """A function's source as the file says now (linecache would serve an edited file's old lines)."""
    filename = inspect.getsourcefile(fn)
    if filename:
        linecache.checkcache(filename)
    return inspect.getsource(fn)


# -- running ---------------------------------------------------------------------------------------
_FUNCTIONS: dict[tuple[str, str, str], Callable] = {}


def load_udf(view: OnDemandSpec, repo_path: Path) -> Callable:
    """The applied function, imported from the repo; refuses a function whose source has changed."""
    udf = view.udf
    path = Path(udf.module)
    if not path.is_absolute():
        path = repo_path / path
    key = (str(path), udf.function, udf.source_sha256)
    if key in _FUNCTIONS:
        return _FUNCTIONS[key]
    if not path.exists():
        raise OnDemandFeatureError(f"on-demand feature view {view.name!r}: module {udf.module} not found",
                                   view.name)
    module = import_file(path, "_fsodfv_" + hashlib.sha256(str(path).encode()).hexdigest()[:12], repo_path)
    obj = getattr(module, udf.function, None)
    fn = obj.udf if isinstance(obj, OnDemandFeatureView) else obj
    if fn is None or hashlib.sha256(_source(fn).encode()).hexdigest() != udf.source_sha256:
        raise OnDemandFeatureError(f"on-demand feature view {view.name!r}: the function changed since it "
                                   "was applied; run apply again", view.name)
    _FUNCTIONS[key] = fn
    return fn


def run(view: OnDemandSpec, repo_path: Path, inputs: dict[str, list], n: int) -> dict[str, pa.Array]:
    """Run one on-demand view over ``n`` rows of ``inputs``; outputs typed as declared."""
    name = view.name
    fn = load_udf(view, repo_path)
    try:
        if view.mode == "pandas":
            import pandas as pd

            frame = fn(pd.DataFrame(inputs))
            out = {c: frame[c].tolist() for c in frame.columns} if frame is not None else None
        else:
            out = fn({k: list(v) for k, v in inputs.items()})
    except Exception as exc:  # the user's code: report it as the view's failure, not a crash
        raise OnDemandFeatureError(f"on-demand feature view {name!r} failed: {type(exc).__name__}: {exc}",
                                   name) from exc
    if not isinstance(out, dict):
        raise OnDemandFeatureError(f"on-demand feature view {name!r} must return a dict of columns, got "
                                   f"{type(out).__name__}", name)
    result = {}
    for f in view.schema:
        if f.name not in out:
            raise OnDemandFeatureError(f"on-demand feature view {name!r} did not return {f.name!r}", name)
        values = list(out[f.name])
        if len(values) != n:
            raise OnDemandFeatureError(f"on-demand feature view {name!r} returned {len(values)} values of "
                                       f"{f.name!r} for {n} rows", name)
        try:
            result[f.name] = pa.array(values, f.dtype.to_arrow(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise OnDemandFeatureError(f"on-demand feature view {name!r}: {f.name!r} is not "
                                       f"{f.dtype.to_spec()}: {exc}", name) from None
    return result


def request_inputs(view: OnDemandSpec, columns: dict[str, Any]) -> dict[str, Any]:
    """The request fields of an on-demand view, from the request's columns; names a missing one."""
    out = {}
    for f in view.request_schema:
        if f.name not in columns:
            raise InvalidInputError(f"on-demand feature view {view.name!r} needs request field {f.name!r}")
        values = columns[f.name]
        if isinstance(values, list):  # request data from a lookup: checked as pushed values are
            what = f"on-demand feature view {view.name!r}: request field {f.name!r}"
            values = [None if v is None else input_values.scalar(v, f.dtype, what) for v in values]
        out[f.name] = values
    return out
