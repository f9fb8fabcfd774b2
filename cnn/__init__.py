"""cnn: train CNN image classifiers with TensorFlow 2 custom training loops."""

import os

# TensorFlow's C++ INFO lines (oneDNN, CUDA stubs) bury the run's own output; warnings and
# errors still show. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
