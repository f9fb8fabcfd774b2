"""Datasets and their input pipelines (interim: the pipeline module still holds all of it)."""

from cnn.data.pipeline import channel_stats  # noqa: F401
from cnn.data.pipeline import DataSource  # noqa: F401
from cnn.data.pipeline import dataset_info  # noqa: F401
from cnn.data.pipeline import DatasetInfo  # noqa: F401
from cnn.data.pipeline import eval_dataset  # noqa: F401
from cnn.data.pipeline import get_builder  # noqa: F401
from cnn.data.pipeline import head_images  # noqa: F401
from cnn.data.pipeline import input_mean_std  # noqa: F401
from cnn.data.pipeline import load_split  # noqa: F401
from cnn.data.pipeline import open_dataset  # noqa: F401
from cnn.data.pipeline import open_split  # noqa: F401
from cnn.data.pipeline import open_splits  # noqa: F401
from cnn.data.pipeline import pipeline_options  # noqa: F401
from cnn.data.pipeline import Split  # noqa: F401
from cnn.data.pipeline import standardizer  # noqa: F401
from cnn.data.pipeline import steps_per_epoch  # noqa: F401
from cnn.data.pipeline import to_unit_range  # noqa: F401
from cnn.data.pipeline import train_dataset  # noqa: F401
