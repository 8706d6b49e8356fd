"""Where the Flink Kafka connector jar is: Maven profile ``flink-kafka`` of ``.ci/jvm/pom.xml``,
fetched from Maven Central when it is not there (``featurestore.jvm_jars``).

``FS_FLINK_KAFKA_CONNECTOR_JAR`` names a jar to use instead (e.g. outside a checkout of this repository).

Command line::

    python -m featurestore.streaming.jars            # fetch if needed, print the connector jar's path
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from featurestore.errors import NotFoundError
from featurestore.jvm_jars import profile_jars

CONNECTOR_PROFILE = "flink-kafka"
CONNECTOR_GLOB = "flink-sql-connector-kafka-*.jar"
CONNECTOR_ENV = "FS_FLINK_KAFKA_CONNECTOR_JAR"


def connector_jar(root: Path | None = None, fetch_missing: bool = True) -> Path:
    """The Flink SQL Kafka connector jar (a shaded jar: the only one a Kafka table needs)."""
    found = profile_jars(CONNECTOR_PROFILE, CONNECTOR_ENV, root=root, fetch_missing=fetch_missing)
    if os.environ.get(CONNECTOR_ENV, "").strip():
        if len(found) != 1:
            raise NotFoundError(f"{CONNECTOR_ENV} must name one jar, not {len(found)}")
        return found[0]
    matching = [p for p in found if p.match(CONNECTOR_GLOB)]
    if len(matching) != 1:
        raise NotFoundError(f"expected one {CONNECTOR_GLOB}, found {[p.name for p in found]}")
    return matching[0]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["fetch"]):
        print("usage: python -m featurestore.streaming.jars [fetch]", file=sys.stderr)
        return 2
    print(connector_jar())
    return 0


if __name__ == "__main__":
    sys.exit(main())
