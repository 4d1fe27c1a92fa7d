"""Locust users for the API's load test (bench/api_load.py runs it headless).

Each user makes one request per second (``constant_throughput(1)``), so ``--users 200`` is a
mixed load of 200 requests/s: what a few dozen dashboards and scripts ask. The mix (weights):
summary 5, volume 4, anomalies (first page) 4, anomalies (next page, by cursor) 2, top merchants
(random window and order) 4, health 1, user trends ``TRENDS_WEIGHT`` (env, default 0: see
docs/api.md: on FerretDB a user's trends are a full scan of ``transactions``).
Every non-2xx answer counts as a failure.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, constant_throughput, task

USERS = int(os.environ.get("SEED_USERS", "10000"))
HEADERS = {"X-API-Key": os.environ["API_KEY"]} if os.environ.get("API_KEY") else {}


class Dashboard(FastHttpUser):
    wait_time = constant_throughput(1)

    def on_start(self) -> None:
        self.cursor: str | None = None

    def _get(self, path: str, name: str | None = None) -> dict | None:
        with self.client.get(path, name=name or path, headers=HEADERS,
                             catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200] if resp.text else ''}")
                return None
            return resp.json()

    @task(5)
    def summary(self) -> None:
        self._get("/summary")

    @task(4)
    def volume(self) -> None:
        self._get("/volume?minutes=60", "/volume")

    @task(4)
    def anomalies(self) -> None:
        body = self._get("/anomalies?limit=50", "/anomalies")
        if body:
            self.cursor = body.get("next_cursor")

    @task(2)
    def anomalies_next_page(self) -> None:
        if self.cursor:
            body = self._get(f"/anomalies?limit=50&cursor={self.cursor}", "/anomalies?cursor")
            if body:
                self.cursor = body.get("next_cursor")
        else:
            self.anomalies()

    @task(4)
    def merchants(self) -> None:
        window = random.choice(["1h", "24h", "7d"])
        by = random.choice(["revenue", "count"])
        self._get(f"/merchants/top?window={window}&by={by}&limit=10", "/merchants/top")

    @task(1)
    def health(self) -> None:
        self._get("/health")

    @task(int(os.environ.get("TRENDS_WEIGHT", "0")))
    def trends(self) -> None:
        self._get(f"/users/user_{random.randrange(USERS)}/trends?days=30", "/users/{id}/trends")
