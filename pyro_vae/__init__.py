"""pyro-vae: variational autoencoders as Pyro model/guide pairs."""

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import Dataset, load_dataset
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    PyroVAEError,
    TrainingDiverged,
    UserCodeError,
)
from .evaluate import elbo, log_likelihood
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .models import MODELS, VAE, Model, build_model
from .objectives import OBJECTIVES
from .plan import Feed, TrainingPlan
from .plugins import import_plugin
from .priors import PRIORS
from .train import TrainResult, load_run, train

__version__ = "0.1.0"

__all__ = [
    "GUIDES",
    "LIKELIHOODS",
    "MODELS",
    "OBJECTIVES",
    "PRIORS",
    "VAE",
    "Model",
    "TrainingPlan",
    "Feed",
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "DataError",
    "Dataset",
    "ModelConfig",
    "PyroVAEError",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "UserCodeError",
    "build_model",
    "elbo",
    "import_plugin",
    "log_likelihood",
    "load_dataset",
    "load_run",
    "train",
]
