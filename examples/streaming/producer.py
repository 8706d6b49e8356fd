"""Produce click events to Kafka at a fixed rate: {"user_id": 3, "price": 12.25, "ts": "2026-...+00:00"}.

    python producer.py [--bootstrap 127.0.0.1:9092] [--topic clicks] [--rate 100] [--count 1000]
    python producer.py --create-only      # just create the topic (and its dead-letter topic)

Each event's time ``ts`` is the moment it is sent. Prices are multiples of 0.25, so sums are exact.
At the end it prints each user's click count and total price as one JSON line, which is what
user_clicks:price_sum_10m and price_count_10m should show for the next ten minutes (on a fresh topic).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

try:
    from connectors.kafka import KafkaClient, KafkaConfig
except ImportError:  # run from the examples folder of a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from connectors.kafka import KafkaClient, KafkaConfig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    ap.add_argument("--topic", default=os.environ.get("CLICKS_TOPIC", "clicks"))
    ap.add_argument("--rate", type=float, default=100.0, help="events per second (default 100)")
    ap.add_argument("--count", type=int, default=1000, help="events to send (default 1000)")
    ap.add_argument("--users", type=int, default=10, help="user ids 1..N (default 10)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (repeatable prices and users)")
    ap.add_argument("--create-only", action="store_true", help="create the topic and exit")
    args = ap.parse_args()

    kafka = KafkaClient(KafkaConfig(bootstrap_servers=args.bootstrap))
    try:
        for topic in (args.topic, f"{args.topic}.dead-letter"):
            kafka.create_topic(topic, exist_ok=True)
        if args.create_only:
            print(f"topic {args.topic} is ready on {args.bootstrap}")
            return 0
        rnd = random.Random(args.seed)
        totals: dict[int, list] = {}
        sent = 0
        started = time.monotonic()
        tick = 0.1
        while sent < args.count:
            due = min(args.count, int(args.rate * (time.monotonic() - started)) + 1) - sent
            batch = []
            for _ in range(max(0, due)):
                user, price = rnd.randrange(1, args.users + 1), rnd.randrange(1, 200) / 4
                ts = datetime.now(timezone.utc).isoformat(timespec="microseconds")
                batch.append({"user_id": user, "price": price, "ts": ts})
                count_sum = totals.setdefault(user, [0, 0.0])
                count_sum[0] += 1
                count_sum[1] += price
            if batch:
                kafka.produce(args.topic, batch, key=lambda e: str(e["user_id"]))
                sent += len(batch)
            time.sleep(tick)
        elapsed = time.monotonic() - started
        print(f"sent {sent} events to {args.topic} in {elapsed:.1f} s", file=sys.stderr)
        print(json.dumps({"sent": sent, "users": {str(u): {"count": c, "sum": s}
                                                  for u, (c, s) in sorted(totals.items())}}))
        return 0
    finally:
        kafka.close()


if __name__ == "__main__":
    sys.exit(main())
