# The API with its embedded worker: migrations, then uvicorn.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    UNLEARN_DATABASE_URL=sqlite:////srv/var/unlearn.db \
    UNLEARN_ARTIFACT_DIR=/srv/models \
    UNLEARN_BASE_MODEL_PATH=/srv/models/base/mnist-cnn-base.safetensors \
    UNLEARN_DATA_DIR=/srv/data \
    UNLEARN_CACHE_DIR=/srv/var/cache

WORKDIR /srv
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-cache-dir .
COPY models/base ./models/base

EXPOSE 8000
CMD ["sh", "-c", "unlearn db upgrade && unlearn bootstrap && unlearn serve --host 0.0.0.0 --port 8000"]
