"""Prometheus metrics: request latency from a middleware; jobs by status, queue depth and job duration
read from the store and the broker when scraped (so every API replica reports the same truth)."""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, func, select

from app.store.db import session_factory
from app.store.tables.jobs import STATUSES, Job

from ..queue import queue_depths

log = logging.getLogger("squeeze.metrics")
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)

registry = CollectorRegistry()
REQUEST_LATENCY = Histogram(
    "squeeze_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    registry=registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)


class StoreCollector:
    def collect(self):
        by_status = GaugeMetricFamily("squeeze_jobs", "jobs by status", labels=["status"])
        duration = HistogramMetricFamily("squeeze_job_duration_seconds", "duration of finished jobs", labels=["status"])
        depth = GaugeMetricFamily("squeeze_queue_depth", "messages waiting in the broker", labels=["queue"])
        with session_factory()() as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for s in STATUSES:
                by_status.add_metric([s], counts.get(s, 0))
            cols = [func.sum(case((Job.duration_s <= b, 1), else_=0)) for b in DURATION_BUCKETS]
            rows = session.execute(
                select(Job.status, func.count(), func.sum(Job.duration_s), *cols)
                .where(Job.duration_s.is_not(None))
                .group_by(Job.status)
            ).all()
        for status, count, total, *cum in rows:
            buckets = [(str(b), int(c or 0)) for b, c in zip(DURATION_BUCKETS, cum)] + [("+Inf", int(count))]
            duration.add_metric([status], buckets, float(total or 0))
        for q, n in queue_depths().items():
            if n is not None:
                depth.add_metric([q], n)
        yield from (by_status, duration, depth)


registry.register(StoreCollector())
