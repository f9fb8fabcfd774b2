"""`--extra_modules=slow_train_loop`: each train loop call of this process sleeps 0.1 s first, so that a
test's trainer runs long enough for a side-car evaluator to watch it (tests/evaluation_test.py)."""

import time

from cnn import train_loop

_train = train_loop.TrainLoop.train


def _slow_train(self, *args, **kwargs):
  time.sleep(0.1)
  return _train(self, *args, **kwargs)


train_loop.TrainLoop.train = _slow_train
