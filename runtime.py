"""Process settings that must be in place before TensorFlow is imported; every script imports
this module first, and it imports TensorFlow.

A variable already set in the environment wins, so each can be switched off from the shell
(e.g. TF_ENABLE_ONEDNN_OPTS=0 python train.py).

- TF_ENABLE_ONEDNN_OPTS=1: TensorFlow's oneDNN kernels for convolutions, batch norm and matmul.
  TensorFlow enables them by itself only on CPUs with AVX-512 VNNI, bfloat16 or AMX; on other
  x86-64 CPUs (AVX2, such as AMD EPYC) they train these networks about 1.6x faster than the
  default kernels (see docs/performance.md). GPUs do not use them.
- TF_CPP_MIN_LOG_LEVEL=1: no INFO lines from TensorFlow's C++ core. The notice that oneDNN is on,
  which TensorFlow prints whatever the level, is dropped too; anything else it prints while
  loading (a missing CUDA library, say) still reaches the terminal.
"""
import os
import sys
import tempfile

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

NOTICES = ("oneDNN custom operations are on",
           "All log messages before absl::InitializeLog() is called")


def import_tensorflow():
    """Import TensorFlow with its load-time notices filtered out of standard error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not any(notice in line for notice in NOTICES):
                    sys.stderr.write(line)
            sys.stderr.flush()


if "tensorflow" not in sys.modules:
    import_tensorflow()
