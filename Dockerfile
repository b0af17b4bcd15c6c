# tandem's serving image: the inference install plus the server (numpy, ONNX Runtime, uvicorn, the footprint
# meter) and what any model may need (pyarrow, tokenizers, Pillow: tables, text and image models), no training
# stack. A host that serves table models only can drop files,text-models,image-models (see the README's Installs). Models come from a mounted registry home (TANDEM_HOME, with
# TANDEM_REGISTRY for a PostgreSQL index) or a bundle folder (KServe mounts one at /mnt/models).
#   docker build -t tandem-serve .
#   docker run -p 8080:8080 -v ~/.tandem:/models:ro tandem-serve churn@production --workers 2
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TANDEM_HOME=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[serve,postgres,files,text-models,image-models]" && useradd --system --uid 10001 --no-create-home tandem
USER 10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/v2/health/live', timeout=2)"]
ENTRYPOINT ["tandem", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["model@production"]
