# Engine image: the compression engine and its CLI. The service issue adds the API and worker entry points.
FROM python:3.11-slim
WORKDIR /srv/squeeze
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
# torch first and pinned, so nothing later can move it (PyPI's build runs on CUDA and falls back to CPU)
RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
 && pip install --no-cache-dir .
ENTRYPOINT ["python", "-m", "workers.compression"]
CMD ["--help"]
