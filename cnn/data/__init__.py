"""Datasets and their input pipelines: source → splits → pipeline.

sources.py: `--dataset` (a TFDS name or folder:PATH) opened as a `DataSource` (`DatasetInfo`, the
builder or folder, the preprocessing flags); splits.py: its splits opened in memory (`Split`) while
they fit the memory budget, else streaming; pipeline.py: the training and evaluation tf.data
pipelines over a split; normalization.py: [0, 1] scaling, channel statistics and standardisation.
Helpers: cache.py (the disk cache of decoded splits and listings), folder.py (a folder of images as
a list of files), tfds_stream.py (a TFDS split's records by index), stream.py (streaming splits,
read and decoded in the pipeline), preprocess.py (crops and resizing), service.py (--data_service).

The names below are the package's interface (`from cnn import data; data.train_dataset(...)`).
"""

from cnn.data.normalization import channel_stats  # noqa: F401
from cnn.data.normalization import head_images  # noqa: F401
from cnn.data.normalization import images_at  # noqa: F401
from cnn.data.normalization import input_mean_std  # noqa: F401
from cnn.data.normalization import standardizer  # noqa: F401
from cnn.data.normalization import to_unit_range  # noqa: F401
from cnn.data.pipeline import eval_dataset  # noqa: F401
from cnn.data.pipeline import pipeline_options  # noqa: F401
from cnn.data.pipeline import steps_per_epoch  # noqa: F401
from cnn.data.pipeline import train_dataset  # noqa: F401
from cnn.data.sources import DataSource  # noqa: F401
from cnn.data.sources import dataset_info  # noqa: F401
from cnn.data.sources import DatasetInfo  # noqa: F401
from cnn.data.sources import get_builder  # noqa: F401
from cnn.data.sources import open_dataset  # noqa: F401
from cnn.data.splits import load_split  # noqa: F401
from cnn.data.splits import open_split  # noqa: F401
from cnn.data.splits import open_splits  # noqa: F401
from cnn.data.splits import Split  # noqa: F401
