"""Locust load for Lookalike: the realistic shopper mix, or searches only, on 127.0.0.1 only.

    locust -f benchmarks/locustfile.py --headless --host http://127.0.0.1:8000 \
        -u 20 -r 20 -t 60s [--csv artifacts/locust]

The mix (``LOOKALIKE_LOCUST_MIX=realistic``, the default), by weight: photo searches with the
demo catalog's photos (3), similar items (2), item JSON (2), item pages (1), item images (4),
/health (1). ``LOOKALIKE_LOCUST_MIX=search`` sends photo searches only (what
benchmarks/bench_load.py steps). Each user runs at most ``LOOKALIKE_LOCUST_RATE`` tasks a second
(default 1, Poisson arrivals), so users x rate is the offered load while answers are faster
than 1/rate.

Bounded on purpose: the host must be 127.0.0.1/localhost, the run needs ``--headless`` and a
``-t`` of at most ``LOOKALIKE_LOCUST_MAX_SECONDS`` (default 1200), and at most
``LOOKALIKE_LOCUST_MAX_USERS`` users (default 500). ``LOOKALIKE_LOCUST_RECORDS=path.csv`` also
writes one line per request (seconds since start, name, status, ms) for exact percentiles.
A 503 ``saturated`` answer counts as a failure in locust's own table.
"""

from __future__ import annotations

import csv
import os
import random
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from locust import FastHttpUser, events, task

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "catalog"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
MIX = os.environ.get("LOOKALIKE_LOCUST_MIX", "realistic")
RATE = float(os.environ.get("LOOKALIKE_LOCUST_RATE", "1"))
MAX_SECONDS = float(os.environ.get("LOOKALIKE_LOCUST_MAX_SECONDS", "1200"))
MAX_USERS = int(os.environ.get("LOOKALIKE_LOCUST_MAX_USERS", "500"))


BOUNDARY = "lookalike-locust"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def _multipart(photo: bytes) -> bytes:
    """A ready multipart body: FastHttpUser has no ``files=``, and encoding once is cheaper."""
    return (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="image"; filename="photo.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def _catalog() -> tuple[list[str], list[bytes]]:
    with open(DEMO / "items.csv", newline="") as f:
        ids = [row["item_id"] for row in csv.DictReader(f)]
    photos = [p.read_bytes() for p in sorted((DEMO / "images").glob("*.jpg"))[:40]]
    return ids, [_multipart(p) for p in photos]


ITEM_IDS, BODIES = _catalog()
_records: Any = None
_started = time.monotonic()


@events.init.add_listener
def _check_bounds(environment: Any, **_: Any) -> None:
    """Refuse anything but a bounded, headless run against this machine."""
    host = urlparse(environment.host or "").hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"--host must be http://127.0.0.1:<port>, got {environment.host!r}")
    options = environment.parsed_options
    if options is not None:
        if not options.headless:
            raise SystemExit("run with --headless")
        if not options.run_time or options.run_time > MAX_SECONDS:
            raise SystemExit(f"give -t (run time) of at most {MAX_SECONDS:.0f} s")
        if options.num_users and options.num_users > MAX_USERS:
            raise SystemExit(f"at most {MAX_USERS} users (-u)")
    path = os.environ.get("LOOKALIKE_LOCUST_RECORDS")
    if path:
        global _records
        _records = open(path, "w", newline="")  # noqa: SIM115 - closed at quit
        _records.write("t,name,status,ms\n")


@events.request.add_listener
def _record(name: str, response_time: float, response: Any = None, **_: Any) -> None:
    if _records is not None:
        status = getattr(response, "status_code", 0) or 0
        _records.write(f"{time.monotonic() - _started:.3f},{name},{status},{response_time:.2f}\n")


@events.quitting.add_listener
def _close(**_: Any) -> None:
    if _records is not None:
        _records.close()


def _ok(response: Any) -> None:
    """Only 2xx and 304 are successes; a 503 is shed load, anything else an error."""
    if 200 <= response.status_code < 300 or response.status_code == 304:
        response.success()
    elif response.status_code == 503:
        response.failure("503 saturated")
    else:
        response.failure(f"status {response.status_code}")


class Shopper(FastHttpUser):
    """One shopper; its requests form a Poisson stream of ``RATE`` a second.

    Not ``constant_throughput``: users spawned together stay in phase and send their requests
    in one burst a second, which measures the burst, not the rate.
    """

    def on_start(self) -> None:
        self._next = time.monotonic() + random.uniform(0.0, 1.0 / RATE)

    def wait_time(self) -> float:
        # an open-loop schedule: a user that fell behind catches up instead of slowing the rate
        self._next = max(self._next, time.monotonic() - 1.0) + random.expovariate(RATE)
        return max(0.0, self._next - time.monotonic())

    def _search(self) -> None:
        with self.client.post(
            "/v1/search",
            data=random.choice(BODIES),
            headers={"Content-Type": CONTENT_TYPE},
            name="/v1/search",
            catch_response=True,
        ) as r:
            _ok(r)

    @task(3)
    def search(self) -> None:
        self._search()

    @task(2)
    def similar(self) -> None:
        if MIX == "search":
            return self._search()
        item = random.choice(ITEM_IDS)
        with self.client.get(
            f"/v1/items/{item}/similar?k=20",
            name="/v1/items/{id}/similar",
            catch_response=True,
        ) as r:
            _ok(r)

    @task(2)
    def item_json(self) -> None:
        if MIX == "search":
            return self._search()
        item = random.choice(ITEM_IDS)
        with self.client.get(f"/v1/items/{item}", name="/v1/items/{id}", catch_response=True) as r:
            _ok(r)

    @task(1)
    def item_page(self) -> None:
        if MIX == "search":
            return self._search()
        item = random.choice(ITEM_IDS)
        with self.client.get(f"/items/{item}", name="/items/{id}", catch_response=True) as r:
            _ok(r)

    @task(4)
    def item_image(self) -> None:
        if MIX == "search":
            return self._search()
        item = random.choice(ITEM_IDS)
        with self.client.get(
            f"/v1/items/{item}/image", name="/v1/items/{id}/image", catch_response=True
        ) as r:
            _ok(r)

    @task(1)
    def health(self) -> None:
        if MIX == "search":
            return self._search()
        with self.client.get("/health", name="/health", catch_response=True) as r:
            _ok(r)
