"""Every use of Keras internals in cnn (`keras.src` modules, private attributes), listed in one place.

Keras may move or rename any of these in any release. Each has a canary in
tests/keras_internals_test.py that fails naming it, and setup.cfg's `keras` floor is the version they
were checked on (3.15).

  * here, `fresh_layer_names`: `keras.src.backend.common.global_state`, its attribute `object_name_uids`
    (the counter of `keras.src.utils.naming`), so that `keras:` models' variable paths do not depend on
    what the process built before.
  * cnn/optim.py, `moving_averages`: `Optimizer._model_variables_moving_average` and
    `Optimizer._get_variable_index`; Keras has no public accessor for its EMA averages.
  * cnn/optim.py, `_StatisticsAverage`: overrides `Optimizer._update_model_variables_moving_average`
    (which `apply` calls under `use_ema`), to average BatchNorm statistics on the same steps.
  * cnn/optim.py, `_LossScaleOptimizer`: `LossScaleOptimizer._iterations` (the wrapper's own count,
    otherwise unused), to count skipped steps too.
  * cnn/optim.py, `RAdam`: `Adam._momentums` and `Adam._velocities` (its first and second moments,
    indexed by `_get_variable_index`), which RAdam's rectified update reads.
  * cnn/optim.py, `PyTorchSGD`: `SGD.momentums` (its momentum slots, indexed by `_get_variable_index`),
    which PyTorch's momentum keeps as its buffers.

A new use goes in this list, with its canary.
"""

import collections
import contextlib
from typing import Iterator

from keras.src.backend.common import global_state

NAME_COUNTER = "object_name_uids"  # keras.src.utils.naming's process-wide counter of auto-generated names.


@contextlib.contextmanager
def fresh_layer_names() -> Iterator[None]:
  """Auto-generated layer names (`conv2d_412`) counted from zero, as in a fresh process.

  Checkpoints key variables by their paths, which hold the layer names; `keras:` applications leave
  many layers to Keras's process-wide name counter, so without this the paths would depend on what
  the process built before (a second build, an evaluation after training).
  """
  saved = global_state.get_global_attribute(NAME_COUNTER)
  global_state.set_global_attribute(NAME_COUNTER, collections.defaultdict(int))
  try:
    yield
  finally:
    global_state.set_global_attribute(NAME_COUNTER, saved)
