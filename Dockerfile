# One image for the whole service. Entry points:
#   API:     python -m app.serve --no-worker --host 0.0.0.0   (applies migrations first)
#   worker:  squeeze-worker                                    (queues cpu, plus gpu when CUDA is visible)
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SQUEEZE_HOME=/var/lib/squeeze
# bubblewrap: the sandbox every inspection and job child runs in (workers/sandbox.py); setpriv is util-linux's
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
WORKDIR /srv/squeeze
# torch first and pinned, so nothing later can move it (PyPI's x86_64 build runs on CUDA and falls back to CPU)
RUN pip install torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY migrations ./migrations
# editable: app.serve finds alembic.ini and migrations/ beside the code
RUN pip install -e . && useradd --system --home /var/lib/squeeze squeeze && mkdir -p /var/lib/squeeze \
 && chown squeeze /var/lib/squeeze
USER squeeze
EXPOSE 8000
CMD ["python", "-m", "app.serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
