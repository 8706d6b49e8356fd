"""Stream jobs: a view with a KafkaSource (or a streaming PushSource) run by Flink into both stores.

- ``plan``: what a view's job runs (columns, compiled Flink SQL, stores' rows), built from the registry
- ``job``: the PyFlink dataflow itself (runs in ``.venv-flink``)
- ``events``, ``state``, ``writers``: the job's Python parts (message checks, per-entity aggregation
  state, store writes), plain Python so the main environment tests them against the batch engines
- ``manager``: ``featurestore stream start|status|stop`` (a local mini-cluster or a Flink cluster)
- ``config``: ``stream_engine:`` in ``featurestore.yaml``; ``env`` and ``jars``: the Flink venv and the
  Kafka connector jar

Nothing here imports PyFlink at module level: the Flink job runs in its own venv (``.venv-flink``),
started as a separate process, because PyFlink 2.2 and Spark 4 need different pyarrow versions.
"""
