"""`--extra_modules=slow_trainer`: each call of this process's trainer sleeps 0.1 s first, so that a
test's training process runs long enough for a side-car evaluator to watch it (tests/evaluation_test.py)."""

import time

from cnn.training import trainer

_train = trainer.Trainer.train


def _slow_train(self, *args, **kwargs):
  time.sleep(0.1)
  return _train(self, *args, **kwargs)


trainer.Trainer.train = _slow_train
