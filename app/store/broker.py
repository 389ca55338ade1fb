"""The Celery application shared by the API (which only sends task names and ids) and the workers.

Tasks take ids, never objects; the database holds job state, the broker only carries ids. Late acks
with `reject_on_worker_lost`: a worker that dies mid-task leaves its message to be delivered again."""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from kombu import Queue

from workers.compression.contract.vocabulary import Queue as QueueName

from .config import get_settings

CPU_QUEUE, GPU_QUEUE = QueueName.CPU, QueueName.GPU
# inspections have a queue of their own that every worker consumes beside its job queues: a worker takes
# from its queues in turn, so an upload is inspected after at most the job running now, however many jobs
# wait (a tenant's backlog of jobs cannot keep another tenant's uploads pending)
INSPECT_QUEUE = QueueName.INSPECT
INSPECT_TASK, RUN_JOB_TASK, WEBHOOK_TASK = "squeeze.inspect_upload", "squeeze.run_job", "squeeze.deliver_webhook"


def make_celery() -> Celery:
    settings = get_settings()
    app = Celery("squeeze", broker=settings.broker_url, include=["workers.tasks"])
    transport_options = {}
    if settings.broker_url.startswith(("redis://", "rediss://")):
        # redelivery of a message whose worker vanished without a trace; the job sweeper acts sooner
        transport_options["visibility_timeout"] = settings.job_time_limit_s + 600
    app.conf.update(
        task_queues=[Queue(INSPECT_QUEUE), Queue(CPU_QUEUE), Queue(GPU_QUEUE)],
        task_default_queue=CPU_QUEUE,
        # the job queues hold only job tokens (their depth is what the sweeper's top-up compares with the
        # runnable jobs); a webhook retry is short, like an inspection, and rides the queue every worker serves
        task_routes={WEBHOOK_TASK: {"queue": INSPECT_QUEUE}},
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,  # a long job must not hold the next message hostage
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,  # results live in the database
        task_ignore_result=True,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # the API answers 503 quickly when the broker is down instead of hanging on retries
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1},
        worker_hijack_root_logger=False,  # our JSON logging stays in place
        worker_send_task_events=False,
    )
    return app


@lru_cache
def get_celery() -> Celery:
    return make_celery()
