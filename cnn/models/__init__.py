"""Models. Importing this package registers every model module listed here."""

from cnn.models import airbench  # noqa: F401  (registers "airbench94")
from cnn.models import imagenet_resnet  # noqa: F401  (registers "resnet18" ... "resnet152")
from cnn.models import keras_applications  # noqa: F401  (builds "keras:<application name>")
from cnn.models import resnet  # noqa: F401  (registers "resnet20" ... "resnet110")
from cnn.models import separable_resnet  # noqa: F401  (registers "separable_resnet")
from cnn.models import simple_cnn  # noqa: F401  (registers "simple_cnn")
from cnn.models import xresnet  # noqa: F401  (registers "xresnet18" ... "xresnet152", "xresnet50_sa", ...)
from cnn.models.registry import build_model, names, precision_policy, register  # noqa: F401
