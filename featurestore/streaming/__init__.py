"""Stream processing support: the PyFlink virtual environment (``env``) and the JVM jars (``jars``).

Nothing here imports PyFlink: the Flink job runs in its own venv (``.venv-flink``), started as a
separate process, because PyFlink 2.2 and Spark 4 need different pyarrow versions.
"""
