"""pyro-vae: variational autoencoders as Pyro model/guide pairs."""

# the residual and autoregressive network families register themselves with NETWORKS
from . import pixelcnn, resnet  # noqa: F401
from .api import elbo, load_run, log_likelihood, train
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import Dataset, load_dataset
from .describe import describe, rebuild
from .disentangle import disentanglement
from .errors import CheckpointError, ConfigError, DataError, PyroVAEError, TrainingDiverged
from .export import export, load
from .guides import GUIDES
from .likelihoods import LIKELIHOODS
from .models import MODELS, VAE, Model, build_model
from .objectives import OBJECTIVES
from .plan import Feed, TrainingPlan
from .plugins import import_plugin
from .priors import PRIORS
from .runs import RunData, load_model
from .train import TrainResult

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
    "build_model",
    "disentanglement",
    "describe",
    "elbo",
    "export",
    "load",
    "import_plugin",
    "log_likelihood",
    "rebuild",
    "load_dataset",
    "load_model",
    "load_run",
    "RunData",
    "train",
]
