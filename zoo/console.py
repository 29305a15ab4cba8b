"""What the zoo's processes print to the terminal: TensorFlow's C++ start-up noise filtered out of stderr.

``zoo`` (zoo.cli) and the tf.data service processes (zoo.data.service) run inside :func:`filtered_stderr`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

# Lines TensorFlow's C++ side prints to the terminal, before its logging can be configured
# (TF_CPP_MIN_LOG_LEVEL does not reach them) or from converters and interpreters: shown only with --verbose.
TENSORFLOW_NOISE = re.compile(
    r"absl::InitializeLog|oneDNN custom operations|cudart_stub|cuda_platform|cuInit|cpu_feature_guard|"
    r"rebuild TensorFlow with the appropriate compiler flags|computation placer already registered|"
    r"Unable to register cu(DNN|FFT|BLAS) factory|TensorFlow Lite XNNPACK delegate|^fully_quantize: |"
    r"add_port\.cc:\d+\] Failed to add port")  # gRPC's own line; zoo serve says it in its error


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern = TENSORFLOW_NOISE) -> Iterator[None]:
    """Inside the block, everything written to file descriptor 2 (C++ included) passes through a pipe;
    a thread forwards each line to the real stderr as it arrives, except the lines ``noise`` matches."""
    sys.stderr.flush()
    original = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def forward() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            for line in iter(pipe.readline, b""):
                if not noise.search(line.decode("utf-8", "replace")):
                    os.write(original, line)

    thread = threading.Thread(target=forward, name="zoo-stderr", daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last write end: the thread reads to the end and stops
        thread.join(timeout=10)
        os.close(original)
