"""kzoo: a Keras/TensorFlow model zoo with recipes and verified serving exports."""

from setuptools import find_packages, setup

# Exact pins: this stack is verified to install and import together (Python 3.11, CPU).
STACK = [
    "tensorflow==2.21.0",
    "keras==3.15.1",
    "tf-keras==2.21.0",
    "keras-nlp==0.32.0",
    "keras-hub==0.32.0",
    "tensorflow-text==2.21.1",
    "tensorflow-model-optimization==0.8.1",
    "tensorboard==2.21.0",
    "ai-edge-litert==2.3.0",
    "numpy==2.4.6",
    "scikit-learn==1.9.1",
    "matplotlib==3.11.2",
    "pillow==13.0.0",
    "pyyaml==6.0.3",
    "safetensors==0.8.0",
    "sacrebleu==2.6.0",
    # zoo serve: TF Serving's own protos and gRPC servicers (same version as TensorFlow), a gRPC server
    # with the standard health service, an ASGI app and server for REST, Prometheus metrics.
    "tensorflow-serving-api==2.21.0",
    "grpcio==1.85.1",
    "grpcio-health-checking==1.85.1",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "prometheus-client==0.26.0",
]

setup(
    name="kzoo",
    version="0.1.0",
    description="Keras/TensorFlow model zoo: models, training recipes, verified SavedModel/TFLite exports",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    # The user's layout: three top-level folders, installed as one package. recipes/ and export/
    # become zoo.recipes and zoo.export, so nothing of ours can collide with another "export".
    packages=[*find_packages(include=["zoo", "zoo.*"]),
              *("zoo." + p for p in find_packages(include=["recipes", "recipes.*", "export", "export.*"]))],
    package_dir={"zoo": "zoo", "zoo.recipes": "recipes", "zoo.export": "export"},
    package_data={"zoo.recipes": ["configs/*.yaml"]},
    install_requires=STACK,
    # tokenizers: the reference WordPiece implementation the tokenizer tests compare against.
    # httpx: Starlette's test client and the serving tests' HTTP client; hypothesis: the request fuzz.
    extras_require={"test": ["pytest==9.2.0", "ruff==0.17.6", "tokenizers==0.23.3", "httpx==0.28.1",
                             "hypothesis==6.170.15"]},
    entry_points={"console_scripts": ["zoo=zoo.cli:main"]},
)
