"""``stream_engine:`` in ``featurestore.yaml``: where and how the stream jobs run.

The default runs each job on a Flink mini-cluster inside one local process (``.venv-flink``);
``jobmanager: host:port`` submits it to a Flink cluster's REST endpoint instead (its TaskManagers need
this project installed for the Python functions).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from featurestore.errors import ConfigError


class StreamEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["flink"] = "flink"
    # host:port of a Flink cluster's REST endpoint; None runs a mini-cluster in the job's process.
    jobmanager: str | None = Field(None, pattern=r"^[^:/\s]+:\d+$")
    # The Python the cluster's TaskManagers run the job's functions with (default: .venv-flink's).
    python_executable: str | None = None
    # The job keeps per-partition order end to end at parallelism 1, which exactly-once offline appends
    # rely on (see featurestore.streaming.job); Python work is the bottleneck long before one slot is.
    parallelism: Literal[1] = 1
    checkpoint_interval_seconds: float = Field(5.0, gt=0)
    # PyFlink hands records between the JVM and Python in bundles finished at least this often: it bounds
    # how long an event waits between stages.
    bundle_time_ms: int = Field(100, ge=1, le=60_000)
    # How PyFlink runs the job's Python functions: "process" (separate Python workers, Beam protocol)
    # or "thread" (inside the TaskManager's JVM through PEMJA: no serialization between operators).
    execution_mode: Literal["process", "thread"] = "process"
    # Where jobs keep their plan, checkpoints, logs and status (relative to the repo).
    state_dir: str = "data/streams"
    # After a failure (store or broker unreachable) the job restarts from its last checkpoint after
    # this delay, without limit: it waits out outages instead of dying.
    restart_delay_seconds: float = Field(2.0, gt=0)


def stream_engine_config(section: dict[str, Any] | None) -> StreamEngineConfig:
    try:
        return StreamEngineConfig(**(section or {}))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"featurestore.yaml stream_engine: {problems}") from None
