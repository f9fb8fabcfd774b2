"""cnn: train CNN image classifiers with TensorFlow 2 custom training loops."""
